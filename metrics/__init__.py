"""Evaluation metrics (importable as ``cfbench.metrics``).

Every metric is a streaming object in the style of torchmetrics: ``update(...)`` once per sample or
batch, ``compute()`` at the end. Memory is constant in the number of samples where the statistic allows
(FID's running sums, mean probabilities); metrics that need ranks or pairs (AUROC,
Pearson r, F1 for the bootstrap) keep a few scalars per sample, never images. Each of those provides
``compute_on(indices)`` and ``num_samples`` for paired bootstrap intervals (``cfbench.metrics.bootstrap``).

Submodules load on first use (``from cfbench.metrics import FrechetDistance`` imports only what it needs), so
importing one light module such as :mod:`cfbench.metrics.cmig` does not pull in SciPy.
"""

from __future__ import annotations

import importlib

# cmig is pure Python and its module shares a name with its function: bind the function now, so that
# ``cfbench.metrics.cmig`` is the function however the submodule is imported later.
from cfbench.metrics.cmig import CMIGResult, cmig, cmig_from_metrics

_EXPORTS: dict[str, str] = {
    "ConfidenceInterval": "bootstrap", "bootstrap_ci": "bootstrap", "bootstrap_many": "bootstrap",
    "bootstrap_metric": "bootstrap", "paired_difference_ci": "bootstrap",
    "BinaryAUROC": "classification", "LabelPolicy": "classification", "MulticlassAUROC": "classification",
    "PathologyAUROC": "classification", "PathologyF1": "classification", "binary_auroc": "classification",
    "binary_f1": "classification",
    "MeanProbability": "divergence", "PathologyKLDivergence": "divergence", "bernoulli_kl": "divergence",
    "pathology_kl": "divergence",
    "FrechetDistance": "fid", "frechet_distance": "fid", "frechet_distance_from_factors": "fid",
    "frechet_distance_from_features": "fid",
    "PearsonCorrelation": "regression", "pearson_r": "regression",
    "Minimality": "minimality", "relative_change_outside": "minimality", "w1_outside": "minimality",
    "EffectSize": "effect_size", "effect_errors": "effect_size",
    "AttributeChange": "identity", "attribute_changes": "identity",
    "FeatureDistance": "realism", "relative_feature_distance": "realism",
    "cfbench_score": "score", "ScoreResult": "score",
    "KernelInceptionDistance": "kid", "ManifoldEstimates": "manifold", "SeedSimilarity": "diversity",
    "ms_ssim": "diversity",
}

__all__ = sorted([*_EXPORTS, "CMIGResult", "cmig", "cmig_from_metrics"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
