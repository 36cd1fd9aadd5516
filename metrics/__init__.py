"""Evaluation metrics (importable as ``cfbench.metrics``).

Every metric is a streaming object in the style of torchmetrics: ``update(...)`` once per sample or
batch, ``compute()`` at the end. Memory is constant in the number of samples where the statistic allows
(FID's running sums, mean probabilities); metrics that need ranks or pairs (AUROC,
Pearson r, F1 for the bootstrap) keep a few scalars per sample, never images. Each of those provides
``compute_on(indices)`` and ``num_samples`` for paired bootstrap intervals (``cfbench.metrics.bootstrap``).
"""

from cfbench.metrics.bootstrap import (
    ConfidenceInterval,
    bootstrap_ci,
    bootstrap_many,
    bootstrap_metric,
    paired_difference_ci,
)
from cfbench.metrics.classification import (
    BinaryAUROC,
    LabelPolicy,
    MulticlassAUROC,
    PathologyAUROC,
    PathologyF1,
    binary_auroc,
    binary_f1,
)
from cfbench.metrics.cmig import CMIGResult, cmig, cmig_from_metrics
from cfbench.metrics.divergence import MeanProbability, PathologyKLDivergence, bernoulli_kl
from cfbench.metrics.fid import (
    FrechetDistance,
    frechet_distance,
    frechet_distance_from_factors,
    frechet_distance_from_features,
)
from cfbench.metrics.regression import PearsonCorrelation, pearson_r

__all__ = [
    "BinaryAUROC",
    "CMIGResult",
    "ConfidenceInterval",
    "FrechetDistance",
    "LabelPolicy",
    "MeanProbability",
    "MulticlassAUROC",
    "PathologyAUROC",
    "PathologyF1",
    "PathologyKLDivergence",
    "PearsonCorrelation",
    "bernoulli_kl",
    "binary_auroc",
    "binary_f1",
    "bootstrap_ci",
    "bootstrap_many",
    "bootstrap_metric",
    "cmig",
    "cmig_from_metrics",
    "frechet_distance",
    "frechet_distance_from_factors",
    "frechet_distance_from_features",
    "paired_difference_ci",
    "pearson_r",
]
