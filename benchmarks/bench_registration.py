"""Dataset-build throughput: registration pairs/s at 512 px with 1, 2, ... worker processes.

Run: ``python benchmarks/bench_registration.py [--pairs N] [--workers 1 2] [--resolution 512] [--smoke]``.

Makes N longitudinal pairs from the real X-rays in ``../shared/data/real-cxr`` (re-posed and re-exposed
copies; phantom pairs when that folder is absent), saves them as 8-bit PNGs at 1024 px like the NIH
release, and builds them with :func:`cfbench.datasets.pair_engine.process_pairs` (read + resize + SimpleITK
registration + two 16-bit PNG writes per pair) into a fresh folder for each configuration: first one
worker with one SimpleITK thread (the serial baseline), then each worker count with SimpleITK's threads
set to cores / workers (the builders' default). Prints pairs/s and the speed-up over the serial
baseline, all measured in this run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from conditions import parse_args, report
from PIL import Image

from cfbench.core.images import load_image, resize  # noqa: E402
from cfbench.datasets.pair_engine import PairJob, PairSettings, process_pairs  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-cxr"


def source_images(folder: Path = REAL) -> tuple[list[np.ndarray], str]:
    if folder.is_dir() and list(folder.glob("*.png")):
        return [load_image(path) for path in sorted(folder.glob("*.png"))], f"real X-rays from {folder}"
    from cfbench.phantom.render import render_pair
    from cfbench.phantom.scenario import sample_pair

    return [render_pair(sample_pair(seed), 512).past for seed in range(2)], "phantoms (real-cxr folder absent)"


def follow_up(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-posed, re-exposed copy: rotation up to 5 degrees, scale up to 5 %, shift up to 15 px, gamma, noise."""
    import SimpleITK as sitk

    from cfbench.datasets.registration import to_sitk

    transform = sitk.Similarity2DTransform()
    transform.SetCenter(((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2))
    transform.SetAngle(np.radians(rng.uniform(-5, 5)))
    transform.SetScale(rng.uniform(0.95, 1.05))
    transform.SetTranslation(tuple(rng.uniform(-15, 15, 2)))
    source = to_sitk(image)
    moved = sitk.GetArrayFromImage(sitk.Resample(source, source, transform, sitk.sitkLinear, 0.0)) / 255.0
    return np.clip(moved ** rng.uniform(0.8, 1.25) + rng.normal(0, 0.01, moved.shape), 0, 1).astype(np.float32)


def write_pairs(folder: Path, n: int, sources: Path) -> list[PairJob]:
    images, origin = source_images(sources)
    print(f"sources: {origin}")
    rng = np.random.default_rng(0)
    jobs = []
    for index in range(n):
        base = images[index % len(images)]
        past, current = folder / f"{index:04d}_past.png", folder / f"{index:04d}_current.png"
        for path, image in ((past, base), (current, follow_up(base, rng))):
            Image.fromarray((resize(image, 1024) * 255).round().astype(np.uint8)).save(path)
        jobs.append(PairJob(f"pair{index:04d}", str(past), str(current), f"{index:04d}p", f"{index:04d}c"))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--sources", type=Path, default=REAL, help="folder of PNG X-rays to make pairs from")
    args = parse_args(parser, smoke={"pairs": 2, "workers": [2], "resolution": 128})
    print(f"cores: {os.cpu_count()}, pairs: {args.pairs}, resolution: {args.resolution} px")
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        (root / "sources").mkdir()
        jobs = write_pairs(root / "sources", args.pairs, args.sources)
        configurations = [(1, 1)] + [(workers, None) for workers in args.workers]
        rates = {}
        for workers, itk_threads in configurations:
            label = f"{workers} worker(s), " + ("1 ITK thread" if itk_threads else "ITK threads = cores / workers")
            start = time.perf_counter()
            outcomes = process_pairs(jobs, root / f"out_{workers}_{itk_threads}", PairSettings(resolution=args.resolution),
                                     workers=workers, progress=False, itk_threads=itk_threads)
            seconds = time.perf_counter() - start
            rates[label] = len(jobs) / seconds
            mi = np.array([o.mutual_information for o in outcomes.values()])
            print(f"{label}: {rates[label]:.2f} pairs/s ({seconds / len(jobs) * 1000:.0f} ms per pair, "
                  f"MI median {np.median(mi):.2f}, statuses {sorted({o.status for o in outcomes.values()})})")
        baseline = next(iter(rates))
        for label, rate in list(rates.items())[1:]:
            print(f"speed-up of [{label}] over [{baseline}]: {rate / rates[baseline]:.2f}x")
            report(f"speedup_{label.split()[0]}_workers", rate / rates[baseline],
                   f"dataset build (registration) at {args.resolution} px, {label} / 1 worker with 1 ITK thread", "x")


if __name__ == "__main__":
    main()
