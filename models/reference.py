"""Reference models: the rows every leaderboard needs to read the others against.

- ``identity``: returns the input unchanged (no edit: perfect preservation, no pathology change).
- ``ground-truth``: returns the real target image of the sample (the papers' "Real Images (GT)" row).
- ``true-counterfactual``: returns the exact counterfactual (phantom datasets only): the prior
  re-rendered with the target findings at the prior's pose.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cfbench.api.model import Capabilities, CounterfactualModel, EditRequest, EditResult, LoadContext
from cfbench.api.registry import register

if TYPE_CHECKING:  # pandas comes with the dataset; `cfbench models` lists these classes without loading one
    from cfbench.datasets.edit_dataset import EditDataset


@register
class IdentityModel(CounterfactualModel):
    name = "identity"
    capabilities = Capabilities(edits_image=True)
    description = "returns the input image unchanged (no-edit baseline)"

    @classmethod
    def load(cls, context: LoadContext) -> "IdentityModel":
        return cls()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=request.image.copy()) for request in requests]


class _DatasetLookupModel(CounterfactualModel):
    """Base of reference models that answer from the dataset rather than from the request."""

    capabilities = Capabilities(edits_image=False)

    def __init__(self, dataset: EditDataset):
        self.dataset = dataset

    @classmethod
    def load(cls, context: LoadContext) -> "_DatasetLookupModel":
        if context.dataset is None:
            raise ValueError(f"model {cls.name!r} reads its answers from the dataset; run it on a split")
        return cls(context.dataset)

    @abc.abstractmethod
    def answer(self, request: EditRequest) -> np.ndarray:
        """The answer image for one request, float32 HxW in [0, 1]."""

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        return [EditResult(image=self.answer(request)) for request in requests]


@register
class GroundTruthModel(_DatasetLookupModel):
    name = "ground-truth"
    description = "returns the real target image (the papers' 'Real Images (GT)' row)"

    def answer(self, request: EditRequest) -> np.ndarray:
        return self.dataset.current_image(self.dataset[request.sample_id])


@register
class TrueCounterfactualModel(_DatasetLookupModel):
    name = "true-counterfactual"
    description = "returns the exact counterfactual (phantom datasets only)"

    @classmethod
    def load(cls, context: LoadContext) -> "TrueCounterfactualModel":
        model = super().load(context)
        if not context.dataset.has_folder("counterfactual"):
            raise ValueError(
                f"model 'true-counterfactual' needs exact counterfactuals, which only phantom datasets have; "
                f"{context.dataset.root} has no counterfactual/ folder"
            )
        return model

    def answer(self, request: EditRequest) -> np.ndarray:
        return self.dataset.counterfactual_image(self.dataset[request.sample_id])
