"""BiomedCLIP image embeddings for ProgEmu's CLIP-I metric.

CLIP-I is the cosine similarity between the BiomedCLIP image embedding of a generated image and that of
the real target image. :class:`BiomedCLIPEmbedder` is the Evaluator giving those embeddings
(``predict(images) -> {"embedding": (B, D) float32, unit L2 norm}``), so CLIP-I of two batches is just
``(a["embedding"] * b["embedding"]).sum(1)``.

Weights: a local folder laid out like the public hub repository ``microsoft/BiomedCLIP-PubMedBERT_256-
vit_base_patch16_224`` (https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224):

- ``open_clip_config.json``: ``{"model_cfg": {"embed_dim": 512, "vision_cfg": {...}, "text_cfg": {...}},
  "preprocess_cfg": {"mean": [...], "std": [...]}}``; BiomedCLIP's ``vision_cfg`` is a timm
  ``vit_base_patch16_224`` (``timm_pool=""``, ``timm_proj="linear"``), its ``text_cfg`` a Hugging Face
  PubMedBERT (``hf_model_name``).
- ``open_clip_pytorch_model.bin``: the full open_clip state dict (``visual.*``, ``text.*``, ``logit_scale``).

Loading (never touches the network). Only the image tower is needed, so only the image tower is built:
``open_clip.model._build_vision_tower(embed_dim, vision_cfg, quick_gelu)`` -- the very function
``open_clip.CLIP`` / ``CustomTextCLIP`` call to build ``model.visual`` -- then the ``visual.*`` entries of
the state dict are loaded into it strictly (every key, every shape). ``open_clip.create_model(
"local-dir:...")`` is not used: it builds the text tower too, and for BiomedCLIP that means
``transformers.AutoConfig.from_pretrained("microsoft/BiomedNLP-BiomedBERT-...")``, a hub download (or a
populated Hugging Face cache) just to build a tower CLIP-I never runs. Building the visual tower with
open_clip's own builder keeps the architecture exactly open_clip's (``TimmModel`` trunk + head, or
open_clip's ``VisionTransformer``), so the embeddings equal ``model.encode_image(x, normalize=True)`` of
the full model. ``_build_vision_tower`` is private but has had the same signature from open_clip 2.x
through 3.x; a missing one raises a clear error.

Text tower (only for CLIP-I "image-text", ``cfbench eval --clip-i image-text``): BiomedCLIP's text tower is
a Hugging Face BERT (PubMedBERT / BiomedBERT) named by ``text_cfg.hf_model_name``. To stay offline it is
built from a local folder holding that model's ``config.json`` and tokenizer files (``vocab.txt``,
``tokenizer_config.json``; from the hub repository ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``),
given as ``text_model`` (default: ``text_model/`` inside the BiomedCLIP folder): open_clip's own
``_build_text_tower`` with that folder as ``hf_model_name`` and ``hf_model_pretrained=False``, then the
``text.*`` weights of the BiomedCLIP checkpoint loaded strictly; texts are tokenized with open_clip's
``HFTokenizer`` on the same folder at the config's ``context_length``. ``embed_texts(texts)`` equals
``model.encode_text(tokenizer(texts), normalize=True)`` of the full open_clip model.

Preprocessing (``PREPROCESSING_VERSION``), from ``preprocess_cfg`` merged over open_clip's defaults
(``open_clip.transform.PreprocessCfg``), the size being the vision tower's ``image_size`` (as
``open_clip.create_model`` sets it): images float32 (B, H, W) in [0, 1], square -> replicated to 3
channels (what PIL's ``convert("RGB")`` does to a grayscale image) -> resized to ``size x size`` with
``torch.nn.functional.interpolate`` (``bicubic`` or ``bilinear`` as configured, ``antialias=True``,
``align_corners=False``; images already at the size are not resampled) -> clamped to [0, 1] (bicubic
overshoots; PIL's 8-bit resize clips the same way) -> ``(x - mean) / std``. For square images open_clip's
resize modes (shortest + centre crop, longest + pad, squash) all reduce to this one resize. Unlike
open_clip's PIL pipeline the image is never quantised to 8 bits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbench.api.evaluator import Evaluator, check_images, check_outputs
from cfbench.core.hashing import cached_sha256

HUB_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
HUB_URL = f"https://huggingface.co/{HUB_REPO}"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
PREPROCESSING_VERSION = "biomedclip-1: gray->rgb, interpolate(antialias) to size, clamp [0,1], mean/std"
VISUAL_PREFIX = "visual."
TEXT_PREFIX = "text."
TEXT_MODEL_DIR = "text_model"

_MAX_LISTED_KEYS = 8


def _install_hint(folder: Path) -> str:
    return (f"download {CONFIG_NAME} and {WEIGHTS_NAME} from the Hugging Face hub repository {HUB_REPO} "
            f"({HUB_URL}/tree/main) and place both in {folder}")


def _open_clip():
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("BiomedCLIP needs open_clip: pip install 'cfbench[clip]' "
                          "(or pip install open_clip_torch)") from error
    return open_clip


def open_clip_version() -> str:
    """The installed open_clip's version (``open_clip.__version__`` is missing before 3.x)."""
    open_clip = _open_clip()
    version = getattr(open_clip, "__version__", None)
    if version is None:
        try:
            from open_clip.version import __version__ as version
        except ImportError:  # pragma: no cover
            from importlib.metadata import version as distribution_version

            version = distribution_version("open_clip_torch")
    return str(version)


def _keys_summary(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED_KEYS else "")


# --------------------------------------------------------------------------------------------- config

def read_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``open_clip_config.json`` -> (model_cfg, preprocess_cfg); ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON open_clip config ({error})") from error
    shape = ('an open_clip config is a JSON object {"model_cfg": {"embed_dim": ..., "vision_cfg": {...}, '
             '"text_cfg": {...}}, "preprocess_cfg": {...}}')
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ValueError(f"{path}: not an open_clip config (no 'model_cfg' object); {shape}")
    model_cfg = config["model_cfg"]
    if not isinstance(model_cfg.get("vision_cfg"), dict) or not isinstance(model_cfg.get("embed_dim"), int):
        raise ValueError(f"{path}: not an open_clip config ('model_cfg' lacks 'embed_dim' or a 'vision_cfg' "
                         f"object); {shape}")
    preprocess_cfg = config.get("preprocess_cfg", {})
    if not isinstance(preprocess_cfg, dict):
        raise ValueError(f"{path}: 'preprocess_cfg' must be an object, got {type(preprocess_cfg).__name__}")
    return model_cfg, preprocess_cfg


def build_visual(model_cfg: dict[str, Any], source: str | Path = CONFIG_NAME) -> nn.Module:
    """The image tower of an open_clip model config, built by open_clip itself (randomly initialised).

    Never downloads: a timm tower is created with ``timm_model_pretrained`` forced to False (the weights
    come from the open_clip checkpoint, as ``open_clip.create_model`` does when it has one).
    """
    _open_clip()
    from open_clip import model as oc_model

    builder = getattr(oc_model, "_build_vision_tower", None)
    if builder is None:  # pragma: no cover - depends on the installed open_clip
        raise ImportError("this open_clip has no open_clip.model._build_vision_tower; install open_clip_torch>=2.24")
    vision_cfg = dict(model_cfg["vision_cfg"])
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False
        try:
            import timm  # noqa: F401
        except ImportError as error:  # pragma: no cover - open_clip_torch depends on timm
            raise ImportError(f"{source}: the vision tower is the timm model {vision_cfg['timm_model_name']!r}; "
                              "pip install timm") from error
    try:
        visual = builder(int(model_cfg["embed_dim"]), vision_cfg, quick_gelu=bool(model_cfg.get("quick_gelu", False)),
                         cast_dtype=None)
    except (TypeError, ValueError, RuntimeError, KeyError, AssertionError) as error:
        raise ValueError(f"{source}: open_clip cannot build the vision tower of this config "
                         f"(vision_cfg={model_cfg['vision_cfg']}): {error}") from error
    return visual


# --------------------------------------------------------------------------------------------- weights

def build_text(model_cfg: dict[str, Any], text_model: str | Path, source: str | Path = CONFIG_NAME):
    """(text tower, tokenizer) of an open_clip config whose text tower is a Hugging Face model, built from the
    local folder ``text_model`` (its config.json and tokenizer files); randomly initialised, never downloads."""
    _open_clip()
    from open_clip import model as oc_model
    from open_clip.tokenizer import HFTokenizer

    text_cfg = dict(model_cfg.get("text_cfg") or {})
    if not text_cfg.get("hf_model_name"):
        raise ValueError(f"{source}: the text tower is not a Hugging Face model (no text_cfg.hf_model_name); "
                         "CLIP-I image-text supports BiomedCLIP's BERT text tower only")
    folder = Path(text_model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"BiomedCLIP text model folder {folder} has no config.json: download config.json, "
                                f"vocab.txt and tokenizer_config.json of {text_cfg['hf_model_name']} from the Hugging "
                                f"Face hub into {folder}")
    text_cfg.update(hf_model_name=str(folder), hf_model_pretrained=False)
    tokenizer_kwargs = dict(text_cfg.pop("tokenizer_kwargs", None) or {})
    context_length = int(text_cfg.get("context_length", 77))
    text_cfg.pop("hf_tokenizer_name", None)
    text = oc_model._build_text_tower(int(model_cfg["embed_dim"]), text_cfg,
                                      quick_gelu=bool(model_cfg.get("quick_gelu", False)), cast_dtype=None)
    tokenizer = HFTokenizer(str(folder), context_length=context_length, **tokenizer_kwargs)
    return text, tokenizer


def read_state_dict_part(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The ``prefix*`` entries of an open_clip checkpoint (prefix removed); ValueError naming the file if none."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    part = {key.removeprefix("module.")[len(prefix):]: value for key, value in checkpoint.items()
            if isinstance(key, str) and key.removeprefix("module.").startswith(prefix)}
    if not part:
        raise ValueError(f"{path}: no '{prefix}*' weights in this open_clip checkpoint")
    return part


def read_visual_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``visual.*`` entries of an open_clip checkpoint, prefix removed; ValueError naming the file.

    Accepts what ``open_clip.factory.load_state_dict`` accepts (a plain state dict, ``{"state_dict": ...}``,
    ``module.``-prefixed keys, a ``.safetensors`` file); ``torch.load`` runs with ``weights_only=True``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path}: cannot be read as a PyTorch state dict ({type(error).__name__}: {error}); "
                         f"expected {WEIGHTS_NAME} from {HUB_REPO}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(f"{path}: not a state dict (got {type(checkpoint).__name__}); "
                         f"expected {WEIGHTS_NAME} from {HUB_REPO}")
    if all(isinstance(key, str) and key.startswith("module.") for key in checkpoint):
        checkpoint = {key[len("module."):]: value for key, value in checkpoint.items()}
    visual = {key[len(VISUAL_PREFIX):]: value for key, value in checkpoint.items()
              if isinstance(key, str) and key.startswith(VISUAL_PREFIX)}
    if not visual:
        raise ValueError(f"{path}: no '{VISUAL_PREFIX}*' weights, so not an open_clip CLIP checkpoint "
                         f"(first keys: {_keys_summary([str(key) for key in checkpoint])}); "
                         f"expected {WEIGHTS_NAME} from {HUB_REPO}")
    bad = [key for key, value in visual.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {_keys_summary(bad)}")
    return visual


def load_visual_weights(visual: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strictly load ``state_dict`` (prefix removed) into ``visual``; ValueError naming the file on a mismatch."""
    expected = visual.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
                  for key, value in expected.items() if key in state_dict and state_dict[key].shape != value.shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {VISUAL_PREFIX}* keys: {_keys_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected {VISUAL_PREFIX}* keys: {_keys_summary(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (file != config): {_keys_summary(mismatched)}")
        raise ValueError(f"{path}: the weights do not match the vision tower of {CONFIG_NAME} (wrong weights "
                         f"file, or a config from another model?): " + "; ".join(parts))
    visual.load_state_dict({key: value.float() if value.is_floating_point() else value
                            for key, value in state_dict.items()}, strict=True)


# --------------------------------------------------------------------------------------------- preprocessing

def resolve_preprocess(preprocess_cfg: dict[str, Any], image_size: Any) -> dict[str, Any]:
    """open_clip's defaults overlaid with ``preprocess_cfg``; ``size`` is the vision tower's image size."""
    _open_clip()
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    merged = merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)
    size = image_size if image_size is not None else merged["size"]
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"BiomedCLIP preprocessing needs a square input size, got {size}")
        size = size[0]
    mean = [float(value) for value in merged["mean"]]
    std = [float(value) for value in merged["std"]]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"preprocess_cfg mean/std must be 3 values (std > 0), got mean={mean} std={std}")
    interpolation = "bilinear" if merged["interpolation"] == "bilinear" else "bicubic"  # open_clip: else bicubic
    return {"size": int(size), "mean": mean, "std": std, "interpolation": interpolation,
            "resize_mode": merged.get("resize_mode", "shortest")}


def preprocess(images: torch.Tensor, size: int, mean, std, interpolation: str = "bicubic") -> torch.Tensor:
    """(B, H, W) float in [0, 1], square -> (B, 3, size, size) normalised network input.

    Gray -> 3 channels, antialiased resize (skipped at ``size``), clamp to [0, 1], ``(x - mean) / std``.
    """
    if images.ndim != 3:
        raise ValueError(f"expected (B, H, W) images, got shape {tuple(images.shape)}")
    x = images[:, None].float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode=interpolation, antialias=True, align_corners=False)
        x = x.clamp(0.0, 1.0)
    x = x.expand(-1, 3, -1, -1)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


# --------------------------------------------------------------------------------------------- evaluator

class BiomedCLIPEmbedder(Evaluator):
    """BiomedCLIP image embeddings: ``predict(images) -> {"embedding": (B, D) float32, unit L2 norm}``.

    Build with :meth:`from_folder` (a folder in the hub layout). ``visual`` is open_clip's image tower
    (eval mode, on ``device``); ``preprocess_cfg`` the resolved preprocessing (size, mean, std,
    interpolation).
    """

    name = "biomedclip"
    outputs = ("embedding",)

    def __init__(self, visual: nn.Module, preprocess_cfg: dict[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 32, weights_path: str | Path | None = None,
                 config_path: str | Path | None = None, text: nn.Module | None = None, tokenizer=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.visual = visual.to(self.device).float().eval()
        for parameter in self.visual.parameters():
            parameter.requires_grad_(False)
        self.preprocess_cfg = dict(preprocess_cfg)
        self.batch_size = int(batch_size)
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.config_path = Path(config_path) if config_path is not None else None
        self._identity: dict[str, Any] | None = None
        self.text = None if text is None else text.to(self.device).float().eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu",
                    batch_size: int = 32, text_model: str | Path | None = None,
                    with_text: bool = False) -> "BiomedCLIPEmbedder":
        """Load the image tower from a folder holding ``open_clip_config.json`` + ``open_clip_pytorch_model.bin``.

        Raises FileNotFoundError (naming the path and where to get the files) for a missing folder or
        file, ValueError naming the file for a config that is not an open_clip config or weights that
        are unreadable or do not fit the config's vision tower.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"BiomedCLIP folder not found: {folder}; {_install_hint(folder)}")
        config_path = folder / CONFIG_NAME
        weights_path = folder / WEIGHTS_NAME
        for needed in (config_path, weights_path):
            if not needed.is_file():
                raise FileNotFoundError(f"BiomedCLIP file missing: {needed}; {_install_hint(folder)}")
        model_cfg, raw_preprocess = read_config(config_path)
        visual = build_visual(model_cfg, config_path)
        load_visual_weights(visual, read_visual_state_dict(weights_path), weights_path)
        preprocess_cfg = resolve_preprocess(raw_preprocess, getattr(visual, "image_size", None))
        text = tokenizer = None
        if with_text or text_model is not None:  # the text tower, for CLIP-I image-text
            text, tokenizer = build_text(model_cfg, text_model or folder / TEXT_MODEL_DIR, config_path)
            part = read_state_dict_part(weights_path, TEXT_PREFIX)
            expected = text.state_dict()
            extra = [key for key in part if key not in expected]
            # transformers may keep buffers (position_ids) out of the state dict: tolerate only those
            missing = [key for key in expected if key not in part]
            if extra or missing:
                raise ValueError(f"{weights_path}: the text weights do not match the text tower of {config_path}: "
                                 f"missing {_keys_summary(missing)}; unexpected {_keys_summary(extra)}")
            text.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in part.items()}, strict=True)
        return cls(visual, preprocess_cfg, device=device, batch_size=batch_size, weights_path=weights_path,
                   config_path=config_path, text=text, tokenizer=tokenizer)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-norm BiomedCLIP text embeddings (N, D) float32 of ``texts`` (needs the text tower)."""
        if self.text is None or self.tokenizer is None:
            raise ValueError("this BiomedCLIPEmbedder was loaded without its text tower (from_folder(with_text=True))")
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.batch_size])).to(self.device)
                chunks.append(F.normalize(self.text(tokens).float(), dim=-1).cpu().numpy().astype(np.float32))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedding_dim), np.float32)

    @property
    def embedding_dim(self) -> int:
        with torch.no_grad():
            return int(self._embed(torch.zeros(1, 8, 8, device=self.device)).shape[1])

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.preprocess_cfg
        x = preprocess(images, cfg["size"], cfg["mean"], cfg["std"], cfg["interpolation"])
        return F.normalize(self.visual(x).float(), dim=-1)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.name)
        chunks = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
                chunks.append(self._embed(batch.to(self.device)).cpu().numpy().astype(np.float32))
        embedding = np.concatenate(chunks)
        return check_outputs({"embedding": embedding}, self, images.shape[0])

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "evaluator": self.name,
                "weights_sha256": cached_sha256(self.weights_path) if self.weights_path else None,
                "config_sha256": cached_sha256(self.config_path) if self.config_path else None,
                "open_clip": open_clip_version(),
                "preprocessing": PREPROCESSING_VERSION,
            }
            if type(self.visual).__name__ == "TimmModel":
                import timm

                self._identity["timm"] = timm.__version__
        return dict(self._identity)

    def __repr__(self) -> str:
        where = self.weights_path.parent if self.weights_path else "in-memory"
        return f"BiomedCLIPEmbedder({where}, size={self.preprocess_cfg['size']}, device={self.device})"


def clip_i(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CLIP-I per pair: cosine similarity of row-matched unit embeddings, (B, D) x (B, D) -> (B,)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"clip_i needs two (B, D) arrays of the same shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)).astype(np.float32)


__all__ = [
    "CONFIG_NAME", "HUB_REPO", "PREPROCESSING_VERSION", "WEIGHTS_NAME", "BiomedCLIPEmbedder", "build_visual",
    "clip_i", "load_visual_weights", "open_clip_version", "preprocess", "read_config", "read_visual_state_dict",
    "resolve_preprocess",
]
