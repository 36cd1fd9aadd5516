"""Per-sample cost of a diffusion UNet model against the batch size: the measurement behind ``--batch-size auto``.

The shipped phantom InstructX2X (``cfbench/data/phantom_instructx2x``: the model ``cfbench demo`` and phantom
runs use; RSE included) edits ``--n`` requests in batches of each ``--batch-sizes`` entry, the batch sizes
interleaved over ``--repeats`` rounds (medians). Printed per batch: seconds per sample, the ratio to the
first batch size and the gain over the previous one; then the smallest batch whose per-sample cost is within
``--within`` of the best measured. ``cfbench.runs.batching.CPU_UNET_BATCH`` is chosen from this curve.

    python benchmarks/bench_batching.py [--batch-sizes 1 2 4 8 16] [--n 16] [--steps 10] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from conditions import parse_args, report

from cfbench.api.model import EditRequest, LoadContext
from cfbench.api.registry import get_model_class
from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.runs.batching import CPU_UNET_BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--n", type=int, default=16, help="requests per measurement (a multiple of every batch)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--within", type=float, default=0.05, help="'stops falling': within this fraction of the best")
    parser.add_argument("--device", default="cpu")
    args = parse_args(parser, smoke={"batch_sizes": [1, 2], "n": 2, "steps": 1, "repeats": 1})
    model = get_model_class("instructx2x").load(LoadContext(
        model_path=PACKAGE_DATA_DIR / "phantom_instructx2x", device=args.device, options={"steps": str(args.steps)}))
    size = model.settings.native_resolution
    rng = np.random.default_rng(0)
    requests = [EditRequest(sample_id=f"s{index}", image=rng.random((size, size), dtype=np.float32),
                            instruction="Add the finding of cardiomegaly", seed=index) for index in range(args.n)]
    model.edit(requests[:1])  # warm-up
    seconds: dict[int, list[float]] = {batch: [] for batch in args.batch_sizes}
    for _ in range(args.repeats):
        for batch in args.batch_sizes:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            tick = time.perf_counter()
            for start in range(0, args.n, batch):
                model.edit(requests[start : start + batch])
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[batch].append((time.perf_counter() - tick) / args.n)
            print(f"  (batch {batch}: {seconds[batch][-1] * 1000:.1f} ms per sample)", flush=True)
    per_sample = {batch: statistics.median(values) for batch, values in seconds.items()}
    best = min(per_sample.values())
    stops = min(batch for batch, cost in per_sample.items() if cost <= (1 + args.within) * best)
    print(f"phantom instructx2x, {size} px, {args.steps} steps, device {args.device}, torch threads "
          f"{torch.get_num_threads()}, N={args.n}, {args.repeats} interleaved rounds (medians)")
    previous = None
    for batch, cost in per_sample.items():
        speedup = per_sample[args.batch_sizes[0]] / cost
        gain = "" if previous is None else f"   gain over batch {previous[0]}: {previous[1] / cost:5.2f}"
        print(f"  batch {batch:3d}: {cost * 1000:8.1f} ms per sample   batch {args.batch_sizes[0]} / this "
              f"{speedup:5.2f}{gain}")
        previous = (batch, cost)
        report(f"batch{batch}_speedup", speedup, f"phantom UNet model per-sample "
               f"cost, batch {args.batch_sizes[0]} / batch {batch} ({args.device})", "x")
    print(f"within {args.within:.0%} of the best measured per-sample cost from batch {stops}; "
          f"cfbench.runs.batching.CPU_UNET_BATCH = {CPU_UNET_BATCH}")
    report("within_of_best_from", stops, f"smallest batch within {args.within:.0%} of the best measured per-sample "
           f"cost ({args.device})", "", f"CPU_UNET_BATCH = {CPU_UNET_BATCH}")


if __name__ == "__main__":
    main()
