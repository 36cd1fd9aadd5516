"""Speed of the phantom renderer: images/s and seconds per image at 512 and 256 px, on one core.

Run: ``python benchmarks/bench_phantom.py [--pairs N] [--sizes 512 256] [--smoke]``. Prints, per size,

- render (warm): ``render()`` of one patient at varying poses/noise, patient texture cached;
- render_pair: whole pairs from fresh seeds (past + current + counterfactual + mask, including the
  per-patient texture), reported per image (3 images per pair).

Timings are the median of a few repeats, measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# one core: keep any threaded BLAS/OpenMP out of the measurement (numpy elementwise code is single-threaded)
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import numpy as np  # noqa: E402
from conditions import parse_args, report  # noqa: E402

from cfbench.phantom.render import render, render_pair  # noqa: E402
from cfbench.phantom.scenario import PHANTOM_VERSION, sample_pair, sample_pose  # noqa: E402


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs per render_pair measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256], help="image sides in pixels")
    args = parse_args(parser, smoke={"pairs": 1, "repeats": 1, "sizes": [64]})

    print(f"phantom v{PHANTOM_VERSION}, numpy {np.__version__}")
    for size in args.sizes:
        pair = sample_pair(0)
        rng = np.random.default_rng(1)
        poses = [sample_pose(rng) for _ in range(10)]
        render(pair.patient, pair.past, poses[0], 0, size)  # warm the caches (grid, patient texture)

        def warm_renders():
            for index, pose in enumerate(poses):
                render(pair.patient, pair.past, pose, index, size)

        per_image = _median_time(warm_renders, args.repeats) / len(poses)
        print(f"{size:4d} px  render (warm)   {1.0 / per_image:7.1f} images/s   {per_image * 1000:6.1f} ms/image")
        report(f"render_{size}", 1.0 / per_image, f"phantom render (warm), {size} px, one core", "images/s")

        counter = iter(range(10_000, 10**9))

        def fresh_pairs():
            for _ in range(args.pairs):
                render_pair(sample_pair(next(counter)), size)

        per_image = _median_time(fresh_pairs, args.repeats) / (3 * args.pairs)
        print(f"{size:4d} px  render_pair     {1.0 / per_image:7.1f} images/s   {per_image * 1000:6.1f} ms/image"
              "  (fresh patients, 3 images per pair)")
        report(f"render_pair_{size}", 1.0 / per_image, f"phantom render_pair (fresh patients), {size} px, one core",
               "images/s")


if __name__ == "__main__":
    main()
