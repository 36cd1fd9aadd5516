"""Medical-Diff-VQA difference answers -> edit operations (the rules behind MIMIC-EDIT-INSTRUCTION).

Answer grammar (``mimic_pair_questions.csv``, question_type "difference"; sentences end with ". ", so
answers usually carry a trailing space), clauses in this order:

- ``the level of {finding} has changed from {levels} to {levels}.``  -> change
- ``the main image has an additional finding of {finding} than the reference image.``  -> add
- ``the main image has additional findings of {a}, {b}, and {c} than the reference image.``  -> add each
  (two items are written ``{a}, and {b}``)
- ``the main image is missing the finding(s) of ... than the reference image.``  -> remove each
- ``nothing has changed.``  -> no operation

The question may name an area (``what has changed in the left lung area?``): its side becomes the
location of the operations. Phrases outside the known vocabulary are kept (lower case) and reported in
``unknown``; sentences outside the grammar are reported in ``unparsed``. Nothing is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cfbench.findings import FINDING_TO_CHEXPERT, LEVEL_WORDS, Operation

# Diff-VQA finding names not in the CheXpert mapping but known to appear in answers.
OTHER_FINDINGS: tuple[str, ...] = (
    "vascular congestion", "hilar congestion", "infection", "pulmonary edema", "blunting of the costophrenic angle",
    "hernia", "calcification", "scoliosis", "emphysema", "granuloma", "nodule", "mass", "thickening", "tortuosity of the aorta",
    "hypertension", "contusion", "fibrosis", "air collection", "heart failure", "hematoma", "pneumomediastinum",
    "hydropneumothorax", "cyst", "infiltration", "lung opacity", "pleural thickening",
)
KNOWN_FINDINGS: frozenset[str] = frozenset(FINDING_TO_CHEXPERT) | frozenset(OTHER_FINDINGS)

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


def split_items(text: str) -> list[str]:
    """``a``, ``a, and b``, ``a, b, and c`` (also ``a and b``) -> the items."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", text.strip())
    return [part.strip() for part in parts if part.strip()]


def _split_levels(text: str) -> tuple[str, str] | None:
    """``A to B`` where A and B may themselves contain "to" ("moderate to large"): prefer the split whose
    both sides are known level phrases, else the first "to"."""
    words = text.split(" to ")
    if len(words) < 2:
        return None
    candidates = [(" to ".join(words[:i]), " to ".join(words[i:])) for i in range(1, len(words))]
    for source, target in candidates:
        if source in LEVEL_WORDS and target in LEVEL_WORDS:
            return source, target
    return candidates[0]


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
            for level in levels:
                if level not in LEVEL_WORDS:
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
    if finding not in KNOWN_FINDINGS:
        parsed.unknown.append(finding)
    return finding
