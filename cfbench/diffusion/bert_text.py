"""CXR-BERT (the text encoder of BioViL-T, RadEdit's text encoder) loaded without remote code.

The released folder (``microsoft/BiomedVLP-BioViL-T``) declares ``model_type: cxr-bert`` and custom classes
(``CXRBertModel``, ``CXRBertTokenizer``) that transformers would import from the folder with
``trust_remote_code``. The network is a plain BERT masked-LM (``bert.*`` keys, plus the unused MLM head
``cls.predictions.*``) and a CLS projection head (``cls_projection_head.*``: dense, GELU, LayerNorm, dense to
``projection_size``); the tokenizer is a BERT WordPiece tokenizer (``vocab.txt``). This module builds
transformers' ``BertModel`` from the folder's config and weights, the projection head as a small module, and
a ``BertTokenizer`` with ``model_max_length`` 128 (RadEdit's), so nothing from the folder is executed.

Calling :class:`CXRBertTextEncoder` returns ``(last_hidden_state,)`` (``B x L x 768``): what RadEdit's UNet
cross-attends to (CXRBertModel's ``last_hidden_state``); it needs the attention mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_MAX_LENGTH = 128
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
CONFIG_ONLY_KEYS: tuple[str, ...] = ("auto_map", "architectures", "model_type", "transformers_version", "torch_dtype",
                                     "dtype")


class ProjectionHead(torch.nn.Module):
    """CXR-BERT's CLS projection: dense (hidden -> hidden), GELU, LayerNorm, dense (hidden -> projection)."""

    def __init__(self, hidden_size: int, projection_size: int, eps: float):
        super().__init__()
        self.dense_to_hidden = torch.nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = torch.nn.LayerNorm(hidden_size, eps=eps)  # noqa: N815 (the released key name)
        self.dense_to_output = torch.nn.Linear(hidden_size, projection_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_to_output(self.LayerNorm(torch.nn.functional.gelu(self.dense_to_hidden(hidden))))


class CXRBertTextEncoder(torch.nn.Module):
    """BERT + CLS projection with CXR-BERT's weights; ``forward`` returns ``(last_hidden_state,)``."""

    def __init__(self, config, projection_size: int):
        from transformers import BertModel

        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls_projection_head = ProjectionHead(config.hidden_size, projection_size, config.layer_norm_eps)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        """input_ids, attention_mask: int64 ``B x L``. Returns ``(B x L x hidden,)``, the last hidden states."""
        return (self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,)

    def projected_cls(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected CLS embeddings ``B x projection_size`` (BioViL-T's sentence embedding)."""
        cls = self.forward(input_ids, attention_mask)[0][:, 0]
        return torch.nn.functional.normalize(self.cls_projection_head(cls), dim=-1)


def weights_file(folder: Path) -> Path | None:
    """The folder's weights file (safetensors preferred), or None."""
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_cxr_bert(folder: str | Path, dtype: torch.dtype = torch.float32):
    """(CXRBertTextEncoder, BertTokenizer) from a BioViL-T / CXR-BERT folder: ``config.json``, ``vocab.txt``,
    ``tokenizer_config.json`` (optional) and ``pytorch_model.bin`` or ``model.safetensors``.

    Raises ValueError naming the folder when a BERT weight is missing or has another shape."""
    from transformers import BertConfig, BertTokenizer

    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    projection_size = int(raw.get("projection_size", 128))
    config = BertConfig.from_dict({key: value for key, value in raw.items() if key not in CONFIG_ONLY_KEYS})
    encoder = CXRBertTextEncoder(config, projection_size)
    path = weights_file(folder)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    state = _read_state_dict(path)
    wanted = encoder.state_dict()
    selected = {key: value for key, value in state.items() if key in wanted}
    missing = sorted(key for key in wanted if key not in selected and not key.startswith("cls_projection_head."))
    wrong = sorted(key for key, value in selected.items() if value.shape != wanted[key].shape)
    if missing or wrong:
        raise ValueError(f"{path} is not a CXR-BERT checkpoint of this config: missing {missing[:3]} "
                         f"({len(missing)}), wrong shapes {wrong[:3]}")
    encoder.load_state_dict(selected, strict=False)
    tokenizer_config = folder / "tokenizer_config.json"
    lower = json.loads(tokenizer_config.read_text()).get("do_lower_case", True) if tokenizer_config.is_file() else True
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=lower,
                              model_max_length=TEXT_MAX_LENGTH)
    return encoder.to(dtype), tokenizer
