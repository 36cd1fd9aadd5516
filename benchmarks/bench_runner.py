"""Runner overhead per sample around the `identity` model.

Prints, measured in one run on the same phantom split:
- bare: `identity.edit` on requests already in memory (what a model costs when it does nothing);
- harness: `cfbench generate` end to end (read + decode the prior PNG, seed, edit, validate, 16-bit PNG
  write on the writer thread, fsynced ledger line, progress bookkeeping), at PNG compression 1 (default)
  and 0;
- overhead per sample = (harness - bare) / N (target <= 15 ms at 512 px), and where it goes (read, write,
  ledger). Bare and harness runs are interleaved over ``--repeats`` rounds; medians are printed.

    python benchmarks/bench_runner.py [--n 64] [--resolution 512] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from conditions import parse_args, report

from cfbench.api.model import LoadContext
from cfbench.core.images import encode_png16
from cfbench.core.storage import JsonlLedger
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.models.reference import IdentityModel
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate, make_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, smoke={"n": 4, "resolution": 64, "repeats": 1})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = build_phantom_dataset(scratch / "data", args.n, resolution=args.resolution, fractions={"holdout": 1.0},
                                     progress=False)
        dataset = EditDataset(data, "holdout", args.resolution)
        model = IdentityModel.load(LoadContext())

        tick = time.perf_counter()
        requests = [make_request(sample, dataset, 0) for sample in dataset]
        read = time.perf_counter() - tick

        tick = time.perf_counter()
        encoded = [encode_png16(request.image) for request in requests]
        encode = time.perf_counter() - tick
        tick = time.perf_counter()
        encoded0 = [encode_png16(request.image, 0) for request in requests]
        encode0 = time.perf_counter() - tick

        with JsonlLedger(scratch / "ledger.jsonl") as ledger:
            tick = time.perf_counter()
            for request in requests:
                ledger.append({"sample_id": request.sample_id, "seed": request.seed, "info": {}})
            ledger_time = time.perf_counter() - tick

        bares, harness = [], {1: [], 0: []}
        for round_ in range(args.repeats):
            tick = time.perf_counter()
            for start in range(0, len(requests), 8):
                model.edit(requests[start : start + 8])
            bares.append(time.perf_counter() - tick)
            for level in (1, 0):
                settings = RunSettings(model="identity", split="holdout", data_dir=data,
                                       out=scratch / f"run{round_}-{level}", resolution=args.resolution, batch_size=8,
                                       png_compression=level)
                tick = time.perf_counter()
                outcome = generate(settings, progress=False)
                harness[level].append(time.perf_counter() - tick)
                assert outcome.generated == args.n and not outcome.failed
    bare = float(np.median(bares))
    n = args.n
    print(f"runner overhead around `identity`, N={n} samples at {args.resolution}x{args.resolution}, batch 8, "
          f"{args.repeats} interleaved rounds (medians)")
    print(f"  bare identity.edit           {1e3 * bare / n:8.3f} ms/sample")
    for level in (1, 0):
        total = float(np.median(harness[level]))
        overhead = float(np.median([(h - b) / n for h, b in zip(harness[level], bares)]))
        print(f"  cfbench generate, png level {level}: {1e3 * total / n:8.3f} ms/sample, overhead per sample "
              f"{1e3 * overhead:8.3f} ms (target <= 15 ms), throughput {n / total:.1f} samples/s")
        report(f"overhead_png{level}", 1e3 * overhead, f"runner overhead per sample around identity, {args.resolution} "
               f"px, PNG level {level}", "ms/sample", "<= 15")
    print(f"    measured separately: read+decode prior {1e3 * read / n:.3f} ms, 16-bit PNG encode level 1 "
          f"{1e3 * encode / n:.3f} ms / level 0 {1e3 * encode0 / n:.3f} ms (now on the writer thread), "
          f"fsynced ledger line {1e3 * ledger_time / n:.3f} ms")
    print(f"  png bytes/sample             level 1 {np.mean([len(e) for e in encoded]) / 1024:8.1f} KiB, "
          f"level 0 {np.mean([len(e) for e in encoded0]) / 1024:8.1f} KiB")

if __name__ == "__main__":
    main()
