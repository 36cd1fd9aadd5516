"""Behaviour of the procedural phantom suite: determinism, output contract, pose, findings, exact
counterfactuals and instruction consistency."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cfbench.core.findings import EVALUATED_FINDINGS, Operation, parse_instruction
from cfbench.phantom.render import lesion_layer, render, render_pair
from cfbench.phantom.scenario import (
    GROUPS,
    FindingState,
    Patient,
    Pose,
    operations_between,
    sample_findings,
    sample_pair,
    sample_patient,
    sample_pose,
)

FIELD_OF = {
    "atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "edema": "edema",
    "pleural effusion": "effusion",
    "pneumothorax": "pneumothorax",
}
COLUMN_OF = {
    "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "edema": "Edema",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
}


@pytest.fixture(scope="module")
def patient() -> Patient:
    return Patient(age=50.0, sex="M", group="group_b", anatomy_seed=1234)


# -- determinism and output contract ------------------------------------------------------------------


def test_same_seed_gives_identical_pair_and_images():
    a, b = sample_pair(42), sample_pair(42)
    assert a == b
    ra, rb = render_pair(a, 128), render_pair(b, 128)
    for name in ("past", "current", "counterfactual", "lesion_change_mask"):
        assert np.array_equal(getattr(ra, name), getattr(rb, name)), name


def test_different_seeds_differ():
    a, b = sample_pair(1), sample_pair(2)
    assert a.patient != b.patient
    assert not np.array_equal(render_pair(a, 64).past, render_pair(b, 64).past)


@pytest.mark.parametrize("size", [64, 256, 512])
def test_output_contract(size):
    pair = sample_pair(7)
    rendered = render_pair(pair, size)
    for name in ("past", "current", "counterfactual"):
        image = getattr(rendered, name)
        assert image.dtype == np.float32, name
        assert image.shape == (size, size), name
        assert np.isfinite(image).all(), name
        assert image.min() >= 0.0 and image.max() <= 1.0, name
        assert image.std() > 0.05, f"{name} looks blank"
    assert rendered.lesion_change_mask.dtype == bool
    assert rendered.lesion_change_mask.shape == (size, size)
    single = render(pair.patient, pair.past, pair.past_pose, pair.past_noise_seed, size)
    assert np.array_equal(single, rendered.past)
    layer = lesion_layer(pair.patient, pair.past, pair.past_pose, size)
    assert layer.dtype == np.float32 and layer.shape == (size, size)


def test_image_looks_like_a_chest_radiograph(patient):
    image = render(patient, FindingState(), Pose(), noise_seed=0, resolution=256)
    corners = np.concatenate([image[:10, :10].ravel(), image[:10, -10:].ravel()])
    assert corners.mean() < 0.05, "air outside the body is black"
    # lungs (mid-height, a quarter from each side) darker than the mediastinum (centre)
    row = slice(96, 128)
    right_lung, left_lung = image[row, 56:76].mean(), image[row, 180:200].mean()
    mediastinum = image[row, 120:136].mean()
    assert mediastinum > right_lung + 0.15 and mediastinum > left_lung + 0.15
    # below the diaphragm (abdomen) is bright
    assert image[220:240, 100:156].mean() > right_lung + 0.2


def test_no_findings_means_zero_layer(patient):
    layer = lesion_layer(patient, FindingState(), Pose(rotation_deg=2.0), 128)
    assert not layer.any()


# -- pose ------------------------------------------------------------------------------------------------


def test_shift_moves_content_by_that_many_pixels(patient):
    size = 256
    base = render(patient, FindingState(), Pose(), noise_seed=3, resolution=size)
    shifted = render(patient, FindingState(), Pose(shift_x=16.0, shift_y=-10.0), noise_seed=3, resolution=size)
    # 16 px and -10 px at 512 are 8 and -5 px at 256
    errors = {}
    for dy in range(-8, 9):
        for dx in range(-12, 13):
            rolled = np.roll(base, (dy, dx), axis=(0, 1))
            errors[(dy, dx)] = np.abs(rolled[20:-20, 20:-20] - shifted[20:-20, 20:-20]).mean()
    best = min(errors, key=errors.get)
    assert best == (-5, 8)
    assert errors[best] < 0.02  # only the (unshifted) acquisition noise differs


def test_rotation_and_scale_change_the_image_but_not_the_findings_layer_content(patient):
    findings = FindingState(effusion=("left", "moderate"))
    upright = lesion_layer(patient, findings, Pose(), 128)
    rotated = lesion_layer(patient, findings, Pose(rotation_deg=3.0, scale=1.03), 128)
    assert not np.array_equal(upright, rotated)
    # same finding, so about the same amount of it
    assert abs(np.abs(upright).sum() - np.abs(rotated).sum()) < 0.15 * np.abs(upright).sum()


def test_pair_poses_differ_and_matter():
    pair = sample_pair(11)
    assert pair.past_pose != pair.current_pose
    at_past = render(pair.patient, pair.current, pair.past_pose, pair.current_noise_seed, 128)
    at_current = render(pair.patient, pair.current, pair.current_pose, pair.current_noise_seed, 128)
    assert np.abs(at_past - at_current).mean() > 0.005


def test_sample_pose_ranges():
    rng = np.random.default_rng(0)
    poses = [sample_pose(rng) for _ in range(500)]
    assert max(abs(p.rotation_deg) for p in poses) <= 3.0
    assert max(max(abs(p.shift_x), abs(p.shift_y)) for p in poses) <= 10.0
    assert all(0.97 <= p.scale <= 1.03 for p in poses)


# -- findings --------------------------------------------------------------------------------------------

SIZE = 128


def _layer(patient, **findings) -> np.ndarray:
    return lesion_layer(patient, FindingState(**findings), Pose(), SIZE)


def _share(layer: np.ndarray, rows: slice, cols: slice) -> float:
    """Fraction of the layer's total absolute change inside a region."""
    total = np.abs(layer).sum()
    assert total > 0, "finding changed nothing"
    return float(np.abs(layer[rows, cols]).sum() / total)


LEFT_HALF, RIGHT_HALF = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)  # image halves
UPPER, LOWER = slice(0, int(SIZE * 0.55)), slice(int(SIZE * 0.45), SIZE)
ALL = slice(None)


@pytest.mark.parametrize("side, cols", [("left", RIGHT_HALF), ("right", LEFT_HALF)])
def test_effusion_sits_in_the_lower_zone_of_its_side(patient, side, cols):
    layer = _layer(patient, effusion=(side, "moderate"))
    assert _share(layer, ALL, cols) > 0.97  # patient's left = image right
    assert _share(layer, LOWER, ALL) > 0.9
    assert layer.sum() > 0, "fluid is brighter than aerated lung"


def test_bilateral_effusion_affects_both_sides(patient):
    layer = _layer(patient, effusion=("bilateral", "small"))
    assert 0.3 < _share(layer, ALL, LEFT_HALF) < 0.7


@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_levels_rise(patient, side):
    tops, areas = [], []
    for level in ("small", "moderate", "large"):
        changed = np.abs(_layer(patient, effusion=(side, level))) > 0.05
        rows = np.nonzero(changed.any(axis=1))[0]
        tops.append(rows.min())
        areas.append(changed.sum())
    assert tops[0] > tops[1] > tops[2], f"meniscus must rise with level: {tops}"
    assert areas[0] < areas[1] < areas[2]


def test_cardiomegaly_widens_the_heart_mostly_to_the_image_right(patient):
    areas = []
    for level in ("mild", "moderate", "severe"):
        layer = _layer(patient, cardiomegaly=level)
        assert _share(layer, slice(int(SIZE * 0.4), int(SIZE * 0.85)), slice(int(SIZE * 0.2), int(SIZE * 0.9))) > 0.95
        assert _share(layer, ALL, RIGHT_HALF) > 0.6
        assert layer.sum() > 0, "heart replaces dark lung"
        areas.append((np.abs(layer) > 0.05).sum())
    assert areas[0] < areas[1] < areas[2]


def test_edema_is_bilateral_perihilar_and_grows(patient):
    totals = []
    for level in ("mild", "moderate", "severe"):
        layer = _layer(patient, edema=level)
        assert 0.3 < _share(layer, ALL, LEFT_HALF) < 0.7
        assert layer.sum() > 0, "edema adds density"
        totals.append(np.abs(layer).sum())
    assert totals[0] < totals[1] < totals[2]


@pytest.mark.parametrize("side, cols", [("left", RIGHT_HALF), ("right", LEFT_HALF)])
def test_pneumothorax_darkens_apex_and_lateral_of_its_side(patient, side, cols):
    dark_areas = []
    for level in ("small", "large"):
        layer = _layer(patient, pneumothorax=(side, level))
        assert _share(layer, ALL, cols) > 0.97
        darker = layer < -0.02
        assert darker.sum() > 0
        dark_rows = np.nonzero(darker.any(axis=1))[0]
        assert dark_rows.min() < SIZE * 0.25, "reaches the apex"
        assert darker.sum() > 2 * (layer > 0.02).sum(), "mostly darker (the pleural line is thin)"
        assert layer[darker].mean() < -0.05
        dark_areas.append(darker.sum())
    assert dark_areas[0] < dark_areas[1]


def test_small_pneumothorax_is_apical(patient):
    layer = _layer(patient, pneumothorax=("right", "small"))
    assert _share(layer, UPPER, ALL) > 0.8


@pytest.mark.parametrize("location, cols", [("left base", RIGHT_HALF), ("right base", LEFT_HALF)])
def test_atelectasis_at_its_base(patient, location, cols):
    layer = _layer(patient, atelectasis=location)
    assert _share(layer, ALL, cols) > 0.97
    assert _share(layer, LOWER, ALL) > 0.9
    assert layer.sum() > 0


def test_findings_are_learnable_at_low_resolution(patient):
    """Every finding changes a 64 px image visibly (not only sub-pixel detail)."""
    for findings in [dict(effusion=("left", "small")), dict(cardiomegaly="mild"), dict(edema="mild"),
                     dict(pneumothorax=("right", "small")), dict(atelectasis="left base")]:
        layer = lesion_layer(patient, FindingState(**findings), Pose(), 64)
        assert (np.abs(layer) > 0.03).sum() >= 8, findings


# -- patient attributes -------------------------------------------------------------------------------


def test_bone_density_falls_with_age():
    young = Patient(age=22.0, sex="M", group="group_a", anatomy_seed=5)
    old = replace(young, age=88.0)
    a = render(young, FindingState(), Pose(), noise_seed=0, resolution=128)
    b = render(old, FindingState(), Pose(), noise_seed=0, resolution=128)
    thorax = (slice(20, 80), slice(20, 108))
    assert a[thorax].mean() > b[thorax].mean() + 0.01


def test_groups_and_sexes_render_differently():
    base = Patient(age=40.0, sex="M", group="group_a", anatomy_seed=9)
    images = {g: render(replace(base, group=g), FindingState(), Pose(), 0, 128) for g in GROUPS}
    for g1 in GROUPS:
        for g2 in GROUPS:
            if g1 < g2:
                assert np.abs(images[g1] - images[g2]).mean() > 0.01
    female = replace(base, sex="F", breast_size=1.0)
    lower = (slice(75, 100), slice(None))
    assert render(female, FindingState(), Pose(), 0, 128)[lower].mean() > images["group_a"][lower].mean()


def test_patient_is_shared_by_both_time_points_and_independent_of_findings():
    ages_with, ages_without, groups_with = [], [], []
    for seed in range(600):
        pair = sample_pair(seed)
        # one patient object for both time points: attributes cannot differ between past and current
        assert pair.past.labels() != pair.current.labels() or pair.operations
        (ages_with if pair.current.effusion else ages_without).append(pair.patient.age)
        if pair.current.effusion:
            groups_with.append(pair.patient.group)
    assert abs(np.mean(ages_with) - np.mean(ages_without)) < 5.0
    for group in GROUPS:
        assert 0.2 < groups_with.count(group) / len(groups_with) < 0.47


def test_anatomy_is_the_same_at_both_time_points():
    """Rendering the finding-free anatomy at one pose gives the same image whichever findings the pair has:
    the base image depends on the patient only."""
    pair = sample_pair(21)
    base_past = render(pair.patient, FindingState(), pair.past_pose, 1, 64)
    base_again = render(replace(pair.patient), FindingState(), pair.past_pose, 1, 64)
    assert np.array_equal(base_past, base_again)


def test_sample_patient_and_findings_distributions():
    rng = np.random.default_rng(3)
    patients = [sample_patient(rng) for _ in range(1500)]
    ages = np.array([p.age for p in patients])
    assert ages.min() >= 20 and ages.max() <= 90 and 50 < ages.mean() < 60
    assert 0.45 < np.mean([p.sex == "F" for p in patients]) < 0.55
    states = [sample_findings(rng) for _ in range(1500)]
    for column in EVALUATED_FINDINGS:
        rate = np.mean([s.labels()[column] for s in states])
        assert 0.29 < rate < 0.41, (column, rate)


# -- counterfactual exactness ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [96, 512])
def test_counterfactual_is_exact_outside_the_lesion_mask(size):
    seeds = range(12) if size < 512 else range(3)
    for seed in seeds:
        pair = sample_pair(seed)
        rendered = render_pair(pair, size)
        mask = rendered.lesion_change_mask
        assert mask.any(), f"seed {seed}: empty lesion mask for operations {pair.operations}"
        assert np.array_equal(rendered.counterfactual[~mask], rendered.past[~mask]), seed
        inside = rendered.counterfactual[mask] != rendered.past[mask]
        assert inside.mean() > 0.5, f"seed {seed}: counterfactual equals past on most of the mask"
        direct = render(pair.patient, pair.current, pair.past_pose, pair.past_noise_seed, size)
        assert np.array_equal(direct, rendered.counterfactual)
        current = render(pair.patient, pair.current, pair.current_pose, pair.current_noise_seed, size)
        assert np.array_equal(current, rendered.current)


def test_lesion_mask_matches_layer_difference():
    pair = sample_pair(5)
    rendered = render_pair(pair, 128)
    past_layer = lesion_layer(pair.patient, pair.past, pair.past_pose, 128)
    counter_layer = lesion_layer(pair.patient, pair.current, pair.past_pose, 128)
    assert np.array_equal(rendered.lesion_change_mask, np.abs(counter_layer - past_layer) > 1e-4)


# -- operations and instructions ------------------------------------------------------------------------


def test_operations_between_examples():
    empty = FindingState()
    assert operations_between(empty, FindingState(effusion=("left", "small"))) == [
        Operation("add", "pleural effusion", "left", None, "small")]
    assert operations_between(FindingState(edema="mild"), empty) == [Operation("remove", "edema", None)]
    assert operations_between(FindingState(cardiomegaly="mild"), FindingState(cardiomegaly="moderate")) == [
        Operation("change", "cardiomegaly", None, "mild", "moderate")]
    assert operations_between(FindingState(effusion=("left", "small")), FindingState(effusion=("bilateral", "large"))) == [
        Operation("remove", "pleural effusion", "left"),
        Operation("add", "pleural effusion", "bilateral", None, "large")]
    assert operations_between(FindingState(atelectasis="left base"), FindingState(atelectasis="right base")) == [
        Operation("remove", "atelectasis", "left base"),
        Operation("add", "atelectasis", "right base", None, None)]
    assert operations_between(empty, empty) == []
    # order: EVALUATED_FINDINGS order (Atelectasis, Cardiomegaly, Edema, Pleural Effusion, Pneumothorax)
    ops = operations_between(FindingState(pneumothorax=("left", "small"), edema="mild"),
                             FindingState(atelectasis="right base", effusion=("right", "moderate")))
    assert [op.finding for op in ops] == ["atelectasis", "edema", "pleural effusion", "pneumothorax"]


def test_instruction_texts():
    from cfbench.core.findings import render_instruction

    ops = operations_between(FindingState(cardiomegaly="mild", edema="severe"),
                             FindingState(cardiomegaly="moderate", effusion=("left", "small")))
    assert render_instruction(ops) == (
        "Change the level of cardiomegaly from mild to moderate. Remove the finding of edema. "
        "Add the finding of small left pleural effusion")


def test_instructions_agree_with_labels_and_parse_back():
    for seed in range(200):
        pair = sample_pair(seed)
        assert pair.operations, seed
        assert parse_instruction(pair.instruction) == list(pair.operations), seed
        assert list(pair.operations) == operations_between(pair.past, pair.current)
        before, after = pair.past.labels(), pair.current.labels()
        assert set(before) == set(EVALUATED_FINDINGS)
        touched = {}
        for op in pair.operations:
            touched.setdefault(op.finding, []).append(op)
        for finding, ops in touched.items():
            column, field = COLUMN_OF[finding], FIELD_OF[finding]
            kinds = [op.op for op in ops]
            if kinds == ["add"]:
                assert (before[column], after[column]) == (0.0, 1.0), seed
            elif kinds == ["remove"]:
                assert (before[column], after[column]) == (1.0, 0.0), seed
            elif kinds == ["change"]:
                assert (before[column], after[column]) == (1.0, 1.0), seed
                assert ops[0].level_from != ops[0].level_to
                old, new = getattr(pair.past, field), getattr(pair.current, field)
                old_level = old[1] if isinstance(old, tuple) else old
                new_level = new[1] if isinstance(new, tuple) else new
                assert (ops[0].level_from, ops[0].level_to) == (old_level, new_level)
            else:
                assert kinds == ["remove", "add"], seed  # moved: stays present
                assert (before[column], after[column]) == (1.0, 1.0), seed
                assert ops[0].location != ops[1].location
        for column in EVALUATED_FINDINGS:
            if column not in {COLUMN_OF[f] for f in touched}:
                field = FIELD_OF[[f for f, c in COLUMN_OF.items() if c == column][0]]
                assert getattr(pair.past, field) == getattr(pair.current, field), seed


def test_pair_seeds_and_noise():
    pairs = [sample_pair(seed) for seed in range(100)]
    assert all(p.past_noise_seed != p.current_noise_seed for p in pairs)
    assert all(1 <= len(p.operations) <= 6 for p in pairs)
    assert len({p.patient.anatomy_seed for p in pairs}) == 100
