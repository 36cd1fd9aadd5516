"""Phantom scenarios: who the patient is, which findings are present, how the patient is posed, and the
longitudinal pairs drawn from them (numpy only; no pixels here: :mod:`cfbench.phantom.render` draws them).

A :class:`PhantomPair` is one patient at two time points with the edits between them; everything about it
follows from its ``pair_seed``. Radiological convention: the patient's LEFT is on the IMAGE RIGHT.
Canonical coordinates run from -1 to +1 across the image at pose identity (see :class:`Pose`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfbench.core.findings import EVALUATED_FINDINGS, Operation, render_instruction

DEMO_RESOLUTION = 128  # pixels: the side of the demo split (the phantom evaluator's input, the generator's side)
DEMO_STEPS = 20  # sampling steps of the demo's generators (five times fewer than the papers' 100: minutes on a CPU)
PHANTOM_VERSION = "1"  # bump when rendering or sampling changes (datasets are cached by it)
GROUPS: tuple[str, ...] = ("group_a", "group_b", "group_c")  # 3-level stand-in for race



EFFUSION_LOCATIONS: tuple[str, ...] = ("left", "right", "bilateral")
EFFUSION_LEVELS: tuple[str, ...] = ("small", "moderate", "large")
SEVERITY_LEVELS: tuple[str, ...] = ("mild", "moderate", "severe")  # cardiomegaly, edema
PNEUMOTHORAX_SIDES: tuple[str, ...] = ("left", "right")
PNEUMOTHORAX_LEVELS: tuple[str, ...] = ("small", "large")
ATELECTASIS_LOCATIONS: tuple[str, ...] = ("left base", "right base")

# FindingState field <-> instruction spelling <-> CheXpert column.
FINDING_FIELDS: dict[str, tuple[str, str]] = {
    "atelectasis": ("atelectasis", "Atelectasis"),
    "cardiomegaly": ("cardiomegaly", "Cardiomegaly"),
    "edema": ("edema", "Edema"),
    "effusion": ("pleural effusion", "Pleural Effusion"),
    "pneumothorax": ("pneumothorax", "Pneumothorax"),
}
_COLUMN_TO_FIELD = {column: name for name, (_, column) in FINDING_FIELDS.items()}
assert set(_COLUMN_TO_FIELD) == set(EVALUATED_FINDINGS)


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """One synthetic patient: attributes and anatomy, fixed across time points.

    age: years, 20..90 (bone density falls, costal-cartilage calcification and aortic knob grow).
    sex: "M" or "F" (F: breast shadows over the lower lung fields, narrower body).
    group: one of GROUPS (soft-tissue stripe orientation and tone-curve contrast).
    anatomy_seed: fixes the lung-marking texture and calcification positions.
    Shape parameters (dimensionless multipliers around 1 unless stated, canonical units otherwise):
    body_width: half-width of the body, canonical units (~0.78..0.92).
    lung_width, lung_height: lung size multipliers (0.94..1.06).
    heart_size: normal heart size multiplier (0.94..1.06).
    heart_shift: horizontal heart offset, canonical units (-0.02..0.03).
    diaphragm_level: vertical diaphragm offset, canonical units (-0.04..0.04, + = lower).
    rib_spacing: rib spacing multiplier (0.95..1.05); rib_phase: rib phase offset in periods (-0.2..0.2).
    breast_size: breast shadow size multiplier (0 for M, 0.8..1.2 for F).
    soft_tissue: soft-tissue density multiplier (0.92..1.08).
    """

    age: float
    sex: str
    group: str
    anatomy_seed: int
    body_width: float = 0.86
    lung_width: float = 1.0
    lung_height: float = 1.0
    heart_size: float = 1.0
    heart_shift: float = 0.0
    diaphragm_level: float = 0.0
    rib_spacing: float = 1.0
    rib_phase: float = 0.0
    breast_size: float = 0.0
    soft_tissue: float = 1.0


@dataclass(frozen=True)
class FindingState:
    """The findings present at one time point; None = absent.

    effusion: (location in "left"/"right"/"bilateral", level in "small"/"moderate"/"large")
    cardiomegaly: "mild"/"moderate"/"severe"
    edema: "mild"/"moderate"/"severe"
    pneumothorax: ("left"/"right", "small"/"large")
    atelectasis: "left base"/"right base"
    """

    effusion: tuple[str, str] | None = None
    cardiomegaly: str | None = None
    edema: str | None = None
    pneumothorax: tuple[str, str] | None = None
    atelectasis: str | None = None

    def __post_init__(self) -> None:
        if self.effusion is not None:
            location, level = self.effusion
            if location not in EFFUSION_LOCATIONS or level not in EFFUSION_LEVELS:
                raise ValueError(f"bad effusion {self.effusion!r}")
        for name in ("cardiomegaly", "edema"):
            value = getattr(self, name)
            if value is not None and value not in SEVERITY_LEVELS:
                raise ValueError(f"bad {name} level {value!r}")
        if self.pneumothorax is not None:
            side, level = self.pneumothorax
            if side not in PNEUMOTHORAX_SIDES or level not in PNEUMOTHORAX_LEVELS:
                raise ValueError(f"bad pneumothorax {self.pneumothorax!r}")
        if self.atelectasis is not None and self.atelectasis not in ATELECTASIS_LOCATIONS:
            raise ValueError(f"bad atelectasis location {self.atelectasis!r}")

    def labels(self) -> dict[str, float]:
        """CheXpert columns of EVALUATED_FINDINGS -> 1.0 present / 0.0 absent."""
        return {
            column: 0.0 if getattr(self, _COLUMN_TO_FIELD[column]) is None else 1.0
            for column in EVALUATED_FINDINGS
        }

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in FINDING_FIELDS)

    def impression(self) -> str:
        """A radiology-impression-style sentence list of the findings ("Small left pleural effusion.
        Mild cardiomegaly."), or "No acute cardiopulmonary process." when there are none: the target
        report a text-to-image baseline is prompted with."""
        phrases = []
        if self.effusion is not None:
            phrases.append(f"{self.effusion[1]} {self.effusion[0]} pleural effusion")
        if self.cardiomegaly is not None:
            phrases.append(f"{self.cardiomegaly} cardiomegaly")
        if self.edema is not None:
            phrases.append(f"{self.edema} pulmonary edema")
        if self.pneumothorax is not None:
            phrases.append(f"{self.pneumothorax[1]} {self.pneumothorax[0]} pneumothorax")
        if self.atelectasis is not None:
            phrases.append(f"atelectasis at the {self.atelectasis}")
        if not phrases:
            return "No acute cardiopulmonary process."
        return " ".join(phrase[0].upper() + phrase[1:] + "." for phrase in phrases)


@dataclass(frozen=True)
class Pose:
    """Patient position on the detector.

    rotation_deg: in-plane rotation about the image centre, degrees, |.| <= 3, positive =
        counter-clockwise as displayed.
    shift_x, shift_y: translation in pixels of a 512 px image (scaled with the image size), |.| <= 10;
        positive = towards the image right / bottom.
    scale: magnification about the image centre, 0.97..1.03.
    """

    rotation_deg: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class PhantomPair:
    """A longitudinal pair: one patient at two time points, and the edits between them."""

    pair_seed: int
    patient: Patient
    past: FindingState
    current: FindingState
    past_pose: Pose
    current_pose: Pose
    past_noise_seed: int
    current_noise_seed: int
    operations: tuple[Operation, ...]  # edits that turn `past` into `current`, in a fixed order

    @property
    def instruction(self) -> str:
        return render_instruction(self.operations)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def sample_patient(rng: np.random.Generator) -> Patient:
    """A random patient: age uniform 20..90, sex 50/50, group uniform, all independent of findings."""
    age = float(rng.uniform(20.0, 90.0))
    sex = "M" if rng.random() < 0.5 else "F"
    group = GROUPS[int(rng.integers(len(GROUPS)))]
    anatomy_seed = int(rng.integers(0, 2**31 - 1))
    u = rng.uniform(-1.0, 1.0, size=10)
    body_width = (0.88 if sex == "M" else 0.82) + 0.03 * u[0]
    return Patient(
        age=age,
        sex=sex,
        group=group,
        anatomy_seed=anatomy_seed,
        body_width=float(body_width),
        lung_width=float(1.0 + 0.06 * u[1]),
        lung_height=float(1.0 + 0.06 * u[2]),
        heart_size=float(1.0 + 0.06 * u[3]),
        heart_shift=float(0.005 + 0.025 * u[4]),
        diaphragm_level=float(0.04 * u[5]),
        rib_spacing=float(1.0 + 0.05 * u[6]),
        rib_phase=float(0.2 * u[7]),
        breast_size=0.0 if sex == "M" else float(1.0 + 0.2 * u[8]),
        soft_tissue=float(1.0 + 0.08 * u[9]),
    )


_P_PRESENT = 0.35


def _random_value(name: str, rng: np.random.Generator):
    """A random present value of one FindingState field."""
    if name == "effusion":
        location = EFFUSION_LOCATIONS[int(rng.choice(3, p=[0.35, 0.35, 0.30]))]
        return (location, EFFUSION_LEVELS[int(rng.integers(3))])
    if name in ("cardiomegaly", "edema"):
        return SEVERITY_LEVELS[int(rng.integers(3))]
    if name == "pneumothorax":
        return (PNEUMOTHORAX_SIDES[int(rng.integers(2))], PNEUMOTHORAX_LEVELS[int(rng.integers(2))])
    if name == "atelectasis":
        return ATELECTASIS_LOCATIONS[int(rng.integers(2))]
    raise KeyError(name)


def sample_findings(rng: np.random.Generator) -> FindingState:
    """Each finding present independently with probability 0.35, with random location and level."""
    values = {}
    for name in FINDING_FIELDS:
        present = rng.random() < _P_PRESENT
        values[name] = _random_value(name, rng) if present else None
    return FindingState(**values)


def sample_pose(rng: np.random.Generator) -> Pose:
    """Rotation uniform in [-3, 3] degrees, shifts uniform in [-10, 10] px (at 512), scale in [0.97, 1.03]."""
    rotation, shift_x, shift_y = rng.uniform(-1.0, 1.0, size=3) * np.array([3.0, 10.0, 10.0])
    scale = rng.uniform(0.97, 1.03)
    return Pose(float(rotation), float(shift_x), float(shift_y), float(scale))


def _mutate(name: str, value, rng: np.random.Generator):
    """A different value for one field: add when absent; remove, change level or move when present."""
    if value is None:
        return _random_value(name, rng)
    options = ["remove"]
    if name in ("effusion", "pneumothorax", "cardiomegaly", "edema"):
        options.append("level")
    if name in ("effusion", "pneumothorax", "atelectasis"):
        options.append("move")
    choice = options[int(rng.integers(len(options)))]
    if choice == "remove":
        return None
    if name == "effusion":
        location, level = value
        if choice == "level":
            return (location, _other(EFFUSION_LEVELS, level, rng))
        return (_other(EFFUSION_LOCATIONS, location, rng), EFFUSION_LEVELS[int(rng.integers(3))])
    if name == "pneumothorax":
        side, level = value
        if choice == "level":
            return (side, _other(PNEUMOTHORAX_LEVELS, level, rng))
        return (_other(PNEUMOTHORAX_SIDES, side, rng), PNEUMOTHORAX_LEVELS[int(rng.integers(2))])
    if name == "atelectasis":
        return _other(ATELECTASIS_LOCATIONS, value, rng)
    return _other(SEVERITY_LEVELS, value, rng)


def _other(choices: tuple[str, ...], current: str, rng: np.random.Generator) -> str:
    rest = [c for c in choices if c != current]
    return rest[int(rng.integers(len(rest)))]


def _parts(name: str, value) -> tuple[str | None, str | None]:
    """(location, level) of a present field value, as they appear in an instruction."""
    if name in ("effusion", "pneumothorax"):
        return value[0], value[1]
    if name == "atelectasis":
        return value, None
    return None, value


def operations_between(past: FindingState, current: FindingState) -> list[Operation]:
    """The edits that turn ``past`` into ``current``.

    Order: by finding in EVALUATED_FINDINGS order; within a finding, a remove comes before an add
    (a location change, e.g. effusion left -> bilateral, is a remove then an add). A level change at the
    same location is one "change" operation. Equal states give an empty list.
    """
    operations: list[Operation] = []
    for column in EVALUATED_FINDINGS:
        name = _COLUMN_TO_FIELD[column]
        finding = FINDING_FIELDS[name][0]
        before, after = getattr(past, name), getattr(current, name)
        if before == after:
            continue
        if after is None:
            operations.append(Operation("remove", finding, _parts(name, before)[0]))
            continue
        new_location, new_level = _parts(name, after)
        if before is not None:
            old_location, old_level = _parts(name, before)
            if old_location == new_location:
                operations.append(Operation("change", finding, new_location, old_level, new_level))
                continue
            operations.append(Operation("remove", finding, old_location))
        operations.append(Operation("add", finding, new_location, None, new_level))
    return operations


def sample_pair(pair_seed: int) -> PhantomPair:
    """A random pair, deterministic from ``pair_seed`` alone.

    Past findings are sampled with :func:`sample_findings`; the current findings change 1 to 3 of them
    (add, remove, change level or move), so there is always at least one operation. Poses are sampled
    independently; the two noise seeds are distinct.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(pair_seed)))
    patient = sample_patient(rng)
    past = sample_findings(rng)
    n_changes = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    names = list(FINDING_FIELDS)
    changed = rng.choice(len(names), size=n_changes, replace=False)
    values = {name: getattr(past, name) for name in names}
    for index in sorted(int(i) for i in changed):
        values[names[index]] = _mutate(names[index], values[names[index]], rng)
    current = FindingState(**values)
    past_pose, current_pose = sample_pose(rng), sample_pose(rng)
    past_noise_seed = int(rng.integers(0, 2**31 - 1))
    current_noise_seed = int(rng.integers(0, 2**31 - 2))
    if current_noise_seed >= past_noise_seed:
        current_noise_seed += 1  # distinct, still uniform over the rest
    operations = tuple(operations_between(past, current))
    assert operations, "a mutation always changes the state"
    return PhantomPair(
        pair_seed=int(pair_seed),
        patient=patient,
        past=past,
        current=current,
        past_pose=past_pose,
        current_pose=current_pose,
        past_noise_seed=past_noise_seed,
        current_noise_seed=current_noise_seed,
        operations=operations,
    )
