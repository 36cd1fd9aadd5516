"""The precision policy of every generator: the ``precision`` option -> a torch dtype for the weights."""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def resolve_dtype(precision: str, device, cuda_auto: str = "fp16"):
    """The weights dtype: "fp32" / "fp16" / "bf16" as named; "auto" = ``cuda_auto`` on CUDA (fp16 for
    diffusion networks, bf16 for language models, whose activations overflow fp16), float32 elsewhere."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = cuda_auto if torch.device(device).type == "cuda" else "fp32"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
