"""Reference models: the rows every leaderboard needs to read the others against.

- ``identity``: returns the input unchanged (no edit: perfect preservation, no pathology change).
- ``ground-truth``: returns the real target image of the sample (the papers' "Real Images (GT)" row).
- ``true-counterfactual``: returns the exact counterfactual (phantom datasets only): the prior
  re-rendered with the target findings at the prior's pose.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from cfbench.api.answers import AnswerKey
from cfbench.api.model import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.api.registry import register


@register
class IdentityModel(CounterfactualModel):
    name = "identity"
    capabilities = Capabilities(edits_image=True)
    description = "returns the input image unchanged (no-edit baseline)"

    @classmethod
    def load(cls, context: LoadContext) -> "IdentityModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=request.image.copy(), sample_id=request.sample_id) for request in requests]


class _DatasetLookupModel(CounterfactualModel):
    """Base of reference models that answer from the split's answer key rather than from the request."""

    capabilities = Capabilities(edits_image=False, oracle=True)
    needs_counterfactuals = False

    def __init__(self, key: AnswerKey):
        self.key = key

    @classmethod
    def load(cls, context: LoadContext) -> "_DatasetLookupModel":
        return cls(AnswerKey.from_context(context, cls.name, cls.needs_counterfactuals))

    @abc.abstractmethod
    def answer(self, request: EditRequest) -> np.ndarray:
        """The answer image for one request, float32 HxW in [0, 1]."""

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=self.answer(request), sample_id=request.sample_id) for request in requests]


@register
class GroundTruthModel(_DatasetLookupModel):
    name = "ground-truth"
    description = "returns the real target image (the papers' 'Real Images (GT)' row)"

    def answer(self, request: EditRequest) -> np.ndarray:
        return self.key.target_image(request.sample_id)


@register
class TrueCounterfactualModel(_DatasetLookupModel):
    name = "true-counterfactual"
    description = "returns the exact counterfactual (phantom datasets only)"
    needs_counterfactuals = True

    def answer(self, request: EditRequest) -> np.ndarray:
        return self.key.true_counterfactual(request.sample_id)
