"""The answer key of a split: what a reference model may read beyond its request.

Reference models (``ground-truth``, ``true-counterfactual``, the degradations of the validity suite) answer
from the split rather than from the request; they declare ``Capabilities(oracle=True)`` and read the answers
here, never through the dataset's internals::

    class MyOracle(CounterfactualModel):
        capabilities = Capabilities(edits_image=False, oracle=True)

        @classmethod
        def load(cls, context):
            return cls(AnswerKey.from_context(context, cls.name, needs_counterfactuals=True))

        def edit(self, requests):
            return [EditResult(self.key.true_counterfactual(r.sample_id)) for r in requests]

Images are float32 HxW in [0, 1] at the run's benchmark resolution; masks bool HxW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cfbench.api.model import LoadContext

if TYPE_CHECKING:  # pragma: no cover
    from cfbench.datasets.edit_dataset import EditDataset


@dataclass(frozen=True)
class Attributes:
    """The patient's recorded attributes: age in years (None unknown), sex "M"/"F" (None unknown), race or
    phantom group name (None unknown)."""

    age: float | None
    sex: str | None
    race: str | None


class AnswerKey:
    """Read-only answers of one split, by sample id (``KeyError`` naming the sample for an unknown id)."""

    def __init__(self, dataset: "EditDataset"):
        self._dataset = dataset

    @classmethod
    def from_context(cls, context: LoadContext, model_name: str, needs_counterfactuals: bool = False) -> "AnswerKey":
        """The answer key of the split a model is loaded for; ValueError naming the model when it is loaded
        without a split, or (``needs_counterfactuals``) on a split without exact counterfactuals."""
        if context.dataset is None:
            raise ValueError(f"model {model_name!r} reads its answers from the dataset; run it on a split")
        key = cls(context.dataset)
        if needs_counterfactuals and not key.has_true_counterfactuals:
            raise ValueError(
                f"model {model_name!r} needs exact counterfactuals and lesion masks, which only phantom datasets "
                f"have; {context.dataset.root} has no counterfactual/ or lesion_mask/ folder")
        return key

    @property
    def has_true_counterfactuals(self) -> bool:
        """True on splits with the exact counterfactual and lesion-change mask of every sample (phantoms)."""
        return self._dataset.has_folder("counterfactual") and self._dataset.has_folder("lesion_mask")

    @property
    def sample_ids(self) -> list[str]:
        """Every sample id of the split, in split order."""
        return [sample.sample_id for sample in self._dataset]

    def input_image(self, sample_id: str) -> np.ndarray:
        """The prior study (the request's image)."""
        return self._dataset.past_image(self._dataset[sample_id])

    def target_image(self, sample_id: str) -> np.ndarray:
        """The real later study (other pose and acquisition on real data)."""
        return self._dataset.current_image(self._dataset[sample_id])

    def true_counterfactual(self, sample_id: str) -> np.ndarray:
        """The exact counterfactual x*: the prior re-rendered with the target findings (phantoms only)."""
        return self._dataset.counterfactual_image(self._dataset[sample_id])

    def lesion_mask(self, sample_id: str) -> np.ndarray:
        """Where x* differs from the prior (bool HxW, phantoms only)."""
        return self._dataset.lesion_mask(self._dataset[sample_id])

    def attributes(self, sample_id: str) -> Attributes:
        sample = self._dataset[sample_id]
        return Attributes(age=sample.age, sex=sample.sex, race=sample.race)
