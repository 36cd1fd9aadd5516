"""Edit-friendly DDPM inversion: its defining property, diffusers' LEdits++ inversion as the reference, and the
masked paste-back, on a tiny random Stable Diffusion folder (DDIM, leading spacing, as LEdits++ sets it)."""

from __future__ import annotations

import pytest
import torch

from cfbench import diffusion

SIZE = 32
STEPS = 8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def components(tiny_sd):
    return diffusion.load_diffusion_components(tiny_sd, "StableDiffusionPipeline")


def images(n: int) -> torch.Tensor:
    return torch.rand((n, SIZE, SIZE), generator=torch.Generator().manual_seed(n))


def invert(components, prompt: str = "", scale: float = 1.0, seeds=(1, 2)):
    clean = diffusion.encode_images(components, images(len(seeds))) * components.latent_scaling
    noise = diffusion.seeded_noise(list(seeds), (STEPS, *clean.shape[1:]), components.device)
    null = diffusion.encode_text(components, [""] * len(seeds))
    guided = diffusion.GuidedText(diffusion.encode_text(components, [prompt] * len(seeds)), null, scale,
                                  unconditional=prompt == "")
    return diffusion.invert_edit_friendly(components, clean, noise, guided, STEPS), guided


@pytest.mark.parametrize("prompt,scale,skip", [("", 1.0, 0), ("left pleural effusion", 3.0, 0),
                                               ("left pleural effusion", 3.0, 3)])
def test_reverse_pass_with_the_inversion_prompt_reconstructs_the_inverted_latents(components, prompt, scale, skip):
    inversion, guided = invert(components, prompt, scale)
    assert inversion.latents.shape[:2] == (2, STEPS + 1)
    rebuilt = diffusion.edit_from_inversion(components, inversion, guided, skip_steps=skip)
    torch.testing.assert_close(rebuilt, inversion.latents[:, -1], atol=1e-4, rtol=0)
    # the record is the independent forward draws (up to rounding): x_i = sqrt(abar) x0 + sqrt(1 - abar) eps_i
    first = components.scheduler.add_noise(inversion.clean, diffusion.seeded_noise([1, 2], (STEPS, 4, 16, 16),
                                           components.device)[:, 0], torch.tensor([inversion.timesteps[0]]))
    torch.testing.assert_close(inversion.latents[:, 0], first, atol=1e-5, rtol=0)


def test_another_edit_prompt_changes_the_result(components):
    inversion, _ = invert(components)
    null = diffusion.encode_text(components, ["", ""])
    edit = diffusion.GuidedText(diffusion.encode_text(components, ["cardiomegaly"] * 2), null, 7.5)
    edited = diffusion.edit_from_inversion(components, inversion, edit)
    assert (edited - inversion.latents[:, -1]).abs().max() > 1e-2


def test_matches_diffusers_ledits_pp_inversion_and_reconstruction(components, tiny_sd):
    """LEdits++ inverts the same way (independent forward draws, recorded DDIM eta=1 noise); with source prompt
    "" and no edit concept its reverse pass is ours with the empty edit prompt. Its forward draws come from one
    generator, smallest timestep first: we hand ours the same draws."""
    from diffusers import DDIMScheduler, LEditsPPPipelineStableDiffusion

    class LongIndexDDIM(DDIMScheduler):
        """LEdits++ (diffusers 0.42) calls add_noise with a float timestep tensor, which DDIM cannot index
        with; the cast is the only change."""

        def add_noise(self, original_samples, noise, timesteps):
            return super().add_noise(original_samples, noise, timesteps.long())

    pipe = LEditsPPPipelineStableDiffusion(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=LongIndexDDIM.from_config(components.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = images(1)
    pipe.invert(image[:, None].expand(-1, 3, -1, -1), source_prompt="", num_inversion_steps=STEPS, skip=0.0,
                generator=torch.Generator().manual_seed(7), height=SIZE, width=SIZE)
    generator = torch.Generator().manual_seed(7)
    draws = [torch.randn((1, 4, 16, 16), generator=generator) for _ in range(STEPS)][::-1]  # noisiest first
    clean = diffusion.encode_images(components, image) * components.latent_scaling
    null = diffusion.encode_text(components, [""])
    empty = diffusion.GuidedText(null, null, 1.0, unconditional=True)
    ours = diffusion.invert_edit_friendly(components, clean, torch.stack(draws, dim=1), empty, STEPS)
    assert ours.timesteps == [int(t) for t in pipe.inversion_steps]
    torch.testing.assert_close(ours.latents[:, 0], pipe.init_latents, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.noise_maps[0], pipe.zs[:, 0], atol=1e-4, rtol=1e-4)
    theirs = pipe(output_type="latent", use_intersect_mask=False).images
    mine = diffusion.edit_from_inversion(components, ours, empty)
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["released", "corrected"])
def test_paste_back_outside_the_masks_equals_the_inverted_latents(components, mode):
    inversion, _ = invert(components)
    null = diffusion.encode_text(components, ["", ""])
    edit = diffusion.GuidedText(diffusion.encode_text(components, ["cardiomegaly"] * 2), null, 7.5)
    edit_mask = torch.zeros((2, 1, 16, 16))
    edit_mask[:, :, 4:10, 4:10] = 1.0
    keep_mask = torch.zeros_like(edit_mask)
    keep_mask[:, :, 12:, :] = 1.0  # a band away from the edit region
    out = diffusion.edit_from_inversion(components, inversion, edit, skip_steps=2, edit_mask=edit_mask,
                                        keep_mask=keep_mask, paste_back=mode)
    inside = edit_mask.bool().expand_as(out)
    kept = keep_mask.bool().expand_as(out)
    # released: everything outside the edit mask is the inverted latents of the last step's start (one step
    # too noisy); corrected: the keep region is the clean latents, the rest of the outside may adapt
    reference = inversion.latents[:, STEPS - 1] if mode == "released" else inversion.clean
    region = ~inside if mode == "released" else kept
    torch.testing.assert_close(out[region], reference[region], atol=1e-6, rtol=0)
    assert (out[inside] - inversion.latents[:, -1][inside]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="paste_back"):
        diffusion.edit_from_inversion(components, inversion, edit, paste_back="faithful")
