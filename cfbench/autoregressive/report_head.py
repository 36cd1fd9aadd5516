"""A report head that writes text from diffusion latents: a ViT over the (scaled) VAE latents whose pooled
output is the one "encoder token" of a BART decoder (CXR-IRGen's language module), sampled with the shared
per-sample-seeded loop of :mod:`cfbench.autoregressive.sampling`.

The ViT (transformers ``ViTModel``; CXR-IRGen: image 32, patch 2, 4 channels, hidden 768) reads scaled latents
``B x 4 x h x w`` (h = w = the ViT's ``image_size``) and gives ``pooler_output`` ``B x d`` (tanh of a dense
layer over the CLS token). That vector is the encoder hidden state, ``B x 1 x d``, that the decoder of a
``BartForConditionalGeneration`` cross-attends to (no encoder attention mask); the decoder starts from
``decoder_start_token_id`` (BART: the eos id ``</s>``) and each step's logits are ``lm_head(h) +
final_logits_bias``, as the release computes them. The loop here keeps a KV cache and draws one uniform per
sample per step from that sample's CPU generator; tokens depend on the sample alone, never on its batch.

transformers is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from cfbench.autoregressive.sampling import SamplingSettings, _cache_argument, cpu_generators, sample_tokens


@dataclass
class ReportHead:
    """The loaded networks: ``encoder`` (ViTModel over latents), ``decoder`` (BartForConditionalGeneration,
    its encoder unused) and the decoder's ``tokenizer``."""

    encoder: Any
    decoder: Any
    tokenizer: Any

    @property
    def latent_size(self) -> int:
        """Side of the latents the ViT reads, in latent pixels (32 for CXR-IRGen: 256 px images / 8)."""
        return int(self.encoder.config.image_size)

    @property
    def latent_channels(self) -> int:
        return int(self.encoder.config.num_channels)

    @property
    def eos_id(self) -> int:
        return int(self.decoder.config.eos_token_id)

    @property
    def start_id(self) -> int:
        start = self.decoder.config.decoder_start_token_id
        return int(self.eos_id if start is None else start)


def load_report_head(encoder_folder: str | Path, decoder_folder: str | Path, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> ReportHead:
    """Load a ``ViTModel`` folder and a ``BartForConditionalGeneration`` folder (with its tokenizer) from local
    paths (``local_files_only``); ValueError when the ViT's pooled width differs from BART's ``d_model``."""
    from transformers import AutoTokenizer, BartForConditionalGeneration, ViTModel

    encoder = ViTModel.from_pretrained(encoder_folder, dtype=dtype, local_files_only=True)
    decoder = BartForConditionalGeneration.from_pretrained(decoder_folder, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(decoder_folder, local_files_only=True)
    if encoder.config.hidden_size != decoder.config.d_model:
        raise ValueError(f"report encoder {encoder_folder} gives {encoder.config.hidden_size}-d vectors but the "
                         f"decoder {decoder_folder} has d_model {decoder.config.d_model}")
    for network in (encoder, decoder):
        network.to(device).eval().requires_grad_(False)
    return ReportHead(encoder, decoder, tokenizer)


@torch.no_grad()
def encode_latents(head: ReportHead, latents: torch.Tensor) -> torch.Tensor:
    """The ViT's pooled output of scaled latents (float ``B x C x h x w``), as ``B x 1 x d`` encoder states."""
    size, channels = head.latent_size, head.latent_channels
    if tuple(latents.shape[1:]) != (channels, size, size):
        raise ValueError(f"the report encoder reads {channels} x {size} x {size} latents, got "
                         f"{tuple(latents.shape[1:])}")
    parameter = next(head.encoder.parameters())
    pooled = head.encoder(pixel_values=latents.to(parameter.device, parameter.dtype)).pooler_output
    return pooled[:, None, :]


class DecoderAsCausalLM(torch.nn.Module):
    """BART's decoder with fixed encoder states, callable as :func:`sample_tokens` calls a causal LM.

    The prompts are all the one start token, so there is no padding: the attention mask and position ids the
    loop passes are all-ones and ``0..t`` and are not needed (BART counts positions from its cache)."""

    def __init__(self, bart, encoder_states: torch.Tensor):
        super().__init__()
        from transformers.modeling_outputs import BaseModelOutput

        self.bart = bart
        self.encoder_outputs = BaseModelOutput(last_hidden_state=encoder_states)
        self.cache_argument = _cache_argument(bart)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                logits_to_keep=1):
        output = self.bart(decoder_input_ids=input_ids, encoder_outputs=self.encoder_outputs, use_cache=True,
                           **{self.cache_argument: past_key_values})
        cache = getattr(output, self.cache_argument, None)
        if cache is None:
            cache = output.past_key_values
        return SimpleNamespace(logits=output.logits[:, -logits_to_keep:, :], past_key_values=cache)


@dataclass(frozen=True)
class Report:
    """One generated report: ``text`` (special tokens skipped, stripped), ``tokens`` (the sampled ids, the stop
    id included when hit) and ``stopped`` (True when it ended at the eos id before the cap)."""

    text: str
    tokens: list[int]
    stopped: bool


def generate_reports(head: ReportHead, latents: torch.Tensor, seeds: Sequence[int], max_tokens: int,
                     stop_at_eos: bool) -> list[Report]:
    """Sample one report per latent with the model's own distribution (temperature 1, no top-k / top-p).

    latents: float ``B x 4 x h x w`` scaled latents (CXR-IRGen: VAE posterior x 0.18215).
    seeds: one per sample; each sample draws from its own CPU ``torch.Generator`` seeded with it.
    max_tokens: the cap on sampled tokens (>= 1; the release samples exactly 512).
    stop_at_eos: end a sample at its first eos token (else all ``max_tokens`` are drawn, as released; the
        text after an eos is still decoded, special tokens skipped).
    """
    states = encode_latents(head, latents)
    settings = SamplingSettings(max_new_tokens=max_tokens, stop_ids=(head.eos_id,) if stop_at_eos else ())
    pad = head.decoder.config.pad_token_id
    tokens = sample_tokens(DecoderAsCausalLM(head.decoder, states), [[head.start_id]] * len(seeds),
                           cpu_generators(seeds), settings, pad_id=int(head.eos_id if pad is None else pad))
    texts = head.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return [Report(text.strip(), ids, stop_at_eos and bool(ids) and ids[-1] == head.eos_id)
            for text, ids in zip(texts, tokens)]
