"""The phantom evaluators: a small CNN trained on rendered phantoms, shipped inside the package.

On real chest X-rays the benchmark scores generated images with torchxrayvision classifiers (pathology
DenseNet, race model, age model). On the procedural phantom suite (:mod:`cfbench.phantom.render`) those networks
mean nothing, so the phantom splits are scored by :class:`PhantomEvaluator`: one small CNN
(:class:`PhantomNet`) with a shared trunk and four heads (5 findings, 3 groups, sex, age), trained by
:func:`cfbench.phantom.evaluator_training.train_phantom_evaluators` and shipped as
``cfbench/data/phantom_evaluator.safetensors`` (its held-out scores in ``phantom_evaluator.json``).

Preprocessing (the same function, :func:`resize_to_input`, is used in training and evaluation):
images float32 (B, H, W) in [0, 1] (0 = air, 1 = bone), any square size, are resized to 128 x 128 with
antialiased bilinear interpolation (``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
align_corners=False)``). No other normalisation: the network sees the [0, 1] intensities.

The weights file is self-describing: its safetensors metadata holds the architecture hyper-parameters,
the age normalisation, the output class orders and the phantom version the network was trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfbench.api.evaluator import Evaluator, check_images, check_outputs
from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.core.errors import MissingWeights, WeightsNotFoundError
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.core.resize import resize_batch
from cfbench.phantom.scenario import GROUPS, PHANTOM_VERSION

INPUT_SIZE = 128  # pixels; the network's input is (B, 1, 128, 128) in [0, 1]
WEIGHTS_NAME = "phantom_evaluator.safetensors"
SCORES_NAME = "phantom_evaluator.json"
DEFAULT_WEIGHTS = PACKAGE_DATA_DIR / WEIGHTS_NAME
FORMAT = "cfbench-phantom-evaluator"
FORMAT_VERSION = "1"
METADATA_KEY = "cfbench_phantom_evaluator"

# Age is sampled uniformly in 20..90 years: the network predicts z = (age - mean) / std.
AGE_MEAN = 55.0
AGE_STD = 70.0 / 12.0**0.5  # 20.2 years, the standard deviation of U(20, 90)


def resize_to_input(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize a batch to the network's input size: (B, H, W) or (B, 1, H, W) float -> (B, 1, size, size).

    Antialiased bilinear (``align_corners=False``), so downsampling 512 -> 128 averages instead of
    aliasing. Images already at ``size`` are returned unchanged (no resampling). Used by training and by
    :class:`PhantomEvaluator`, so both see identically preprocessed images.
    """
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) images, got shape {tuple(images.shape)}")
    return resize_batch(images[:, 0], (size, size), antialias=True)[:, None]


class PhantomNet(nn.Module):
    """A small CNN for 128 x 128 single-channel phantom radiographs in [0, 1].

    Trunk: ``len(channels)`` blocks of ``convs[i]`` x (3x3 conv -> BatchNorm -> ReLU) followed by 2x2 max
    pooling (128 -> 4 pixels after 5 blocks), then global average pooling to a ``channels[-1]``-d feature
    vector (post-ReLU, >= 0; the FID features). Heads (linear, on the features):

    - ``pathology``: 5 logits, columns in ``EVALUATED_FINDINGS`` order;
    - ``race``: 3 logits, columns in ``GROUPS`` order (the phantom's stand-in for race);
    - ``sex``: 1 logit of P(male);
    - ``age``: 1 output, the normalised age z = (age - age_mean) / age_std; :meth:`forward` also returns
      it de-normalised to years.

    Args:
        channels: output channels of each block.
        convs: conv layers in each block (same length as ``channels``).
        age_mean, age_std: the age normalisation, years.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 256), convs: tuple[int, ...] = (1, 1, 2, 2, 1),
                 age_mean: float = AGE_MEAN, age_std: float = AGE_STD):
        super().__init__()
        if len(channels) != len(convs):
            raise ValueError("channels and convs must have the same length")
        self.config = {"channels": list(channels), "convs": list(convs), "age_mean": float(age_mean),
                       "age_std": float(age_std), "input_size": INPUT_SIZE}
        blocks = []
        in_channels = 1
        for out_channels, n_convs in zip(channels, convs):
            layers: list[nn.Module] = []
            for index in range(n_convs):
                layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1,
                                     bias=False),
                           nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.trunk = nn.Sequential(*blocks)
        self.feature_dim = in_channels
        self.pathology = nn.Linear(in_channels, len(EVALUATED_FINDINGS))
        self.race = nn.Linear(in_channels, len(GROUPS))
        self.sex = nn.Linear(in_channels, 1)
        self.age = nn.Linear(in_channels, 1)
        self.age_mean, self.age_std = float(age_mean), float(age_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 128, 128) images in [0, 1] -> (B, feature_dim) pooled trunk features."""
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1, 128, 128) images in [0, 1] -> dict of tensors:

        ``features`` (B, D); ``pathology`` (B, 5) logits; ``race`` (B, 3) logits; ``sex`` (B,) logit of
        P(male); ``age_z`` (B,) normalised age; ``age`` (B,) age in years.
        """
        features = self.features(x)
        age_z = self.age(features)[:, 0]
        return {
            "features": features,
            "pathology": self.pathology(features),
            "race": self.race(features),
            "sex": self.sex(features)[:, 0],
            "age_z": age_z,
            "age": age_z * self.age_std + self.age_mean,
        }


def weights_metadata(net: PhantomNet, phantom_version: str = PHANTOM_VERSION, **extra: Any) -> dict[str, str]:
    """The safetensors metadata that makes a weights file self-describing.

    One key, ``METADATA_KEY``, holding a JSON object: format, format_version, config (architecture and
    age normalisation), findings and groups (output column orders), phantom_version, plus ``extra``.
    A single key keeps the file byte-for-byte reproducible (safetensors writes a multi-key metadata dict
    in hash order, which changes from run to run).
    """
    fields = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": net.config,
        "findings": list(EVALUATED_FINDINGS),
        "groups": list(GROUPS),
        "phantom_version": str(phantom_version),
        **extra,
    }
    return {METADATA_KEY: json.dumps(fields, sort_keys=True)}


def read_metadata(metadata: dict[str, str] | None) -> dict[str, Any]:
    """The JSON fields of a weights file's metadata ({} when it has none of ours)."""
    try:
        fields = json.loads((metadata or {})[METADATA_KEY])
    except (KeyError, TypeError, ValueError):
        return {}
    return fields if isinstance(fields, dict) else {}


def save_weights(net: PhantomNet, path: str | Path, **extra: Any) -> Path:
    """Write ``net``'s state dict (fp32, contiguous) with :func:`weights_metadata` to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
    save_file(tensors, str(path), metadata=weights_metadata(net, **extra))
    return path


def load_net(path: str | Path, device: str = "cpu") -> tuple[PhantomNet, dict[str, Any]]:
    """A :class:`PhantomNet` in eval mode built from a weights file's metadata, and the metadata fields.

    Raises FileNotFoundError (missing file) or ValueError (not a phantom evaluator file, or tensors that
    do not fit the architecture its metadata describes), both naming the file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(MissingWeights(
            "phantom evaluator weights", path,
            "Train them with `cfbench phantom train-evaluators`, or reinstall cfbench, which ships them in cfbench/data/."))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    fields = read_metadata(metadata)
    if fields.get("format") != FORMAT:
        raise ValueError(f"{path}: not a phantom evaluator weights file (no {METADATA_KEY!r} metadata with "
                         f"format {FORMAT!r})")
    try:
        config = fields["config"]
        net = PhantomNet(tuple(config["channels"]), tuple(config["convs"]), config["age_mean"], config["age_std"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad phantom evaluator config in the metadata ({error!r})") from error
    expected = net.state_dict()
    problems = sorted(set(expected) ^ set(tensors))
    problems += [f"{name}: file {tuple(tensors[name].shape)} vs network {tuple(expected[name].shape)}"
                 for name in sorted(set(expected) & set(tensors)) if tensors[name].shape != expected[name].shape]
    if problems:
        raise ValueError(f"{path}: tensors do not match the PhantomNet architecture of its metadata "
                         f"(wrong weights file?): {'; '.join(problems[:5])}"
                         + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))
    net.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in tensors.items()})
    return net.to(device).eval(), fields


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PhantomEvaluator(Evaluator):
    """The shipped phantom CNN as an :class:`~cfbench.api.evaluator.Evaluator`.

    ``predict(images)`` with images float32 (B, H, W) in [0, 1], any square size, returns float32 numpy:
    ``pathology`` (B, 5) sigmoid probabilities (``EVALUATED_FINDINGS`` order), ``features`` (B, 256),
    ``race`` (B, 3) softmax over ``GROUPS``, ``sex`` (B,) P(male), ``age`` (B,) years.
    """

    name = "phantom-cnn"
    outputs = ("pathology", "features", "race", "sex", "age")
    race_classes = GROUPS

    def __init__(self, net: PhantomNet, weights_path: str | Path | None = None, metadata: dict[str, Any] | None = None,
                 device: str = "cpu", batch_size: int = 64):
        self.net = net.to(device).eval()
        self.device = device
        self.batch_size = int(batch_size)
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.metadata = dict(metadata or {})
        self._sha256: str | None = None

    @classmethod
    def from_file(cls, path: str | Path | None = None, device: str = "cpu", batch_size: int = 64) -> "PhantomEvaluator":
        """Load weights (default: the shipped ``cfbench/data/phantom_evaluator.safetensors``)."""
        path = DEFAULT_WEIGHTS if path is None else Path(path)
        net, metadata = load_net(path, device)
        return cls(net, path, metadata, device, batch_size)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = check_images(images, self.name)
        self.net.eval()
        parts: dict[str, list[np.ndarray]] = {key: [] for key in self.outputs}
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size])).to(self.device)
            out = self.net(resize_to_input(batch))
            parts["pathology"].append(torch.sigmoid(out["pathology"]).cpu().numpy())
            parts["features"].append(out["features"].cpu().numpy())
            parts["race"].append(torch.softmax(out["race"], dim=1).cpu().numpy())
            parts["sex"].append(torch.sigmoid(out["sex"]).cpu().numpy())
            parts["age"].append(out["age"].cpu().numpy())
        if len(images) == 0:
            widths = {"pathology": len(EVALUATED_FINDINGS), "features": self.net.feature_dim, "race": len(GROUPS)}
            outputs = {key: np.zeros((0, widths[key]) if key in widths else (0,), np.float32) for key in self.outputs}
        else:
            outputs = {key: np.concatenate(value).astype(np.float32, copy=False) for key, value in parts.items()}
        return check_outputs(outputs, self, len(images))

    def identity(self) -> dict[str, Any]:
        if self._sha256 is None and self.weights_path is not None:
            self._sha256 = _sha256(self.weights_path)
        return {
            "evaluator": self.name,
            "weights_sha256": self._sha256,
            "phantom_version": self.metadata.get("phantom_version", PHANTOM_VERSION),
            "input_size": INPUT_SIZE,
        }
