"""Importing the InstructX2X release's pseudo masks and name matching from a clone (a hand-made one here)."""

import numpy as np
import pytest

from cfbench.core.findings import parse_instruction
from cfbench.core.hashing import file_sha256
from cfbench.datasets.instructx2x_masks import import_instructx2x_masks, release_finding_names
from cfbench.datasets.pseudo_masks import PseudoMasks
from tests.helpers.instructx2x_release import COMMIT, NAMES, release_selection, write_instructx2x_clone

INSTRUCTIONS = [
    "Add the finding of pleural effusion",
    "Add the finding of atelectasis. Remove the finding of lung opacity",
    "Remove the finding of Edema",
    "Add the finding of heart failure. Add the finding of atelectasis",  # heart failure has no file: whole
    "Change the level of cardiomegaly from mild to moderate",  # no name matches: whole image
    "Add the finding of left pleural effusion",  # locations play no part in the release's rule
]


@pytest.fixture()
def clone(tmp_path):
    return write_instructx2x_clone(tmp_path / "InstructX2X", size=16)


def test_import_reads_the_names_masks_and_provenance(clone):
    masks = import_instructx2x_masks(clone)
    assert release_finding_names(clone / "inference" / "rse_x2x.py") == tuple(NAMES)
    assert masks.matching == "substring" and masks.match_names == tuple(NAMES) and masks.resolution == 16
    assert sorted(masks.masks) == ["Effusion", "atelectasis", "edema", "lung opacity"]
    record = masks.provenance
    assert record["commit"] == COMMIT
    assert record["names_without_file"] == ["heart failure", "tortuosity of the aorta "]
    lung = clone / "inference" / "masks" / "pseudo_mask_Lung Opacity.npy"
    assert record["mask_files"]["lung opacity"] == {"file": "inference/masks/pseudo_mask_Lung Opacity.npy",
                                                    "sha256": file_sha256(lung)}


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_selection_is_the_releases_substring_rule(clone, tmp_path, instruction):
    path = tmp_path / "release_masks.npz"
    import_instructx2x_masks(clone).save(path)
    masks = PseudoMasks.load(path)  # the saved file keeps the matching and the provenance
    assert masks.matching == "substring" and masks.provenance["commit"] == COMMIT
    expected = release_selection(instruction, 16)
    np.testing.assert_array_equal(masks.mask_for(parse_instruction(instruction), instruction=instruction), expected)
    np.testing.assert_array_equal(masks.mask_for([], 32, instruction=instruction),
                                  np.kron(expected, np.ones((2, 2), dtype=bool)))  # nearest-neighbour resize
    # without the text, the parsed findings' names are searched instead
    np.testing.assert_array_equal(masks.mask_for(parse_instruction(instruction)), expected)


def test_bad_clones_are_named(tmp_path, clone):
    with pytest.raises(FileNotFoundError, match="rse_x2x.py not found"):
        import_instructx2x_masks(tmp_path / "empty")
    (clone / "inference" / "rse_x2x.py").write_text("NAMES = ['edema']\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no VALID_CATEGORIES"):
        import_instructx2x_masks(clone)
    (clone / "inference" / "rse_x2x.py").write_text("VALID_CATEGORIES = ['edema']\n", encoding="utf-8")
    np.save(clone / "inference" / "masks" / "pseudo_mask_Edema.npy", np.full((16, 16), 3, np.uint8))
    with pytest.raises(ValueError, match="pseudo_mask_Edema.npy: expected a binary mask"):
        import_instructx2x_masks(clone)


def test_cli_imports_and_eval_uses_the_release_rule(clone, tmp_path, capsys):
    from types import SimpleNamespace

    from cfbench.cli import main
    from cfbench.evaluation.evaluate import _pixel_measures
    from tests.helpers.datasets import make_samples

    out = tmp_path / "masks.npz"
    assert main(["masks", "import-instructx2x", str(clone), "--out", str(out)]) == 0
    assert "4 InstructX2X release masks" in capsys.readouterr().out
    assert main(["masks", "import-instructx2x", str(tmp_path / "nowhere"), "--out", str(out)]) != 0
    masks = PseudoMasks.load(out)
    sample = make_samples(1)[0]
    sample.instruction, sample.operations = INSTRUCTIONS[0], parse_instruction(INSTRUCTIONS[0])
    prior = np.zeros((16, 16), np.float32)
    generated = release_selection(INSTRUCTIONS[0], 16).astype(np.float32)  # changes exactly the release's region
    values = _pixel_measures(generated, prior, prior, sample, SimpleNamespace(resolution=16), None, masks)
    assert values["change_inside_pseudo_mask"] == 1.0 and values["change_outside_pseudo_mask"] == 0.0
