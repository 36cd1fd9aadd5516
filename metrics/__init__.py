"""Evaluation metrics (importable as ``cfbench.metrics``).

Every metric is a streaming object in the style of torchmetrics: ``update(...)`` once per sample or
batch, ``compute()`` at the end, memory constant in the number of samples.
"""

from cfbench.metrics.pixel import MeanAbsoluteDifference

__all__ = ["MeanAbsoluteDifference"]
