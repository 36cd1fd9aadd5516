"""Stage 4, shared generator loops (autoregressive): what image-token language-model adapters share
(LLM-CXR, ProgEmu), beside :mod:`cfbench.diffusion`.

Owns: batched sampling with left padding, a KV cache, per-sample CPU generators, temperature / top-k /
top-p, classifier-free guidance, stop ids, a new-token cap and bounded retries
(:mod:`~cfbench.autoregressive.sampling`); token grammars for constrained decoding
(:mod:`~cfbench.autoregressive.constraints`); VQ tokenizers from index grids to [0, 1] grayscale: the
taming VQ-GAN through torchxrayvision's ``VQModel`` (:mod:`~cfbench.autoregressive.taming_vq`) and Emu3's
vision tokenizer as transformers' ``Emu3VQVAE`` with the BAAI key conversion
(:mod:`~cfbench.autoregressive.emu3_vq`); Emu3's tiktoken tokenizer and causal LM
(:mod:`~cfbench.autoregressive.emu3_text`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`, :mod:`cfbench.phantom`.

Importing this package imports torch (transformers, tiktoken and torchxrayvision only inside functions).
"""

from cfbench.autoregressive.constraints import GrammarConstraint, TextTail, forced, id_set, image_grid
from cfbench.autoregressive.sampling import (
    SamplingSettings,
    attempt_seed,
    cpu_generators,
    draw,
    filter_logits,
    left_pad,
    sample_tokens,
    sample_with_retries,
)

__all__ = [
    "GrammarConstraint", "SamplingSettings", "TextTail", "attempt_seed", "cpu_generators", "draw",
    "filter_logits", "forced", "id_set", "image_grid", "left_pad", "sample_tokens", "sample_with_retries",
]
