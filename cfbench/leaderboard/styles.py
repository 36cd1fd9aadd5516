"""One colour and one marker per model, the same in every leaderboard, plot and page.

The style of a model is a function of its registry name alone (SHA-256 of the name -> one of the 8 x 8
combinations of the Okabe-Ito colour-blind-safe palette and 8 marker shapes), so a model keeps its look
when rows are added, removed or reordered, and across leaderboards. When two models of one leaderboard
land on the same combination, the later of them in name order takes the next free one (so a clash moves
only the rarer of two rows). Light to import (no matplotlib)."""

from __future__ import annotations

import hashlib

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
"""Okabe & Ito's colour-blind-safe palette (blue, orange, green, purple, sky blue, vermillion, black, yellow)."""
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
"""matplotlib marker codes; :data:`MARKER_SYMBOLS` are the same shapes as text for web pages."""
MARKER_SYMBOLS = {"o": "●", "s": "■", "D": "◆", "^": "▲", "v": "▼", "P": "✚", "X": "✖", "*": "★"}
COMBINATIONS = len(OKABE_ITO) * len(MARKERS)


def registry_name(label: str) -> str:
    """The registry name of a row label ("instructx2x [run-b]" -> "instructx2x")."""
    return label.split(" [")[0]


def _slot(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % COMBINATIONS


def style_of_slot(slot: int) -> tuple[str, str]:
    """(colour, marker) of a combination index: colours vary fastest, so neighbours differ in colour."""
    return OKABE_ITO[slot % len(OKABE_ITO)], MARKERS[(slot // len(OKABE_ITO)) % len(MARKERS)]


def model_styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """label -> (colour, marker) for the rows of one leaderboard (distinct while there are at most 64)."""
    taken: set[int] = set()
    styles = {}
    for label in sorted(labels, key=lambda text: (registry_name(text), text)):
        slot = _slot(registry_name(label))
        for _ in range(COMBINATIONS):
            if slot not in taken:
                break
            slot = (slot + 1) % COMBINATIONS
        taken.add(slot)
        styles[label] = style_of_slot(slot)
    return styles
