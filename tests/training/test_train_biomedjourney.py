"""BiomedJourney: the shared InstructPix2Pix trainer with the progression prompt and the two-stage curriculum
(stage 1 image-report pairs with a black prior, stage 2 triples) on a tiny network; exact resumption across
the stage switch; the exported folder loads in the adapter, which runs end to end on the demo split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.training.checkpoints import read_checkpoint
from cfbench.training.instructx2x import (
    MicroBatches,
    TrainConfig,
    TrainingError,
    images_to_model_input,
    tokenize,
    triple_text,
)
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix

SIZE = 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    base = save_tiny_instruct_pix2pix(root / "ip2p")
    data = build_phantom_dataset(root / "data", 12, seed=4, resolution=SIZE, fractions={"train": 1.0}, progress=False)
    return {"root": root, "base": base, "data": data}


def cli_train(setup, out, steps: int) -> int:
    from cfbench.cli import main

    return main(["--quiet", "train", "biomedjourney", "--data", str(setup["data"]), "--base", str(setup["base"]),
                 "--out", str(out), "--resolution", str(SIZE), "--steps", str(steps), "--report-pair-steps", "2",
                 "--target-batch-size", "4", "--batch-size", "2", "--checkpoint-every", "1", "--workers", "0",
                 "--lr", "1e-3"])


def test_stage_one_is_report_pairs_with_a_black_prior_then_triples(setup):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(setup["base"] / "tokenizer")
    dataset = EditDataset(setup["data"], "train", resolution=SIZE)
    config = TrainConfig(data_dir=str(setup["data"]), base_model=str(setup["base"]), output_dir="unused",
                         resolution=SIZE, target_batch_size=4, per_device_batch_size=2, report_pair_steps=1,
                         prompt_source="progression", hflip_probability=0.0, rotation_degrees=0.0)
    batches = MicroBatches(dataset, tokenizer, config, first=0, count=4, process_index=0, num_processes=1)
    stage_one, stage_two = batches[0], batches[2]  # micro-batches 0-1 are optimizer step 0, 2-3 step 1
    assert torch.equal(stage_one["past"], images_to_model_input(np.zeros((2, SIZE, SIZE), np.float32)))
    samples = [dataset.samples[batches.stream.sample_index(int(p))] for p in stage_one["positions"]]
    assert torch.equal(stage_one["input_ids"], tokenize(tokenizer, [s.target_report for s in samples]))
    later = [dataset.samples[batches.stream.sample_index(int(p))] for p in stage_two["positions"]]
    assert torch.equal(stage_two["input_ids"], tokenize(tokenizer, [s.instruction for s in later]))  # no progression
    assert stage_two["past"].max() > -1.0  # the real prior image
    with_progression = dataclasses.replace(later[0], progression="The effusion has increased.")
    assert triple_text(with_progression, "progression") == "The effusion has increased."
    assert triple_text(with_progression, "instruction") == with_progression.instruction
    with pytest.raises(TrainingError, match="prompt_source"):
        dataclasses.replace(config, prompt_source="report").validate()


def test_two_stage_training_resumes_exactly_and_exports_a_folder_the_adapter_loads(setup, tmp_path):
    straight, interrupted = setup["root"] / "straight", setup["root"] / "interrupted"
    assert cli_train(setup, straight, 4) == 0
    assert cli_train(setup, interrupted, 1) == 0  # stopped inside stage 1
    assert cli_train(setup, interrupted, 4) == 0  # resumed across the stage switch
    a = read_checkpoint(straight / "checkpoints" / "step-000004")
    b = read_checkpoint(interrupted / "checkpoints" / "step-000004")
    for part in ("unet", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    config = (straight / "train_config.json").read_text()
    assert '"report_pair_steps": 2' in config and '"prompt_source": "progression"' in config

    model = get_model_class("biomedjourney").load(LoadContext(
        model_path=straight, options={"steps": "4", "native_resolution": str(SIZE)}))
    image = np.random.default_rng(0).random((SIZE, SIZE), dtype=np.float32)
    requests = [EditRequest("a", image, "Add the finding of edema", progression="Edema has developed.", seed=1),
                EditRequest("b", image, "Add the finding of edema", seed=2)]
    batched = model.edit(requests)
    for request, together in zip(requests, batched):
        np.testing.assert_allclose(together.image, model.edit([request])[0].image, atol=1e-5)
    assert np.abs(batched[0].image - batched[1].image).max() > 1e-4
    assert model.prompt_text(requests[0]) == "Edema has developed."
    assert model.prompt_text(requests[1]) == "Add the finding of edema"

    from cfbench.cli import main

    out = tmp_path / "run"
    status = main(["--quiet", "run", "--model", "biomedjourney", "--model-path", str(straight), "--split", "demo",
                   "--limit", "8", "--resolution", str(SIZE), "--batch-size", "4", "--out", str(out),
                   "--option", "steps=4", "--option", f"native_resolution={SIZE}", "--bootstrap", "10"])
    assert status == 0 and len(list((out / "images").glob("*.png"))) == 8 and (out / "metrics.json").is_file()


def test_missing_weights_say_there_are_none_public_and_how_to_train():
    from cfbench.api.registry import resolve_model_path
    from cfbench.core.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="no public weights.*cfbench train biomedjourney"):
        resolve_model_path(get_model_class("biomedjourney"), None)
