"""cfbench: an open benchmark harness for counterfactual chest X-ray generators.

One subpackage per stage, in the order data flows (a stage imports only the stages above it in this list):

- :mod:`cfbench.core`: shared helpers (settings, image I/O, atomic storage, hashing, seeds, the finding vocabulary);
- :mod:`cfbench.datasets`: the split layout and reader, and the builders (MIMIC, NIH, ICG-CXR);
- :mod:`cfbench.api`: the model contract (``EditRequest`` -> ``EditResult``), the registry, the evaluator contract;
- :mod:`cfbench.phantom`: phantoms with exact counterfactuals, their datasets and evaluator;
- :mod:`cfbench.diffusion`: the loops generators share (adapters live in :mod:`cfbench.models`);
- :mod:`cfbench.autoregressive`: the image-token language-model loop and VQ tokenizers (LLM-CXR, ProgEmu);
- :mod:`cfbench.runs`: generation into a run folder;
- :mod:`cfbench.evaluation`: evaluators and metrics (math in :mod:`cfbench.metrics`) -> metrics.json;
- :mod:`cfbench.leaderboard`: tables, plots, gallery;
- :mod:`cfbench.suites`: end-to-end jobs above the leaderboard (the metric-validity suite);
- :mod:`cfbench.training`: training generators;
- :mod:`cfbench.cli`: the ``cfbench`` command, one module per verb group.

What a model plugin needs is exported here.
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
from cfbench.api.answers import AnswerKey, Attributes
from cfbench.api.options import ModelOptions
from cfbench.api.registry import register
from cfbench.core.errors import MissingWeights, WeightsNotFoundError

__version__ = "0.1.0"

__all__ = [
    "AnswerKey",
    "Attributes",
    "Capabilities",
    "CounterfactualModel",
    "EditRequest",
    "EditResult",
    "LoadContext",
    "MissingWeights",
    "ModelOptions",
    "Operation",
    "ResultValidationError",
    "register",
    "validate_result",
    "WeightsNotFoundError",
]
