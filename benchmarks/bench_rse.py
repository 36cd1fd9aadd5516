"""Cost of Region-Specific Editing, and throughput against batch size.

Prints, measured in one run with the same loaded networks:
- RSE time / plain InstructPix2Pix time for one batch at ``--steps`` (default 100) DDIM steps: the
  ``instructx2x`` model against ``instructpix2pix`` (same weights, same requests). RSE adds one two-branch
  UNet call (the relevance pass) to the ``steps`` three-branch calls, plus mask bookkeeping, so the
  expected ratio is about 1 + 2 / (3 * steps) (target <= 1.05);
- images/s of ``instructx2x`` for each ``--batch-sizes`` entry.
Timings are the median of ``--repeats`` runs, the two models interleaved so that load changes on a
shared machine hit both alike.

Without ``--model-path`` the networks are random and tiny (``tests/helpers/tiny_diffusion.py``): the numbers then
show the loop's overhead structure, not the speed of the real 860M-parameter UNet.

    python benchmarks/bench_rse.py [--model-path DIR] [--resolution 64] [--device cpu] [--precision auto] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from conditions import parse_args, report

from cfbench import diffusion
from cfbench.api.model import EditRequest
from cfbench.models.instructx2x import (
    InstructPix2PixModel,
    InstructX2XModel,
    InstructX2XSettings,
    load_pseudo_masks,
)

INSTRUCTIONS = ("Add the finding of cardiomegaly", "Add the finding of small left pleural effusion",
                "Remove the finding of right pneumothorax", "Add the finding of edema")


def requests_for(count: int, size: int) -> list[EditRequest]:
    rng = np.random.default_rng(0)
    return [EditRequest(sample_id=f"b{index}", image=rng.random((size, size), dtype=np.float32),
                        instruction=INSTRUCTIONS[index % len(INSTRUCTIONS)], seed=index) for index in range(count)]


def timed(model, requests: list[EditRequest], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    tick = time.perf_counter()
    results = model.edit(requests)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tick
    assert all(np.isfinite(result.image).all() for result in results), "non-finite output"
    return seconds


def tiny_model_folder(scratch: Path, args) -> Path:
    from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix

    return save_tiny_instruct_pix2pix(scratch / "tiny", unet_channels=tuple(args.unet_channels),
                                      vae_channels=tuple(args.vae_channels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, help="InstructPix2Pix-format folder (default: a tiny random one)")
    parser.add_argument("--unet-channels", type=int, nargs="+", default=[32, 64], help="tiny model's UNet widths")
    parser.add_argument("--vae-channels", type=int, nargs="+", default=[16, 32], help="tiny model's VAE widths")
    parser.add_argument("--resolution", type=int, default=64, help="pixels the networks run at")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--ratio-batch", type=int, default=2, help="batch size of the RSE / plain comparison")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=diffusion.PRECISIONS)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--pseudo-masks", default="nih", help='"nih" (needs torchxrayvision) or a PseudoMasks file')
    args = parse_args(parser, smoke={"resolution": 32, "steps": 2, "ratio_batch": 1, "batch_sizes": [1, 2],
                                     "repeats": 1})
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model_path or tiny_model_folder(Path(scratch), args)
        settings = InstructX2XSettings(steps=args.steps, native_resolution=args.resolution, precision=args.precision,
                                       pseudo_masks=args.pseudo_masks)
        components = diffusion.load_diffusion_components(
            folder, "StableDiffusionInstructPix2PixPipeline", device=args.device,
            dtype=diffusion.resolve_dtype(args.precision, args.device), expected_unet_in_channels=8,
        )
        pseudo_masks = load_pseudo_masks(settings.pseudo_masks, settings.native_resolution)
        rse_model = InstructX2XModel(components, settings, folder, pseudo_masks)
        plain_model = InstructPix2PixModel(components, settings, folder)
        parameters = sum(parameter.numel() for parameter in components.unet.parameters())
        print(f"model: {'random tiny ' if args.model_path is None else ''}{folder.name}, UNet {parameters / 1e6:.2f} M "
              f"parameters, {components.dtype}, device {args.device}, {args.resolution} px, {args.steps} steps, "
              f"torch threads {torch.get_num_threads()}")

        requests = requests_for(max(args.batch_sizes + [args.ratio_batch]), args.resolution)
        comparison = requests[: args.ratio_batch]
        timed(rse_model, comparison[:1], args.device)  # warm-up (allocations, kernels)
        rse_times, plain_times = [], []
        for _ in range(args.repeats):
            plain_times.append(timed(plain_model, comparison, args.device))
            rse_times.append(timed(rse_model, comparison, args.device))
        # the fastest of the interleaved repeats is the least disturbed by other load on the machine
        rse_seconds, plain_seconds = min(rse_times), min(plain_times)
        print(f"batch {args.ratio_batch}: RSE {rse_seconds:.3f} s, plain InstructPix2Pix {plain_seconds:.3f} s (fastest of "
              f"{args.repeats}), ratio RSE / plain = {rse_seconds / plain_seconds:.4f} (medians: "
              f"{statistics.median(rse_times) / statistics.median(plain_times):.4f}; expected about "
              f"{1 + 2 / (3 * args.steps):.4f}; target <= 1.05)")
        networks = folder.name if args.model_path else "tiny random networks"
        report("rse_over_plain", rse_seconds / plain_seconds, f"RSE / plain InstructPix2Pix time, batch "
               f"{args.ratio_batch}, {args.steps} steps, {args.resolution} px, {networks}", "x", "<= 1.05")

        print("batch size   images/s (instructx2x)")
        for batch_size in args.batch_sizes:
            seconds = statistics.median(timed(rse_model, requests[:batch_size], args.device)
                                        for _ in range(args.repeats))
            print(f"{batch_size:>10}   {batch_size / seconds:.3f}")
            report(f"instructx2x_batch{batch_size}", batch_size / seconds,
                   f"instructx2x images/s at batch {batch_size}, {args.steps} steps, {args.resolution} px", "images/s")


if __name__ == "__main__":
    main()
