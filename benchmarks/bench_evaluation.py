"""Evaluation overhead, the real-image cache, scoring and FID bootstrap at N=2248, and memory against N.

Prints ratios, each measured in one run with the measurements interleaved over ``--repeats`` rounds and
medians reported (these machines are shared and noisy, so compare within a run):

1. overhead = harness evaluation time / bare evaluator forward time on the same images
   (target <= 1.10), with the default protocol (1000 bootstrap resamples, 200 FID resamples), for two
   evaluators, each with randomly initialised weights written in its release file's layout (the same
   compute as the real weights):
   - "suite": what ``cfbench eval`` runs on real data that records race (MIMIC-EDIT-INSTRUCTION):
     torchxrayvision's DenseNet-121 pathology network, the Emory HITI ResNet-34 race model and the RIKEN
     SENet-154 age model (a TorchScript trace of timm's ``legacy_senet154``, 433 MB like the 460 MB
     release), real-data layout;
   - "densenet": the DenseNet-121 alone, the cheapest network the harness runs: the worst case for the
     ratio, in both layouts.
   "Bare" = ``evaluator.predict`` on images already in memory, generated and real target images (what a
   first evaluation must score); "harness" = ``evaluate_run`` end to end with an empty cache (read +
   decode PNGs, pixel measures, real-image cache, scoring with bootstrap intervals); for the DenseNet also
   with one loader thread (how every image was read before issue 17).
2. second model on the same split / first model (target <= 0.5): the real-image outputs and the decoded
   targets, priors and exact counterfactuals come from the caches the first evaluation filled
   (``cfbench.evaluation.output_cache``, ``cfbench.evaluation.image_cache``).
3. the fixed costs at N=2248 on a synthetic table (five findings with ties, race, sex, age, 1024-d
   features): bootstrap scoring, today's against the pre-issue-17 scoring (``tests/evaluation/
   reference_scoring.py``), interleaved; and the FID bootstrap (200 resamples, target <= 30 s), with the
   pre-issue path timed on a few resamples and scaled to 200. These are set against the bare forward time
   at N=2248 extrapolated from the measured per-image rate.
4. peak memory of an evaluation at N=2000 / N=200 (target <= 1.2), each in a fresh process, with the
   shipped phantom CNN at 128 px: the child's own high-water mark (VmHWM of /proc/self/status: a child's
   ``ru_maxrss`` on Linux starts from its parent's peak, so it measured nothing) and traced Python allocations.

The process applies the heap policy the ``cfbench`` command applies (``--allocator``, default keep-freed:
``benchmarks/bench_allocator.py`` measures what it changes).

    python benchmarks/bench_evaluation.py [--n 48] [--resolution 512] [--repeats 3] [--skip-memory]
        [--skip-large] [--large-n 2248] [--allocator keep-freed|system] [--evaluator suite|densenet|both]
        [--suite-repeats 2] [--memory-n 200 2000] [--device cpu] [--smoke]
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
import warnings
from pathlib import Path

import numpy as np
import torch

from cfbench.core.allocator import ALLOCATOR_POLICIES, apply_allocator_policy
from cfbench.core.prefetch import default_loader_threads
from cfbench.evaluation import evaluate as evaluate_module
from cfbench.evaluation import weights
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.evaluation.protocol import Protocol
from cfbench.phantom.dataset import build_phantom_dataset
from cfbench.runs.generate import RunSettings, generate
from cfbench.runs.store import load_generated
from conditions import parse_args, report

PROTOCOL = Protocol()  # what `cfbench eval` runs: 1000 bootstrap resamples, 200 FID resamples


def random_densenet_evaluator(folder: Path, device: str = "cpu"):
    """XRVPathologyEvaluator on a randomly initialised DenseNet-121 saved like the release file."""
    import torchxrayvision as xrv

    from cfbench.evaluation.xrv import XRVPathologyEvaluator

    torch.manual_seed(0)
    entry = weights.get("xrv-densenet121-all")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(xrv.models.DenseNet(weights=None, num_classes=18), folder / entry.filename)
    return XRVPathologyEvaluator(cache_dir=folder, batch_size=16, device=device)


def random_xrv_suite(home: Path, device: str = "cpu"):
    """The suite ``cfbench eval`` builds for data with race (pathology + race + age), on randomly initialised
    networks of the release architectures written under ``home/.torchxrayvision/models_data`` in the
    release files' formats; ``$HOME`` is pointed at ``home`` (torchxrayvision reads the race and age files
    from there)."""
    import os

    import timm
    import torch.nn as nn
    import torchvision
    import torchxrayvision as xrv

    from cfbench.evaluation.xrv import XRVEvaluatorSuite, suite_members

    os.environ["HOME"] = str(home)
    folder = home / ".torchxrayvision" / "models_data"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(xrv.models.DenseNet(weights=None, num_classes=18), folder / weights.get("xrv-densenet121-all").filename)
    race = torchvision.models.resnet34(weights=None)
    race.fc = nn.Sequential(nn.Linear(512, 3), nn.LogSoftmax(dim=1))
    torch.save(nn.DataParallel(race).state_dict(), folder / weights.get("xrv-race").filename)
    age = timm.create_model("legacy_senet154", pretrained=False, num_classes=1).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the release file is TorchScript
        torch.jit.trace(age, torch.zeros(1, 3, 320, 320)).save(str(folder / weights.get("xrv-age").filename))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return XRVEvaluatorSuite(suite_members(has_race=True), batch_size=16, device=device)


EVALUATOR_LABELS = {
    "suite": "the default suite for data with race (DenseNet-121 pathology + ResNet-34 race + SENet-154 age)",
    "densenet": "torchxrayvision DenseNet-121 alone (the cheapest network: the worst case for the ratio)",
}


def make_runs(root: Path, n: int, size: int) -> tuple[Path, dict[str, Path]]:
    data = build_phantom_dataset(root / "data", n, resolution=size, fractions={"holdout": 1.0}, progress=False)
    runs = {}
    for model in ("identity", "ground-truth"):
        settings = RunSettings(model=model, split="holdout", data_dir=data, out=root / model, resolution=size,
                               batch_size=16)
        generate(settings, progress=False)
        runs[model] = settings.out
    return data, runs


def overhead_and_cache(n: int, size: int, layout: str, repeats: int, evaluator_name: str = "densenet",
                       device: str = "cpu") -> float:
    """layout "real": only generated and target images are read, as on a real dataset; "phantom": also the
    prior, the exact counterfactual and the lesion mask of every sample, for the locality measures.
    Rounds of (bare, first evaluation with an empty cache, second model) interleaved; returns the bare
    forward seconds per image."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data, runs = make_runs(scratch, n, size)
        if layout == "real":
            for folder in ("counterfactual", "lesion_mask"):
                shutil.rmtree(data / folder)
        evaluator = (random_xrv_suite(scratch / "home", device) if evaluator_name == "suite"
                     else random_densenet_evaluator(scratch / "xrv-cache", device))
        one_loader_variant = evaluator_name == "densenet"
        from cfbench.datasets.edit_dataset import EditDataset

        dataset = EditDataset(data, "holdout", size)
        generated = np.stack([load_generated(runs["identity"], s.sample_id, size) for s in dataset])
        real = np.stack([dataset.current_image(s) for s in dataset])
        evaluator.predict(generated[:16])  # warm-up (allocator, threads)
        scoring_seconds = []
        original_score = evaluate_module.score

        def timed_score(*args, **kwargs):
            tick = time.perf_counter()
            result = original_score(*args, **kwargs)
            scoring_seconds.append(time.perf_counter() - tick)
            return result

        def timed_eval(run: Path, cache: Path, loader_threads: int | None = None) -> float:
            tick = time.perf_counter()
            evaluate_run(run, evaluator=evaluator, protocol=PROTOCOL, cache_dir=cache, batch_size=16, progress=False,
                         loader_threads=loader_threads)
            return time.perf_counter() - tick

        bares, firsts, seconds_, scorings, one_loader = [], [], [], [], []
        evaluate_module.score = timed_score
        try:
            for round_ in range(repeats):
                tick = time.perf_counter()
                for images in (generated, real):
                    for start in range(0, n, 16):
                        evaluator.predict(images[start : start + 16])
                bares.append(time.perf_counter() - tick)
                firsts.append(timed_eval(runs["identity"], scratch / f"cache{round_}"))
                scorings.append(scoring_seconds[-1])
                seconds_.append(timed_eval(runs["ground-truth"], scratch / f"cache{round_}"))
                if one_loader_variant:
                    one_loader.append(timed_eval(runs["identity"], scratch / f"one-loader{round_}", loader_threads=1))
        finally:
            evaluate_module.score = original_score
    median = lambda values: float(np.median(values))  # noqa: E731
    overhead = median([f / b for f, b in zip(firsts, bares)])
    second_ratio = median([s / f for s, f in zip(seconds_, firsts)])
    print(f"evaluation with {EVALUATOR_LABELS[evaluator_name]}, random weights, N={n} at {size} px, {layout}-data "
          f"layout, default protocol (1000 + 200 FID resamples), {torch.get_num_threads()} torch threads, "
          f"{repeats} interleaved rounds (medians)")
    print(f"  bare evaluator forward, generated + real   {median(bares):8.2f} s")
    print(f"  harness, first model (empty cache)         {median(firsts):8.2f} s   overhead ratio {overhead:.3f} "
          f"(target <= 1.10)")
    if one_loader:
        print(f"  harness, first model, one loader thread    {median(one_loader):8.2f} s   overhead ratio "
              f"{median([o / b for o, b in zip(one_loader, bares)]):.3f} (before: one thread read every image; now "
              f"{default_loader_threads()})")
    print(f"  harness, second model (cache filled)       {median(seconds_):8.2f} s   second / first {second_ratio:.3f} "
          f"(target <= 0.5)")
    key = f"{evaluator_name}_{layout}"
    report(f"{key}_overhead", overhead, f"evaluation / bare evaluator forward, {evaluator_name}, {layout}-data layout, "
           f"N={n} at {size} px", "x", "<= 1.10")
    report(f"{key}_second_model", second_ratio, f"second model on the same split / first, {evaluator_name}, "
           f"{layout}-data layout", "x", "<= 0.5")
    streaming = [f - s for f, s in zip(firsts, scorings)]
    print(f"  of the first: streaming {median(streaming):.2f} s (ratio to bare "
          f"{median([s / b for s, b in zip(streaming, bares)]):.3f}), scoring {median(scorings):.2f} s "
          "(bootstrap of every metric + FID with its 200-resample bootstrap: a fixed cost, not per sample)")
    return median(bares) / (2 * n)


def large_fixed_costs(n: int, seconds_per_image: dict[str, float], repeats: int, old_fid_resamples: int = 3) -> None:
    """Scoring and the FID bootstrap at N=n on a synthetic table, today's against the pre-issue-17 code."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cfbench.evaluation.scoring import _fid_interval, _fid_metric, score
    from cfbench.metrics.bootstrap import resample_indices
    from tests.evaluation import reference_scoring
    from tests.evaluation.test_scoring_reference import synthetic_table

    table = synthetic_table(n, seed=0, d=1024, levels=1000)
    no_fid = Protocol(fid_bootstrap_resamples=0)
    new, old = [], []
    for _ in range(repeats):
        for timings, function in ((old, reference_scoring.score), (new, score)):
            tick = time.perf_counter()
            function(table, no_fid, fid=False)
            timings.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    interval = _fid_interval(table, Protocol())
    fid_new = time.perf_counter() - tick
    fid = _fid_metric(table)
    generated, real = fid._stored(False), fid._stored(True)
    tick = time.perf_counter()
    for indices in resample_indices(n, old_fid_resamples, 0):
        reference_scoring._resample_fid(real, indices, generated, indices)
    fid_old = (time.perf_counter() - tick) / old_fid_resamples * 200
    print(f"fixed costs at N={n} (synthetic table, 1024-d features), {repeats} interleaved rounds (medians)")
    print(f"  bootstrap scoring (1000 resamples, no FID)   before {np.median(old):7.2f} s   after {np.median(new):7.2f} s"
          f"   after / before {np.median(np.array(new) / np.array(old)):.3f}")
    print(f"  FID bootstrap (200 resamples)                before {fid_old:7.1f} s (timed on {old_fid_resamples}, "
          f"scaled)   after {fid_new:7.1f} s (target <= 30 s)   FID {interval.value:.2f} "
          f"[{interval.low:.2f}, {interval.high:.2f}]")
    fixed = float(np.median(new)) + fid_new
    report("scoring_after_before", np.median(np.array(new) / np.array(old)),
           f"bootstrap scoring at N={n}, today / before issue 17", "x")
    report("fid_bootstrap_seconds", fid_new, f"FID bootstrap (200 resamples) at N={n}", "s", "<= 30")
    for name, rate in seconds_per_image.items():
        bare = rate * 2 * n
        print(f"  {name}: bare forward at N={n} extrapolated from the measured rate: {bare:.0f} s; scoring + FID "
              f"bootstrap add {fixed:.1f} s = {fixed / bare:.3f} of it (before: "
              f"{(float(np.median(old)) + fid_old) / bare:.3f})")


def memory_child(run: str) -> None:
    """Run in a fresh process: evaluate one prepared run; print peak memory as JSON."""
    tracemalloc.start()
    evaluate_run(run, evaluator="phantom-cnn", protocol=Protocol(),  # the CLI default, FID bootstrap included
                 cache_dir=Path(run).parent / "cache", batch_size=32, progress=False)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"peak_rss_kib": own_peak_rss_kib(), "inherited_ru_maxrss_kib":
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "traced_peak_bytes": traced_peak}))


def own_peak_rss_kib() -> int:
    """This process's own peak resident set (VmHWM), in KiB: unlike ``ru_maxrss``, not seeded with the
    parent's peak when the process was forked from it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def memory_ratio(allocator: str, sizes: tuple[int, int] = (200, 2000)) -> None:
    """Datasets and runs are prepared here; each evaluation runs alone in a fresh process, so its peak
    RSS is the evaluation's (interpreter, torch, evaluator, streamed images, per-sample arrays)."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n in sizes:
            _, runs = make_runs(Path(scratch) / f"n{n}", n, 128)
            output = subprocess.run([sys.executable, __file__, "--memory-child", str(runs["identity"]),
                                     "--allocator", allocator],
                                    capture_output=True, text=True, check=True).stdout
            results[n] = json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))
    small, large = results[sizes[0]], results[sizes[1]]
    print("peak memory of an evaluation (phantom CNN, 128 px), each in a fresh process (its own VmHWM)")
    for n, result in results.items():
        print(f"  N={n:<5} peak RSS {result['peak_rss_kib'] / 1024:8.1f} MiB   "
              f"traced Python allocations peak {result['traced_peak_bytes'] / 2**20:8.1f} MiB")
    report("memory_ratio", large["peak_rss_kib"] / small["peak_rss_kib"],
           f"peak memory of an evaluation, N={sizes[1]} / N={sizes[0]}", "x", "<= 1.2")
    print(f"  ratio N={sizes[1]} / N={sizes[0]}: peak RSS {large['peak_rss_kib'] / small['peak_rss_kib']:.3f} "
          "(target <= 1.2); "
          f"traced allocations {large['traced_peak_bytes'] / small['traced_peak_bytes']:.2f} "
          "(the O(N) per-sample scalars and feature vectors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--layout", choices=["real", "phantom", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--large-n", type=int, default=2248)
    parser.add_argument("--allocator", choices=ALLOCATOR_POLICIES, default="keep-freed",
                        help="heap policy of this process and the memory children (default: the CLI's default)")
    parser.add_argument("--evaluator", choices=["suite", "densenet", "both"], default="both",
                        help="suite: what cfbench eval runs on real data (about 25x the DenseNet's compute); "
                             "densenet: the DenseNet-121 alone (the worst case for the ratio)")
    parser.add_argument("--suite-repeats", type=int, default=2,
                        help="interleaved rounds for the suite (a round takes about 3 minutes at N=48)")
    parser.add_argument("--memory-n", type=int, nargs=2, default=[200, 2000], metavar=("SMALL", "LARGE"),
                        help="the two sizes of the memory comparison")
    parser.add_argument("--device", default="cpu", help="torch device of the evaluators (cpu, cuda)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parse_args(parser, smoke={"n": 4, "resolution": 64, "evaluator": "densenet", "layout": "phantom",
                                     "repeats": 1, "large_n": 48, "memory_n": [8, 16]})
    apply_allocator_policy(args.allocator)  # what the cfbench command does at start-up
    print(f"heap policy: {args.allocator} (cfbench.core.allocator)")
    if args.memory_child:
        memory_child(args.memory_child)
        return
    rates = {}
    if args.evaluator in ("suite", "both"):  # the default for real data; its networks need the real layout only
        rates["suite"] = overhead_and_cache(args.n, args.resolution, "real", args.suite_repeats, "suite", args.device)
    if args.evaluator in ("densenet", "both"):
        for layout in (("real", "phantom") if args.layout == "both" else (args.layout,)):
            rates["densenet"] = overhead_and_cache(args.n, args.resolution, layout, args.repeats, "densenet",
                                                   args.device)
    if not args.skip_large:
        large_fixed_costs(args.large_n, rates, args.repeats)
    if not args.skip_memory:
        memory_ratio(args.allocator, tuple(args.memory_n))


if __name__ == "__main__":
    main()
