"""Time and memory of the memorisation index (``cfbench eval --memorisation``) for a MIMIC-sized training split.

A MIMIC-EDIT-INSTRUCTION train split holds about 20,000 images. Three parts, each printed with what it measured:

1. building the index: per training image, read + decode the 512 px PNG, the 32 px thumbnail and the evaluator's
   forward pass (torchxrayvision's DenseNet-121, randomly initialised in the release layout: the same compute as
   the real weights; the only network of the real-data suite that gives features). Measured on ``--build-images``
   phantom training images at 512 px, interleaved with the bare forward pass on the same images over
   ``--repeats`` rounds (medians), and EXTRAPOLATED linearly to ``--index-images`` (the cost is per image).
   Ratio: index build / bare forward (the harness's overhead on top of the network).
2. the cached index file at full size (synthetic arrays of the real shapes: 1024-d features, 32 x 32 thumbnails):
   its size, its write and its checked read (``cached_index`` on a warm cache), measured, not extrapolated.
3. the nearest-neighbour search of ``--queries`` outputs and their inputs against the full-size index in both
   spaces (what one evaluation adds): time and the peak of traced allocations, measured.

    python benchmarks/bench_memorisation.py [--index-images 20000] [--queries 2248] [--build-images 64]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_evaluation import random_densenet_evaluator  # noqa: E402
from conditions import parse_args, report  # noqa: E402

from cfbench.datasets.edit_dataset import EditDataset  # noqa: E402
from cfbench.evaluation.memorisation import (  # noqa: E402
    THUMBNAIL,
    MemorisationIndex,
    TrainingImages,
    build_index,
    cached_index,
    dataset_training_images,
    memorisation_measures,
)
from cfbench.phantom.dataset import build_phantom_dataset  # noqa: E402


def build_costs(root: Path, n_images: int, repeats: int) -> tuple[float, float]:
    """(seconds per image of the index build, seconds per image of the bare forward), medians over rounds."""
    data = build_phantom_dataset(root / "data", n_images // 2, seed=1, resolution=512, fractions={"train": 1.0},
                                 progress=False)
    images = dataset_training_images(EditDataset(data, "train", 512))
    evaluator = random_densenet_evaluator(root / "xrv")
    decoded = np.stack([images.load(i) for i in range(len(images.names))])
    build, bare = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        build_index(images, evaluator)
        build.append((time.perf_counter() - started) / len(images.names))
        started = time.perf_counter()
        for start in range(0, len(decoded), 16):
            evaluator.predict(decoded[start:start + 16])
        bare.append((time.perf_counter() - started) / len(images.names))
    return statistics.median(build), statistics.median(bare)


def synthetic_images(n: int) -> TrainingImages:
    names = [f"current/d{i:06d}" for i in range(n)]
    return TrainingImages(names, lambda i: None, {"synthetic": n}, f"synthetic {n}")


def file_costs(root: Path, n: int, d: int = 1024) -> tuple[float, float, float, MemorisationIndex]:
    """(file MiB, write seconds, checked read seconds, the index) at full size."""
    import cfbench.evaluation.memorisation as memorisation

    rng = np.random.default_rng(0)
    index = MemorisationIndex(synthetic_images(n).names, rng.normal(size=(n, d)).astype(np.float32),
                              rng.random((n, THUMBNAIL * THUMBNAIL), dtype=np.float32), "synthetic")
    images = synthetic_images(n)
    original = memorisation.build_index
    memorisation.build_index = lambda *args, **kwargs: index  # the arrays of a built index, without the images
    try:
        started = time.perf_counter()
        cached_index(root / "cache", images, None, 512)
        written = time.perf_counter() - started
    finally:
        memorisation.build_index = original
    started = time.perf_counter()
    cached_index(root / "cache", images, None, 512)
    read = time.perf_counter() - started
    (path,) = (root / "cache" / "memorisation-index").glob("*.npz")
    return path.stat().st_size / 2 ** 20, written, read, index


def search_costs(index: MemorisationIndex, queries: int) -> tuple[float, float]:
    """(seconds, peak traced MiB) of the measures of ``queries`` outputs and inputs against the index."""
    rng = np.random.default_rng(1)
    d = index.features.shape[1]
    outputs = {"features": rng.normal(size=(queries, d)).astype(np.float32),
               "thumbnails": rng.random((queries, THUMBNAIL * THUMBNAIL), dtype=np.float32)}
    inputs = {key: value + 0.01 for key, value in outputs.items()}
    tracemalloc.start()
    started = time.perf_counter()
    memorisation_measures(index, outputs, inputs)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-images", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=2248)
    parser.add_argument("--build-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, smoke={"index_images": 64, "queries": 16, "build_images": 2, "repeats": 1})
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build, bare = build_costs(root, args.build_images, args.repeats)
        print(f"1. index build, measured on {args.build_images} images at 512 px (median of {args.repeats} rounds): "
              f"{build * 1000:.1f} ms/image, bare DenseNet-121 forward {bare * 1000:.1f} ms/image, "
              f"build / bare = {build / bare:.2f}")
        print(f"   EXTRAPOLATED to {args.index_images} images: {build * args.index_images / 60:.1f} min once per "
              f"(train split, evaluator, resolution), then cached")
        size, written, read, index = file_costs(root, args.index_images)
        print(f"2. index file at {args.index_images} images (measured): {size:.0f} MiB, write {written:.2f} s, "
              f"checked read {read:.2f} s")
        seconds, peak = search_costs(index, args.queries)
        print(f"3. nearest training images of {args.queries} outputs and their inputs, features and pixels "
              f"(measured): {seconds:.1f} s, peak traced allocations {peak:.0f} MiB (index in memory: "
              f"{(index.features.nbytes + index.thumbnails.nbytes) / 2 ** 20:.0f} MiB)")
    report("build_over_bare", build / bare, "memorisation index build / bare DenseNet-121 forward, 512 px", "x")
    report("build_minutes_extrapolated", build * args.index_images / 60,
           f"memorisation index build at {args.index_images} images (extrapolated)", "min")
    report("index_file_mib", size, f"memorisation index file at {args.index_images} images", "MiB")
    report("search_seconds", seconds, f"nearest training images of {args.queries} outputs and their inputs", "s")


if __name__ == "__main__":
    main()
