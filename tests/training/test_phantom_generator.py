"""The phantom generator: tokenizer coverage, VAE kill/resume, the staged train-generator run and loading
of its shipped folder through the training and inference paths (tiny step counts; no GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cfbench.training.phantom_generator import (
    check_loadable,
    load_recipe,
    resolve_recipe,
    train_phantom_generator,
)
from cfbench.training.phantom_text import phantom_text_encoder, save_phantom_tokenizer, unknown_pieces
from cfbench.training.phantom_vae import VaeConfig, train_phantom_vae

REPO = Path(__file__).resolve().parents[2]

# A tiny VAE run (4 blocks = factor 8, narrow): a few seconds on a CPU.
TINY_VAE = dict(n_train=6, render_resolutions=(128,), n_heldout=8, block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
                steps=3, batch_size=2, checkpoint_every=1, log_every=1, progress=False)

# train-generator on 24 phantoms at 64 px, every stage a few steps.
SMOKE = {"dataset.n": 24, "dataset.resolution": 64, "dataset.workers": 1, "vae.n_train": 6, "vae.n_heldout": 8,
         "vae.render_resolutions": [128], "vae.batch_size": 2, "vae.workers": 1, "instructx2x.target_batch_size": 2,
         "instructx2x.per_device_batch_size": 2, "instructx2x.num_workers": 0}


def test_tokenizer_covers_every_phantom_instruction(tmp_path):
    from transformers import AutoTokenizer

    from cfbench.training.edit_augment import swap_left_right
    from cfbench.phantom.scenario import sample_pair
    from cfbench.phantom.dataset import pair_seed

    save_phantom_tokenizer(tmp_path / "a")
    save_phantom_tokenizer(tmp_path / "b")
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()  # deterministic
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "a")
    for index in range(400):
        instruction = sample_pair(pair_seed(7, index)).instruction
        for text in (instruction, swap_left_right(instruction)):
            assert unknown_pieces(tokenizer, text) == [], text  # every word is one known token
            ids = tokenizer(text).input_ids
            assert tokenizer.unk_token_id not in ids[1:-1]
            assert len(ids) <= tokenizer.model_max_length


def test_text_encoder_is_seeded(tmp_path):
    tokenizer = save_phantom_tokenizer(tmp_path)
    first, second = phantom_text_encoder(tokenizer, seed=3), phantom_text_encoder(tokenizer, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not any(p.requires_grad for p in first.parameters())


def _vae_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")


def test_vae_killed_and_resumed_reaches_identical_weights(tmp_path):
    straight = train_phantom_vae(VaeConfig(output_dir=str(tmp_path / "straight"), **TINY_VAE))
    assert straight["completed"] and straight["steps_done"] == 3
    assert set(straight["acceptance"]) >= {"original", "decoded", "delta", "passed", "max_abs_delta"}

    # A process that is SIGKILLed in the middle of step 3, after step 2's checkpoint was written.
    script = textwrap.dedent(f"""
        import os, signal
        import cfbench.training.phantom_vae as pv
        calls = []
        original = pv.vae_loss
        def dying_loss(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        pv.vae_loss = dying_loss
        pv.train_phantom_vae(pv.VaeConfig(output_dir={str(tmp_path / 'killed')!r}, **{TINY_VAE!r}))
    """)
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == -9, process.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir() if not p.name.startswith(".")) \
        == ["step-000001", "step-000002"]

    resumed = train_phantom_vae(VaeConfig(output_dir=str(tmp_path / "killed"), **TINY_VAE))
    assert resumed["resumed_from_step"] == 2 and resumed["steps_done"] == 3
    a, b = _vae_weights(tmp_path / "straight"), _vae_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    log = [json.loads(line) for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]


def test_vae_refuses_other_settings_in_a_started_folder(tmp_path):
    from cfbench.training.instructx2x import TrainingError

    settings = {**TINY_VAE, "steps": 1}
    train_phantom_vae(VaeConfig(output_dir=str(tmp_path), **settings))
    with pytest.raises(TrainingError, match="learning_rate"):
        train_phantom_vae(VaeConfig(output_dir=str(tmp_path), **{**settings, "learning_rate": 1e-3}))


def test_recipe_profiles_and_scaling():
    recipe = load_recipe()
    cuda = resolve_recipe(recipe, "cuda", steps_scale=0.5)
    cpu = resolve_recipe(recipe, "cpu", overrides={"dataset.n": 10})
    assert cuda["vae"]["steps"] == -(-recipe["profiles"]["cuda"]["vae"]["steps"] // 2)
    assert cuda["instructx2x"]["mixed_precision"] == "bf16" and cpu["instructx2x"]["mixed_precision"] == "no"
    assert cpu["dataset"]["n"] == 10 and resolve_recipe(recipe, "cpu", 1e-9)["vae"]["steps"] == 1
    assert recipe["dataset"]["resolution"] == 128 and recipe["text"]["hidden_size"] <= 128


def test_train_generator_end_to_end_and_loadable(tmp_path):
    from cfbench.cli import main

    out = tmp_path / "gen"
    # First session: the InstructX2X stage is time-capped after a 1-step probe chunk.
    capped = train_phantom_generator(out, steps_scale=0.001, progress=False,
                                     overrides={**SMOKE, "instructx2x.max_minutes": 1e-6, "instructx2x.probe_steps": 1})
    assert capped["instructx2x"]["steps_done"] == 1 and capped["instructx2x"]["stopped_by_max_minutes"]
    # Second session, no cap: the finished stages are skipped, InstructX2X resumes to its steps.
    record = train_phantom_generator(out, steps_scale=0.001, progress=False, overrides=SMOKE)
    assert "base" not in record["timing_seconds_this_session"]
    assert record["instructx2x"]["steps_done"] == record["instructx2x"]["steps"] == 3
    assert record["instructx2x"]["last_summary"]["resumed_from_step"] == 1
    assert record["vae"]["steps_done"] == 3

    shipped = out / "shipped"
    files = record["shipped"]["files"]
    assert {"model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"} <= set(files)
    assert not any(name.startswith(("safety_checker", "feature_extractor")) for name in files)
    assert record["shipped"]["within_size_limit"] and record["shipped"]["weights_megabytes"] <= 30
    assert (shipped / "MODEL_CARD.md").is_file() and (out / "model_card.json").is_file()
    from safetensors import safe_open

    with safe_open(str(shipped / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.float16
    loaded = check_loadable(shipped)
    assert loaded["base_kind"] == "instruct-pix2pix" and loaded["unet_dtype"] == "torch.float32"
    assert loaded["vae_scale_factor"] == 4  # the recipe's three-block VAE

    # The inference path of models/instructx2x.py, through the CLI.
    code = main(["run", "--model", "instructx2x", "--model-path", str(shipped), "--data", str(out / "data"),
                 "--split", "holdout", "--limit", "1", "--resolution", "64",
                 "--option", "steps=2", "--evaluator", "none", "--out", str(tmp_path / "run")])
    assert code == 0
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) == 1

    # Warm start from the shipped folder (CLI --init-from): no VAE stage, the base is the shipped folder as it
    # is, and the card counts the earlier steps.
    warm = tmp_path / "warm"
    code = main(["--quiet", "phantom", "train-generator", "--out", str(warm), "--steps-scale", "0.001",
                 "--init-from", str(shipped), *[f"--set={key}={json.dumps(value)}" for key, value in SMOKE.items()]])
    assert code == 0
    assert not (warm / "vae_training").exists()
    for component in ("unet", "vae", "text_encoder"):
        name = "model.safetensors" if component == "text_encoder" else "diffusion_pytorch_model.safetensors"
        assert (warm / "base" / component / name).read_bytes() == (shipped / component / name).read_bytes()
    continued = json.loads((warm / "model_card.json").read_text())
    assert continued["instructx2x"]["continued_from"]["steps_before"] == 3
    assert continued["instructx2x"]["total_steps"] == 3 + continued["instructx2x"]["steps_done"] == 6
    assert continued["vae"]["steps_done"] == 3 and continued["vae"]["from_folder"] == str(shipped)
    assert "Warm start: continued from" in (warm / "shipped" / "MODEL_CARD.md").read_text()
    trained = load_file(warm / "instructx2x" / "unet" / "diffusion_pytorch_model.safetensors")
    start = load_file(shipped / "unet" / "diffusion_pytorch_model.safetensors")
    # three steps from the shipped weights: close to them (a random init would be far), but not equal
    gaps = [float((trained[key].float() - start[key].float()).abs().max()) for key in start]
    assert 0 < max(gaps) < 0.05
    with pytest.raises(FileNotFoundError, match="not a pipeline folder: missing model_index.json, unet"):
        train_phantom_generator(tmp_path / "bad", steps_scale=0.001, progress=False,
                                overrides={**SMOKE, "instructx2x.init_from": str(tmp_path / "run")})


def test_cli_imports_without_optional_packages():
    """`python -m cfbench.cli` must start where torchxrayvision, SimpleITK and diffusers are missing."""
    script = ("import sys\n"
              "for name in ('torchxrayvision', 'SimpleITK', 'diffusers'): sys.modules[name] = None\n"
              "import runpy\nsys.argv = ['cfbench', 'phantom', 'train-generator', '--help']\n"
              "runpy.run_module('cfbench.cli', run_name='__main__')\n")
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "--steps-scale" in process.stdout


def test_vae_steps_fit_the_time_cap_and_a_started_run_keeps_its_steps(tmp_path):
    from cfbench.training.phantom_vae import fit_steps_to_time

    capped = VaeConfig(output_dir=str(tmp_path), **{**TINY_VAE, "steps": 10**9, "max_minutes": 0.002})
    fitted = fit_steps_to_time(capped)
    assert 1 <= fitted.steps < 10**9  # what 90% of 0.12 s holds at the measured speed
    assert fit_steps_to_time(VaeConfig(output_dir=str(tmp_path), **TINY_VAE)).steps == 3  # no cap: unchanged
    train_phantom_vae(VaeConfig(output_dir=str(tmp_path), **{**TINY_VAE, "steps": 2}))
    assert fit_steps_to_time(capped).steps == 2  # resuming never changes the schedule


def test_phantom_dataset_workers_do_not_change_the_output(tmp_path):
    from cfbench.phantom.dataset import build_phantom_dataset

    build_phantom_dataset(tmp_path / "one", 5, seed=3, resolution=64, progress=False, workers=1)
    build_phantom_dataset(tmp_path / "two", 5, seed=3, resolution=64, progress=False, workers=2)
    files = sorted(path.relative_to(tmp_path / "one") for path in (tmp_path / "one").rglob("*") if path.is_file())
    assert len(files) == 5 * 4 + 3  # past, current, counterfactual, lesion mask per pair; csv, dataset.json, masks
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)


def test_spectral_term_sees_blur_and_enters_the_loss():
    from cfbench.training.phantom_vae import build_vae, spectral_distance, vae_loss
    from cfbench.training.instructx2x import sample_generators

    images = torch.rand((2, 128, 128), generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(images[:, None], 3, 1, 1)[:, 0]
    assert float(spectral_distance(images, images)) == 0.0 < float(spectral_distance(blurred, images))
    config = VaeConfig(output_dir="", **{**TINY_VAE, "spectral_weight": 0.5})
    terms = vae_loss(build_vae(config), images, sample_generators(0, torch.arange(2)), config)
    expected = (terms["l1"] + terms["mse"] + 0.5 * terms["gradient"] + 1e-6 * terms["kl"] + 0.5 * terms["spectral"])
    assert torch.allclose(terms["loss"], expected)
