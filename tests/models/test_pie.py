"""PIE (iterated image-to-image editing) on a tiny random Stable Diffusion folder loaded through from_pretrained."""

import numpy as np
import pytest
import torch

from cfbench import diffusion
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.models.pie import round_seed

SIZE = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(folder, **options):
    options = {"native_resolution": str(SIZE), "steps": "8", "iterations": "2", **options}
    return get_model_class("pie").load(LoadContext(model_path=folder, options=options))


def request(index: int, region_mask=None) -> EditRequest:
    image = np.random.default_rng(index).random((SIZE, SIZE), dtype=np.float32)
    return EditRequest(sample_id=f"s{index}", image=image, instruction="Add the finding of cardiomegaly",
                       target_report="Moderate cardiomegaly.", region_mask=region_mask, seed=900 + index)


def test_one_round_is_diffusers_img2img(tiny_sd):
    """A round is Stable Diffusion img2img: same output as diffusers' pipeline from the same latents and noise."""
    from diffusers import StableDiffusionImg2ImgPipeline

    model = load(tiny_sd, iterations="1", strength="0.5", guidance="7.5", between_rounds="float", posterior="mode")
    edit = request(1)
    ours = model.edit([edit])[0].image

    components = model.components
    start = diffusion.encode_images(components, torch.from_numpy(edit.image)[None]) * components.latent_scaling
    pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_sd, safety_checker=None,
                                                              requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(round_seed(edit.seed, 0))
    reference = pipeline(edit.target_report, image=start, strength=0.5, num_inference_steps=8, guidance_scale=7.5,
                         generator=generator, output_type="pt").images
    np.testing.assert_allclose(ours, reference[0].mean(dim=0).numpy(), atol=1e-4)


def test_rounds_pass_8_bit_rgb_images_as_the_release(tiny_sd):
    """between_rounds=rgb8 (default): each round is diffusers img2img returning a PIL image (8-bit RGB, as
    the release's pipeline), which is the next round's input; the result is the last PIL image's channel mean.
    posterior=sample (default): each round starts from a VAE posterior sample seeded by the seed and round."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from cfbench.core.seeds import derive_seed

    model = load(tiny_sd, iterations="2")
    edit = request(6)
    ours = model.edit([edit])[0].image
    components = model.components
    pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_sd, safety_checker=None,
                                                              requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    current = torch.from_numpy(edit.image)[None]
    for round_index in range(2):
        mean, std = diffusion.posterior_moments(components, current)
        posterior_noise = diffusion.seeded_noise([derive_seed(edit.seed, "pie-posterior", round_index)],
                                                 tuple(mean.shape[1:]), "cpu")
        start = (mean + std * posterior_noise) * components.latent_scaling
        generator = torch.Generator("cpu").manual_seed(round_seed(edit.seed, round_index))
        picture = pipeline(edit.target_report, image=start, strength=0.5, num_inference_steps=8, guidance_scale=7.5,
                           generator=generator, output_type="pil").images[0]
        assert picture.mode == "RGB"
        current = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    np.testing.assert_allclose(ours, current[0].mean(dim=0).numpy(), atol=1e-5)
    floating = load(tiny_sd, iterations="2", between_rounds="float").edit([edit])[0].image
    assert np.abs(floating - ours).max() > 1e-4
    assert model.identity()["adapter_version"] == 2 and model.identity()["settings"]["between_rounds"] == "rgb8"
    assert np.abs(load(tiny_sd, iterations="2", posterior="mode").edit([edit])[0].image - ours).max() > 1e-3


def test_rounds_compound_and_batches_do_not_matter(tiny_sd):
    one, two = load(tiny_sd, iterations="1"), load(tiny_sd, iterations="2")
    edits = [request(2), request(3)]
    first, second = one.edit(edits[:1])[0].image, two.edit(edits[:1])[0].image
    assert np.abs(first - second).max() > 1e-3  # the second round edits the first round's output
    batched = two.edit(edits)
    for edit, together in zip(edits, batched):
        # the 8-bit rounding between rounds may turn float noise of the batch into one level, rarely
        difference = np.abs(together.image - two.edit([edit])[0].image)
        assert difference.max() <= 1 / 255 + 1e-6 and (difference > 1e-6).mean() < 0.01
    assert together.info == {"prompt": "Moderate cardiomegaly.", "iterations": 2}


def test_region_mask_weighting_and_latent_grid(tiny_sd):
    """Masked mode: the mask reaches the latent grid (bilinear, all ones for unmasked requests) and each round
    ends with init + beta_1 (z - init) outside, init + beta_2 (z - init) inside; unmasked requests unchanged."""
    model = load(tiny_sd, beta_1="0.1", beta_2="0.5")
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[:, : SIZE // 2] = True
    requests = [request(4, region_mask=mask), request(5)]
    region = model.latent_region(requests, (SIZE // 2, SIZE // 2))
    assert region.shape == (2, 1, SIZE // 2, SIZE // 2)
    assert torch.all(region[0, 0, :, : SIZE // 4] == 1) and torch.all(region[0, 0, :, SIZE // 4:] == 0)
    assert torch.all(region[1] == 1)
    original = torch.zeros(2, 4, SIZE // 2, SIZE // 2)
    latents = torch.ones(2, 4, SIZE // 2, SIZE // 2)
    weighted = model.weigh_change(latents, original, region, requests)
    assert torch.allclose(weighted[0, :, :, : SIZE // 4], torch.tensor(0.5))
    assert torch.allclose(weighted[0, :, :, SIZE // 4:], torch.tensor(0.1))
    assert torch.equal(weighted[1], latents[1])
    free, masked = model.edit([request(4)])[0].image, model.edit(requests[:1])[0].image
    assert np.abs(free - masked).max() > 1e-3 and np.isfinite(masked).all()


def test_options_are_checked(tiny_sd):
    with pytest.raises(ValueError, match="strength must lie in"):
        load(tiny_sd, strength="0.01")
    with pytest.raises(ValueError, match="sample 's5' has no target_report"):
        load(tiny_sd).edit([EditRequest("s5", np.zeros((SIZE, SIZE), np.float32), "Remove the finding of edema")])
