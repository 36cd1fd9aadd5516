"""RadEdit on a tiny random model saved in the release's three-part layout (unet/, SDXL-style vae/, CXR-BERT
text_encoder/) and loaded through the adapter; the CLI end to end on the phantom demo split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.core.errors import WeightsNotFoundError
from cfbench.core.findings import Operation
from cfbench.datasets.pseudo_masks import PseudoMasks
from cfbench.models.radedit import finding_prompt
from tests.helpers.tiny_radedit import SDXL_VAE_SCALING, save_tiny_radedit

SIZE = 32
STEPS = 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_radedit(tmp_path_factory):
    return save_tiny_radedit(tmp_path_factory.mktemp("radedit") / "radedit", sample_size=SIZE // 2)


@pytest.fixture(scope="module")
def masks_file(tmp_path_factory):
    effusion = np.zeros((SIZE, SIZE), dtype=bool)
    effusion[18:30, 2:30] = True
    path = tmp_path_factory.mktemp("masks") / "masks.npz"
    PseudoMasks({"pleural effusion": effusion}, SIZE, "synthetic").save(path)
    return path


def load(folder, masks_file, **options):
    options = {"native_resolution": str(SIZE), "steps": str(STEPS), "pseudo_masks": str(masks_file), **options}
    return get_model_class("radedit").load(LoadContext(model_path=folder, options=options))


def request(index: int, instruction: str = "Add the finding of small left pleural effusion") -> EditRequest:
    image = np.random.default_rng(index).random((SIZE, SIZE), dtype=np.float32)
    return EditRequest(sample_id=f"s{index}", image=image, instruction=instruction, seed=50 + index)


def test_loads_the_three_part_layout_without_remote_code(tiny_radedit, masks_file):
    model = load(tiny_radedit, masks_file)
    components = model.components
    assert components.latent_scaling == pytest.approx(SDXL_VAE_SCALING)
    assert components.vae.dtype == torch.float32 and components.text_attention_mask
    assert components.tokenizer.model_max_length == 128
    config = components.scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (1e-4, 0.02, "linear")
    assert (config.timestep_spacing, config.steps_offset, config.clip_sample) == ("trailing", 1, False)
    identity = model.identity()
    assert set(identity["weights_sha256"]) == {"unet", "vae", "text_encoder"} and identity["paste_back"] == "released"
    # the attention mask matters: padding positions are masked out of the BERT encoding
    tokens = components.tokenizer(["left pleural effusion"], padding="max_length", max_length=128, return_tensors="pt")
    masked = components.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    unmasked = components.text_encoder(tokens.input_ids)[0]
    assert (masked[:, :3] - unmasked[:, :3]).abs().max() > 1e-4


def test_missing_parts_are_each_named_with_where_to_get_them(tmp_path, masks_file, tiny_radedit):
    folder = tmp_path / "radedit"
    (folder / "unet").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError) as error:
        load(folder, masks_file)
    text = str(error.value)
    assert "stabilityai/sdxl-vae" in text and "BiomedVLP-BioViL-T" in text and "microsoft/radedit" in text
    assert len(error.value.missing) == 3
    # parts by option instead of sub-folders
    model = load(folder, masks_file, unet=str(tiny_radedit / "unet"), vae=str(tiny_radedit / "vae"),
                 text_encoder=str(tiny_radedit / "text_encoder"))
    assert model.parts["vae"] == tiny_radedit / "vae"


def test_batch_equals_one_by_one_seeds_decide_and_masks(tiny_radedit, masks_file):
    model = load(tiny_radedit, masks_file)
    requests = [request(0), request(1, "Remove the finding of pleural effusion"), request(2)]
    batched = model.edit(requests)
    # up to float reduction order, which the recorded noise maps (divided by small late-step sigmas) amplify
    for edit, together in zip(requests, batched):
        np.testing.assert_allclose(together.image, model.edit([edit])[0].image, atol=1e-4)
    again = model.edit([request(0)])[0].image
    np.testing.assert_array_equal(again, model.edit([request(0)])[0].image)
    reseeded = request(0)
    reseeded.seed = 999
    assert np.abs(model.edit([reseeded])[0].image - again).max() > 1e-4
    assert batched[0].info["prompt"] == "Small left pleural effusion"
    assert batched[1].info["prompt"] == "No pleural effusion"
    assert 0 < batched[0].info["edit_fraction"] < 1
    assert batched[0].guidance_map.max() == 1.0 and batched[0].guidance_map.min() == 0.0


def test_corrected_mode_differs_and_options_are_checked(tiny_radedit, masks_file):
    released = load(tiny_radedit, masks_file).edit([request(3)])[0].image
    corrected = load(tiny_radedit, masks_file, paste_back="corrected").edit([request(3)])[0].image
    assert np.abs(released - corrected).max() > 1e-4
    with pytest.raises(ValueError, match="paste_back"):
        load(tiny_radedit, masks_file, paste_back="faithful")
    with pytest.raises(ValueError, match="skip_ratio"):
        load(tiny_radedit, masks_file, skip_ratio="1.0")


def test_finding_prompts():
    assert finding_prompt([Operation("add", "pleural effusion", "left", None, "small")], "x") == \
        "Small left pleural effusion"
    assert finding_prompt([Operation("remove", "edema"), Operation("add", "cardiomegaly")], "x") == \
        "No edema. Cardiomegaly"
    assert finding_prompt([], "free text") == "free text"


def test_cli_run_on_the_demo_split_writes_images_and_is_evaluated(tiny_radedit, tmp_path):
    from cfbench.cli import main

    out = tmp_path / "run"
    status = main(["--quiet", "run", "--model", "radedit", "--model-path", str(tiny_radedit), "--split", "demo",
                   "--limit", "8", "--resolution", str(SIZE), "--batch-size", "4", "--out", str(out),
                   "--option", f"steps={STEPS}", "--option", f"native_resolution={SIZE}",
                   "--option", "pseudo_masks=nih", "--bootstrap", "10"])
    assert status == 0
    assert len(list((out / "images").glob("*.png"))) == 8
    assert (out / "metrics.json").is_file()
    assert '"paste_back": "released"' in (out / "manifest.json").read_text()
