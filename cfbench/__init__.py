"""cfbench: an open benchmark harness for counterfactual chest X-ray generators.

Data flow: split (:mod:`cfbench.dataset`) -> ``model.edit`` (:mod:`cfbench.interface`, adapters in
:mod:`cfbench.models`) -> run folder (:mod:`cfbench.runner`, :mod:`cfbench.runstore`) -> evaluators and
metrics (:mod:`cfbench.evaluate`, :mod:`cfbench.metrics`) -> leaderboard.
"""

from cfbench.findings import Operation
from cfbench.interface import (
    Capabilities,
    CounterfactualModel,
    EditRequest,
    EditResult,
    LoadContext,
    ResultValidationError,
    validate_result,
)
from cfbench.registry import register

__version__ = "0.1.0"

__all__ = [
    "Capabilities",
    "CounterfactualModel",
    "EditRequest",
    "EditResult",
    "LoadContext",
    "Operation",
    "ResultValidationError",
    "register",
    "validate_result",
]
