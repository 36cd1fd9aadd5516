"""A hand-made folder in the layout of a clone of the InstructX2X repository (github.com/hgminn/InstructX2X):
``inference/rse_x2x.py`` holding a ``VALID_CATEGORIES`` list and ``inference/masks/pseudo_mask_{Name}.npy``
files (uint8 0/1), plus a ``.git`` folder naming a commit. Names and masks are made up here; nothing is
taken from the release."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The release's conventions: lower-case names and capitalised ones, a trailing space, names without a file.
NAMES = ["atelectasis", "Effusion", "lung opacity", "heart failure", "tortuosity of the aorta ", "edema"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def release_masks(size: int) -> dict[str, np.ndarray]:
    """Name -> uint8 mask of the names that get a file (heart failure and the aorta get none)."""
    atelectasis = np.zeros((size, size), np.uint8)
    atelectasis[size // 2:, : size // 2] = 1
    effusion = np.zeros((size, size), np.uint8)
    effusion[3 * size // 4:, :] = 1
    opacity = np.zeros((size, size), np.uint8)
    opacity[: size // 4, size // 4: 3 * size // 4] = 1
    edema = np.zeros((size, size), np.uint8)
    edema[size // 4: size // 2, :] = 1
    return {"atelectasis": atelectasis, "Effusion": effusion, "lung opacity": opacity, "edema": edema}


def write_instructx2x_clone(root: Path, size: int = 16) -> Path:
    (root / "inference" / "masks").mkdir(parents=True)
    (root / "inference" / "rse_x2x.py").write_text(
        "import numpy as np\n\n\nclass Editor:\n    def integrate_masks(self, edit_text):\n"
        f"        VALID_CATEGORIES = {NAMES!r}\n        return VALID_CATEGORIES\n", encoding="utf-8")
    for name, mask in release_masks(size).items():
        np.save(root / "inference" / "masks" / f"pseudo_mask_{name.title()}.npy", mask)
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (root / ".git" / "refs" / "heads" / "main").write_text(COMMIT + "\n", encoding="utf-8")
    return root


def release_selection(instruction: str, size: int) -> np.ndarray:
    """The release's selection rule, written out independently: per name, a case-insensitive substring
    test; max of the masks; a matched name without a file, or no match, gives ones."""
    masks = release_masks(size)
    found = [name for name in NAMES if name.lower() in instruction.lower()]
    combined = np.zeros((size, size), np.float32) if found else np.ones((size, size), np.float32)
    for name in found:
        if name in masks:
            combined = np.maximum(combined, masks[name])
        else:
            combined = np.ones((size, size), np.float32)
    return combined.astype(bool)
