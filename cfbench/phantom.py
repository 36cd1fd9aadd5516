"""A procedural, CXR-like phantom suite with known counterfactuals (numpy + scipy only).

Each phantom is a PA chest radiograph drawn from smooth functions of canonical body coordinates:
body outline, two lungs with vessel-like markings, heart, mediastinum, hemidiaphragms with costophrenic
angles, posterior ribs, clavicles and spine. Five findings (atelectasis, cardiomegaly, edema, pleural
effusion, pneumothorax) are drawn on top with known location and level, so for every longitudinal pair
the exact counterfactual of the prior image (same patient, pose and noise, new findings) and the exact
set of pixels the findings changed are known.

Conventions
-----------
- Images are float32 HxW in [0, 1], 0 = air (black), 1 = bone (white).
- Radiological convention: the patient's LEFT is on the IMAGE RIGHT. "left effusion" sits in the right
  half of the image; the heart bulges to the image right.
- Canonical coordinates: ``x`` and ``y`` run from -1 (image left / top) to +1 (image right / bottom) at
  pose identity; one unit is ``size / 2`` pixels. Anatomy is defined in canonical coordinates and a
  :class:`Pose` maps it to the image, so a pose is applied by evaluating the same smooth functions on a
  transformed coordinate grid (never by resampling a finished image).
- Everything a patient owns (shape, lung-marking texture, rib phase, calcifications) comes from the
  :class:`Patient`; acquisition noise comes from a separate noise seed.

Compositing (what makes counterfactuals exact)
----------------------------------------------
``image = clip(anatomy + lesion_layer + noise, 0, 1)`` where

- ``anatomy`` is the finding-free radiograph of the patient at the pose,
- ``lesion_layer`` is the clean radiograph with findings minus ``anatomy``, quantised to multiples of
  ``LAYER_STEP`` (1/4096) so that two layers either agree bit for bit or differ by more than 1e-4,
- ``noise`` is blurred Gaussian acquisition noise from the noise seed.

Every step is pixel-wise, so two renders at the same pose and noise seed are bitwise equal wherever their
lesion layers are equal; :func:`render_pair` returns that set's complement as ``lesion_change_mask``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cfbench.findings import EVALUATED_FINDINGS, Operation, render_instruction

PHANTOM_VERSION = "1"  # bump when rendering or sampling changes (datasets are cached by it)
GROUPS: tuple[str, ...] = ("group_a", "group_b", "group_c")  # 3-level stand-in for race

# Lesion layers are quantised to this step, so "layers differ" and "layers differ by > 1e-4" coincide.
LAYER_STEP = 1.0 / 4096.0
MASK_THRESHOLD = 1e-4
NOISE_SIGMA = 0.010  # standard deviation of the acquisition noise, image intensity units

# Densities (before the tone curve image = 1 - exp(-tone * density); soft tissue ~0.3 per unit path).
CENTRAL_DENSITY = 0.24  # mediastinum / heart / abdomen over the body soft tissue
LUNG_AIR = 0.17  # density removed by aerated lung at its thickest
MARKING_DENSITY = 0.14  # lung markings at full strength

EFFUSION_LOCATIONS: tuple[str, ...] = ("left", "right", "bilateral")
EFFUSION_LEVELS: tuple[str, ...] = ("small", "moderate", "large")
SEVERITY_LEVELS: tuple[str, ...] = ("mild", "moderate", "severe")  # cardiomegaly, edema
PNEUMOTHORAX_SIDES: tuple[str, ...] = ("left", "right")
PNEUMOTHORAX_LEVELS: tuple[str, ...] = ("small", "large")
ATELECTASIS_LOCATIONS: tuple[str, ...] = ("left base", "right base")

# FindingState field <-> instruction spelling <-> CheXpert column.
_FIELDS: dict[str, tuple[str, str]] = {
    "atelectasis": ("atelectasis", "Atelectasis"),
    "cardiomegaly": ("cardiomegaly", "Cardiomegaly"),
    "edema": ("edema", "Edema"),
    "effusion": ("pleural effusion", "Pleural Effusion"),
    "pneumothorax": ("pneumothorax", "Pneumothorax"),
}
_COLUMN_TO_FIELD = {column: name for name, (_, column) in _FIELDS.items()}
assert set(_COLUMN_TO_FIELD) == set(EVALUATED_FINDINGS)

# Stripe orientation (degrees) and tone-curve steepness of each group: a global soft-tissue texture and
# contrast that no finding changes.
_GROUP_STRIPE_DEG = {"group_a": 0.0, "group_b": 60.0, "group_c": 120.0}
_GROUP_TONE = {"group_a": 2.05, "group_b": 2.2, "group_c": 2.35}


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
        return all(getattr(self, name) is None for name in _FIELDS)

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


@dataclass
class RenderedPair:
    """The images of a pair (all float32 HxW in [0, 1]) and the true lesion-change mask (bool HxW).

    past: patient, past findings, past pose, past noise.
    current: patient, current findings, current pose, current noise.
    counterfactual: patient, CURRENT findings, PAST pose, PAST noise (the exact counterfactual of past).
    lesion_change_mask: True where the counterfactual may differ from past because findings changed
        (the lesion layers differ by > 1e-4); outside it, counterfactual == past bit for bit.
    """

    past: np.ndarray
    current: np.ndarray
    counterfactual: np.ndarray
    lesion_change_mask: np.ndarray


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
    for name in _FIELDS:
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
        finding = _FIELDS[name][0]
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
    names = list(_FIELDS)
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


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------

_F = np.float32


def _step(t: np.ndarray) -> np.ndarray:
    """Smoothstep: 0 for t <= 0, 1 for t >= 1, C1-smooth in between (exact 0/1 outside: compact support)."""
    t = np.maximum(t, _F(0.0))
    np.minimum(t, _F(1.0), out=t)
    result = t * t
    t *= _F(-2.0)
    t += _F(3.0)
    result *= t
    return result


def _edge(distance: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance (positive inside), ramp of ``width`` centred on 0."""
    return _step(distance * _F(1.0 / width) + _F(0.5))


def _bump(t: np.ndarray) -> np.ndarray:
    """(1 - t^2)^2 for |t| < 1, else 0: a smooth compact bump of half-width 1."""
    b = t * t
    np.subtract(_F(1.0), b, out=b)
    np.maximum(b, _F(0.0), out=b)
    b *= b
    return b


@functools.lru_cache(maxsize=8)
def _pixel_coords(size: int) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1] along one axis (float64, read-only)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
    coords.setflags(write=False)
    return coords


class _Grid:
    """Canonical coordinates of every pixel of a size x size image at a pose.

    The pose maps canonical point c to image point p = scale * R(rotation) c + shift; the grid holds the
    inverse map evaluated at every pixel centre. ``window(x0, x1, y0, y1)`` gives the pixel slices that
    contain a canonical rectangle, so local structures are only evaluated near where they are drawn.
    """

    def __init__(self, pose: Pose, size: int):
        self.size = size
        theta = math.radians(pose.rotation_deg)
        self.cos, self.sin, self.scale = math.cos(theta), math.sin(theta), pose.scale
        self.tx, self.ty = pose.shift_x / 256.0, pose.shift_y / 256.0  # 512 px = 2 canonical units
        p = _pixel_coords(size)
        px, py = p[None, :] - self.tx, p[:, None] - self.ty
        inv = 1.0 / self.scale
        self.x = ((self.cos * inv) * px - (self.sin * inv) * py).astype(_F)
        self.y = ((self.sin * inv) * px + (self.cos * inv) * py).astype(_F)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices (rows, cols) covering the canonical rectangle [x0, x1] x [y0, y1], or None."""
        cx = np.array([x0, x1, x0, x1])
        cy = np.array([y0, y0, y1, y1])
        px = self.scale * (self.cos * cx + self.sin * cy) + self.tx
        py = self.scale * (-self.sin * cx + self.cos * cy) + self.ty
        half = self.size / 2.0
        c0 = max(int(math.floor((px.min() + 1.0) * half - 0.5)) - 2, 0)
        c1 = min(int(math.ceil((px.max() + 1.0) * half - 0.5)) + 3, self.size)
        r0 = max(int(math.floor((py.min() + 1.0) * half - 0.5)) - 2, 0)
        r1 = min(int(math.ceil((py.max() + 1.0) * half - 0.5)) + 3, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1))


@dataclass(frozen=True)
class _Geometry:
    """Derived canonical geometry of a patient (pure function of the Patient's shape parameters)."""

    lung_cx: float  # |x| of each lung's centre
    lung_cy: float
    lung_a: float  # lung half-width at its widest
    lung_b: float  # lung half-height of the (untruncated) ellipse
    dome_y: tuple[float, float]  # hemidiaphragm dome top y for (patient right = image left, patient left)
    dome_x: float  # |x| of the dome tops
    heart_cx: float
    heart_cy: float
    heart_ax: float
    heart_ay: float
    hilum: tuple[float, float]  # (|x|, y) of the hila
    bone: float  # bone density amplitude (falls with age)
    knob_r: float  # aortic knob radius (grows with age)


@functools.lru_cache(maxsize=256)
def _geometry(patient: Patient) -> _Geometry:
    aging = (patient.age - 20.0) / 70.0  # 0 at 20 y, 1 at 90 y
    lw, lh = patient.lung_width, patient.lung_height
    return _Geometry(
        lung_cx=0.40 * lw,
        lung_cy=-0.07 - 0.02 * (lh - 1.0),
        lung_a=0.295 * lw,
        lung_b=0.68 * lh,
        dome_y=(0.36 + patient.diaphragm_level, 0.41 + patient.diaphragm_level),
        dome_x=0.30 * lw,
        heart_cx=0.075 + patient.heart_shift,
        heart_cy=0.25 + 0.5 * patient.diaphragm_level,
        heart_ax=0.27 * patient.heart_size,
        heart_ay=0.21 * patient.heart_size,
        hilum=(0.19 * lw, -0.06),
        bone=0.36 * (1.0 - 0.65 * aging),
        knob_r=0.045 + 0.03 * aging,
    )


_SIDES = (-1, 1)  # -1: patient right (image left), +1: patient left (image right)
_SIDE_OF = {"right": -1, "left": 1, "right base": -1, "left base": 1}


def _lung_rho(x: np.ndarray, y: np.ndarray, side: int, g: _Geometry):
    """Normalised lung radius (1 on the lung outline, before the diaphragm cut) and the unit lateral /
    downward direction components (cos, sin of the polar angle) of each point, for one lung."""
    u = (x - _F(side * g.lung_cx)) * _F(side / g.lung_a)  # lateral-positive
    v = (y - _F(g.lung_cy)) * _F(1.0 / g.lung_b)  # down-positive
    width = np.clip(_F(0.82) + _F(0.26) * v, 0.55, 1.0)  # narrow apex, wide base
    u = u / width
    u2, v2 = u * u, v * v
    # lateral half: ellipse; medial half: squarer (flatter mediastinal border)
    rho = np.sqrt(np.where(u > 0, u2 + v2, np.sqrt(u2 * u2 + v2 * v2)))
    return rho, u, v


def _dome(x: np.ndarray, side: int, g: _Geometry, lift: float = 0.0) -> np.ndarray:
    """y of the hemidiaphragm under x (dome highest near the lung's middle, falling laterally)."""
    top = g.dome_y[0 if side < 0 else 1] - lift
    dx = x - _F(side * g.dome_x)
    return _F(top) + _F(1.5) * dx * dx


def _lung_window(grid: _Grid, side: int, g: _Geometry):
    x_lat, x_med = side * (g.lung_cx + g.lung_a * 1.05), side * (g.lung_cx - g.lung_a * 1.05)
    return grid.window(min(x_lat, x_med), max(x_lat, x_med),
                       g.lung_cy - g.lung_b * 1.05, g.lung_cy + g.lung_b * 1.05)


# --------------------------------------------------------------------------------------------------
# Patient texture: lung markings (a canonical texture) and calcifications (point specks)
# --------------------------------------------------------------------------------------------------

_TEX_X = (-0.78, 0.78)  # canonical extent of the marking texture (covers both lungs)
_TEX_Y = (-0.86, 0.70)
_VESSEL_STEP = 0.011  # canonical length of one growth step of a vessel tip
_SPECK_SIGMA = 0.0045  # canonical radius (Gaussian sigma) of a calcification speck


@functools.lru_cache(maxsize=64)
def _vessel_points(patient: Patient) -> tuple[np.ndarray, ...]:
    """Canonical (x, y, weight, is_trunk) of points along the patient's pulmonary vessel trees.

    Tips grow from each hilum with a wandering direction, split now and then and die at the lung edge or
    when faint; the weight decays along the path, so the markings fade towards the periphery. The hilar
    shadow is a dense cloud of trunk points. Independent of the image size.
    """
    g = _geometry(patient)
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 7]))
    segments = []  # (x0, y0, x1, y1, weight, is_trunk) per growth step
    for side in _SIDES:
        hx, hy = side * g.hilum[0], g.hilum[1]
        n0 = 13
        angles = np.linspace(-1.9, 1.75, n0) + rng.normal(0, 0.08, n0)  # lateral-down frame, 0 = lateral
        pos_x = hx + rng.normal(0, 0.01, n0)
        pos_y = hy + rng.normal(0, 0.02, n0)
        weight = rng.uniform(0.8, 1.0, n0)
        generation = np.zeros(n0, np.int64)
        for _ in range(60):
            if pos_x.size == 0:
                break
            angles = angles + rng.normal(0, 0.10, angles.size)
            nx = pos_x + side * _VESSEL_STEP * np.cos(angles)
            ny = pos_y + _VESSEL_STEP * np.sin(angles)
            segments.append((pos_x, pos_y, nx, ny, weight, generation == 0))
            pos_x, pos_y, weight = nx, ny, weight * 0.972
            rho, _, _ = _lung_rho(pos_x.astype(_F), pos_y.astype(_F), side, g)
            alive = (rho < 0.92) & (pos_y < _dome(pos_x, side, g) - 0.02) & (weight > 0.12)
            split = alive & (rng.random(pos_x.size) < 0.11)
            spread = rng.uniform(0.25, 0.5, int(split.sum()))
            child_angles = angles[split] + spread
            angles[split] -= spread
            pos_x = np.concatenate([pos_x[alive], pos_x[split]])
            pos_y = np.concatenate([pos_y[alive], pos_y[split]])
            angles = np.concatenate([angles[alive], child_angles])
            weight = np.concatenate([weight[alive], weight[split] * 0.75])
            generation = np.concatenate([generation[alive] + split[alive], generation[split] + 1])
    x0, y0, x1, y1, weight, trunk = (np.concatenate(parts) for parts in zip(*segments))
    t = np.array([0.25, 0.5, 0.75, 1.0])[:, None]  # 4 points per step, so lines are continuous
    xs, ys = (x0 + t * (x1 - x0)).ravel(), (y0 + t * (y1 - y0)).ravel()
    weights, trunks = np.tile(weight, 4), np.tile(trunk, 4)
    # hilar shadow (pulmonary arteries, lymph nodes)
    n = 300
    for side in _SIDES:
        hx, hy = side * g.hilum[0], g.hilum[1]
        xs = np.concatenate([xs, hx + side * rng.normal(0.02, 0.025, n)])
        ys = np.concatenate([ys, hy + rng.normal(0.0, 0.05, n)])
        weights = np.concatenate([weights, np.full(n, 1.4)])
        trunks = np.concatenate([trunks, np.ones(n, bool)])
    return xs, ys, weights, trunks


@functools.lru_cache(maxsize=16)
def _marking_texture(patient: Patient, size: int) -> tuple[np.ndarray, float]:
    """(texture, pitch): lung markings as float32 (H, W) in [0, 1) over the canonical rectangle
    _TEX_X x _TEX_Y, ``pitch`` = 2/size canonical units per texel (the output pixel pitch).

    Vessel points are deposited into a trunk and a branch layer, blurred to vessel width (trunks wider)
    and soft-saturated; a faint patient-specific fine texture is added to the branch layer.
    """
    pitch = 2.0 / size
    w = int(math.ceil((_TEX_X[1] - _TEX_X[0]) / pitch)) + 2
    h = int(math.ceil((_TEX_Y[1] - _TEX_Y[0]) / pitch)) + 2
    xs, ys, weights, trunks = _vessel_points(patient)
    col = np.clip(np.rint((xs - _TEX_X[0]) / pitch - 0.5), 0, w - 1).astype(np.int64)
    row = np.clip(np.rint((ys - _TEX_Y[0]) / pitch - 0.5), 0, h - 1).astype(np.int64)
    index = row * w + col
    thick = np.bincount(index[trunks], weights[trunks], minlength=h * w).astype(_F).reshape(h, w)
    thin = np.bincount(index[~trunks], weights[~trunks], minlength=h * w).astype(_F).reshape(h, w)
    scale = size / 512.0
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 8, size]))
    thin += rng.standard_normal((h, w), dtype=_F) * _F(0.05 * scale)
    thick_sigma, thin_sigma = 2.6 * scale, 1.0 * scale + 0.2
    thick = ndimage.gaussian_filter(thick, thick_sigma, truncate=3.0)
    thin = ndimage.gaussian_filter(thin, thin_sigma, truncate=3.0)
    # a line of deposits every step/4 canonical units has, after blurring, a peak of about
    # (deposits per texel) / (sqrt(2 pi) sigma); undo that so a line is ~1 at every size
    per_texel = (_VESSEL_STEP / 4.0) / pitch
    thick *= _F(math.sqrt(2.0 * math.pi) * thick_sigma * per_texel)
    thin *= _F(math.sqrt(2.0 * math.pi) * thin_sigma * per_texel)
    markings = np.tanh(_F(0.7) * thick + _F(0.6) * np.clip(thin, 0.0, None)).astype(_F)
    markings.setflags(write=False)
    return markings, pitch


@functools.lru_cache(maxsize=64)
def _calcifications(patient: Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical (x, y, density) of calcification specks: costal cartilages of the lower ribs (specks
    along short medial-downward paths) and, in older patients, the aortic knob rim. Count and density
    grow with age (about 10 specks at 20 y, about 100 at 90 y)."""
    g = _geometry(patient)
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 9]))
    aging = (patient.age - 20.0) / 70.0
    xs, ys, amps = [], [], []
    for side in _SIDES:
        for k in range(5):
            count = rng.poisson(1.0 + 9.0 * aging**1.2)
            t = rng.random(count)
            l0, y0 = 0.40 + 0.02 * k, -0.20 + 0.115 * k * patient.rib_spacing
            xs.append(side * (l0 - 0.24 * t) + rng.normal(0, 0.006, count))
            ys.append(y0 + 0.09 * t + rng.normal(0, 0.006, count))
            amps.append(rng.uniform(0.6, 1.2, count) * (0.3 + 0.7 * aging) * 0.24)
    if rng.random() < aging * 1.2 - 0.2:
        count = 40
        phi = rng.uniform(-2.4, -0.2, count)
        r = g.knob_r * 0.92
        xs.append(0.12 + patient.heart_shift + r * np.cos(phi))
        ys.append(-0.30 + r * np.sin(phi))
        amps.append(np.full(count, 0.10 * aging))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(amps)


def _add_specks(density: np.ndarray, grid: "_Grid", specks: tuple[np.ndarray, ...]) -> None:
    """Add Gaussian specks (canonical x, y, peak density) to ``density`` in place, each evaluated
    exactly at the pixels within 3 sigma of its posed centre."""
    xs, ys, amps = specks
    if xs.size == 0:
        return
    size = grid.size
    px = grid.scale * (grid.cos * xs + grid.sin * ys) + grid.tx
    py = grid.scale * (-grid.sin * xs + grid.cos * ys) + grid.ty
    col, row = (px + 1.0) * (size / 2.0) - 0.5, (py + 1.0) * (size / 2.0) - 0.5
    sigma = max(_SPECK_SIGMA * grid.scale * size / 2.0, 0.5)
    radius = int(math.ceil(3.0 * sigma))
    offsets = np.arange(-radius, radius + 1)
    cols = np.rint(col)[:, None, None].astype(np.int64) + offsets[None, None, :]
    rows = np.rint(row)[:, None, None].astype(np.int64) + offsets[None, :, None]
    values = amps[:, None, None] * np.exp(
        -((cols - col[:, None, None]) ** 2 + (rows - row[:, None, None]) ** 2) / (2.0 * sigma * sigma))
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    flat = (rows * size + cols)[inside]
    np.add.at(density.reshape(-1), flat, values[inside].astype(_F))


def _sample_texture(texture: np.ndarray, pitch: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a (H, W) canonical texture at canonical points x, y (any shape)."""
    h, w = texture.shape
    fx = np.clip((x - _F(_TEX_X[0])) * _F(1.0 / pitch) - _F(0.5), 0.0, w - 1.001)
    fy = np.clip((y - _F(_TEX_Y[0])) * _F(1.0 / pitch) - _F(0.5), 0.0, h - 1.001)
    ix, iy = fx.astype(np.int32), fy.astype(np.int32)
    wx, wy = fx - ix, fy - iy
    flat = texture.reshape(-1)
    index = iy * w + ix
    t00, t01 = np.take(flat, index), np.take(flat, index + 1)
    index += w
    t10, t11 = np.take(flat, index), np.take(flat, index + 1)
    top = t00 + wx * (t01 - t00)
    return top + wy * (t10 + wx * (t11 - t10) - top)


# --------------------------------------------------------------------------------------------------
# The scene: anatomy at a pose, and findings composited on it
# --------------------------------------------------------------------------------------------------


class _Scene:
    """Everything of one patient at one pose and size that does not depend on findings.

    ``_clean(findings)`` is the noise-free radiograph with those findings, ``base`` the finding-free
    one and ``layer(findings)`` their difference, quantised to LAYER_STEP.

    Local structures are evaluated only inside a pixel window (``_Grid.window``) that contains their
    whole support (every profile has compact support), so windowing never cuts a structure.
    """

    def __init__(self, patient: Patient, pose: Pose, size: int):
        self.patient, self.size = patient, size
        self.g = g = _geometry(patient)
        self.grid = grid = _Grid(pose, size)
        x, y = grid.x, grid.y
        ax = np.abs(x)

        # Body outline: neck above y ~ -0.8, shoulders, chest; elliptic cross-section thickness.
        shoulder = _step((y + _F(0.86)) * _F(1.0 / 0.2))
        half_width = _F(0.26) + _F(patient.body_width - 0.26) * shoulder
        body = _edge(half_width - ax, 0.035)
        r = np.clip(ax / half_width, 0.0, 1.0)
        thickness = np.sqrt(1.0 - r * r)
        soft = _F(0.30 * patient.soft_tissue) * body * (_F(0.45) + _F(0.55) * thickness)

        # Group trait: fine soft-tissue stripes at a group-specific orientation (period 0.075 units).
        angle = math.radians(_GROUP_STRIPE_DEG[patient.group])
        k = 2.0 * math.pi / 0.075
        stripes = np.sin(_F(k * math.cos(angle)) * x + _F(k * math.sin(angle)) * y)
        static = soft + _F(0.018) * body * stripes

        # Central soft-tissue shadow: mediastinum (a band that merges into the heart) and the abdomen
        # below the hemidiaphragms (reaching a little above them, behind the lung bases). One max so
        # that mediastinum, heart and abdomen merge without internal borders.
        half = _F(0.12) + _F(0.09) * _step((y + _F(0.25)) * _F(1.0 / 0.45))  # widening towards the heart
        mediastinum = _edge(half - ax, 0.08) * _edge(y + _F(0.95), 0.1)
        dome = np.where(x < 0, _dome(x, -1, g), _dome(x, 1, g))
        abdomen = _edge(y - dome + _F(0.06), 0.10) * body
        self.central = np.maximum(mediastinum, abdomen)
        static += _F(CENTRAL_DENSITY) * self.central

        # Trachea: a darker air column down to the carina.
        win = grid.window(-0.08, 0.08, -1.1, -0.25)
        if win is not None:
            tx, ty = x[win], y[win]
            static[win] -= _F(0.11) * _edge(_F(0.035) - np.abs(tx - _F(0.004)), 0.02) * _edge(_F(-0.3) - ty, 0.06)

        bones = self._bones(x, y, ax)
        static += _F(g.bone) * bones

        # Breast shadows (F): lower-lateral, denser towards the inframammary fold.
        if patient.breast_size > 0:
            for side in _SIDES:
                bx, by = side * 0.43, 0.27
                ra, rb = 0.31 * patient.breast_size, 0.24 * patient.breast_size
                win = grid.window(bx - 1.2 * ra, bx + 1.2 * ra, by - 1.2 * rb, by + 1.2 * rb)
                if win is None:
                    continue
                u = (x[win] - _F(bx)) * _F(1.0 / ra)
                v = (y[win] - _F(by)) * _F(1.0 / rb)
                inside = _edge(1.0 - np.sqrt(u * u + v * v), 0.35)
                static[win] += _F(0.13) * inside * (_F(0.35) + _F(0.65) * _step(v * _F(0.7) + _F(0.6)))

        # Calcifications (age), then the patient's lung-marking texture over the lung window.
        _add_specks(static, grid, _calcifications(patient))
        texture, pitch = _marking_texture(patient, size)
        self.markings = {}  # per lung, over that lung's window
        for side in _SIDES:
            win = _lung_window(grid, side, g)
            self.markings[side] = None if win is None else _sample_texture(texture, pitch, x[win], y[win])

        self.static = static
        self.tone = _F(_GROUP_TONE[patient.group])
        self._lungs: dict[tuple[int, float], tuple] = {}
        self.base = self._clean(FindingState())

    # -- anatomy parts ------------------------------------------------------------------------------

    def _bones(self, x, y, ax) -> np.ndarray:
        """Unit-amplitude bone map: posterior ribs, clavicles, spine (scaled by age-dependent density)."""
        p, grid = self.patient, self.grid
        bones = np.zeros_like(x)
        # Posterior ribs: arcs rising from the spine then falling laterally; phase counts ribs.
        win = grid.window(-0.84, 0.84, -0.9, 0.75)
        if win is not None:
            bx, by, bax = x[win], y[win], ax[win]
            q = by + bax * (_F(0.42) - _F(0.80) * bax)
            phase = (q + _F(0.86)) * _F(1.0 / (0.118 * p.rib_spacing)) + _F(p.rib_phase)
            f = phase - np.floor(phase) - _F(0.5)
            rib = _bump(f * _F(1.0 / 0.24))
            rib = rib * (_F(0.75) + _F(0.25) * _bump(f * _F(1.0 / 0.16)))  # denser core
            cage_u = bx * _F(1.0 / 0.76)
            cage_v = (by + _F(0.10)) * _F(1.0 / 0.72)
            cage = _edge(1.0 - np.sqrt(cage_u * cage_u + cage_v * cage_v), 0.12)
            cage *= _edge(bax - _F(0.07), 0.05)
            bones[win] += _F(0.45) * rib * cage * _edge(phase - _F(0.6), 0.5)
        # Clavicles: from the sternal notch rising laterally.
        win = grid.window(-0.72, 0.72, -0.92, -0.48)
        if win is not None:
            cx, cy = x[win], y[win]
            l = np.abs(cx) - _F(0.07)
            center = _F(-0.63) - _F(0.23) * l + _F(0.18) * l * l
            clav = _bump((cy - center) * _F(1.0 / 0.032)) * _edge(l, 0.04) * _edge(_F(0.60) - l, 0.08)
            bones[win] += _F(0.7) * clav
        # Spine: vertebral bodies (period ~0.09) with darker disc spaces, pedicles as paired ovals.
        win = grid.window(-0.1, 0.1, -1.1, 1.1)
        if win is not None:
            sx, sy = x[win], y[win]
            column = _edge(_F(0.062) - np.abs(sx), 0.025)
            t = sy * _F(1.0 / 0.092)
            f = t - np.floor(t) - _F(0.5)
            bodies = _F(0.55) + _F(0.45) * _bump(f * _F(1.0 / 0.42))
            pu = (np.abs(sx) - _F(0.042)) * _F(1.0 / 0.014)
            pv = f * _F(1.0 / 0.22)
            pedicles = _bump(np.sqrt(pu * pu + pv * pv))
            bones[win] += _F(0.35) * column * bodies + _F(0.25) * pedicles * column
        return bones

    def _lung(self, side: int, lift: float):
        """(window, lung mask, rho, u, v) of one lung, the diaphragm raised by ``lift`` (volume loss)."""
        key = (side, lift)
        if key not in self._lungs:
            g, grid = self.g, self.grid
            win = _lung_window(grid, side, g)
            if win is None:
                self._lungs[key] = (None, None, None, None, None)
                return self._lungs[key]
            x, y = grid.x[win], grid.y[win]
            rho, u, v = _lung_rho(x, y, side, g)
            inside = _edge(1.0 - rho, 0.05) * _edge(_dome(x, side, g, lift) - y, 0.012)
            self._lungs[key] = (win, inside, rho, u, v)
        return self._lungs[key]

    def _heart(self, grow: float):
        """(window, mask) of the cardiac silhouette, widened by ``grow`` canonical units (cardiomegaly).

        The silhouette is bounded by two smooth border curves: the right heart border (image left,
        right atrium) and the left heart border (image right, left ventricle, bulging to the apex).
        Above it merges into the mediastinum, below into the diaphragm. ``grow`` adds to the total
        width, about three quarters of it to the left ventricle.
        """
        g, grid = self.g, self.grid
        lv = g.heart_ax + 0.73 * grow  # left-ventricular bulge beyond the mediastinal line
        ra = 0.30 * g.heart_ax + 0.27 * grow
        peak_y = g.heart_cy + 0.05 + 0.15 * grow
        above, below = g.heart_ay * 1.5 * (1.0 + 1.5 * grow), 0.45
        base = 0.12 + g.heart_cx - 0.075
        win = grid.window(base - 0.245 - ra - 0.05, base + lv + 0.05, peak_y - above, peak_y + below + 0.05)
        x, y = grid.x[win], grid.y[win]
        dy = y - _F(peak_y)
        t = dy * np.where(dy < 0, _F(1.0 / above), _F(1.0 / below))
        shape = _bump(t)
        left_border = _F(base) + _F(lv) * shape
        right_border = _F(base - 0.245) - _F(ra) * _bump(t * _F(1.25) + _F(0.1))
        heart = _edge(left_border - x, 0.03) * _edge(x - right_border, 0.03) * _edge(_F(0.9) - np.abs(t), 0.2)
        return win, heart

    # -- compositing ---------------------------------------------------------------------------------

    def _clean(self, findings: FindingState) -> np.ndarray:
        """The noise-free radiograph with ``findings``: float32 HxW in [0, 1)."""
        g, grid = self.g, self.grid
        density = self.static.copy()

        # Occluders of the lung fields: heart (+ cardiomegaly) and aortic knob.
        grow = {None: 0.0, "mild": 0.10, "moderate": 0.20, "severe": 0.30}[findings.cardiomegaly]
        heart_win, heart = self._heart(grow)
        occlusion = np.zeros_like(density)
        occlusion[heart_win] = heart
        central = self.central[heart_win]
        density[heart_win] += _F(CENTRAL_DENSITY) * np.clip(heart - central, 0.0, None)
        kx, ky, kr = 0.12 + self.patient.heart_shift, -0.30, g.knob_r
        knob_win = grid.window(kx - kr * 1.3, kx + kr * 1.3, ky - kr * 1.3, ky + kr * 1.3)
        if knob_win is not None:
            u = (grid.x[knob_win] - _F(kx)) * _F(1.0 / kr)
            v = (grid.y[knob_win] - _F(ky)) * _F(1.0 / kr)
            knob = _edge(1.0 - np.sqrt(u * u + v * v), 0.25)
            occlusion[knob_win] = np.maximum(occlusion[knob_win], knob)
            central = self.central[knob_win]
            density[knob_win] += _F(CENTRAL_DENSITY) * np.clip(knob - central, 0.0, None)

        effusion_sides = {}
        if findings.effusion is not None:
            location, level = findings.effusion
            height = {"small": 0.16, "moderate": 0.32, "large": 0.52}[level]
            for side in (_SIDES if location == "bilateral" else (_SIDE_OF[location],)):
                effusion_sides[side] = height
        ptx_side, ptx_depth = None, 0.0
        if findings.pneumothorax is not None:
            ptx_side = _SIDE_OF[findings.pneumothorax[0]]
            ptx_depth = {"small": 0.17, "large": 0.40}[findings.pneumothorax[1]]
        atel_side = None if findings.atelectasis is None else _SIDE_OF[findings.atelectasis]
        edema = {None: 0, "mild": 1, "moderate": 2, "severe": 3}[findings.edema]

        for side in _SIDES:
            lift = 0.05 if side == atel_side else 0.0
            win, lung, rho, u, v = self._lung(side, lift)
            if win is None:  # lung entirely outside the image (not reachable with sampled poses)
                continue
            x, y = grid.x[win], grid.y[win]
            # aerated lung is thickest in its middle: the projected air falls off towards the edges
            profile = _F(0.55) + _F(0.45) * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))
            air = lung * profile * (1.0 - _F(0.95) * occlusion[win])
            extra = np.zeros_like(air)  # density added by findings
            marking_gain = _F(1.0)
            if side in effusion_sides:
                # Fluid from the base up to a meniscus that climbs laterally (blunted costophrenic angle).
                height = effusion_sides[side]
                lateral = np.clip((x * _F(side) - _F(0.12)) * _F(1.0 / 0.58), 0.0, 1.0)
                meniscus = _dome(x, side, g) - _F(height) * (_F(0.4) + _F(0.6) * lateral * lateral)
                fill = _edge(y - meniscus, 0.06 + 0.04 * height) * _edge(1.0 - rho, 0.05)
                air = air * (1.0 - fill)
                extra += _F(0.9 * CENTRAL_DENSITY) * fill * (1.0 - self.central[win])
            if side == atel_side:
                # Plate-like opacity in the lower zone, lateral end slightly higher, with volume loss.
                base_y = g.dome_y[0 if side < 0 else 1] - 0.05 - 0.20
                lx = x * _F(side) - _F(g.lung_cx)
                along = lx * _F(1.0 / 0.20)
                centre = _F(base_y) - _F(0.10) * lx
                plate = _bump((y - centre) * _F(1.0 / 0.030)) * _bump(along)
                wedge = _bump((y - centre - _F(0.07)) * _F(1.0 / 0.05)) * _bump((lx + _F(0.10)) * _F(1.0 / 0.13))
                opacity = np.clip(plate + _F(0.6) * wedge, 0.0, 1.0)
                air = air * (1.0 - _F(0.85) * opacity)
                extra += _F(0.06) * opacity * lung
            if edema:
                # Perihilar (bat-wing) haze, denser and wider with severity, plus septal lines at the
                # lateral bases from moderate on.
                hx, hy = side * g.hilum[0], g.hilum[1] + 0.04
                reach = 0.30 + 0.09 * edema
                du = (x - _F(hx)) * _F(1.0 / (reach * 1.05))
                dv = (y - _F(hy)) * _F(1.0 / (reach * 1.25))
                haze = _bump(np.sqrt(du * du + dv * dv)) * lung
                extra += _F(0.055 * edema) * haze
                air = air * (1.0 - _F(0.12 * edema) * haze)
                marking_gain = _F(1.0) + _F(0.35 * edema) * haze  # indistinct, prominent vessels
                if edema >= 2:
                    t = y * _F(1.0 / 0.028)
                    lines = _bump((t - np.floor(t) - _F(0.5)) * _F(1.0 / 0.18))
                    strip = _edge(rho - _F(0.80), 0.08) * _edge(y - _F(0.05), 0.1) * _step(u * _F(4.0))
                    extra += _F(0.035 * (edema - 1)) * lines * strip * lung
            ptx = None
            if side == ptx_side:
                # Apical / lateral gas between the chest wall and a visible pleural line.
                up = np.clip(-v / np.maximum(rho, _F(1e-3)), 0.0, 1.0)
                lat = np.clip(u / np.maximum(rho, _F(1e-3)), 0.0, 1.0)
                # small: an apical cap; large: apex and the whole lateral margin down to mid-lung
                lateral_limit = -0.3 + 1.5 * ptx_depth
                reach = np.clip(up + _F(0.3 + ptx_depth) * lat * _edge(_F(lateral_limit) - v, 0.3), 0.0, 1.0)
                depth = _F(ptx_depth) * reach
                boundary = _F(1.0) - depth
                present = _step((depth - _F(0.015)) * _F(1.0 / 0.03))
                ptx = _edge(rho - boundary, 0.02) * present * lung
                line = _bump((rho - boundary) * _F(1.0 / 0.016)) * present * lung
                extra -= _F(0.09) * ptx  # gas without lung tissue: darker than aerated lung
                extra += _F(0.12) * line
            mark = self.markings[side] * air * marking_gain
            if ptx is not None:
                mark = mark * (1.0 - ptx)
            density[win] += extra + _F(MARKING_DENSITY) * mark - _F(LUNG_AIR) * air

        np.maximum(density, 0.0, out=density)
        return 1.0 - np.exp(-self.tone * density)

    def layer(self, findings: FindingState) -> np.ndarray:
        """The findings' contribution (clean image with findings minus base), quantised to LAYER_STEP."""
        if findings.empty:
            return np.zeros_like(self.base)
        diff = self._clean(findings) - self.base
        return (np.rint(diff * _F(1.0 / LAYER_STEP)) * _F(LAYER_STEP)).astype(_F)


def _noise(noise_seed: int, size: int) -> np.ndarray:
    """Acquisition noise: Gaussian, blurred with a 3x3 binomial kernel, std NOISE_SIGMA, float32 HxW."""
    rng = np.random.default_rng(np.random.SeedSequence([int(noise_seed), 11]))
    white = rng.standard_normal((size + 2, size + 2), dtype=_F)
    rows = white[:-2] + 2.0 * white[1:-1] + white[2:]
    blurred = rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]
    return blurred * _F(NOISE_SIGMA / 6.0)  # the unnormalised kernel has gain sqrt(36) = 6 on white noise


def _compose(base: np.ndarray, layer: np.ndarray, noise: np.ndarray) -> np.ndarray:
    image = base + layer
    image += noise
    return np.clip(image, 0.0, 1.0, out=image)


# --------------------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------------------


def _check_size(size: int) -> int:
    size = int(size)
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    return size


def lesion_layer(patient: Patient, findings: FindingState, pose: Pose, size: int = 512) -> np.ndarray:
    """The findings' contribution to the image, float32 (size, size): the noise-free image with findings
    minus the finding-free one, quantised to LAYER_STEP; exactly 0 where findings change nothing."""
    return _Scene(patient, pose, _check_size(size)).layer(findings)


def render(patient: Patient, findings: FindingState, pose: Pose, noise_seed: int, size: int = 512) -> np.ndarray:
    """One radiograph: float32 (size, size) in [0, 1], 0 = air, 1 = bone.

    ``clip(anatomy(patient, pose) + lesion_layer(patient, findings, pose) + noise(noise_seed), 0, 1)``.
    """
    size = _check_size(size)
    scene = _Scene(patient, pose, size)
    return _compose(scene.base, scene.layer(findings), _noise(noise_seed, size))


def render_pair(pair: PhantomPair, size: int = 512) -> RenderedPair:
    """Past, current, exact counterfactual of past, and the true lesion-change mask of a pair.

    The counterfactual equals ``render(patient, current findings, past pose, past noise seed, size)``
    bit for bit, and equals ``past`` bit for bit outside ``lesion_change_mask``.
    """
    size = _check_size(size)
    past_scene = _Scene(pair.patient, pair.past_pose, size)
    past_noise = _noise(pair.past_noise_seed, size)
    past_layer = past_scene.layer(pair.past)
    counter_layer = past_scene.layer(pair.current)
    current_scene = _Scene(pair.patient, pair.current_pose, size)
    current = _compose(current_scene.base, current_scene.layer(pair.current), _noise(pair.current_noise_seed, size))
    return RenderedPair(
        past=_compose(past_scene.base, past_layer, past_noise),
        current=current,
        counterfactual=_compose(past_scene.base, counter_layer, past_noise),
        lesion_change_mask=np.abs(counter_layer - past_layer) > MASK_THRESHOLD,
    )
