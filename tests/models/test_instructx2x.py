"""InstructX2X adapter, its ablations and the shared diffusion loop, on a tiny random InstructPix2Pix
saved with ``save_pretrained`` and loaded back through the adapters' ``from_pretrained`` path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from cfbench import diffusion
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.core.errors import WeightsNotFoundError
from cfbench.core.findings import Operation
from cfbench.datasets.pseudo_masks import PseudoMasks
from cfbench.diffusion import rse
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix, save_tiny_stable_diffusion

SIZE = 32
STEPS = 6
CARDIOMEGALY = (slice(12, 24), slice(8, 24))
EFFUSION = (slice(18, 30), slice(2, 30))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_instruct_pix2pix(tmp_path_factory.mktemp("tiny") / "ip2p", sample_size=SIZE // 2)


@pytest.fixture(scope="module")
def masks_file(tmp_path_factory):
    """Synthetic pseudo masks at 32 px: cardiomegaly a central box, pleural effusion a lower band."""
    cardiomegaly = np.zeros((SIZE, SIZE), dtype=bool)
    cardiomegaly[CARDIOMEGALY] = True
    effusion = np.zeros((SIZE, SIZE), dtype=bool)
    effusion[EFFUSION] = True
    path = tmp_path_factory.mktemp("masks") / "masks.npz"
    PseudoMasks({"cardiomegaly": cardiomegaly, "pleural effusion": effusion}, SIZE, "synthetic").save(path)
    return path


@pytest.fixture(scope="module")
def load(tiny_folder, masks_file):
    cache = {}

    def load_model(name: str, **options):
        options = {"native_resolution": str(SIZE), "steps": str(STEPS), "pseudo_masks": str(masks_file), **options}
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = get_model_class(name).load(LoadContext(model_path=tiny_folder, options=options))
        return cache[key]

    return load_model


def request(index: int, instruction: str = "Add the finding of cardiomegaly", region_mask=None) -> EditRequest:
    image = np.random.default_rng(index).random((SIZE, SIZE), dtype=np.float32)
    return EditRequest(sample_id=f"s{index}", image=image, instruction=instruction, region_mask=region_mask,
                       seed=1000 + index)


@pytest.mark.parametrize("latent_mask", ["official", "max-pool"])
def test_pixels_outside_binary_mask_equal_input(load, latent_mask):
    model = load("instructx2x", latent_mask=latent_mask)
    edit = request(0)
    result = model.edit([edit])[0]
    binary = result.guidance_map >= model.settings.tau
    assert 0 < binary.sum() < binary.size
    np.testing.assert_array_equal(result.image[~binary], edit.image[~binary])
    assert np.abs(result.image[binary] - edit.image[binary]).max() > 1e-3  # the edit region did change
    assert result.info["edit_fraction"] == pytest.approx(binary.mean())


def test_guidance_map_is_zero_outside_pseudo_mask_and_relevance_in_unit_interval(load):
    result = load("instructx2x").edit([request(1)])[0]
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[CARDIOMEGALY] = False
    assert np.all(result.guidance_map[outside] == 0.0)
    assert result.guidance_map[~outside].max() > 0.0

    relevance = load("instructx2x-relevance-only").edit([request(1)])[0].guidance_map
    assert relevance.min() >= 0.0 and relevance.max() <= 1.0
    assert relevance.max() > 0.5 and relevance.min() < 0.5  # normalised, not flat
    np.testing.assert_allclose(result.guidance_map[~outside], relevance[~outside], atol=1e-6)  # G = M * R


def test_relevance_functions_clip_iqr_outliers_and_normalise():
    values = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)  # quartiles 3.75 and 11.25
    values[0, 3, 3] = 1000.0
    clipped = rse.clip_iqr_outliers(values, quartiles="linear")
    fence = 11.25 + 1.5 * 7.5
    assert clipped[0, 3, 3].item() == pytest.approx(fence)
    assert torch.equal(clipped[0, :3], values[0, :3])
    normalised = rse.normalise_min_max(clipped)
    assert normalised.min().item() == 0.0 and normalised.max().item() == 1.0
    assert torch.equal(rse.normalise_min_max(torch.full((1, 3, 3), 2.0)), torch.ones(1, 3, 3))

    generator = torch.Generator().manual_seed(0)
    text, image = torch.randn(2, 2, 4, 8, 8, generator=generator) * 5
    relevance = rse.relevance_map(text, image, (32, 32))
    assert relevance.shape == (2, 32, 32)
    assert relevance.min() >= 0.0 and relevance.max() <= 1.0


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 5, 7), (3, 8, 8)])
def test_quartiles_are_numpys_midpoint_rule_by_default(shape):
    """The release takes Q1 and Q3 with ``np.percentile(..., interpolation="midpoint")``; the fence follows."""
    maps = torch.from_numpy(np.random.default_rng(sum(shape)).gamma(1.5, size=shape).astype(np.float32))
    maps[:, 0, 0] = 50.0  # an outlier to clip
    for rule in ("midpoint", "linear"):
        flat = maps.flatten(start_dim=1).numpy()
        q1, q3 = (np.percentile(flat, q, axis=1, method=rule) for q in (25, 75))
        expected = np.minimum(maps.numpy(), (q3 + 1.5 * (q3 - q1))[:, None, None])
        clipped = rse.clip_iqr_outliers(maps, quartiles=rule) if rule == "linear" else rse.clip_iqr_outliers(maps)
        np.testing.assert_allclose(clipped.numpy(), expected, rtol=1e-6)
    # 4 x 4 = 0..15: midpoint quartiles 3.5 and 11.5 (linear: 3.75 and 11.25)
    values = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    values[0, 3, 3] = 1000.0
    assert rse.clip_iqr_outliers(values)[0, 3, 3].item() == pytest.approx(11.5 + 1.5 * 8.0)
    with pytest.raises(ValueError, match="quartiles"):
        rse.clip_iqr_outliers(values, quartiles="nearest")


@pytest.mark.parametrize("relevance_noise,start_latents", [("fresh", "sample"), ("shared", "mode")])
def test_relevance_pass_draws_as_the_options_say(load, relevance_noise, start_latents):
    """fresh (release): the relevance pass sees its own seeded noise on the second posterior sample;
    shared + mode (cfbench's earlier way): the sampling noise on the posterior mode."""
    from cfbench.core.seeds import derive_seed

    model = load("instructx2x-relevance-only", relevance_noise=relevance_noise, start_latents=start_latents)
    edit = request(14)
    guidance = model.edit([edit])[0].guidance_map
    components = model.components
    mean, std = diffusion.posterior_moments(components, torch.from_numpy(edit.image)[None])
    shape = tuple(mean.shape[1:])
    if start_latents == "sample":
        source = (mean + std * diffusion.seeded_noise([derive_seed(edit.seed, "source-posterior")], shape, "cpu"))
    else:
        source = mean
    seed = derive_seed(edit.seed, "relevance-noise") if relevance_noise == "fresh" else edit.seed
    conditioning = diffusion.InstructPix2PixConditioning(
        mean, diffusion.encode_text(components, [edit.instruction]), diffusion.encode_text(components, [""]))
    relevance = model.relevance_maps(source * components.latent_scaling,
                                     diffusion.seeded_noise([seed], shape, "cpu"), conditioning)
    np.testing.assert_allclose(guidance, rse.resize_maps(relevance, (SIZE, SIZE))[0].numpy(), atol=1e-5)
    other = load("instructx2x-relevance-only", relevance_noise="shared" if relevance_noise == "fresh" else "fresh",
                 start_latents=start_latents).edit([edit])[0].guidance_map
    assert np.abs(other - guidance).max() > 1e-3


def test_release_precision_policy_applies_on_cuda_with_precision_auto(load):
    """On CUDA, precision=auto loads float32 weights (UNet and VAE then run under fp16 autocast, the text
    encoder in fp16, as the release); an explicit precision wins; the CPU stays float32."""
    family = get_model_class("instructx2x")
    settings = family.settings_class.from_options({})
    assert family.release_precision(settings, "cuda") and not family.release_precision(settings, "cpu")
    assert family.weights_dtype(settings, "cuda") == torch.float32
    assert family.weights_dtype(family.settings_class.from_options({"precision": "fp16"}), "cuda") == torch.float16
    assert not family.release_precision(family.settings_class.from_options({"precision": "fp32"}), "cuda")
    model = load("instructx2x")
    assert not model.autocast and model.identity()["precision_policy"] == "all networks float32"
    identity = model.identity()
    assert identity["adapter_version"] == 2
    assert identity["settings"]["relevance_noise"] == "fresh" and identity["settings"]["quartiles"] == "midpoint"


def test_latent_guidance_is_the_downsampled_mask_times_latent_relevance():
    """The official code's latent-grid guidance: M bilinearly downsampled (2x2 block means at factor 2) times R."""
    region = torch.zeros(1, 4, 4)
    region[0, :2, :3] = 1.0  # block (0, 0) full, block (0, 1) half covered
    down = rse.resize_maps(region, (2, 2))
    assert torch.equal(down, torch.tensor([[[1.0, 0.5], [0.0, 0.0]]]))
    relevance = torch.tensor([[[0.5, 0.1], [1.0, 1.0]]])
    latent_guidance = rse.guidance_map(down, relevance)
    assert torch.allclose(latent_guidance, torch.tensor([[[0.5, 0.05], [0.0, 0.0]]]))
    assert rse.binary_edit_mask(latent_guidance, 0.1).tolist() == [[[True, False], [False, False]]]


def test_instruction_selects_finding_mask_location_and_whole_image(load):
    model = load("instructx2x-mask-only")
    cardiomegaly = model.edit([request(2)])[0].guidance_map
    expected = np.zeros((SIZE, SIZE), dtype=np.float32)
    expected[CARDIOMEGALY] = 1.0
    np.testing.assert_array_equal(cardiomegaly, expected)

    unknown = model.edit([request(2, "Add the finding of edema")])[0]
    np.testing.assert_array_equal(unknown.guidance_map, np.ones((SIZE, SIZE), dtype=np.float32))
    free_text = model.region_masks([request(2, "make the heart bigger")], (SIZE, SIZE))
    assert bool(free_text.all())

    # "left" is the patient's left, the image's right half (radiological convention)
    left = model.region_masks([request(2, "Add the finding of small left pleural effusion")], (SIZE, SIZE))[0]
    expected_left = np.zeros((SIZE, SIZE), dtype=bool)
    expected_left[EFFUSION] = True
    expected_left[:, : SIZE // 2] = False
    np.testing.assert_array_equal(left.numpy(), expected_left)

    # parsed operations on the request take precedence over re-parsing the text
    parsed = request(2, "free text")
    parsed.operations = [Operation("add", "cardiomegaly")]
    np.testing.assert_array_equal(model.region_masks([parsed], (SIZE, SIZE))[0].numpy(), expected > 0)


def test_user_region_mask_replaces_pseudo_mask(load):
    user_mask = np.zeros((SIZE, SIZE), dtype=bool)
    user_mask[:8, :8] = True
    result = load("instructx2x-mask-only").edit([request(3, region_mask=user_mask)])[0]
    np.testing.assert_array_equal(result.guidance_map, user_mask.astype(np.float32))


def test_all_ones_mask_reproduces_plain_instruct_pix2pix(load):
    whole = np.ones((SIZE, SIZE), dtype=bool)
    masked = load("instructx2x", tau="0").edit([request(4, region_mask=whole)])[0]
    plain = load("instructpix2pix").edit([request(4)])[0]
    assert plain.guidance_map is None
    np.testing.assert_allclose(masked.image, plain.image, atol=1e-6)


@pytest.mark.parametrize("start_latents", ["sample", "mode"])
def test_plain_loop_matches_diffusers_instruct_pix2pix_pipeline(load, tiny_folder, start_latents):
    """The shared loop is the InstructPix2Pix sampler: same output as diffusers' own pipeline with DDIM,
    started from the same latents: a seeded VAE posterior sample (the release) or the posterior mode."""
    from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

    from cfbench.core.seeds import derive_seed

    model = load("instructpix2pix", start_latents=start_latents)
    edit = request(5)
    ours = model.edit([edit])[0].image

    components = model.components
    image = torch.from_numpy(edit.image)[None]
    mean, std = diffusion.posterior_moments(components, image)
    posterior_noise = diffusion.seeded_noise([derive_seed(edit.seed, "start-posterior")], tuple(mean.shape[1:]), "cpu")
    source = (mean + std * posterior_noise if start_latents == "sample" else mean) * components.latent_scaling
    noise = diffusion.seeded_noise([edit.seed], tuple(source.shape[1:]), components.device)
    components.scheduler.set_timesteps(STEPS)
    start = diffusion.noise_to_timestep(components, source, noise, int(components.scheduler.timesteps[0]))

    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_folder, safety_checker=None)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    reference = pipeline(edit.instruction, image=image[:, None].expand(-1, 3, -1, -1), latents=start,
                         num_inference_steps=STEPS, guidance_scale=7.5, image_guidance_scale=1.5,
                         output_type="pt").images
    np.testing.assert_allclose(ours, reference[0].mean(dim=0).numpy(), atol=1e-4)


@pytest.mark.parametrize("background_timestep", ["current", "next"])
def test_loop_keeps_latents_outside_the_edit_mask_on_the_source_path(load, background_timestep):
    """Per-step replacement: after the last step the latents outside the mask are the source latents noised
    to the last step's starting timestep (official code, "current") or the clean source latents ("next")."""
    components = load("instructpix2pix").components
    image = torch.from_numpy(request(12).image)[None]
    image_latents = diffusion.encode_images(components, image)
    source = image_latents * components.latent_scaling
    conditioning = diffusion.InstructPix2PixConditioning(
        image_latents, diffusion.encode_text(components, ["Add the finding of edema"]),
        diffusion.encode_text(components, [""]))
    noise = diffusion.seeded_noise([0], tuple(source.shape[1:]), components.device)
    mask = torch.zeros(1, 1, *source.shape[-2:])
    mask[..., :, : source.shape[-1] // 2] = 1.0
    edited = diffusion.edit_with_instruct_pix2pix(components, source, noise, conditioning, STEPS, 7.5, 1.5, mask,
                                                  background_timestep=background_timestep)
    last_timestep = int(components.scheduler.timesteps[-1])
    expected = (source if background_timestep == "next"
                else diffusion.noise_to_timestep(components, source, noise, last_timestep))
    keep = mask.expand_as(source) == 0
    assert torch.equal(edited[keep], expected[keep])
    assert (edited[~keep] - expected[~keep]).abs().max() > 1e-3


def test_batched_equals_one_by_one_and_seeds_decide(load):
    model = load("instructx2x")
    requests = [request(6), request(7, "Add the finding of small left pleural effusion"), request(8, "Remove the finding of edema")]
    batched = model.edit(requests)
    for edit, together in zip(requests, batched):
        alone = model.edit([edit])[0]
        np.testing.assert_allclose(together.image, alone.image, atol=1e-4)
        np.testing.assert_allclose(together.guidance_map, alone.guidance_map, atol=1e-4)

    plain = load("instructpix2pix")
    same = plain.edit([request(9)])[0].image
    np.testing.assert_array_equal(plain.edit([request(9)])[0].image, same)
    reseeded = request(9)
    reseeded.seed += 1
    assert np.abs(plain.edit([reseeded])[0].image - same).max() > 1e-3


def test_load_errors_name_the_problem(tmp_path, tiny_folder):
    model_class = get_model_class("instructx2x")
    with pytest.raises(WeightsNotFoundError, match="(?s)instructx2x.*nowhere.*InstructX2X checkpoint"):
        model_class.load(LoadContext(model_path=tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        model_class.load(LoadContext(model_path=tmp_path))
    with pytest.raises(ValueError, match="unknown option.*guidance_scale"):
        model_class.load(LoadContext(model_path=tiny_folder, options={"guidance_scale": "3"}))
    with pytest.raises(ValueError, match="steps"):
        model_class.load(LoadContext(model_path=tiny_folder, options={"steps": "many"}))
    with pytest.raises(ValueError, match="native_resolution=34 must be a multiple of 4"):
        model_class.load(LoadContext(model_path=tiny_folder, options={"native_resolution": "34"}))
    with pytest.raises(ValueError, match="latent_mask must be one of official, max-pool, got 'mean'"):
        model_class.load(LoadContext(model_path=tiny_folder, options={"latent_mask": "mean"}))


def test_shared_loader_reads_text_to_image_folders_and_checks_unet_inputs(tmp_path):
    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    components = diffusion.load_diffusion_components(folder, "StableDiffusionPipeline", expected_unet_in_channels=4)
    assert components.unet.config.in_channels == 4
    assert components.scheduler.config.clip_sample is False  # DDIM must not clip latents to [-1, 1]
    images = torch.rand(2, SIZE, SIZE)
    latents = diffusion.encode_images(components, images)
    assert latents.shape == (2, 4, SIZE // components.vae_scale_factor, SIZE // components.vae_scale_factor)
    decoded = diffusion.decode_latents(components, latents * components.latent_scaling)
    assert decoded.shape == (2, SIZE, SIZE) and 0.0 <= decoded.min() and decoded.max() <= 1.0
    with pytest.raises(ValueError, match="4 input channels, expected 8"):
        diffusion.load_diffusion_components(folder, "StableDiffusionPipeline", expected_unet_in_channels=8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda_is_finite_and_batch_independent(tiny_folder, masks_file, precision):
    model = get_model_class("instructx2x").load(LoadContext(model_path=tiny_folder, device="cuda", options={
        "native_resolution": str(SIZE), "steps": str(STEPS), "pseudo_masks": str(masks_file), "precision": precision}))
    assert model.components.unet.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    requests = [request(10), request(11, "Add the finding of small left pleural effusion")]
    batched = model.edit(requests)
    for edit, together in zip(requests, batched):
        alone = model.edit([edit])[0]
        assert np.isfinite(together.image).all() and np.isfinite(together.guidance_map).all()
        np.testing.assert_allclose(together.image, alone.image, atol=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_release_precision_policy_on_cuda_is_finite_and_close_to_fp32(tiny_folder, masks_file):
    """precision=auto on CUDA: UNet and VAE weights float32 under fp16 autocast, text encoder float16."""
    def cuda_model(precision):
        return get_model_class("instructx2x").load(LoadContext(model_path=tiny_folder, device="cuda", options={
            "native_resolution": str(SIZE), "steps": str(STEPS), "pseudo_masks": str(masks_file),
            "precision": precision}))

    release = cuda_model("auto")
    assert release.autocast and release.components.unet.dtype == torch.float32
    assert release.components.text_encoder.dtype == torch.float16
    edit = request(16)
    ours, full = release.edit([edit])[0], cuda_model("fp32").edit([edit])[0]
    assert np.isfinite(ours.image).all() and np.abs(ours.image - full.image).mean() < 0.05


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_weights_on_cpu_run_the_same_code_path(load, precision):
    """The half-precision casts (weights in bf16/fp16, latents and scheduler in float32) on the CPU: outputs
    finite, pixels outside the mask exact, and close to the float32 result."""
    model = load("instructx2x", precision=precision)
    assert model.components.unet.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    edit = request(13)
    half, full = model.edit([edit])[0], load("instructx2x").edit([edit])[0]
    assert np.isfinite(half.image).all() and np.isfinite(half.guidance_map).all()
    binary = half.guidance_map >= model.settings.tau
    np.testing.assert_array_equal(half.image[~binary], edit.image[~binary])
    assert np.abs(half.image - full.image).mean() < 0.05


def test_registering_the_models_does_not_import_diffusers():
    code = "import sys, cfbench.models; assert 'diffusers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_run_on_demo_writes_images_and_guidance_maps(tiny_folder, tmp_path):
    from cfbench.cli import main

    out = tmp_path / "run"
    status = main(["--quiet", "run", "--model", "instructx2x", "--model-path", str(tiny_folder), "--split", "demo",
                   "--limit", "8", "--resolution", str(SIZE), "--batch-size", "4", "--out", str(out),
                   "--option", f"native_resolution={SIZE}", "--option", "steps=3"])
    assert status == 0
    images = sorted((out / "images").glob("*.png"))
    guidance = sorted((out / "guidance").glob("*.png"))
    assert len(images) == 8
    assert [path.name for path in guidance] == [path.name for path in images]


def test_default_pseudo_masks_are_the_datasets_own(tiny_folder, masks_file, tmp_path):
    """pseudo_masks=auto (the default): a dataset folder's pseudo_masks.npz (MS-CXR from the MIMIC build)."""
    import shutil

    from cfbench.datasets.edit_dataset import EditDataset
    from tests.helpers.datasets import write_random_dataset

    root = write_random_dataset(tmp_path / "data", n=2, size=SIZE)
    shutil.copy(masks_file, root / "pseudo_masks.npz")
    dataset = EditDataset(root, "holdout", SIZE)
    model = get_model_class("instructx2x").load(LoadContext(
        model_path=tiny_folder, dataset=dataset, options={"native_resolution": str(SIZE), "steps": str(STEPS)}))
    assert model.settings.pseudo_masks == "auto" and model.identity()["pseudo_masks"] == "synthetic"
    guidance = model.edit([request(3)])[0].guidance_map
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[CARDIOMEGALY] = False
    assert np.all(guidance[outside] == 0.0)  # the dataset's cardiomegaly box, not NIH's


def test_release_masks_imported_from_a_clone_drive_the_pseudo_mask(tiny_folder, tmp_path):
    """pseudo_masks=FILE from `cfbench masks import-instructx2x`: the release's substring rule on the text."""
    from cfbench.datasets.instructx2x_masks import import_instructx2x_masks
    from tests.helpers.instructx2x_release import release_selection, write_instructx2x_clone

    path = tmp_path / "release_masks.npz"
    import_instructx2x_masks(write_instructx2x_clone(tmp_path / "clone", size=SIZE)).save(path)
    model = get_model_class("instructx2x-mask-only").load(LoadContext(model_path=tiny_folder, options={
        "native_resolution": str(SIZE), "steps": "2", "pseudo_masks": str(path)}))
    assert model.identity()["pseudo_masks"].startswith("InstructX2X release masks")
    for instruction in ("Add the finding of pleural effusion", "Add the finding of heart failure"):
        guidance = model.edit([request(15, instruction)])[0].guidance_map
        np.testing.assert_array_equal(guidance, release_selection(instruction, SIZE).astype(np.float32))
