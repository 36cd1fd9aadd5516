"""Medical-Diff-VQA difference answers -> edit operations (the rules behind MIMIC-EDIT-INSTRUCTION).

Answer grammar (``mimic_pair_questions.csv``, question_type "difference"; sentences end with ". ", so
answers usually carry a trailing space), clauses in this order:

- ``the level of {finding} has changed from {levels} to {levels}.``  -> change
- ``the main image has an additional finding of {finding} than the reference image.``  -> add
- ``the main image has additional findings of {a}, {b}, and {c} than the reference image.``  -> add each
  (two items are written ``{a}, and {b}``)
- ``the main image is missing the finding(s) of ... than the reference image.``  -> remove each
- ``nothing has changed.``  -> no operation

Level changes: ``{levels}`` on each side is one or more level phrases of :data:`LEVEL_WORDS` joined by
spaces (Diff-VQA joins a study's level words so), and some phrases contain "to" themselves ("mild to
moderate"), so "A to B to C" can be read more than one way. Every reading is listed: the one taken has both
sides made of known level phrases and the earliest "to" (``small to mild to moderate`` -> small -> mild to
moderate); when another reading exists (``small to mild`` -> ``moderate``, a range as radiologists write it)
the answer is recorded in ``ambiguous`` (and the dataset card lists every such split with its count).

The question may name an area (``what has changed in the left lung area?``): its side becomes the
location of the operations. Phrases outside the known vocabulary are kept (lower case) and reported in
``unknown``; sentences outside the grammar are reported in ``unparsed``. Nothing is silently dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cfbench.core.findings import FINDING_TO_CHEXPERT, LEVEL_WORDS, Operation

# Diff-VQA finding names not in the CheXpert mapping but known to appear in answers.
OTHER_FINDINGS: tuple[str, ...] = (
    "vascular congestion", "hilar congestion", "infection", "pulmonary edema", "blunting of the costophrenic angle",
    "hernia", "calcification", "scoliosis", "emphysema", "granuloma", "nodule", "mass", "thickening", "tortuosity of the aorta",
    "hypertension", "contusion", "fibrosis", "air collection", "heart failure", "hematoma", "pneumomediastinum",
    "hydropneumothorax", "cyst", "infiltration", "lung opacity", "pleural thickening",
)
KNOWN_FINDINGS: frozenset[str] = frozenset(FINDING_TO_CHEXPERT) | frozenset(OTHER_FINDINGS)
# Spelling variants -> the one vocabulary (applied before the vocabulary check).
FINDING_SYNONYMS: dict[str, str] = {
    "pulmonary edema": "edema",
    "effusion": "pleural effusion",
    "pleural effusions": "pleural effusion",
    "enlarged cardiac silhouette": "cardiomegaly",
}
QUESTION_COLUMNS: tuple[str, ...] = ("study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split")

# Area of an area question -> location of the operations.
AREA_LOCATIONS: dict[str, str] = {
    "left lung": "left",
    "right lung": "right",
    "left": "left",
    "right": "right",
    "bilateral": "bilateral",
    "bibasilar": "bibasilar",
    "retrocardiac": "retrocardiac",
    "left base": "left base",
    "right base": "right base",
}

_AREA_QUESTION = re.compile(r"what has changed in the (?P<area>.+?) area\?")
_CHANGE = re.compile(r"^the level of (?P<finding>.+?) has changed from (?P<levels>.+)$")
_ADD = re.compile(r"^the main image has (?:an additional finding|additional findings) of (?P<items>.+?) than the reference image$")
_REMOVE = re.compile(r"^the main image is missing the findings? of (?P<items>.+?) than the reference image$")
_NOTHING = "nothing has changed"


@dataclass
class ParsedAnswer:
    """The operations of one answer, plus what the rules did not recognise."""

    operations: list[Operation] = field(default_factory=list)
    nothing_changed: bool = False
    unknown: list[str] = field(default_factory=list)    # findings or level words outside the vocabulary
    unparsed: list[str] = field(default_factory=list)   # sentences outside the grammar
    ambiguous: list[str] = field(default_factory=list)  # level texts with more than one reading, and the one taken


def split_items(text: str) -> list[str]:
    """``a``, ``a, and b``, ``a, b, and c`` (also ``a and b``) -> the items."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", text.strip())
    return [part.strip() for part in parts if part.strip()]


def is_level_phrase(text: str) -> bool:
    """One or more :data:`LEVEL_WORDS` entries joined by spaces ("mild", "small mild", "mild to moderate")."""
    text = text.strip()
    if not text:
        return False
    if text in LEVEL_WORDS:
        return True
    return any(text.startswith(word + " ") and is_level_phrase(text[len(word) + 1:]) for word in LEVEL_WORDS)


def _is_range(text: str) -> bool:
    """"X to Y" of two level phrases, a range a report may write ("small to mild") though Diff-VQA has no entry."""
    parts = text.split(" to ")
    return any(is_level_phrase(" to ".join(parts[:i])) and is_level_phrase(" to ".join(parts[i:]))
               for i in range(1, len(parts)))


def level_readings(text: str) -> list[tuple[str, str]]:
    """Every reading of ``A to B`` as (from, to): first those whose sides are both level phrases, earliest "to"
    first; then those where a side is a range of level phrases; else just the first "to" (unknown words)."""
    words = text.split(" to ")
    if len(words) < 2:
        return []
    candidates = [(" to ".join(words[:i]), " to ".join(words[i:])) for i in range(1, len(words))]
    known = [c for c in candidates if is_level_phrase(c[0]) and is_level_phrase(c[1])]
    ranged = [c for c in candidates if c not in known
              and all(is_level_phrase(side) or _is_range(side) for side in c)]
    return known + ranged or candidates[:1]


def _split_levels(text: str) -> tuple[str, str] | None:
    """The reading taken (the first of :func:`level_readings`), or None without a "to"."""
    readings = level_readings(text)
    return readings[0] if readings else None


def area_location(question: str) -> str | None:
    """The location named by an area question, or None for the whole-image question."""
    match = _AREA_QUESTION.search(question.strip().lower())
    if not match:
        return None
    return AREA_LOCATIONS.get(match["area"], match["area"])


def parse_difference_answer(answer: str, question: str = "") -> ParsedAnswer:
    """Parse one difference answer (and optionally its question, for the area) into operations."""
    parsed = ParsedAnswer()
    location = area_location(question) if question else None
    for sentence in re.split(r"\.\s*", answer.strip().lower()):
        sentence = sentence.strip()
        if not sentence:
            continue
        if sentence == _NOTHING:
            parsed.nothing_changed = True
        elif match := _CHANGE.match(sentence):
            levels = _split_levels(match["levels"])
            if levels is None:
                parsed.unparsed.append(sentence)
                continue
            finding = _note(parsed, match["finding"].strip())
            readings = level_readings(match["levels"])
            if len(readings) > 1:
                parsed.ambiguous.append(f"{match['levels']!r}: read as {levels[0]!r} -> {levels[1]!r}; also "
                                        + ", ".join(f"{a!r} -> {b!r}" for a, b in readings[1:]))
            for level in levels:
                if not is_level_phrase(level):
                    parsed.unknown.append(level)
            parsed.operations.append(Operation("change", finding, location, levels[0], levels[1]))
        elif match := _ADD.match(sentence):
            for item in split_items(match["items"]):
                parsed.operations.append(Operation("add", _note(parsed, item), location))
        elif match := _REMOVE.match(sentence):
            for item in split_items(match["items"]):
                parsed.operations.append(Operation("remove", _note(parsed, item), location))
        else:
            parsed.unparsed.append(sentence)
    return parsed


def _note(parsed: ParsedAnswer, finding: str) -> str:
    finding = FINDING_SYNONYMS.get(finding, finding)
    if finding not in KNOWN_FINDINGS:
        parsed.unknown.append(finding)
    return finding


@dataclass
class PairEdits:
    """The edit operations of one (reference study -> main study) pair of Medical-Diff-VQA."""

    subject_id: str
    study_id: str      # the main (later) study as given; order is checked against dates when building
    ref_id: str        # the reference (earlier) study as given
    split: str
    operations: list[Operation]
    nothing_changed: bool


@dataclass
class DifferenceReport:
    pairs: list[PairEdits]
    unknown: Counter          # phrase -> count, over all answers
    unparsed: Counter         # sentence -> count
    rows_read: int
    ambiguous: Counter = field(default_factory=Counter)  # ambiguous level split (with the reading taken) -> count


def merge_locations(whole: list[Operation], by_area: list[Operation]) -> list[Operation]:
    """Give each operation of the whole-image answer the side(s) the area answers name for the same
    (op, finding): one side -> that side, both sides -> "bilateral"; none -> unchanged."""
    merged = []
    for operation in whole:
        sides = {o.location for o in by_area if (o.op, o.finding) == (operation.op, operation.finding) and o.location}
        if not sides or operation.location:
            merged.append(operation)
            continue
        location = sides.pop() if len(sides) == 1 else "bilateral"
        merged.append(Operation(operation.op, operation.finding, location, operation.level_from, operation.level_to))
    return merged


def read_difference_pairs(csv_path: str | Path) -> DifferenceReport:
    """Every pair's operations from ``mimic_pair_questions.csv`` (difference questions only).

    Raises ValueError naming the missing columns. Pairs whose answer is "nothing has changed" are kept
    with ``nothing_changed=True`` (the builder drops them, and counts them)."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [column for column in QUESTION_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{csv_path} is missing column(s) {missing}; expected {list(QUESTION_COLUMNS)}")
    table = table[table["question_type"] == "difference"]
    unknown: Counter = Counter()
    unparsed: Counter = Counter()
    ambiguous: Counter = Counter()
    pairs = []
    for (subject, study, ref), group in table.groupby(["subject_id", "study_id", "ref_id"], sort=True):
        whole, by_area, nothing = [], [], False
        for question, answer in zip(group["question"], group["answer"]):
            parsed = parse_difference_answer(answer, question)
            unknown.update(parsed.unknown)
            unparsed.update(parsed.unparsed)
            ambiguous.update(parsed.ambiguous)
            if area_location(question) is None:
                whole += parsed.operations
                nothing |= parsed.nothing_changed
            else:
                by_area += parsed.operations
        pairs.append(PairEdits(subject, study, ref, group["split"].iloc[0], merge_locations(whole, by_area),
                               nothing and not whole))
    return DifferenceReport(pairs, unknown, unparsed, len(table), ambiguous)
