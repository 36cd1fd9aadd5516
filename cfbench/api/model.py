"""The contract between the benchmark and a counterfactual generator.

A generator receives :class:`EditRequest` objects (a prior X-ray and an edit instruction) and returns
one :class:`EditResult` per request (the counterfactual, optionally a guidance map and an explanation).
Images are plain ``numpy`` arrays: float32, shape HxW, values in [0, 1], 0 = black (air), 1 = white (bone).

To add a model, subclass :class:`CounterfactualModel`, implement :meth:`~CounterfactualModel.load`
and :meth:`~CounterfactualModel.edit`, and register it (see :mod:`cfbench.api.registry`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from cfbench.core.findings import Operation

if TYPE_CHECKING:  # pragma: no cover
    from cfbench.datasets.edit_dataset import EditDataset

DEFAULT_RESOLUTION = 512


@dataclass
class EditRequest:
    """One counterfactual to generate.

    image: float32 HxW in [0, 1], the prior X-ray at benchmark resolution (default 512x512).
    instruction: the edit instruction ("Add the finding of small left pleural effusion").
    operations: the instruction parsed into edits (op, finding, location, level_from, level_to).
    target_report: impression text of the target study, for text-to-image baselines, or None.
    progression: a progression prompt (ICG-CXR style), or None.
    region_mask: bool HxW, a user-defined edit region, or None.
    seed: the random seed for this sample; the same seed must give the same result.
    """

    sample_id: str
    image: np.ndarray
    instruction: str
    operations: list[Operation] = field(default_factory=list)
    target_report: str | None = None
    progression: str | None = None
    region_mask: np.ndarray | None = None
    seed: int = 0


@dataclass
class EditResult:
    """What a model returns for one request.

    image: float32 HxW in [0, 1], the counterfactual, same size as the request image.
    guidance_map: float32 HxW in [0, 1] (where and how strongly the model edited), or None.
    explanation: free text describing the change (ProgEmu-style interpretation), or None.
    info: anything else worth keeping (JSON-serialisable), stored with the sample.
    sample_id: the id of the request this result answers, or None; when set, the runner checks it equals the
        request's id (a batch returned in another order is then caught, not stored under the wrong sample).
    """

    image: np.ndarray
    guidance_map: np.ndarray | None = None
    explanation: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sample_id: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a model can do.

    edits_image: True when the output is an edit of the input image; False for text-to-image
        generators that only read the instruction or target report.
    guidance_map: the model returns a guidance map with each result.
    explanation: the model returns an explanation text with each result.
    oracle: the model answers from the split's answer key (the real target, the exact counterfactual, the
        lesion masks: :class:`cfbench.api.answers.AnswerKey`) rather than from the request alone. Leaderboards
        show such rows as references and never bold them (the papers' "Real Images (GT)" row, the exact
        answer, the degradations of the validity suite).
    """

    edits_image: bool = True
    guidance_map: bool = False
    explanation: bool = False
    oracle: bool = False


@dataclass
class LoadContext:
    """Everything a model may need to construct itself.

    model_path: the local weights folder or file (None for models that need no weights).
    device: torch device string ("cpu", "cuda", "cuda:1").
    dataset: the split being run; reference models read targets from it, others ignore it.
    options: model-specific options (from ``--option key=value``), strings unless the model converts.
    """

    model_path: Path | None = None
    device: str = "cpu"
    dataset: "EditDataset | None" = None
    options: dict[str, str] = field(default_factory=dict)


class ResultValidationError(ValueError):
    """A model returned a result that breaks the contract (shape, dtype, range, NaN)."""


class CounterfactualModel(abc.ABC):
    """Base class of every generator.

    Class attributes describe the model to the registry and ``cfbench models``:

    name: registry name ("instructx2x").
    capabilities: see :class:`Capabilities`.
    native_resolution: the side in pixels the model works at; the runner hands it benchmark-resolution
        images, and the model resizes internally if it must.
    weights_subdir: folder name under the configured weights folder where weights are expected, or None
        for models that need no weights.
    weights_help: how to obtain the weights (shown when they are missing).
    hub_repos: the Hugging Face repositories ``cfbench weights fetch NAME`` downloads into the local
        Hugging Face cache (empty: none public); a run reads them with ``--model-path hf:ORG/NAME``.
    options_class: the :class:`~cfbench.api.options.ModelOptions` dataclass of the model's ``--option``s, or
        None; leaderboards name a run by the registry name and the options that differ from its defaults.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    native_resolution: ClassVar[int] = DEFAULT_RESOLUTION
    weights_subdir: ClassVar[str | None] = None
    weights_help: ClassVar[str] = ""
    phantom_weights: ClassVar[str | None] = None
    hub_repos: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    options_class: ClassVar[type | None] = None

    @classmethod
    @abc.abstractmethod
    def load(cls, context: LoadContext) -> "CounterfactualModel":
        """Construct the model from a local weights folder/config; raise a clear error if missing."""

    @abc.abstractmethod
    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Generate one result per request, in order. Must be deterministic for the requests' seeds and
        independent of how the requests are batched."""

    def identity(self) -> dict[str, Any]:
        """What identifies these weights (e.g. a hash of the weights files); stored in run manifests."""
        return {}


def validate_result(result: object, request: EditRequest, model_name: str) -> EditResult:
    """Check one result against the contract; raise :class:`ResultValidationError` naming model and sample."""

    def fail(problem: str) -> ResultValidationError:
        return ResultValidationError(f"model {model_name!r}, sample {request.sample_id!r}: {problem}")

    if not isinstance(result, EditResult):
        raise fail(f"edit() must return EditResult objects, got {type(result).__name__}")
    if result.sample_id is not None and result.sample_id != request.sample_id:
        raise fail(f"the result is marked as sample {result.sample_id!r}: edit() must return results in the "
                   "order of the requests")
    expected_shape = request.image.shape
    _check_map(result.image, "image", expected_shape, fail)
    if result.guidance_map is not None:
        _check_map(result.guidance_map, "guidance_map", expected_shape, fail)
    if result.explanation is not None and not isinstance(result.explanation, str):
        raise fail(f"explanation must be str or None, got {type(result.explanation).__name__}")
    if not isinstance(result.info, dict):
        raise fail(f"info must be a dict, got {type(result.info).__name__}")
    return result


def _check_map(array: object, what: str, expected_shape: tuple[int, ...], fail) -> None:
    if not isinstance(array, np.ndarray):
        raise fail(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise fail(f"{what} must be float32, got {array.dtype}")
    if array.shape != tuple(expected_shape):
        raise fail(f"{what} has shape {array.shape}, expected {tuple(expected_shape)} (HxW, as the input)")
    finite = np.isfinite(array)
    if not finite.all():
        raise fail(f"{what} has {int((~finite).sum())} non-finite values (NaN or inf)")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise fail(f"{what} values must lie in [0, 1], got [{low:.4g}, {high:.4g}]")
