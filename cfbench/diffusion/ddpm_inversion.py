"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli, CVPR 2024) and the masked reverse
pass RadEdit edits with. Read top to bottom: the inversion record, the guided prediction, the forward pass
(:func:`invert_edit_friendly`), the reverse pass (:func:`edit_from_inversion`).

Forward: the clean latents ``x0`` are noised *independently* to every timestep of the schedule,
``x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps_i`` (one seeded standard normal ``eps_i`` per step and sample),
and for every step the noise map ``z_i = (x_{i+1} - mu_i(x_i)) / sigma_i`` is recorded that makes the
stochastic (eta = 1) DDIM step from ``x_i`` land exactly on ``x_{i+1}`` (``mu_i``: the step's mean under the
inversion prompt's guided prediction; ``sigma_i``: its standard deviation). Reverse: starting from the
inverted latents at step ``skip``, each step takes the guided prediction of the *edit* prompt and the recorded
``z_i``; with the edit prompt equal to the inversion prompt the reverse pass retraces the inverted latents.

The scheduler is whatever DDIM scheduler the components carry (RadEdit: linear betas, trailing spacing);
``sigma_i`` and ``mu_i`` come from its own ``step`` (with zero and unit variance noise), so forward and
reverse use the same arithmetic. A step whose sigma is 0 (the last one when the final alpha is 1) records
``z = 0``. Like diffusers' LEdits++ inversion, the recorded trajectory keeps ``mu_i + sigma_i z_i`` (equal to
the independent draw up to rounding), so the reverse pass reproduces it to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfbench.diffusion.components import DiffusionComponents, predict_noise_branches

PASTE_BACK_MODES: tuple[str, ...] = ("released", "corrected")


@dataclass(frozen=True)
class GuidedText:
    """A prompt's embeddings with classifier-free guidance: ``eps = eps_null + scale (eps_text - eps_null)``.

    text / null: ``B x L x D`` embeddings of the prompt and of the empty prompt. scale: the guidance weight
    (>= 0; 1 = the prompt's prediction alone). ``unconditional=True`` means the prompt is the empty prompt:
    the prediction is ``eps_null`` and no text branch is run (as LEdits++ inverts with source prompt "").
    """

    text: torch.Tensor
    null: torch.Tensor
    scale: float
    unconditional: bool = False


@dataclass(frozen=True)
class Inversion:
    """The record of one forward pass for a batch of B images.

    timesteps: the N timesteps of the schedule, noisiest first.
    latents: float32 ``B x (N + 1) x C x h x w``: ``latents[:, i]`` at ``timesteps[i]`` (i < N), and
        ``latents[:, N]`` what the last step reaches (x0 itself when its sigma > 0).
    noise_maps: float32 ``B x N x C x h x w``: ``z_i`` of the step from ``timesteps[i]``.
    clean: float32 ``B x C x h x w``, the scaled clean latents x0 that were inverted.
    prompt: the inversion prompt (its guided prediction runs outside the edit mask in the reverse pass).
    """

    timesteps: list[int]
    latents: torch.Tensor
    noise_maps: torch.Tensor
    clean: torch.Tensor
    prompt: GuidedText


@torch.no_grad()
def guided_noise(components: DiffusionComponents, latents: torch.Tensor, timestep: int,
                 prompts: list[GuidedText]) -> list[torch.Tensor]:
    """The guided prediction of each prompt (same latents), from one UNet call over all distinct branches:
    the empty prompt once, plus one branch per prompt that is not unconditional."""
    null = prompts[0].null
    conditioned = [prompt for prompt in prompts if not prompt.unconditional]
    branches = predict_noise_branches(components, latents, timestep, None,
                                      [null, *[prompt.text for prompt in conditioned]])
    unconditional, by_prompt = branches[0], iter(branches[1:])
    guided = []
    for prompt in prompts:
        if prompt.unconditional:
            guided.append(unconditional)
        else:
            guided.append(unconditional + prompt.scale * (next(by_prompt) - unconditional))
    return guided


def _step_mean_and_sigma(scheduler, prediction: torch.Tensor, timestep: int,
                         latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eta = 1 DDIM step's mean and standard deviation (a scalar tensor), from the scheduler's own step."""
    mean = scheduler.step(prediction, timestep, latents, eta=1.0, variance_noise=torch.zeros_like(latents),
                          return_dict=False)[0]
    with_unit = scheduler.step(prediction, timestep, latents, eta=1.0, variance_noise=torch.ones_like(latents),
                               return_dict=False)[0]
    return mean, (with_unit - mean).mean()


@torch.no_grad()
def invert_edit_friendly(components: DiffusionComponents, clean: torch.Tensor, forward_noise: torch.Tensor,
                         prompt: GuidedText, num_steps: int) -> Inversion:
    """The forward pass (see the module docstring).

    clean: float32 ``B x C x h x w`` scaled latents x0 (the UNet's space).
    forward_noise: float32 ``B x N x C x h x w``, ``forward_noise[:, i]`` the independent standard normal
        draw that noises x0 to ``timesteps[i]`` (per sample from its own seed: batch-independent).
    prompt: the inversion prompt (RadEdit: the empty prompt).
    num_steps: N, the schedule's number of steps.
    """
    scheduler = components.scheduler
    scheduler.set_timesteps(num_steps, device="cpu")
    timesteps = [int(t) for t in scheduler.timesteps]
    if forward_noise.shape[1] != len(timesteps):
        raise ValueError(f"forward_noise has {forward_noise.shape[1]} draws per sample, expected {len(timesteps)}")
    noised = [scheduler.add_noise(clean, forward_noise[:, i], torch.tensor([t])) for i, t in enumerate(timesteps)]
    trajectory, noise_maps = [noised[0]], []
    for index, timestep in enumerate(timesteps):
        current = trajectory[-1]
        target = noised[index + 1] if index + 1 < len(timesteps) else clean
        (prediction,) = guided_noise(components, current, timestep, [prompt])
        mean, sigma = _step_mean_and_sigma(scheduler, prediction, timestep, current)
        z = (target - mean) / sigma if float(sigma) > 0 else torch.zeros_like(target)
        noise_maps.append(z)
        trajectory.append(mean + sigma * z)
    return Inversion(timesteps, torch.stack(trajectory, dim=1), torch.stack(noise_maps, dim=1), clean, prompt)


@torch.no_grad()
def edit_from_inversion(components: DiffusionComponents, inversion: Inversion, prompt: GuidedText,
                        skip_steps: int = 0, edit_mask: torch.Tensor | None = None,
                        keep_mask: torch.Tensor | None = None, paste_back: str = "corrected") -> torch.Tensor:
    """The reverse pass from ``inversion.latents[:, skip_steps]`` with the edit ``prompt`` and the recorded noise.

    edit_mask / keep_mask: float32 ``B x 1 x h x w`` on the latent grid (1 = the region), or None.
    Inside the edit mask each step uses the edit prompt's guided prediction, outside it the inversion
    prompt's (so unmasked regions follow the inverted path); then the inverted latents are pasted back:

    - ``corrected``: inside the keep mask, with the inverted latents at the step's *new* timestep (the clean
      x0 after the last step): the keep region equals the inversion exactly, other regions outside the edit
      mask evolve under the inversion prompt (they may adapt to the edit; no seam);
    - ``released``: everywhere outside the edit mask (and in the keep mask), with the inverted latents of
      the step's *starting* timestep, as the released RadEdit pipeline does (one step too noisy; the keep
      mask matters only inside the edit mask, since everything outside is pasted anyway).

    With neither mask nothing is pasted. Returns the final scaled latents, float32 ``B x C x h x w``.
    """
    if paste_back not in PASTE_BACK_MODES:
        raise ValueError(f"paste_back must be one of {PASTE_BACK_MODES}, got {paste_back!r}")
    steps = len(inversion.timesteps)
    if not 0 <= skip_steps < steps:
        raise ValueError(f"skip_steps must lie in [0, {steps}), got {skip_steps}")
    scheduler = components.scheduler
    scheduler.set_timesteps(steps, device="cpu")
    latents = inversion.latents[:, skip_steps]
    for index in range(skip_steps, steps):
        timestep = inversion.timesteps[index]
        if edit_mask is None:
            (prediction,) = guided_noise(components, latents, timestep, [prompt])
        else:
            edited, inverted = guided_noise(components, latents, timestep, [prompt, inversion.prompt])
            prediction = edit_mask * edited + (1.0 - edit_mask) * inverted
        latents = scheduler.step(prediction, timestep, latents, eta=1.0,
                                 variance_noise=inversion.noise_maps[:, index], return_dict=False)[0]
        latents = _paste_back(latents, inversion, index, edit_mask, keep_mask, paste_back)
    return latents


def _paste_back(latents: torch.Tensor, inversion: Inversion, index: int, edit_mask: torch.Tensor | None,
                keep_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    if mode == "released":
        reference = inversion.latents[:, index]
        if keep_mask is not None:
            latents = keep_mask * reference + (1.0 - keep_mask) * latents
        if edit_mask is not None:
            latents = edit_mask * latents + (1.0 - edit_mask) * reference
        return latents
    if keep_mask is None:
        return latents
    last = index + 1 == len(inversion.timesteps)
    reference = inversion.clean if last else inversion.latents[:, index + 1]
    return keep_mask * reference + (1.0 - keep_mask) * latents
