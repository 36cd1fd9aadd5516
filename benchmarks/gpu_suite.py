"""The GPU numbers, in one prepared run (about 6-7 minutes on one H100/H200): results under benchmarks/results/.

Nothing is downloaded: the diffusion networks are random, with Stable Diffusion 1.5's architecture at 512 px
(860 M-parameter UNet with 8 input channels as InstructPix2Pix's, the SD VAE, a 12-layer CLIP text encoder),
written once as an InstructPix2Pix folder, so the compute is the real models' and the weights are not. In order,
each step a benchmark script of this folder in its own process, skipped once ``--budget`` seconds are spent:

1. cfbench ``instructpix2pix`` against diffusers' ``StableDiffusionInstructPix2PixPipeline`` from the same start
   latents, fp16 and bf16: the images agree, then time one by one and at batch 8
   (``bench_instructpix2pix_diffusers.py``);
2. ``instructx2x`` (RSE) images/s at batch 1 and 8 and its cost over plain InstructPix2Pix, fp16 and bf16
   (``bench_rse.py``);
3. peak GPU memory per sample of ``instructx2x`` at 512 px, fp16 (batch 1 and 8): the figure
   ``cfbench.runs.batching.GPU_UNET_GIB_PER_SAMPLE`` estimates (measured here, in this process);
4. the autoregressive loop against transformers' ``generate`` at batch 1 and 8 (``bench_autoregressive.py``);
5. evaluation of 2,000 images (1,000 generated + 1,000 real) with the default suite against a bare evaluator
   loop (``bench_evaluation.py --evaluator suite``).

RadEdit is not in it: its adapter needs the CXR-BERT text encoder and SDXL VAE layouts, not yet written
randomly here. Written: ``benchmarks/results/gpu-<date>.json`` (every result and the conditions) and
``gpu-<date>.md`` (the table). ``--smoke`` runs steps 1 and 2 on the CPU at their smallest sizes with a tiny
random folder (what the test suite runs; the other steps' scripts have their own smoke test).

    python benchmarks/gpu_suite.py [--device cuda] [--budget 420] [--out benchmarks/results] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from conditions import conditions, parse_args, report
from run_all import BENCHMARKS, performance_table, run_script

from cfbench.core.storage import atomic_write_text

SD15_TEXT_LENGTH = 77


def sd15_instruct_pix2pix_folder(folder: Path) -> Path:
    """A random InstructPix2Pix folder with Stable Diffusion 1.5's architecture (fp16 files)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.helpers.tiny_diffusion import _write_tokenizer_files

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                                attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4)
    vocab, merges = _write_tokenizer_files(folder / "_tokenizer_source")
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=SD15_TEXT_LENGTH)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=SD15_TEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionInstructPix2PixPipeline(
        unet=unet.half(), vae=vae.half(), text_encoder=text_encoder.half(), tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def memory_per_sample(folder: Path, device: str, steps: int, batch: int = 8) -> dict:
    """Peak allocated GPU memory of one ``instructx2x`` edit at batch 1 and ``batch``, and the slope per sample
    (as a record of ``run_all.run_script``)."""
    import numpy as np
    import torch

    from cfbench.api.model import EditRequest, LoadContext
    from cfbench.api.registry import get_model_class

    model = get_model_class("instructx2x").load(LoadContext(model_path=folder, device=device, options={
        "steps": str(steps), "precision": "fp16", "pseudo_masks": "nih"}))
    size = model.settings.native_resolution
    rng = np.random.default_rng(0)
    requests = [EditRequest(sample_id=f"m{index}", image=rng.random((size, size), dtype=np.float32),
                            instruction="Add the finding of cardiomegaly", seed=index) for index in range(batch)]
    peaks = {}
    for count in (1, batch):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model.edit(requests[:count])
        torch.cuda.synchronize()
        peaks[count] = (torch.cuda.max_memory_allocated() - base) / 2**30
    per_sample = (peaks[batch] - peaks[1]) / (batch - 1)
    print(f"instructx2x fp16 at {size} px: peak above the weights {peaks[1]:.2f} GiB at batch 1, "
          f"{peaks[batch]:.2f} GiB at batch {batch}: {per_sample:.3f} GiB per sample")
    result = {"key": "instructx2x_fp16_gib_per_sample", "value": per_sample, "label": f"instructx2x fp16 {size} px: "
              f"peak GPU memory per sample (batch 1 -> {batch})", "unit": "GiB",
              "target": "GPU_UNET_GIB_PER_SAMPLE in cfbench.runs.batching"}
    return {"script": "gpu_suite (memory)", "arguments": [], "returncode": 0, "results": [result], "seconds": 0.0}


def write_record(record: dict, stem: Path) -> None:
    """``stem.json`` (the whole record) and ``stem.md`` (its table)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    table = performance_table(record)
    if record["skipped"]:
        table += "\n\nNot run (time budget spent): " + ", ".join(record["skipped"]) + "."
    atomic_write_text(stem.with_suffix(".md"), table + "\n")
    print(f"\nwrote {stem}.json and {stem.name}.md:\n{table}")


def steps_of_the_suite(folder: Path, device: str, smoke: bool) -> list[tuple[str, list[str]]]:
    if smoke:  # the steps that take this suite's folder (the others run at their smoke size in their own test)
        common = ["--smoke", "--device", device]
        return [("bench_instructpix2pix_diffusers", [*common, "--model-path", str(folder), "--precision", "fp32",
                                                     "--resolution", "32"]),
                ("bench_rse", [*common, "--model-path", str(folder), "--precision", "fp32", "--resolution", "32"])]
    steps = []
    for precision in ("fp16", "bf16"):
        steps.append(("bench_instructpix2pix_diffusers", ["--model-path", str(folder), "--device", device,
                                                          "--precision", precision, "--n", "8", "--steps", "20",
                                                          "--repeats", "2", "--tolerance", "2e-2"]))
    for precision in ("fp16", "bf16"):
        steps.append(("bench_rse", ["--model-path", str(folder), "--device", device, "--precision", precision,
                                    "--resolution", "512", "--steps", "20", "--ratio-batch", "8",
                                    "--batch-sizes", "1", "8", "--repeats", "2"]))
    steps.append(("memory", []))  # measured in this process (CUDA only)
    steps.append(("bench_autoregressive", ["--device", device, "--batch-sizes", "1", "8", "--hidden", "1024",
                                           "--layers", "8", "--new-tokens", "256", "--repeats", "3"]))
    steps.append(("bench_evaluation", ["--device", device, "--evaluator", "suite", "--n", "1000",
                                       "--resolution", "512", "--suite-repeats", "1", "--skip-memory",
                                       "--skip-large"]))
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which no further step starts")
    parser.add_argument("--out", type=Path, help="folder of the result files (default: benchmarks/results; with "
                                                 "--smoke a temporary folder, removed at the end)")
    args = parse_args(parser, smoke={"device": "cpu"})
    started = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_suite: --device {args.device} but torch sees no CUDA device (use --smoke on a CPU)",
              file=sys.stderr)
        return 2
    record = {"command": shlex.join(["python", "benchmarks/gpu_suite.py", *sys.argv[1:]]), "smoke": args.smoke,
              "conditions_before": conditions(), "scripts": [], "skipped": []}
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix

            folder = save_tiny_instruct_pix2pix(Path(scratch) / "ip2p", sample_size=16)
        else:
            folder = sd15_instruct_pix2pix_folder(Path(scratch) / "sd15-ip2p")
        print(f"networks: {folder} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        for name, extra in steps_of_the_suite(folder, args.device, args.smoke):
            if time.perf_counter() - started > args.budget:
                record["skipped"].append(name)
                print(f"budget of {args.budget:.0f} s spent: {name} skipped", flush=True)
                continue
            if name == "memory":
                record["scripts"].append(memory_per_sample(folder, args.device, steps=2))
                continue
            record["scripts"].append(run_script(name, extra))
        record["conditions_after"] = conditions()
        out = args.out or (Path(scratch) if args.smoke else BENCHMARKS / "results")
        write_record(record, out / f"{'smoke' if args.smoke else 'gpu'}-{time.strftime('%Y%m%d-%H%M', time.gmtime())}")
    print(f"({time.perf_counter() - started:.0f} s)")
    report("failed_steps", sum(script["returncode"] != 0 for script in record["scripts"]), "gpu_suite steps that "
           "failed", "", "0")
    return 1 if any(script["returncode"] != 0 for script in record["scripts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
