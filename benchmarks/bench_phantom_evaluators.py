"""Speed of the shipped phantom evaluator on CPU: load time and predict() images/s at 128, 256 and 512 px.

Run: ``python benchmarks/bench_phantom_evaluators.py [--batch 32] [--repeats 5] [--sizes 128 256 512] [--smoke]``. Prints, per input size,
the median seconds per batch and images/s (resize to 128 + forward), measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from conditions import parse_args, report

from cfbench.phantom.evaluator import PhantomEvaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="input sides in pixels")
    args = parse_args(parser, smoke={"batch": 2, "repeats": 1, "sizes": [128]})

    started = time.perf_counter()
    evaluator = PhantomEvaluator.from_file()
    print(f"load: {time.perf_counter() - started:.3f} s  (torch threads: {torch.get_num_threads()})")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        images = rng.uniform(0.0, 1.0, size=(args.batch, size, size)).astype(np.float32)
        evaluator.predict(images[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluator.predict(images)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{size:>4} px: {median:.3f} s per batch of {args.batch}, {args.batch / median:.0f} images/s")
        report(f"predict_{size}", args.batch / median, f"shipped phantom evaluator predict, {size} px input, "
               f"batch {args.batch}", "images/s")


if __name__ == "__main__":
    main()
