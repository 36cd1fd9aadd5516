"""The one error for weights that are not where they must be, used by every stage (model adapters through
the registry, evaluators through the weights catalogue, the shipped phantom evaluator).

The message names each missing file, the exact path looked at, and how to obtain it, so a user can act on
it without reading code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MissingWeights:
    """One missing weights file or folder.

    what: what it is, for the reader ("weights for model 'instructx2x'").
    path: the exact path looked at.
    how: how to obtain it (a URL, a command, a training recipe); may be empty.
    """

    what: str
    path: Path
    how: str = ""


class WeightsNotFoundError(FileNotFoundError):
    """Weights a model or an evaluator needs are missing. ``missing`` lists every missing file (the first one
    is also ``path``); ``footer`` is a closing line that applies to all of them (e.g. one fetch command)."""

    def __init__(self, missing: list[MissingWeights] | MissingWeights, footer: str = ""):
        self.missing = [missing] if isinstance(missing, MissingWeights) else list(missing)
        if not self.missing:
            raise ValueError("WeightsNotFoundError needs at least one missing file")
        self.path = Path(self.missing[0].path)
        lines = [f"{item.what} not found at {item.path}" + (f"\n  {item.how}" if item.how else "")
                 for item in self.missing]
        if footer:
            lines.append(footer)
        super().__init__("\n".join(lines))


class WeightsFolderError(ValueError):
    """A weights folder that is there but cannot be used as it is (a ``model_index.json`` naming an unknown library
    or class, a tensor of the wrong shape); the message names the file and what to do."""
