"""cfbench: an open benchmark harness for counterfactual chest X-ray generators.

Data flow: split (:mod:`cfbench.datasets.edit_dataset`) -> ``model.edit`` (:mod:`cfbench.api.model`, adapters in
:mod:`cfbench.models`) -> run folder (:mod:`cfbench.runs.generate`, :mod:`cfbench.runs.store`) -> evaluators and
metrics (:mod:`cfbench.evaluation.evaluate`, :mod:`cfbench.metrics`) -> leaderboard.
"""

from cfbench.core.findings import Operation
from cfbench.api.model import (
    Capabilities,
    CounterfactualModel,
    EditRequest,
    EditResult,
    LoadContext,
    ResultValidationError,
    validate_result,
)
from cfbench.api.registry import register
from cfbench.core.errors import MissingWeights, WeightsNotFoundError

__version__ = "0.1.0"

__all__ = [
    "Capabilities",
    "CounterfactualModel",
    "EditRequest",
    "EditResult",
    "LoadContext",
    "MissingWeights",
    "Operation",
    "ResultValidationError",
    "register",
    "validate_result",
    "WeightsNotFoundError",
]
