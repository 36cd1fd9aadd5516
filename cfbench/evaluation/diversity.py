"""Diversity across seeds: per input, how alike a model's outputs under two run seeds are.

Read when the run has a second-seed run folder (``cfbench run --seeds 2``, :mod:`cfbench.runs.seed_pairs`).
Per sample finished in both runs (NaN elsewhere), as pixel measures of the table (so they get the same
bootstrap intervals of the mean):

- ``seed_ms_ssim``: MS-SSIM between the two outputs (:func:`cfbench.metrics.diversity.ms_ssim`), in [0, 1];
  1 = the model ignores its seed. The true counterfactual is unique (zero spread: 1 exactly), so on phantoms
  a value below 1 is spread the exact answer does not have.
- ``seed_mae``: mean |output(seed S) - output(seed S+1)|, pixel intensity in [0, 1]; 0 = zero spread.

Neither is ranked: on real data some spread (several plausible counterfactuals) can be right.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from cfbench.core.images import ImageReadError
from cfbench.metrics.diversity import ms_ssim, scales_for
from cfbench.runs.seed_pairs import second_seed_run
from cfbench.runs.store import load_generated, read_results

SEED_METRICS = ("seed_ms_ssim", "seed_mae")
logger = logging.getLogger(__name__)


def seed_pair_measures(run_folder: str | Path, sample_ids: list[str], resolution: int,
                       batch_size: int = 16) -> tuple[dict[str, np.ndarray], dict | None]:
    """({name: (N,) per-sample values}, what was compared) for the table's samples; ({}, None) without a second
    seed. A sample whose second-seed image is missing or unreadable is NaN (named in the log)."""
    second = second_seed_run(run_folder)
    if second is None:
        return {}, None
    finished = {record["sample_id"] for record in read_results(second)}
    values = {name: np.full(len(sample_ids), math.nan) for name in SEED_METRICS}
    pending = [i for i, sample_id in enumerate(sample_ids) if sample_id in finished]
    compared = 0
    for start in range(0, len(pending), batch_size):
        rows, firsts, seconds = [], [], []
        for i in pending[start:start + batch_size]:
            try:
                seconds.append(load_generated(second, sample_ids[i], resolution))
                firsts.append(load_generated(run_folder, sample_ids[i], resolution))
                rows.append(i)
            except (ImageReadError, OSError, ValueError) as error:
                seconds = seconds[:len(rows)]
                logger.warning("sample %s: left out of the seed diversity: %s", sample_ids[i], error)
        if not rows:
            continue
        first, other = np.stack(firsts), np.stack(seconds)
        values["seed_ms_ssim"][rows] = ms_ssim(first, other)
        values["seed_mae"][rows] = np.abs(first - other).mean(axis=(1, 2), dtype=np.float64)
        compared += len(rows)
    info = {"second_seed_run": str(second), "n_pairs": compared, "n_missing": len(sample_ids) - compared,
            "ms_ssim_scales": scales_for(resolution)}
    return values, info
