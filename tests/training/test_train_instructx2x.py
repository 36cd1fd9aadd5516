"""Training of the InstructX2X editor on tiny networks and a 16-pair phantom set at 32 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cfbench.core.findings import Operation, parse_instruction, render_instruction
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.training.base_weights import BaseModelError, load_base_components
from cfbench.training.edit_augment import (
    AugmentSettings,
    augment_pair,
    flip_operation,
    swap_left_right,
)
from cfbench.training.checkpoints import read_checkpoint
from cfbench.training.instructx2x import (
    NO_DROPOUT,
    ConditioningDropout,
    FrozenParts,
    MicroBatches,
    TrainConfig,
    TrainingError,
    checkpoint_folders,
    denoising_loss,
    gradient_accumulation_steps,
    images_to_model_input,
    tokenize,
    train_instructx2x,
)
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix, save_tiny_stable_diffusion

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    base = save_tiny_instruct_pix2pix(root / "ip2p")
    sd_base = save_tiny_stable_diffusion(root / "sd")
    data = build_phantom_dataset(root / "data", 16, seed=3, resolution=SIZE, fractions={"train": 1.0}, progress=False)
    return {"root": root, "base": base, "sd": sd_base, "data": data}


def _config(setup, out: Path, **changes) -> TrainConfig:
    settings = {"data_dir": str(setup["data"]), "base_model": str(setup["base"]), "output_dir": str(out),
                "resolution": SIZE, "max_train_steps": 4, "target_batch_size": 4, "per_device_batch_size": 2,
                "checkpoint_every": 2, "log_every": 1, "learning_rate": 1e-3}
    settings.update(changes)
    return TrainConfig(**settings)


# ------------------------------------------------------------------------------------- augmentation


def test_swap_left_right_swaps_whole_words_and_keeps_case():
    assert swap_left_right("Add the finding of small left pleural effusion") == \
        "Add the finding of small right pleural effusion"
    assert swap_left_right("Left and right; RIGHT base, leftover rightful") == \
        "Right and left; LEFT base, leftover rightful"
    operation = Operation("add", "pleural effusion", "right lower lobe", None, "small")
    assert flip_operation(operation).location == "left lower lobe"
    assert flip_operation(Operation("remove", "edema")) == Operation("remove", "edema")


def test_flip_mirrors_both_images_and_swaps_instruction_and_operations():
    rng = np.random.default_rng(0)
    past, current = rng.random((2, 8, 8), dtype=np.float32)
    operations = [Operation("add", "pleural effusion", "left", None, "small"), Operation("remove", "edema", "right")]
    instruction = render_instruction(operations)
    always = AugmentSettings(rotation_degrees=0.0, center_crop_fraction=1.0, hflip_probability=1.0)
    flipped = augment_pair(past, current, instruction, operations, always, np.random.default_rng(1))
    assert flipped.flipped
    np.testing.assert_array_equal(flipped.past, past[:, ::-1])
    np.testing.assert_array_equal(flipped.current, current[:, ::-1])
    assert flipped.instruction == "Add the finding of small right pleural effusion. Remove the finding of left edema"
    assert [op.location for op in flipped.operations] == ["right", "left"]
    assert parse_instruction(flipped.instruction) == flipped.operations  # text and operations agree

    never = AugmentSettings(rotation_degrees=0.0, center_crop_fraction=1.0, hflip_probability=0.0)
    kept = augment_pair(past, current, instruction, operations, never, np.random.default_rng(1))
    assert not kept.flipped and kept.instruction == instruction
    np.testing.assert_array_equal(kept.past, past)


def test_rotation_and_crop_apply_the_same_transform_to_both_images():
    image = np.zeros((32, 32), dtype=np.float32)
    image[8:24, 12:20] = 1.0
    settings = AugmentSettings(rotation_degrees=2.0, center_crop_fraction=0.8, hflip_probability=0.0)
    result = augment_pair(image, image.copy(), "Remove the finding of edema", [Operation("remove", "edema")],
                          settings, np.random.default_rng(5))
    assert 0 < abs(result.angle) <= 2.0
    np.testing.assert_array_equal(result.past, result.current)
    assert result.past.shape == image.shape and result.past.dtype == np.float32
    assert 0.0 <= result.past.min() and result.past.max() <= 1.0
    assert not np.array_equal(result.past, image)
    with pytest.raises(ValueError, match="center_crop_fraction"):
        AugmentSettings(center_crop_fraction=0.0)


# ------------------------------------------------------------------------------ batch size / dropout


def test_gradient_accumulation_reaches_the_target_or_fails_clearly():
    assert gradient_accumulation_steps(576, 4, 8) == 18
    assert gradient_accumulation_steps(576, 8, 1) == 72
    assert gradient_accumulation_steps(4, 4, 1) == 1
    with pytest.raises(TrainingError, match=r"576 is not divisible by .* 5 x 1 process\(es\) = 5"):
        gradient_accumulation_steps(576, 5, 1)
    with pytest.raises(TrainingError, match="multiple of 24"):
        gradient_accumulation_steps(100, 3, 8)


def test_conditioning_dropout_proportions():
    dropout = ConditioningDropout(0.05, 0.05, 0.05)
    drop_text, drop_image = dropout.draw(200_000, torch.Generator().manual_seed(0))
    text_only = (drop_text & ~drop_image).float().mean().item()
    image_only = (drop_image & ~drop_text).float().mean().item()
    both = (drop_text & drop_image).float().mean().item()
    for fraction in (text_only, image_only, both):
        assert fraction == pytest.approx(0.05, abs=0.003)
    none_text, none_image = NO_DROPOUT.draw(1000, torch.Generator().manual_seed(0))
    assert not none_text.any() and not none_image.any()


def test_micro_batches_of_two_processes_are_disjoint_and_flips_swap_words(tiny_setup):
    dataset = EditDataset(tiny_setup["data"], "train", resolution=SIZE)
    tokenizer = load_base_components(tiny_setup["base"]).tokenizer
    config = _config(tiny_setup, tiny_setup["root"] / "unused", hflip_probability=1.0, rotation_degrees=0.0)
    streams = [MicroBatches(dataset, tokenizer, config, first=0, count=4, process_index=p, num_processes=2)
               for p in range(2)]
    seen = []
    for item in range(4):
        batches = [stream[item] for stream in streams]
        positions = [batch["positions"].tolist() for batch in batches]
        assert not set(positions[0]) & set(positions[1])
        seen.extend(positions[0] + positions[1])
        assert batches[0]["past"].shape == (2, 3, SIZE, SIZE)
        assert batches[0]["past"].min() >= -1.0 and batches[0]["past"].max() <= 1.0
        assert batches[0]["flipped"].all()
    assert sorted(seen) == list(range(16))  # one epoch: every position once
    # a flipped sample carries the mirrored image and the swapped instruction
    first = streams[0][0]
    sample = dataset.samples[streams[0].stream.sample_index(0)]
    expected = images_to_model_input(dataset.past_image(sample)[None, :, ::-1].copy())
    torch.testing.assert_close(first["past"][:1], expected)
    assert torch.equal(first["input_ids"][0], tokenize(tokenizer, [swap_left_right(sample.instruction)])[0])


# ------------------------------------------------------------------------------------ initialisation


def test_stable_diffusion_init_widens_conv_in_with_zeros(tiny_setup):
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.from_pretrained(tiny_setup["sd"], subfolder="unet").eval()
    components = load_base_components(tiny_setup["sd"])
    widened = components.unet.eval()
    assert components.kind == "stable-diffusion"
    assert widened.config.in_channels == 8 and widened.conv_in.in_channels == 8
    assert torch.count_nonzero(widened.conv_in.weight[:, 4:]) == 0
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=generator)
    image_latents = torch.randn(2, 4, 16, 16, generator=generator)  # ignored by the zero weights
    text = torch.randn(2, 16, 32, generator=generator)
    timesteps = torch.tensor([10, 500])
    with torch.no_grad():
        expected = original(latents, timesteps, encoder_hidden_states=text).sample
        actual = widened(torch.cat([latents, image_latents], dim=1), timesteps, encoder_hidden_states=text).sample
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert load_base_components(tiny_setup["base"]).kind == "instruct-pix2pix"


def test_base_folder_errors_name_the_missing_files(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(BaseModelError, match="model_index.json.*vae/config.json"):
        load_base_components(tmp_path)


# ---------------------------------------------------------------------------------------- training


def _fixed_batch(setup, components) -> dict:
    dataset = EditDataset(setup["data"], "train", resolution=SIZE)
    samples = dataset.samples[:4]
    return {
        "past": images_to_model_input(np.stack([dataset.past_image(s) for s in samples])),
        "current": images_to_model_input(np.stack([dataset.current_image(s) for s in samples])),
        "input_ids": tokenize(components.tokenizer, [s.instruction for s in samples]),
    }


def _fixed_batch_loss(unet, frozen, batch) -> float:
    """Mean loss over 8 fixed noise draws, no dropout: the same numbers before and after training."""
    unet.eval()
    with torch.no_grad():
        losses = []
        for draw in range(8):
            generators = [torch.Generator().manual_seed(100 * draw + index) for index in range(len(batch["past"]))]
            losses.append(denoising_loss(unet, frozen, batch, generators, NO_DROPOUT).item())
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def trained(tiny_setup):
    """12 optimizer steps of 4 samples (2 per micro-batch, 2 accumulated) from the tiny InstructPix2Pix."""
    out = tiny_setup["root"] / "lower"
    config = _config(tiny_setup, out, max_train_steps=12, checkpoint_every=4, keep_checkpoints=2)
    return out, train_instructx2x(config, progress=False)


def test_training_lowers_the_loss_and_writes_a_loadable_pipeline(tiny_setup, trained):
    from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    components = load_base_components(tiny_setup["base"])
    frozen = FrozenParts.from_components(components, torch.device("cpu"), torch.float32)
    batch = _fixed_batch(tiny_setup, components)
    before = _fixed_batch_loss(components.unet, frozen, batch)

    out, summary = trained
    assert summary["steps"] == 12 and summary["gradient_accumulation_steps"] == 2
    assert [folder.name for folder in checkpoint_folders(out)] == ["step-000008", "step-000012"]
    final = read_checkpoint(checkpoint_folders(out)[-1])
    trained = load_base_components(tiny_setup["base"]).unet
    trained.load_state_dict(final["unet"])
    after = _fixed_batch_loss(trained, frozen, batch)
    assert after < 0.8 * before, (before, after)

    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 13))
    assert all(np.isfinite(record["loss"]) for record in log)
    saved_config = json.loads((out / "train_config.json").read_text())
    assert saved_config["learning_rate"] == 1e-3 and saved_config["derived"]["gradient_accumulation_steps"] == 2

    # the output folder is a complete pipeline whose UNet holds the EMA weights
    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(out, safety_checker=None)
    exported = UNet2DConditionModel.from_pretrained(out, subfolder="unet").state_dict()
    for name, tensor in final["ema"].items():
        torch.testing.assert_close(exported[name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(final["ema"][name], final["unet"][name]) for name in final["ema"])
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    result = pipeline("Add the finding of left pleural effusion", image=image, num_inference_steps=2,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
    assert result.shape == (1, SIZE, SIZE, 3) and np.isfinite(result).all()


def test_trained_folder_loads_in_the_instructx2x_adapter_and_edits(tiny_setup, trained):
    from cfbench.api.model import EditRequest, LoadContext, validate_result
    from cfbench.api.registry import get_model_class
    from cfbench.datasets.pseudo_masks import PseudoMasks

    out, _ = trained
    effusion = np.zeros((SIZE, SIZE), dtype=bool)
    effusion[20:, :] = True
    masks = tiny_setup["root"] / "masks.npz"
    PseudoMasks({"pleural effusion": effusion}, SIZE, "synthetic").save(masks)
    model = get_model_class("instructx2x").load(LoadContext(
        model_path=out, options={"native_resolution": str(SIZE), "steps": "2", "pseudo_masks": str(masks)}))
    dataset = EditDataset(tiny_setup["data"], "train", resolution=SIZE)
    prior = dataset.past_image(dataset.samples[0])
    edit = EditRequest(sample_id="s0", image=prior, instruction="Add the finding of left pleural effusion", seed=3)
    result = validate_result(model.edit([edit])[0], edit, "instructx2x")
    assert result.image.shape == (SIZE, SIZE) and result.guidance_map is not None


def test_resume_gives_the_state_of_an_uninterrupted_run(tiny_setup):
    straight = tiny_setup["root"] / "straight"
    interrupted = tiny_setup["root"] / "interrupted"
    train_instructx2x(_config(tiny_setup, straight, max_train_steps=4), progress=False)
    train_instructx2x(_config(tiny_setup, interrupted, max_train_steps=2), progress=False)
    # what a crash during step 3 leaves behind: a logged step past the checkpoint, a half-written checkpoint
    with (interrupted / "train_log.jsonl").open("a") as stream:
        stream.write(json.dumps({"step": 3, "loss": 9.0}) + "\n")
    (interrupted / "checkpoints" / ".partial-step-000003").mkdir()
    (interrupted / "checkpoints" / "step-000003").mkdir()  # no trainer_state.json: incomplete
    second = train_instructx2x(_config(tiny_setup, interrupted, max_train_steps=4), progress=False)
    assert second["resumed_from_step"] == 2 and second["steps_this_session"] == 2

    a = read_checkpoint(straight / "checkpoints" / "step-000004")
    b = read_checkpoint(interrupted / "checkpoints" / "step-000004")
    assert a["state"]["step"] == b["state"]["step"] == 4
    for part in ("unet", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    log = [json.loads(line) for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3, 4]
    straight_log = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in straight_log]

    # the same 4 samples per step as one micro-batch of 4 instead of 2 accumulated micro-batches of 2:
    # the same samples and noise, so the same losses up to floating-point summation order (the weights
    # are not compared: Adam turns rounding-level differences of near-zero gradients into lr-sized steps)
    whole = tiny_setup["root"] / "whole-batch"
    summary = train_instructx2x(_config(tiny_setup, whole, per_device_batch_size=4), progress=False)
    assert summary["gradient_accumulation_steps"] == 1
    whole_log = [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in whole_log] == pytest.approx([r["loss"] for r in straight_log], rel=1e-4)

    with pytest.raises(TrainingError, match="learning_rate"):
        train_instructx2x(_config(tiny_setup, interrupted, max_train_steps=6, learning_rate=5e-4), progress=False)


def test_training_from_a_stable_diffusion_folder_and_the_cli(tiny_setup):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from cfbench.cli import main

    out = tiny_setup["root"] / "from-sd"
    status = main(["--quiet", "train", "instructx2x", "--data", str(tiny_setup["data"]), "--base",
                   str(tiny_setup["sd"]), "--out", str(out), "--resolution", str(SIZE), "--steps", "2",
                   "--target-batch-size", "4", "--batch-size", "2", "--checkpoint-every", "1",
                   "--workers", "0"])
    assert status == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["base_kind"] == "stable-diffusion"
    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(out, safety_checker=None)
    assert pipeline.unet.config.in_channels == 8
    # a target the batch size does not divide is refused before any work
    status = main(["--quiet", "train", "instructx2x", "--data", str(tiny_setup["data"]), "--base",
                   str(tiny_setup["sd"]), "--out", str(tiny_setup["root"] / "bad"), "--target-batch-size", "5",
                   "--batch-size", "2"])
    assert status == 2
