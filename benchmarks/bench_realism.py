"""What KID, precision/recall and density/coverage add to an evaluation: seconds and peak traced memory at the
size of a split (default N = 2248 samples of 1024-d features, the default 200 replicates), against the FID
interval computed on the same table in the same run (interleaved over ``--repeats`` rounds, medians).

    python benchmarks/bench_realism.py [--n 2248] [--d 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conditions import parse_args, report  # noqa: E402
from cfbench.evaluation.protocol import Protocol  # noqa: E402
from cfbench.evaluation.realism import realism_scores  # noqa: E402
from cfbench.evaluation.scoring import SampleTable, _fid_interval  # noqa: E402


def synthetic_table(n: int, d: int) -> SampleTable:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n, d)).astype(np.float32) + 1.0
    generated = (real * 0.9 + rng.normal(scale=0.5, size=(n, d))).astype(np.float32)
    return SampleTable(sample_ids=[f"s{i}" for i in range(n)], operations=[("add",)] * n,
                       labels=np.full((n, 5), np.nan), race=np.full(n, -1), sex_male=np.full(n, np.nan),
                       age=np.full(n, np.nan), race_classes=(), generated={"features": generated},
                       real={"features": real})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2248)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, smoke={"n": 64, "d": 32, "repeats": 1})
    table, protocol = synthetic_table(args.n, args.d), Protocol()
    realism, fid, peaks = [], [], []
    for _ in range(args.repeats):
        tracemalloc.start()
        started = time.perf_counter()
        realism_scores(table, protocol)
        realism.append(time.perf_counter() - started)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
        tracemalloc.stop()
        started = time.perf_counter()
        _fid_interval(table, protocol)
        fid.append(time.perf_counter() - started)
    r, f = statistics.median(realism), statistics.median(fid)
    print(f"N = {args.n}, d = {args.d}, {protocol.fid_bootstrap_resamples} replicates, median of {args.repeats}: "
          f"realism (KID + precision/recall + density/coverage) {r:.1f} s, FID interval {f:.1f} s, "
          f"realism / FID = {r / f:.2f}; realism peak traced allocations {max(peaks):.0f} MiB")
    report("realism_over_fid", r / f, f"KID + precision/recall + density/coverage time / FID interval time, N={args.n}, "
           f"d={args.d}", "x")
    report("realism_peak_mib", max(peaks), f"realism peak traced allocations, N={args.n}, d={args.d}", "MiB")


if __name__ == "__main__":
    main()
