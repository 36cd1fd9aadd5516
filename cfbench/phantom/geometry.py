"""Canonical body geometry of a phantom patient and the pixel grid it is evaluated on: smooth step
functions with compact support, the pixel coordinate grid of a pose, and the lung/diaphragm shapes that
both the anatomy (:mod:`cfbench.phantom.render`) and the marking texture (:mod:`cfbench.phantom.texture`)
are drawn from. Canonical ``x``/``y`` run from -1 to +1 across the image at pose identity.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from cfbench.phantom.scenario import Patient, Pose

F32 = np.float32


def smoothstep(t: np.ndarray) -> np.ndarray:
    """Smoothstep: 0 for t <= 0, 1 for t >= 1, C1-smooth in between (exact 0/1 outside: compact support)."""
    t = np.maximum(t, F32(0.0))
    np.minimum(t, F32(1.0), out=t)
    result = t * t
    t *= F32(-2.0)
    t += F32(3.0)
    result *= t
    return result


def soft_edge(distance: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance (positive inside), ramp of ``width`` centred on 0."""
    return smoothstep(distance * F32(1.0 / width) + F32(0.5))


def bump(t: np.ndarray) -> np.ndarray:
    """(1 - t^2)^2 for |t| < 1, else 0: a smooth compact bump of half-width 1."""
    b = t * t
    np.subtract(F32(1.0), b, out=b)
    np.maximum(b, F32(0.0), out=b)
    b *= b
    return b


@functools.lru_cache(maxsize=8)
def pixel_coords(size: int) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1] along one axis (float64, read-only)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
    coords.setflags(write=False)
    return coords


class Grid:
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
        p = pixel_coords(size)
        px, py = p[None, :] - self.tx, p[:, None] - self.ty
        inv = 1.0 / self.scale
        self.x = ((self.cos * inv) * px - (self.sin * inv) * py).astype(F32)
        self.y = ((self.sin * inv) * px + (self.cos * inv) * py).astype(F32)

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
class Geometry:
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
def patient_geometry(patient: Patient) -> Geometry:
    aging = (patient.age - 20.0) / 70.0  # 0 at 20 y, 1 at 90 y
    lw, lh = patient.lung_width, patient.lung_height
    return Geometry(
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


SIDES = (-1, 1)  # -1: patient right (image left), +1: patient left (image right)
SIDE_OF = {"right": -1, "left": 1, "right base": -1, "left base": 1}


def lung_rho(x: np.ndarray, y: np.ndarray, side: int, g: Geometry):
    """Normalised lung radius (1 on the lung outline, before the diaphragm cut) and the unit lateral /
    downward direction components (cos, sin of the polar angle) of each point, for one lung."""
    u = (x - F32(side * g.lung_cx)) * F32(side / g.lung_a)  # lateral-positive
    v = (y - F32(g.lung_cy)) * F32(1.0 / g.lung_b)  # down-positive
    width = np.clip(F32(0.82) + F32(0.26) * v, 0.55, 1.0)  # narrow apex, wide base
    u = u / width
    u2, v2 = u * u, v * v
    # lateral half: ellipse; medial half: squarer (flatter mediastinal border)
    rho = np.sqrt(np.where(u > 0, u2 + v2, np.sqrt(u2 * u2 + v2 * v2)))
    return rho, u, v


def diaphragm_dome(x: np.ndarray, side: int, g: Geometry, lift: float = 0.0) -> np.ndarray:
    """y of the hemidiaphragm under x (dome highest near the lung's middle, falling laterally)."""
    top = g.dome_y[0 if side < 0 else 1] - lift
    dx = x - F32(side * g.dome_x)
    return F32(top) + F32(1.5) * dx * dx


def lung_window(grid: Grid, side: int, g: Geometry):
    x_lat, x_med = side * (g.lung_cx + g.lung_a * 1.05), side * (g.lung_cx - g.lung_a * 1.05)
    return grid.window(min(x_lat, x_med), max(x_lat, x_med),
                       g.lung_cy - g.lung_b * 1.05, g.lung_cy + g.lung_b * 1.05)
