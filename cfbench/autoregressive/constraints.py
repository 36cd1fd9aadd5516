"""Token grammars for constrained sampling: which ids a sample may emit at each position.

A :class:`GrammarConstraint` is a fixed part (one allowed-id set per position: forced tokens, image-token
grids with row ends, end-of-frame / end-of-image markers) followed by an optional free tail (text ids, with
the end id allowed only after ``min_length`` tokens and forced after ``max_length``). With the constraint
on, every sample yields a well-formed grid without retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def id_set(ids: Sequence[int] | range | torch.Tensor) -> torch.Tensor:
    """A 1-D LongTensor of token ids."""
    if isinstance(ids, torch.Tensor):
        return ids.to(torch.long).flatten()
    if isinstance(ids, range):
        return torch.arange(ids.start, ids.stop, ids.step, dtype=torch.long)
    return torch.as_tensor(list(ids), dtype=torch.long)


@dataclass(frozen=True)
class TextTail:
    """The free part after the fixed grammar: ``text_ids`` tokens, at least ``min_length`` of them before
    ``end_id`` may come, and ``end_id`` forced once ``max_length`` tokens were written. ``forced_at``: tail
    positions (0-based, counting every token written after the fixed part) where only ``forced_id`` may come
    (ProgEmu's release forces its end-of-line token at some text positions); they count towards
    ``min_length`` and ``max_length``."""

    text_ids: torch.Tensor
    end_id: int
    min_length: int = 0
    max_length: int = 256
    forced_at: tuple[int, ...] = ()
    forced_id: int | None = None

    def __post_init__(self):
        if self.forced_at and self.forced_id is None:
            raise ValueError("TextTail.forced_at needs a forced_id")


class GrammarConstraint:
    """Fixed per-position allowed sets, then an optional :class:`TextTail`; see the module docstring."""

    def __init__(self, fixed: Sequence[torch.Tensor], tail: TextTail | None = None):
        self.fixed = list(fixed)
        self.tail = tail
        if tail is not None:
            self._text = tail.text_ids
            self._text_or_end = torch.cat([tail.text_ids, torch.tensor([tail.end_id])]).unique()
            self._end = torch.tensor([tail.end_id])
            self._forced_at = frozenset(tail.forced_at)
            self._forced = torch.tensor([tail.forced_id if tail.forced_id is not None else tail.end_id])

    @property
    def max_length(self) -> int:
        """The most tokens this grammar can produce (end id included)."""
        return len(self.fixed) + (self.tail.max_length + 1 if self.tail is not None else 0)

    def allowed(self, generated: Sequence[int]) -> torch.Tensor | None:
        position = len(generated)
        if position < len(self.fixed):
            return self.fixed[position]
        if self.tail is None:
            return None
        written = position - len(self.fixed)
        if written < self.tail.max_length and written in self._forced_at:
            return self._forced
        if written < self.tail.min_length:
            return self._text
        return self._text_or_end if written < self.tail.max_length else self._end

    def done(self, generated: Sequence[int]) -> bool:
        if len(generated) < len(self.fixed):
            return False
        if self.tail is None:
            return True
        return len(generated) > len(self.fixed) and generated[-1] == self.tail.end_id


def forced(ids: Sequence[int]) -> list[torch.Tensor]:
    """One position per id, each allowing only that id."""
    return [torch.tensor([int(token)]) for token in ids]


def image_grid(image_ids: torch.Tensor, rows: int, columns: int, row_end: int | None = None) -> list[torch.Tensor]:
    """``rows`` rows of ``columns`` image-token positions, each row followed by ``row_end`` when given."""
    row = [image_ids] * columns + (forced([row_end]) if row_end is not None else [])
    return row * rows
