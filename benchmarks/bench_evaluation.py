"""Evaluation overhead, the real-image cache, and memory against N.

Prints three ratios, each measured in one run (these machines are noisy, so compare within a run):

1. overhead = harness evaluation time / bare evaluator forward time on the same images
   (target <= 1.15). The evaluator is torchxrayvision's DenseNet-121 (the protocol's pathology
   network) with randomly initialised weights written to a temporary cache folder: the same compute as
   the real weights. "Bare" = ``evaluator.predict`` on images already in memory, generated and real
   target images (what a first evaluation must score); "harness" = ``evaluate_run`` end to end with an
   empty cache (read + decode PNGs, pixel measures, real-image cache, scoring with bootstrap intervals).
2. second model on the same split / first model (target <= 0.6): the real-image outputs come from the
   cache the first evaluation filled.
3. peak memory of an evaluation at N=2000 / N=200 (target <= 1.2), each in a fresh process, with the
   shipped phantom CNN at 128 px; peak RSS and peak traced Python allocations.

    python benchmarks/bench_evaluation.py [--n 48] [--resolution 512] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from cfbench.evaluation import evaluate as evaluate_module
from cfbench.evaluation import weights
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import load_generated

PROTOCOL = Protocol(bootstrap_resamples=1000, fid_bootstrap_resamples=0)


def random_densenet_evaluator(folder: Path):
    """XRVPathologyEvaluator on a randomly initialised DenseNet-121 saved like the release file."""
    import torchxrayvision as xrv

    from cfbench.evaluation.xrv import XRVPathologyEvaluator

    torch.manual_seed(0)
    entry = weights.get("xrv-densenet121-all")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(xrv.models.DenseNet(weights=None, num_classes=18), folder / entry.filename)
    return XRVPathologyEvaluator(cache_dir=folder, batch_size=16)


def make_runs(root: Path, n: int, size: int) -> tuple[Path, dict[str, Path]]:
    data = build_phantom_dataset(root / "data", n, resolution=size, fractions={"holdout": 1.0}, progress=False)
    runs = {}
    for model in ("identity", "ground-truth"):
        settings = RunSettings(model=model, split="holdout", data_dir=data, out=root / model, resolution=size,
                               batch_size=16)
        generate(settings, progress=False)
        runs[model] = settings.out
    return data, runs


def overhead_and_cache(n: int, size: int, layout: str) -> None:
    """layout "real": only generated and target images are read, as on a real dataset; "phantom": also the
    prior, the exact counterfactual and the lesion mask of every sample, for the locality measures."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data, runs = make_runs(scratch, n, size)
        if layout == "real":
            for folder in ("counterfactual", "lesion_mask"):
                shutil.rmtree(data / folder)
        evaluator = random_densenet_evaluator(scratch / "xrv-cache")
        from cfbench.datasets.edit_dataset import EditDataset

        dataset = EditDataset(data, "holdout", size)
        generated = np.stack([load_generated(runs["identity"], s.sample_id, size) for s in dataset])
        real = np.stack([dataset.current_image(s) for s in dataset])
        evaluator.predict(generated[:16])  # warm-up (allocator, threads)

        tick = time.perf_counter()
        for images in (generated, real):
            for start in range(0, n, 16):
                evaluator.predict(images[start : start + 16])
        bare = time.perf_counter() - tick

        scoring_seconds = []
        original_score = evaluate_module.score

        def timed_score(*args, **kwargs):
            tick = time.perf_counter()
            result = original_score(*args, **kwargs)
            scoring_seconds.append(time.perf_counter() - tick)
            return result

        def timed_eval(run: Path) -> float:
            tick = time.perf_counter()
            evaluate_run(run, evaluator=evaluator, protocol=PROTOCOL, cache_dir=scratch / "cache",
                         batch_size=16, progress=False)
            return time.perf_counter() - tick

        evaluate_module.score = timed_score
        try:
            first = timed_eval(runs["identity"])
            second = timed_eval(runs["ground-truth"])
        finally:
            evaluate_module.score = original_score
    print(f"evaluation with torchxrayvision DenseNet-121 (random weights), N={n} at {size} px, {layout}-data "
          f"layout, {torch.get_num_threads()} torch threads")
    print(f"  bare evaluator forward, generated + real   {bare:8.2f} s")
    print(f"  harness, first model (empty cache)         {first:8.2f} s   overhead ratio {first / bare:.3f} "
          f"(target <= 1.15)")
    print(f"  harness, second model (cache filled)       {second:8.2f} s   second / first {second / first:.3f} "
          f"(target <= 0.6)")
    streaming = first - scoring_seconds[0]
    print(f"  of the first: streaming {streaming:.2f} s (ratio to bare {streaming / bare:.3f}), scoring "
          f"{scoring_seconds[0]:.2f} s (bootstrap of every metric + one FID: a fixed cost, not per sample)")


def memory_child(run: str) -> None:
    """Run in a fresh process: evaluate one prepared run; print peak memory as JSON."""
    tracemalloc.start()
    evaluate_run(run, evaluator="phantom-cnn", protocol=Protocol(fid_bootstrap_resamples=20),
                 cache_dir=Path(run).parent / "cache", batch_size=32, progress=False)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_kib": peak, "traced_peak_bytes": traced_peak}))


def memory_ratio() -> None:
    """Datasets and runs are prepared here; each evaluation runs alone in a fresh process, so its peak
    RSS is the evaluation's (interpreter, torch, evaluator, streamed images, per-sample arrays)."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n in (200, 2000):
            _, runs = make_runs(Path(scratch) / f"n{n}", n, 128)
            output = subprocess.run([sys.executable, __file__, "--memory-child", str(runs["identity"])],
                                    capture_output=True, text=True, check=True).stdout
            results[n] = json.loads(output.strip().splitlines()[-1])
    small, large = results[200], results[2000]
    print("peak memory of an evaluation (phantom CNN, 128 px), each in a fresh process")
    for n, result in results.items():
        print(f"  N={n:<5} peak RSS {result['peak_rss_kib'] / 1024:8.1f} MiB   "
              f"traced Python allocations peak {result['traced_peak_bytes'] / 2**20:8.1f} MiB")
    print(f"  ratio N=2000 / N=200: peak RSS {large['peak_rss_kib'] / small['peak_rss_kib']:.3f} (target <= 1.2); "
          f"traced allocations {large['traced_peak_bytes'] / small['traced_peak_bytes']:.2f} "
          "(the O(N) per-sample scalars and feature vectors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--layout", choices=["real", "phantom", "both"], default="both")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    for layout in (("real", "phantom") if args.layout == "both" else (args.layout,)):
        overhead_and_cache(args.n, args.resolution, layout)
    if not args.skip_memory:
        memory_ratio()


if __name__ == "__main__":
    main()
