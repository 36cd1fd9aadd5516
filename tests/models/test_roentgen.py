"""RoentGen (text-to-image baseline) on a tiny random Stable Diffusion folder loaded through from_pretrained."""


import numpy as np
import pytest
import torch

from cfbench import diffusion
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix

SIZE = 32
STEPS = 5
TINY_SD_SCHEDULER = "pndm"  # the tiny_sd fixture saves SD v1's own PNDM scheduler
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(folder, **options):
    options = {"native_resolution": str(SIZE), "steps": str(STEPS), **options}
    return get_model_class("roentgen").load(LoadContext(model_path=folder, options=options))


def request(index: int, report: str | None = "Small left pleural effusion.") -> EditRequest:
    image = np.random.default_rng(index).random((SIZE, SIZE), dtype=np.float32)
    return EditRequest(sample_id=f"s{index}", image=image, instruction="Add the finding of small left pleural effusion",
                       target_report=report, seed=500 + index)


def test_generation_matches_diffusers_stable_diffusion_pipeline(tiny_sd):
    """The shared text-to-image loop is Stable Diffusion's sampler, here with the folder's PNDM scheduler."""
    from diffusers import StableDiffusionPipeline

    model = load(tiny_sd, guidance="4.0")
    assert type(model.components.scheduler).__name__ == "PNDMScheduler"
    edit = request(1)
    ours = model.edit([edit])[0]
    assert ours.image.shape == (SIZE, SIZE) and ours.image.dtype == np.float32
    assert 0.0 <= ours.image.min() and ours.image.max() <= 1.0 and ours.info["prompt"] == edit.target_report

    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    noise = diffusion.seeded_noise([edit.seed], (4, SIZE // 2, SIZE // 2), torch.device("cpu"))
    reference = pipeline(edit.target_report, latents=noise, num_inference_steps=STEPS, guidance_scale=4.0,
                         height=SIZE, width=SIZE, output_type="pt").images
    np.testing.assert_allclose(ours.image, reference[0].mean(dim=0).numpy(), atol=1e-4)


def test_batched_equals_one_by_one_seeds_decide_and_ddim_option(tiny_sd):
    model = load(tiny_sd)
    requests = [request(2), request(3, "Moderate cardiomegaly."), request(4)]
    batched = model.edit(requests)
    for edit, together in zip(requests, batched):
        np.testing.assert_allclose(together.image, model.edit([edit])[0].image, atol=1e-5)
    assert np.abs(batched[0].image - batched[2].image).max() > 1e-3  # same prompt, other seed
    ddim = load(tiny_sd, scheduler="ddim")
    assert type(ddim.components.scheduler).__name__ == "DDIMScheduler"
    assert np.isfinite(ddim.edit([request(2)])[0].image).all()


def test_prompt_source_and_errors(tiny_sd, tmp_path):
    model = load(tiny_sd)
    with pytest.raises(ValueError, match="sample 's5' has no target_report.*--reports"):
        model.edit([request(5, report=None)])
    by_instruction = load(tiny_sd, prompt="instruction").edit([request(5, report=None)])[0]
    assert by_instruction.info["prompt"] == "Add the finding of small left pleural effusion"
    with pytest.raises(ValueError, match="prompt must be one of target_report, instruction"):
        load(tiny_sd, prompt="impression")
    with pytest.raises(ValueError, match="unknown option"):
        load(tiny_sd, guidance_scale="4")
    with pytest.raises(ValueError, match="8 input channels, expected 4"):
        load(save_tiny_instruct_pix2pix(tmp_path / "ip2p"))


def test_cli_run_on_the_phantom_demo_prompts_with_its_target_reports(tiny_sd, tmp_path):
    from cfbench.cli import main
    from cfbench.runs.store import read_results

    out = tmp_path / "run"
    status = main(["--quiet", "generate", "--model", "roentgen", "--model-path", str(tiny_sd), "--split", "demo",
                   "--limit", "4", "--resolution", str(SIZE), "--batch-size", "2", "--out", str(out),
                   "--option", f"steps={STEPS}", "--option", f"native_resolution={SIZE}"])
    assert status == 0
    records = read_results(out)
    assert len(records) == 4 and len(list((out / "images").glob("*.png"))) == 4
    assert all(record["info"]["prompt"].endswith(".") for record in records)  # impression-style phantom reports
