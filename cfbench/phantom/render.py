"""Phantom pixels: a CXR-like radiograph of a scenario (:mod:`cfbench.phantom.scenario`), drawn so that
counterfactuals are exact (numpy + scipy only).

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

import math
from dataclasses import dataclass

import numpy as np

from cfbench.phantom.geometry import (
    F32,
    SIDE_OF,
    SIDES,
    Grid,
    bump,
    diaphragm_dome,
    lung_rho,
    lung_window,
    patient_geometry,
    smoothstep,
    soft_edge,
)
from cfbench.phantom.scenario import FindingState, Patient, PhantomPair, Pose
from cfbench.phantom.texture import add_specks, calcifications, marking_texture, sample_texture

# Lesion layers are quantised to this step, so "layers differ" and "layers differ by > 1e-4" coincide.
LAYER_STEP = 1.0 / 4096.0
MASK_THRESHOLD = 1e-4
NOISE_SIGMA = 0.010  # standard deviation of the acquisition noise, image intensity units
# Densities (before the tone curve image = 1 - exp(-tone * density); soft tissue ~0.3 per unit path).
CENTRAL_DENSITY = 0.24  # mediastinum / heart / abdomen over the body soft tissue
LUNG_AIR = 0.17  # density removed by aerated lung at its thickest
MARKING_DENSITY = 0.14  # lung markings at full strength
# Stripe orientation (degrees) and tone-curve steepness of each group: a global soft-tissue texture and
# contrast that no finding changes.
_GROUP_STRIPE_DEG = {"group_a": 0.0, "group_b": 60.0, "group_c": 120.0}
_GROUP_TONE = {"group_a": 2.05, "group_b": 2.2, "group_c": 2.35}


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
# The scene: anatomy at a pose, and findings composited on it
# --------------------------------------------------------------------------------------------------


class _Scene:
    """Everything of one patient at one pose and size that does not depend on findings.

    ``_clean(findings)`` is the noise-free radiograph with those findings, ``base`` the finding-free
    one and ``layer(findings)`` their difference, quantised to LAYER_STEP.

    Local structures are evaluated only inside a pixel window (``Grid.window``) that contains their
    whole support (every profile has compact support), so windowing never cuts a structure.
    """

    def __init__(self, patient: Patient, pose: Pose, size: int):
        self.patient, self.size = patient, size
        self.g = g = patient_geometry(patient)
        self.grid = grid = Grid(pose, size)
        x, y = grid.x, grid.y
        ax = np.abs(x)

        # Body outline: neck above y ~ -0.8, shoulders, chest; elliptic cross-section thickness.
        shoulder = smoothstep((y + F32(0.86)) * F32(1.0 / 0.2))
        half_width = F32(0.26) + F32(patient.body_width - 0.26) * shoulder
        body = soft_edge(half_width - ax, 0.035)
        r = np.clip(ax / half_width, 0.0, 1.0)
        thickness = np.sqrt(1.0 - r * r)
        soft = F32(0.30 * patient.soft_tissue) * body * (F32(0.45) + F32(0.55) * thickness)

        # Group trait: fine soft-tissue stripes at a group-specific orientation (period 0.075 units).
        angle = math.radians(_GROUP_STRIPE_DEG[patient.group])
        k = 2.0 * math.pi / 0.075
        stripes = np.sin(F32(k * math.cos(angle)) * x + F32(k * math.sin(angle)) * y)
        static = soft + F32(0.018) * body * stripes

        # Central soft-tissue shadow: mediastinum (a band that merges into the heart) and the abdomen
        # below the hemidiaphragms (reaching a little above them, behind the lung bases). One max so
        # that mediastinum, heart and abdomen merge without internal borders.
        half = F32(0.12) + F32(0.09) * smoothstep((y + F32(0.25)) * F32(1.0 / 0.45))  # widening towards the heart
        mediastinum = soft_edge(half - ax, 0.08) * soft_edge(y + F32(0.95), 0.1)
        dome = np.where(x < 0, diaphragm_dome(x, -1, g), diaphragm_dome(x, 1, g))
        abdomen = soft_edge(y - dome + F32(0.06), 0.10) * body
        self.central = np.maximum(mediastinum, abdomen)
        static += F32(CENTRAL_DENSITY) * self.central

        # Trachea: a darker air column down to the carina.
        win = grid.window(-0.08, 0.08, -1.1, -0.25)
        if win is not None:
            tx, ty = x[win], y[win]
            static[win] -= F32(0.11) * soft_edge(F32(0.035) - np.abs(tx - F32(0.004)), 0.02) * soft_edge(F32(-0.3) - ty, 0.06)

        bones = self._bones(x, y, ax)
        static += F32(g.bone) * bones

        # Breast shadows (F): lower-lateral, denser towards the inframammary fold.
        if patient.breast_size > 0:
            for side in SIDES:
                bx, by = side * 0.43, 0.27
                ra, rb = 0.31 * patient.breast_size, 0.24 * patient.breast_size
                win = grid.window(bx - 1.2 * ra, bx + 1.2 * ra, by - 1.2 * rb, by + 1.2 * rb)
                if win is None:
                    continue
                u = (x[win] - F32(bx)) * F32(1.0 / ra)
                v = (y[win] - F32(by)) * F32(1.0 / rb)
                inside = soft_edge(1.0 - np.sqrt(u * u + v * v), 0.35)
                static[win] += F32(0.13) * inside * (F32(0.35) + F32(0.65) * smoothstep(v * F32(0.7) + F32(0.6)))

        # Calcifications (age), then the patient's lung-marking texture over the lung window.
        add_specks(static, grid, calcifications(patient))
        texture, pitch = marking_texture(patient, size)
        self.markings = {}  # per lung, over that lung's window
        for side in SIDES:
            win = lung_window(grid, side, g)
            self.markings[side] = None if win is None else sample_texture(texture, pitch, x[win], y[win])

        self.static = static
        self.tone = F32(_GROUP_TONE[patient.group])
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
            q = by + bax * (F32(0.42) - F32(0.80) * bax)
            phase = (q + F32(0.86)) * F32(1.0 / (0.118 * p.rib_spacing)) + F32(p.rib_phase)
            f = phase - np.floor(phase) - F32(0.5)
            rib = bump(f * F32(1.0 / 0.24))
            rib = rib * (F32(0.75) + F32(0.25) * bump(f * F32(1.0 / 0.16)))  # denser core
            cage_u = bx * F32(1.0 / 0.76)
            cage_v = (by + F32(0.10)) * F32(1.0 / 0.72)
            cage = soft_edge(1.0 - np.sqrt(cage_u * cage_u + cage_v * cage_v), 0.12)
            cage *= soft_edge(bax - F32(0.07), 0.05)
            bones[win] += F32(0.45) * rib * cage * soft_edge(phase - F32(0.6), 0.5)
        # Clavicles: from the sternal notch rising laterally.
        win = grid.window(-0.72, 0.72, -0.92, -0.48)
        if win is not None:
            cx, cy = x[win], y[win]
            l = np.abs(cx) - F32(0.07)
            center = F32(-0.63) - F32(0.23) * l + F32(0.18) * l * l
            clav = bump((cy - center) * F32(1.0 / 0.032)) * soft_edge(l, 0.04) * soft_edge(F32(0.60) - l, 0.08)
            bones[win] += F32(0.7) * clav
        # Spine: vertebral bodies (period ~0.09) with darker disc spaces, pedicles as paired ovals.
        win = grid.window(-0.1, 0.1, -1.1, 1.1)
        if win is not None:
            sx, sy = x[win], y[win]
            column = soft_edge(F32(0.062) - np.abs(sx), 0.025)
            t = sy * F32(1.0 / 0.092)
            f = t - np.floor(t) - F32(0.5)
            bodies = F32(0.55) + F32(0.45) * bump(f * F32(1.0 / 0.42))
            pu = (np.abs(sx) - F32(0.042)) * F32(1.0 / 0.014)
            pv = f * F32(1.0 / 0.22)
            pedicles = bump(np.sqrt(pu * pu + pv * pv))
            bones[win] += F32(0.35) * column * bodies + F32(0.25) * pedicles * column
        return bones

    def _lung(self, side: int, lift: float):
        """(window, lung mask, rho, u, v) of one lung, the diaphragm raised by ``lift`` (volume loss)."""
        key = (side, lift)
        if key not in self._lungs:
            g, grid = self.g, self.grid
            win = lung_window(grid, side, g)
            if win is None:
                self._lungs[key] = (None, None, None, None, None)
                return self._lungs[key]
            x, y = grid.x[win], grid.y[win]
            rho, u, v = lung_rho(x, y, side, g)
            inside = soft_edge(1.0 - rho, 0.05) * soft_edge(diaphragm_dome(x, side, g, lift) - y, 0.012)
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
        dy = y - F32(peak_y)
        t = dy * np.where(dy < 0, F32(1.0 / above), F32(1.0 / below))
        shape = bump(t)
        left_border = F32(base) + F32(lv) * shape
        right_border = F32(base - 0.245) - F32(ra) * bump(t * F32(1.25) + F32(0.1))
        heart = soft_edge(left_border - x, 0.03) * soft_edge(x - right_border, 0.03) * soft_edge(F32(0.9) - np.abs(t), 0.2)
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
        density[heart_win] += F32(CENTRAL_DENSITY) * np.clip(heart - central, 0.0, None)
        kx, ky, kr = 0.12 + self.patient.heart_shift, -0.30, g.knob_r
        knob_win = grid.window(kx - kr * 1.3, kx + kr * 1.3, ky - kr * 1.3, ky + kr * 1.3)
        if knob_win is not None:
            u = (grid.x[knob_win] - F32(kx)) * F32(1.0 / kr)
            v = (grid.y[knob_win] - F32(ky)) * F32(1.0 / kr)
            knob = soft_edge(1.0 - np.sqrt(u * u + v * v), 0.25)
            occlusion[knob_win] = np.maximum(occlusion[knob_win], knob)
            central = self.central[knob_win]
            density[knob_win] += F32(CENTRAL_DENSITY) * np.clip(knob - central, 0.0, None)

        effusion_sides = {}
        if findings.effusion is not None:
            location, level = findings.effusion
            height = {"small": 0.16, "moderate": 0.32, "large": 0.52}[level]
            for side in (SIDES if location == "bilateral" else (SIDE_OF[location],)):
                effusion_sides[side] = height
        ptx_side, ptx_depth = None, 0.0
        if findings.pneumothorax is not None:
            ptx_side = SIDE_OF[findings.pneumothorax[0]]
            ptx_depth = {"small": 0.17, "large": 0.40}[findings.pneumothorax[1]]
        atel_side = None if findings.atelectasis is None else SIDE_OF[findings.atelectasis]
        edema = {None: 0, "mild": 1, "moderate": 2, "severe": 3}[findings.edema]

        for side in SIDES:
            lift = 0.05 if side == atel_side else 0.0
            win, lung, rho, u, v = self._lung(side, lift)
            if win is None:  # lung entirely outside the image (not reachable with sampled poses)
                continue
            x, y = grid.x[win], grid.y[win]
            # aerated lung is thickest in its middle: the projected air falls off towards the edges
            profile = F32(0.55) + F32(0.45) * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))
            air = lung * profile * (1.0 - F32(0.95) * occlusion[win])
            extra = np.zeros_like(air)  # density added by findings
            marking_gain = F32(1.0)
            if side in effusion_sides:
                # Fluid from the base up to a meniscus that climbs laterally (blunted costophrenic angle).
                height = effusion_sides[side]
                lateral = np.clip((x * F32(side) - F32(0.12)) * F32(1.0 / 0.58), 0.0, 1.0)
                meniscus = diaphragm_dome(x, side, g) - F32(height) * (F32(0.4) + F32(0.6) * lateral * lateral)
                fill = soft_edge(y - meniscus, 0.06 + 0.04 * height) * soft_edge(1.0 - rho, 0.05)
                air = air * (1.0 - fill)
                extra += F32(0.9 * CENTRAL_DENSITY) * fill * (1.0 - self.central[win])
            if side == atel_side:
                # Plate-like opacity in the lower zone, lateral end slightly higher, with volume loss.
                base_y = g.dome_y[0 if side < 0 else 1] - 0.05 - 0.20
                lx = x * F32(side) - F32(g.lung_cx)
                along = lx * F32(1.0 / 0.20)
                centre = F32(base_y) - F32(0.10) * lx
                plate = bump((y - centre) * F32(1.0 / 0.030)) * bump(along)
                wedge = bump((y - centre - F32(0.07)) * F32(1.0 / 0.05)) * bump((lx + F32(0.10)) * F32(1.0 / 0.13))
                opacity = np.clip(plate + F32(0.6) * wedge, 0.0, 1.0)
                air = air * (1.0 - F32(0.85) * opacity)
                extra += F32(0.06) * opacity * lung
            if edema:
                # Perihilar (bat-wing) haze, denser and wider with severity, plus septal lines at the
                # lateral bases from moderate on.
                hx, hy = side * g.hilum[0], g.hilum[1] + 0.04
                reach = 0.30 + 0.09 * edema
                du = (x - F32(hx)) * F32(1.0 / (reach * 1.05))
                dv = (y - F32(hy)) * F32(1.0 / (reach * 1.25))
                haze = bump(np.sqrt(du * du + dv * dv)) * lung
                extra += F32(0.055 * edema) * haze
                air = air * (1.0 - F32(0.12 * edema) * haze)
                marking_gain = F32(1.0) + F32(0.35 * edema) * haze  # indistinct, prominent vessels
                if edema >= 2:
                    t = y * F32(1.0 / 0.028)
                    lines = bump((t - np.floor(t) - F32(0.5)) * F32(1.0 / 0.18))
                    strip = soft_edge(rho - F32(0.80), 0.08) * soft_edge(y - F32(0.05), 0.1) * smoothstep(u * F32(4.0))
                    extra += F32(0.035 * (edema - 1)) * lines * strip * lung
            ptx = None
            if side == ptx_side:
                # Apical / lateral gas between the chest wall and a visible pleural line.
                up = np.clip(-v / np.maximum(rho, F32(1e-3)), 0.0, 1.0)
                lat = np.clip(u / np.maximum(rho, F32(1e-3)), 0.0, 1.0)
                # small: an apical cap; large: apex and the whole lateral margin down to mid-lung
                lateral_limit = -0.3 + 1.5 * ptx_depth
                reach = np.clip(up + F32(0.3 + ptx_depth) * lat * soft_edge(F32(lateral_limit) - v, 0.3), 0.0, 1.0)
                depth = F32(ptx_depth) * reach
                boundary = F32(1.0) - depth
                present = smoothstep((depth - F32(0.015)) * F32(1.0 / 0.03))
                ptx = soft_edge(rho - boundary, 0.02) * present * lung
                line = bump((rho - boundary) * F32(1.0 / 0.016)) * present * lung
                extra -= F32(0.09) * ptx  # gas without lung tissue: darker than aerated lung
                extra += F32(0.12) * line
            mark = self.markings[side] * air * marking_gain
            if ptx is not None:
                mark = mark * (1.0 - ptx)
            density[win] += extra + F32(MARKING_DENSITY) * mark - F32(LUNG_AIR) * air

        np.maximum(density, 0.0, out=density)
        return 1.0 - np.exp(-self.tone * density)

    def layer(self, findings: FindingState) -> np.ndarray:
        """The findings' contribution (clean image with findings minus base), quantised to LAYER_STEP."""
        if findings.empty:
            return np.zeros_like(self.base)
        diff = self._clean(findings) - self.base
        return (np.rint(diff * F32(1.0 / LAYER_STEP)) * F32(LAYER_STEP)).astype(F32)


def _noise(noise_seed: int, size: int) -> np.ndarray:
    """Acquisition noise: Gaussian, blurred with a 3x3 binomial kernel, std NOISE_SIGMA, float32 HxW."""
    rng = np.random.default_rng(np.random.SeedSequence([int(noise_seed), 11]))
    white = rng.standard_normal((size + 2, size + 2), dtype=F32)
    rows = white[:-2] + 2.0 * white[1:-1] + white[2:]
    blurred = rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]
    return blurred * F32(NOISE_SIGMA / 6.0)  # the unnormalised kernel has gain sqrt(36) = 6 on white noise


def _compose(base: np.ndarray, layer: np.ndarray, noise: np.ndarray) -> np.ndarray:
    image = base + layer
    image += noise
    return np.clip(image, 0.0, 1.0, out=image)


# --------------------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------------------


def _check_resolution(resolution: int) -> int:
    resolution = int(resolution)
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16 pixels, got {resolution}")
    return resolution


def lesion_layer(patient: Patient, findings: FindingState, pose: Pose, resolution: int = 512) -> np.ndarray:
    """The findings' contribution to the image, float32 (resolution, resolution): the noise-free image with findings
    minus the finding-free one, quantised to LAYER_STEP; exactly 0 where findings change nothing."""
    return _Scene(patient, pose, _check_resolution(resolution)).layer(findings)


def render(patient: Patient, findings: FindingState, pose: Pose, noise_seed: int, resolution: int = 512) -> np.ndarray:
    """One radiograph: float32 (resolution, resolution) in [0, 1], 0 = air, 1 = bone.

    ``clip(anatomy(patient, pose) + lesion_layer(patient, findings, pose) + noise(noise_seed), 0, 1)``.
    """
    resolution = _check_resolution(resolution)
    scene = _Scene(patient, pose, resolution)
    return _compose(scene.base, scene.layer(findings), _noise(noise_seed, resolution))


def render_pair(pair: PhantomPair, resolution: int = 512) -> RenderedPair:
    """Past, current, exact counterfactual of past, and the true lesion-change mask of a pair.

    The counterfactual equals ``render(patient, current findings, past pose, past noise seed, resolution)``
    bit for bit, and equals ``past`` bit for bit outside ``lesion_change_mask``.
    """
    resolution = _check_resolution(resolution)
    past_scene = _Scene(pair.patient, pair.past_pose, resolution)
    past_noise = _noise(pair.past_noise_seed, resolution)
    past_layer = past_scene.layer(pair.past)
    counter_layer = past_scene.layer(pair.current)
    current_scene = _Scene(pair.patient, pair.current_pose, resolution)
    current = _compose(current_scene.base, current_scene.layer(pair.current), _noise(pair.current_noise_seed, resolution))
    return RenderedPair(
        past=_compose(past_scene.base, past_layer, past_noise),
        current=current,
        counterfactual=_compose(past_scene.base, counter_layer, past_noise),
        lesion_change_mask=np.abs(counter_layer - past_layer) > MASK_THRESHOLD,
    )
