"""Runner overhead per sample around the `identity` model.

Prints, measured in one run on the same phantom split:
- bare: `identity.edit` on requests already in memory (what a model costs when it does nothing);
- harness: `cfbench generate` end to end (read + decode the prior PNG, seed, edit, validate, 16-bit PNG
  write, fsynced ledger line, progress bookkeeping);
- overhead per sample = (harness - bare) / N, and where it goes (read, write, ledger).

    python benchmarks/bench_runner.py [--n 64] [--resolution 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

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
    args = parser.parse_args()
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
        for start in range(0, len(requests), 8):
            model.edit(requests[start : start + 8])
        bare = time.perf_counter() - tick

        tick = time.perf_counter()
        encoded = [encode_png16(request.image) for request in requests]
        encode = time.perf_counter() - tick

        with JsonlLedger(scratch / "ledger.jsonl") as ledger:
            tick = time.perf_counter()
            for request in requests:
                ledger.append({"sample_id": request.sample_id, "seed": request.seed, "info": {}})
            ledger_time = time.perf_counter() - tick

        settings = RunSettings(model="identity", split="holdout", data_dir=data, out=scratch / "run",
                               resolution=args.resolution, batch_size=8)
        tick = time.perf_counter()
        report = generate(settings, progress=False)
        harness = time.perf_counter() - tick
        assert report.generated == args.n and not report.failed

    n = args.n
    print(f"runner overhead around `identity`, N={n} samples at {args.resolution}x{args.resolution}, batch 8")
    print(f"  bare identity.edit           {1e3 * bare / n:8.3f} ms/sample")
    print(f"  cfbench generate (harness)   {1e3 * harness / n:8.3f} ms/sample")
    print(f"  overhead per sample          {1e3 * (harness - bare) / n:8.3f} ms/sample "
          f"(harness / bare = {harness / max(bare, 1e-9):.1f}x)")
    print(f"    of which: read+decode prior {1e3 * read / n:.3f} ms, 16-bit PNG encode {1e3 * encode / n:.3f} ms, "
          f"fsynced ledger line {1e3 * ledger_time / n:.3f} ms (measured separately)")
    print(f"  throughput                   {n / harness:8.1f} samples/s")
    print(f"  png bytes/sample             {np.mean([len(e) for e in encoded]) / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
