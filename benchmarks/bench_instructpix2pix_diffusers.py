"""Equal outputs, then speed: cfbench's ``instructpix2pix`` against diffusers' InstructPix2Pix pipeline.

Both run the same networks (the pipeline is built from the very modules cfbench loaded), the same DDIM
scheduler (cfbench's: no sample clipping, alpha_bar of t=0 at the end), the same guidance scales and the
same requests, and start from the same latents: cfbench's loop starts from the prior's latents noised to
the first timestep with each sample's seeded noise (the InstructX2X inference code), so exactly those
latents are handed to the pipeline as ``latents=`` (a diffusers user would start from pure noise; computing
the start is left out of diffusers' time). The images must agree (max |difference| <= ``--tolerance`` in
[0, 1] units, after cfbench's mean of the three decoded channels); the script exits 1 when they do not
(after timing them all the same, so a device run loses no numbers). Both are timed, interleaved over
``--repeats`` rounds, one request at a time and as one batch: printed are seconds and the ratio cfbench / diffusers (< 1: cfbench is faster).

The default networks are the shipped phantom InstructX2X (``cfbench/data/phantom_instructx2x``, 128 px, a
5.9 M-parameter UNet); ``--model-path`` takes any InstructPix2Pix folder (e.g. the 512 px release on a GPU).

    python benchmarks/bench_instructpix2pix_diffusers.py [--n 8] [--steps 20] [--repeats 3] [--device cpu]
        [--precision auto] [--model-path DIR] [--resolution PX] [--threads T] [--tolerance 1e-4] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from conditions import parse_args, report

from cfbench import diffusion
from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.core.config import PACKAGE_DATA_DIR

INSTRUCTIONS = ("Add the finding of cardiomegaly", "Add the finding of small left pleural effusion",
                "Remove the finding of right pneumothorax", "Add the finding of edema")


def load_both(model_path: Path, steps: int, device: str, precision: str, resolution: int | None):
    """cfbench's plain InstructPix2Pix and a diffusers pipeline sharing its networks, with a copy of its scheduler."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    # diffusers' pipeline conditions on the VAE posterior's mode; cfbench's default is the release's posterior sample
    options = {"steps": str(steps), "precision": precision, "start_latents": "mode"}
    if resolution:
        options["native_resolution"] = str(resolution)
    model = get_model_class("instructpix2pix").load(LoadContext(model_path=model_path, device=device, options=options))
    components = model.components
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=type(components.scheduler).from_config(components.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return model, pipeline


def requests_for(count: int, size: int) -> list[EditRequest]:
    rng = np.random.default_rng(0)
    return [EditRequest(sample_id=f"s{index}", image=rng.random((size, size), dtype=np.float32),
                        instruction=INSTRUCTIONS[index % len(INSTRUCTIONS)], seed=1000 + index)
            for index in range(count)]


def start_latents(model, requests: list[EditRequest]) -> torch.Tensor:
    """The latents cfbench's loop starts from: the priors' scaled latents noised to the first timestep."""
    components = model.components
    images = torch.from_numpy(np.stack([request.image for request in requests]))
    source = diffusion.encode_images(components, images) * components.latent_scaling
    noise = diffusion.seeded_noise([request.seed for request in requests], tuple(source.shape[1:]), components.device)
    components.scheduler.set_timesteps(model.settings.steps, device="cpu")
    return diffusion.noise_to_timestep(components, source, noise, int(components.scheduler.timesteps[0]))


def run_diffusers(pipeline, model, requests: list[EditRequest], latents: torch.Tensor) -> np.ndarray:
    """B x H x W float32 in [0, 1]: the pipeline's RGB output, averaged over channels as cfbench decodes."""
    settings = model.settings
    images = torch.from_numpy(np.stack([request.image for request in requests]))[:, None].expand(-1, 3, -1, -1)
    with torch.no_grad():
        output = pipeline(prompt=[request.instruction for request in requests], image=images,
                          num_inference_steps=settings.steps, guidance_scale=settings.text_guidance,
                          image_guidance_scale=settings.image_guidance, latents=latents.to(model.components.dtype),
                          output_type="pt").images
    return output.float().mean(dim=1).cpu().numpy()


def run_cfbench(model, requests: list[EditRequest]) -> np.ndarray:
    return np.stack([result.image for result in model.edit(requests)])


def synchronised(device: str, function):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    tick = time.perf_counter()
    value = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - tick


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, default=PACKAGE_DATA_DIR / "phantom_instructx2x",
                        help="an InstructPix2Pix folder (default: the shipped phantom InstructX2X)")
    parser.add_argument("--n", type=int, default=8, help="requests (the batch of the batched comparison)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=diffusion.PRECISIONS)
    parser.add_argument("--resolution", type=int, help="pixels the networks run at (default: the model's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |difference| in [0, 1] units")
    args = parse_args(parser, smoke={"n": 2, "steps": 2, "repeats": 1, "threads": 1})
    if args.threads:
        torch.set_num_threads(args.threads)
    model, pipeline = load_both(args.model_path, args.steps, args.device, args.precision, args.resolution)
    size = model.settings.native_resolution
    requests = requests_for(args.n, size)
    latents = [start_latents(model, [request]) for request in requests]
    batched_latents = torch.cat(latents)
    print(f"{args.model_path.name}: {size} px, {args.steps} DDIM steps, {model.components.dtype}, "
          f"device {args.device}, "
          f"torch threads {torch.get_num_threads()}, N={args.n}")

    ours = run_cfbench(model, requests)
    run_cfbench(model, requests[:1])  # every shape both sides time is run once before the timing (warm-up)
    theirs = run_diffusers(pipeline, model, requests, batched_latents)
    one_by_one = np.concatenate([run_diffusers(pipeline, model, [request], start)
                                 for request, start in zip(requests, latents)])
    batch_difference = float(np.abs(ours - theirs).max())
    single_difference = float(np.abs(ours - one_by_one).max())
    agree = max(batch_difference, single_difference) <= args.tolerance
    print(f"equal outputs: max |cfbench - diffusers| = {batch_difference:.2e} batched, {single_difference:.2e} one by "
          f"one (diffusers), tolerance {args.tolerance:.0e}: {'AGREE' if agree else 'DIFFERENT'}; mean |output - "
          f"input| {float(np.abs(ours - np.stack([r.image for r in requests])).mean()):.4f} (the edit is not a no-op)")
    report("max_difference", max(batch_difference, single_difference), "cfbench instructpix2pix vs diffusers "
           "StableDiffusionInstructPix2PixPipeline, same start latents: max absolute difference", "",
           f"<= {args.tolerance:.0e}")
    modes = {
        "one by one": (lambda: [run_cfbench(model, [request]) for request in requests],
                       lambda: [run_diffusers(pipeline, model, [request], start)
                                for request, start in zip(requests, latents)]),
        f"batch of {args.n}": (lambda: run_cfbench(model, requests),
                               lambda: run_diffusers(pipeline, model, requests, batched_latents)),
    }
    print(f"time for {args.n} images, {args.repeats} interleaved rounds (medians)")
    for mode, (cfbench_run, diffusers_run) in modes.items():
        times: dict[str, list[float]] = {"cfbench": [], "diffusers": []}
        for _ in range(args.repeats):
            times["cfbench"].append(synchronised(args.device, cfbench_run)[1])
            times["diffusers"].append(synchronised(args.device, diffusers_run)[1])
        ratio = statistics.median(c / d for c, d in zip(times["cfbench"], times["diffusers"]))
        print(f"  {mode:12s} cfbench {statistics.median(times['cfbench']):7.2f} s   diffusers "
              f"{statistics.median(times['diffusers']):7.2f} s   cfbench / diffusers {ratio:.3f}")
        report(f"ratio_{mode.split()[0]}", ratio, f"instructpix2pix time, cfbench / diffusers pipeline, {mode}, "
               f"{size} px, {args.steps} steps ({args.device}, {model.components.dtype})", "x", "<= 1")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
