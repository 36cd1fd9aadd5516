"""The finding vocabulary and the MIMIC-EDIT-INSTRUCTION instruction grammar.

One place that knows how a finding is spelt in an instruction ("pleural effusion"), in the CheXpert
label files ("Pleural Effusion") and which findings the benchmark evaluates. Instructions are
rendered and parsed here, so the phantom suite, the dataset builders and the adapters agree.

Instruction grammar (one sentence per operation, joined by ". "):

- ``Add the finding of [level] [location] finding``     e.g. "Add the finding of small left pleural effusion"
- ``Remove the finding of [location] finding``          e.g. "Remove the finding of edema"
- ``Change the level of [location] finding from A to B`` e.g. "Change the level of cardiomegaly from mild to moderate"
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

# The five findings every protocol evaluates, as CheXpert column names (the label files' spelling).
EVALUATED_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Edema",
    "Pleural Effusion",
    "Pneumothorax",
)

# The 14 CheXpert label columns of mimic-cxr-2.0.0-chexpert.csv, in file order.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# Instruction spelling (lower case, Diff-VQA vocabulary) -> CheXpert column. The data issue extends
# this with the full Diff-VQA vocabulary; findings without a CheXpert column map to None.
FINDING_TO_CHEXPERT: dict[str, str | None] = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "edema": "Edema",
    "enlarged cardiomediastinum": "Enlarged Cardiomediastinum",
    "fracture": "Fracture",
    "lung lesion": "Lung Lesion",
    "lung opacity": "Lung Opacity",
    "pleural effusion": "Pleural Effusion",
    "pleural other": "Pleural Other",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "support devices": "Support Devices",
}

OPERATION_KINDS: tuple[str, ...] = ("add", "remove", "change")

# Location words that may precede a finding in an instruction, longest first so that
# "left lower lobe" wins over "left".
LOCATION_WORDS: tuple[str, ...] = (
    "left lower lobe",
    "right lower lobe",
    "left upper lobe",
    "right upper lobe",
    "left base",
    "right base",
    "left apical",
    "right apical",
    "bibasilar",
    "bilateral",
    "retrocardiac",
    "left",
    "right",
)

DIFF_VQA_LEVEL_WORDS: tuple[str, ...] = (
    "moderately", "moderate", "acute", "mildly", "mild", "small", "severe", "moderate to large", "moderate to severe",
    "mild to moderate", "minimal", "subtle", "massive", "minimally", "increasing", "decreasing", "minor", "trace",
)
"""The level vocabulary of Medical-Diff-VQA's generator (``code/libs/level_lib.csv`` of
github.com/Holipori/MIMIC-Diff-VQA, 18 entries; its answers join a study's level words with spaces)."""

EXTRA_LEVEL_WORDS: tuple[str, ...] = ("large", "small to moderate")
"""Level phrases seen in MIMIC-EDIT-INSTRUCTION instructions but not in Diff-VQA's list."""

LEVEL_WORDS: tuple[str, ...] = tuple(sorted(set(DIFF_VQA_LEVEL_WORDS) | set(EXTRA_LEVEL_WORDS),
                                            key=lambda word: (-len(word), word)))
"""Every level phrase, longest first (so a prefix match takes "moderate to large" before "moderate")."""


@dataclass(frozen=True)
class Operation:
    """One parsed edit of an instruction.

    ``op`` is "add", "remove" or "change"; ``finding`` the lower-case finding name ("pleural effusion");
    ``location`` a location phrase ("left", "right base") or None; ``level_from`` / ``level_to`` the
    severity words before and after the edit (None where the instruction names none: an "add" may carry
    the new level in ``level_to``, a "remove" the old one in ``level_from``).
    """

    op: str
    finding: str
    location: str | None = None
    level_from: str | None = None
    level_to: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPERATION_KINDS:
            raise ValueError(f"operation kind must be one of {OPERATION_KINDS}, got {self.op!r}")
        if not self.finding:
            raise ValueError("operation needs a finding")

    @property
    def chexpert_column(self) -> str | None:
        """The CheXpert label column of this finding, or None when it has none."""
        return FINDING_TO_CHEXPERT.get(self.finding)

    def inverted(self) -> "Operation":
        """The same edit read backwards in time: add <-> remove, and the levels swapped."""
        op = {"add": "remove", "remove": "add"}.get(self.op, self.op)
        return Operation(op, self.finding, self.location, self.level_to, self.level_from)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Operation":
        return cls(
            op=data["op"],
            finding=data["finding"],
            location=data.get("location"),
            level_from=data.get("level_from"),
            level_to=data.get("level_to"),
        )


def render_operation(operation: Operation) -> str:
    """One instruction sentence (no final period) for one operation."""
    where = f"{operation.location} " if operation.location else ""
    if operation.op == "add":
        level = f"{operation.level_to} " if operation.level_to else ""
        return f"Add the finding of {level}{where}{operation.finding}"
    if operation.op == "remove":
        return f"Remove the finding of {where}{operation.finding}"
    if not (operation.level_from and operation.level_to):
        raise ValueError(f"a change operation needs level_from and level_to: {operation}")
    return (
        f"Change the level of {where}{operation.finding} "
        f"from {operation.level_from} to {operation.level_to}"
    )


def render_instruction(operations: Iterable[Operation]) -> str:
    """The instruction text for a list of operations, sentences joined by ". " in the given order."""
    sentences = [render_operation(op) for op in operations]
    if not sentences:
        raise ValueError("an instruction needs at least one operation")
    return ". ".join(sentences)


_ADD = re.compile(r"^add the finding of (?P<body>.+)$")
_REMOVE = re.compile(r"^remove the finding of (?P<body>.+)$")
_CHANGE = re.compile(r"^change the level of (?P<body>.+?) from (?P<src>.+) to (?P<dst>.+)$")


def _strip_prefix(text: str, words: tuple[str, ...]) -> tuple[str | None, str]:
    for word in words:
        if text.startswith(word + " "):
            return word, text[len(word) + 1 :]
    return None, text


def parse_instruction(instruction: str) -> list[Operation]:
    """Parse an instruction in the grammar above into operations.

    Raises ValueError naming the sentence that does not follow the grammar.
    """
    operations = []
    for sentence in re.split(r"\.\s+|\.$", instruction.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        lowered = sentence.lower()
        if match := _ADD.match(lowered):
            level, rest = _strip_prefix(match["body"], LEVEL_WORDS)
            location, finding = _strip_prefix(rest, LOCATION_WORDS)
            operations.append(Operation("add", finding, location, None, level))
        elif match := _REMOVE.match(lowered):
            location, finding = _strip_prefix(match["body"], LOCATION_WORDS)
            operations.append(Operation("remove", finding, location))
        elif match := _CHANGE.match(lowered):
            location, finding = _strip_prefix(match["body"], LOCATION_WORDS)
            operations.append(Operation("change", finding, location, match["src"], match["dst"]))
        else:
            raise ValueError(f"instruction sentence does not follow the grammar: {sentence!r}")
    if not operations:
        raise ValueError(f"empty instruction: {instruction!r}")
    return operations
