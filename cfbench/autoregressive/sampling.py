"""Batched autoregressive sampling with a KV cache, per-sample random streams and token constraints.

This is our own loop (not ``transformers.generate``, which draws from the global RNG): every sample owns a
CPU ``torch.Generator`` seeded by its request, and each step draws exactly one uniform number per sample
from it and samples by inverse CDF on the model's device. A sample's tokens therefore depend only on its
prompt, its seed and the settings, never on the batch it is in, the device's RNG or the global RNG.

Per step, for every unfinished sample: logits (float32) -> optional classifier-free guidance (on
log-probabilities, as transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``) -> the constraint's
allowed ids -> temperature -> top-k -> top-p -> one draw. Prompts are left padded; the attention mask and
position ids skip the padding, so a padded prompt sees what it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from cfbench.core.seeds import derive_seed


@dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn.

    temperature: > 0, logits are divided by it (1.0 = the model's distribution).
    top_k: keep the k most likely tokens (0 = off).
    top_p: keep the smallest set of tokens whose probability reaches top_p, in (0, 1] (1.0 = off).
    max_new_tokens: cap on generated tokens per sample (>= 1).
    stop_ids: a sample ends after emitting one of these (the stop token is kept in its output).
    guidance_scale: classifier-free guidance scale on log-probabilities (1.0 = off; needs negative prompts).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_ids: tuple[int, ...] = ()
    guidance_scale: float = 1.0

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


class TokenConstraint(Protocol):
    """Which token ids a sample may emit next. ``allowed(generated)`` gets the ids this sample generated so
    far and returns a 1-D LongTensor of allowed ids, or None for any id; ``done(generated)`` says whether the
    sample is complete (e.g. the grammar is exhausted) so the loop stops it early."""

    def allowed(self, generated: Sequence[int]) -> torch.Tensor | None: ...

    def done(self, generated: Sequence[int]) -> bool: ...


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both ``B x max_len`` LongTensors, prompts aligned to the right."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError("empty prompt")
        ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def filter_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Temperature, top-k and top-p on ``B x V`` float logits (removed entries become -inf)."""
    logits = logits / settings.temperature
    if settings.top_k > 0 and settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = mass_before >= settings.top_p  # the first token is always kept
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def draw(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of ``B x V`` logits by inverse CDF with ``B`` uniforms in [0, 1)."""
    probs = logits.float().softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    index = index.clamp_(max=logits.shape[-1] - 1)
    # never land on a zero-probability token at the top edge of the CDF
    bad = probs.gather(-1, index[:, None]).squeeze(-1) <= 0
    if bool(bad.any()):
        index[bad] = probs[bad].argmax(dim=-1)
    return index


def _cache_argument(model) -> str:
    """The forward argument of the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(model, ids, mask, positions, cache, cache_argument):
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                   **{cache_argument: cache})
    return output.logits[:, -1, :].float(), getattr(output, cache_argument)


@torch.no_grad()
def sample_tokens(model, prompts: Sequence[Sequence[int]], generators: Sequence[torch.Generator],
                  settings: SamplingSettings, *, pad_id: int,
                  constraints: Sequence[TokenConstraint | None] | None = None,
                  negative_prompts: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """Generate tokens for each prompt; returns the new ids of each sample (stop id included, if hit).

    model: a causal LM taking ``input_ids, attention_mask, position_ids, past_key_values, use_cache,
        logits_to_keep`` (transformers' ``*ForCausalLM``). generators: one CPU generator per prompt.
    constraints: one per prompt (or None). negative_prompts: one per prompt, used when
        ``settings.guidance_scale != 1``: the negative rows run in the same batch and their log-probabilities
        are mixed as ``neg + scale * (pos - neg)``.
    """
    batch = len(prompts)
    if len(generators) != batch:
        raise ValueError(f"{batch} prompts but {len(generators)} generators")
    constraints = list(constraints) if constraints is not None else [None] * batch
    guided = settings.guidance_scale != 1.0
    if guided and (negative_prompts is None or len(negative_prompts) != batch):
        raise ValueError("classifier-free guidance needs one negative prompt per prompt")
    device = next(model.parameters()).device
    rows = list(prompts) + (list(negative_prompts) if guided else [])
    ids, mask = left_pad(rows, pad_id, device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache_argument = _cache_argument(model)
    logits, cache = _forward(model, ids, mask, positions, None, cache_argument)
    stop = torch.tensor(sorted(set(settings.stop_ids)), dtype=torch.long)
    generated: list[list[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    next_position = positions[:, -1:] + 1
    for _ in range(settings.max_new_tokens):
        if guided:
            positive, negative = logits[:batch].log_softmax(-1), logits[batch:].log_softmax(-1)
            logits = negative + settings.guidance_scale * (positive - negative)
        logits = _constrain(logits, constraints, generated)
        uniforms = torch.stack([torch.rand((), generator=g) for g in generators])
        tokens = draw(filter_logits(logits, settings), uniforms).cpu()
        for row in range(batch):
            if finished[row]:
                tokens[row] = pad_id
                continue
            generated[row].append(int(tokens[row]))
            if (len(stop) and bool((stop == tokens[row]).any())) or (
                    constraints[row] is not None and constraints[row].done(generated[row])):
                finished[row] = True
        if all(finished):
            break
        step_ids = torch.cat([tokens, tokens]) if guided else tokens
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1)
        logits, cache = _forward(model, step_ids[:, None].to(device), mask, next_position, cache,
                                 cache_argument)
        next_position = next_position + 1
    return generated


def _constrain(logits: torch.Tensor, constraints, generated) -> torch.Tensor:
    masked = None
    for row, constraint in enumerate(constraints):
        if constraint is None:
            continue
        allowed = constraint.allowed(generated[row])
        if allowed is None:
            continue
        if masked is None:
            masked = logits.clone()
        keep = torch.full_like(masked[row], float("-inf"))
        allowed = allowed.to(logits.device)
        keep[allowed] = masked[row, allowed]
        masked[row] = keep
    return logits if masked is None else masked


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of retry ``attempt`` of a sample (attempt 0 is the request's own seed)."""
    return int(seed) if attempt == 0 else derive_seed(int(seed) % 2**63, "retry", attempt)


def sample_with_retries(run: Callable[[list[int], list[int]], list[list[int]]], seeds: Sequence[int],
                        valid: Callable[[list[int]], bool], max_retries: int) -> tuple[list[list[int]], list[int]]:
    """Run ``run(indices, seeds)`` (sampling for a subset of the batch with these seeds) and redo the samples
    whose output is not ``valid`` with :func:`attempt_seed` seeds, at most ``max_retries`` times.

    Returns (outputs, attempts used per sample); a sample still invalid after the last retry keeps its last
    output (the caller decides what to do with it). Retries depend only on each sample's own seed.
    """
    indices = list(range(len(seeds)))
    outputs: list[list[int]] = [[] for _ in seeds]
    attempts = [0] * len(seeds)
    for attempt in range(max_retries + 1):
        if not indices:
            break
        results = run(indices, [attempt_seed(seeds[index], attempt) for index in indices])
        for index, tokens in zip(indices, results):
            outputs[index], attempts[index] = tokens, attempt
        indices = [index for index in indices if not valid(outputs[index])]
    return outputs, attempts


def cpu_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed (seeds are reduced modulo 2**63)."""
    return [torch.Generator().manual_seed(int(seed) % 2**63) for seed in seeds]
