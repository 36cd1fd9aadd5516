"""A phantom patient's own texture: pulmonary vessel markings (a canonical texture sampled at any pose) and
calcification specks. Everything here depends only on the :class:`~cfbench.phantom.scenario.Patient` (and
the image side), never on the findings, the pose or the noise, so it is cached per patient.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from cfbench.phantom.geometry import F32, SIDES, Grid, diaphragm_dome, lung_rho, patient_geometry
from cfbench.phantom.scenario import Patient

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
    g = patient_geometry(patient)
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 7]))
    segments = []  # (x0, y0, x1, y1, weight, is_trunk) per growth step
    for side in SIDES:
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
            rho, _, _ = lung_rho(pos_x.astype(F32), pos_y.astype(F32), side, g)
            alive = (rho < 0.92) & (pos_y < diaphragm_dome(pos_x, side, g) - 0.02) & (weight > 0.12)
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
    for side in SIDES:
        hx, hy = side * g.hilum[0], g.hilum[1]
        xs = np.concatenate([xs, hx + side * rng.normal(0.02, 0.025, n)])
        ys = np.concatenate([ys, hy + rng.normal(0.0, 0.05, n)])
        weights = np.concatenate([weights, np.full(n, 1.4)])
        trunks = np.concatenate([trunks, np.ones(n, bool)])
    return xs, ys, weights, trunks


@functools.lru_cache(maxsize=16)
def marking_texture(patient: Patient, size: int) -> tuple[np.ndarray, float]:
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
    thick = np.bincount(index[trunks], weights[trunks], minlength=h * w).astype(F32).reshape(h, w)
    thin = np.bincount(index[~trunks], weights[~trunks], minlength=h * w).astype(F32).reshape(h, w)
    scale = size / 512.0
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 8, size]))
    thin += rng.standard_normal((h, w), dtype=F32) * F32(0.05 * scale)
    thick_sigma, thin_sigma = 2.6 * scale, 1.0 * scale + 0.2
    thick = ndimage.gaussian_filter(thick, thick_sigma, truncate=3.0)
    thin = ndimage.gaussian_filter(thin, thin_sigma, truncate=3.0)
    # a line of deposits every step/4 canonical units has, after blurring, a peak of about
    # (deposits per texel) / (sqrt(2 pi) sigma); undo that so a line is ~1 at every size
    per_texel = (_VESSEL_STEP / 4.0) / pitch
    thick *= F32(math.sqrt(2.0 * math.pi) * thick_sigma * per_texel)
    thin *= F32(math.sqrt(2.0 * math.pi) * thin_sigma * per_texel)
    markings = np.tanh(F32(0.7) * thick + F32(0.6) * np.clip(thin, 0.0, None)).astype(F32)
    markings.setflags(write=False)
    return markings, pitch


@functools.lru_cache(maxsize=64)
def calcifications(patient: Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical (x, y, density) of calcification specks: costal cartilages of the lower ribs (specks
    along short medial-downward paths) and, in older patients, the aortic knob rim. Count and density
    grow with age (about 10 specks at 20 y, about 100 at 90 y)."""
    g = patient_geometry(patient)
    rng = np.random.default_rng(np.random.SeedSequence([int(patient.anatomy_seed), 9]))
    aging = (patient.age - 20.0) / 70.0
    xs, ys, amps = [], [], []
    for side in SIDES:
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


def add_specks(density: np.ndarray, grid: "Grid", specks: tuple[np.ndarray, ...]) -> None:
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
    np.add.at(density.reshape(-1), flat, values[inside].astype(F32))


def sample_texture(texture: np.ndarray, pitch: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a (H, W) canonical texture at canonical points x, y (any shape)."""
    h, w = texture.shape
    fx = np.clip((x - F32(_TEX_X[0])) * F32(1.0 / pitch) - F32(0.5), 0.0, w - 1.001)
    fy = np.clip((y - F32(_TEX_Y[0])) * F32(1.0 / pitch) - F32(0.5), 0.0, h - 1.001)
    ix, iy = fx.astype(np.int32), fy.astype(np.int32)
    wx, wy = fx - ix, fy - iy
    flat = texture.reshape(-1)
    index = iy * w + ix
    t00, t01 = np.take(flat, index), np.take(flat, index + 1)
    index += w
    t10, t11 = np.take(flat, index), np.take(flat, index + 1)
    top = t00 + wx * (t01 - t00)
    return top + wy * (t10 + wx * (t11 - t10) - top)
