"""The InstructX2X release's own pseudo masks, read from a user's clone of its repository.

The release (github.com/hgminn/InstructX2X) ships one ``inference/masks/pseudo_mask_{Name}.npy`` per finding
(uint8 0/1, 512 x 512) and selects them in ``inference/rse_x2x.py``: every name of its ``VALID_CATEGORIES``
list that occurs, case-insensitively, as a substring of the instruction selects the file named after
``name.title()``; the selected masks are merged with max; no match, or a matched name without a file, gives
the whole image. :func:`import_instructx2x_masks` reads both (the names are parsed from the clone's
``rse_x2x.py`` without running it) into a :class:`~cfbench.datasets.pseudo_masks.PseudoMasks` with
``matching="substring"`` and a provenance record (checksums of every file read, the clone's commit when
its ``.git`` folder can be read). cfbench ships none of these files: the user's clone is the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from cfbench.core.hashing import file_sha256
from cfbench.datasets.pseudo_masks import PseudoMasks

NAMES_FILE = Path("inference") / "rse_x2x.py"
MASKS_FOLDER = Path("inference") / "masks"
NAMES_VARIABLE = "VALID_CATEGORIES"
REPOSITORY = "https://github.com/hgminn/InstructX2X"


def mask_file_name(name: str) -> str:
    """The file the release loads for a finding name: ``pseudo_mask_{name.title()}.npy``."""
    return f"pseudo_mask_{name.title()}.npy"


def release_finding_names(path: Path) -> tuple[str, ...]:
    """The release's finding names, in its order: the list literal assigned to ``VALID_CATEGORIES`` in
    ``path`` (parsed, never executed). ValueError naming the file when there is none."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise ValueError(f"{path}: not readable Python ({error.msg}, line {error.lineno})") from error
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == NAMES_VARIABLE
                                                for target in node.targets):
            try:
                names = ast.literal_eval(node.value)
            except ValueError as error:
                raise ValueError(f"{path}, line {node.lineno}: {NAMES_VARIABLE} is not a literal list") from error
            if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names) or not names:
                raise ValueError(f"{path}, line {node.lineno}: {NAMES_VARIABLE} is not a list of strings")
            return tuple(names)
    raise ValueError(f"{path}: no {NAMES_VARIABLE} list (the release's finding names) in this file")


def _clone_commit(root: Path) -> str | None:
    """The commit checked out in ``root`` when its ``.git`` folder says so plainly (HEAD, a loose ref or
    packed-refs), else None."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[len("ref: "):]
        if (git / ref).is_file():
            return (git / ref).read_text(encoding="utf-8").strip()
        for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def _read_mask(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from error
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{path}: expected a square 2-D mask, got shape {array.shape}")
    values = np.unique(array)
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{path}: expected a binary mask (0/1), found values {values[:5].tolist()}")
    return array.astype(bool)


def import_instructx2x_masks(clone: str | Path) -> PseudoMasks:
    """The release's masks and name matching from a clone of its repository (its root folder).

    Reads ``inference/rse_x2x.py`` (the names) and every ``inference/masks/pseudo_mask_*.npy`` the names
    select. Raises FileNotFoundError / ValueError naming the file that is missing or unusable.
    """
    root = Path(clone).expanduser()
    names_path, masks_folder = root / NAMES_FILE, root / MASKS_FOLDER
    for needed in (names_path, masks_folder):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found: point at the root of a clone of {REPOSITORY}")
    names = release_finding_names(names_path)
    masks, files, resolution = {}, {}, None
    for name in names:
        path = masks_folder / mask_file_name(name)
        if not path.is_file():
            continue
        mask = _read_mask(path)
        if resolution is not None and mask.shape[0] != resolution:
            raise ValueError(f"{path}: {mask.shape[0]} px, the other masks have {resolution} px")
        resolution = mask.shape[0]
        masks[name] = mask
        files[name] = {"file": str(path.relative_to(root)), "sha256": file_sha256(path)}
    if not masks:
        raise ValueError(f"{masks_folder}: none of the {len(names)} names of {names_path.name} has a mask file "
                         f"(expected e.g. {mask_file_name(names[0])})")
    provenance = {
        "repository": REPOSITORY, "clone": str(root.resolve()), "commit": _clone_commit(root),
        "names_file": str(NAMES_FILE), "names_sha256": file_sha256(names_path), "names": list(names),
        "mask_files": files, "names_without_file": [name for name in names if name not in masks],
        "matching": "substring of the instruction, case-insensitive; max of the matched masks; the whole image "
                    "when nothing matches or a matched name has no file (as inference/rse_x2x.py)",
    }
    source = (f"InstructX2X release masks ({len(masks)} files, {len(names)} names, substring matching) "
              f"from {root.resolve()}")
    return PseudoMasks(masks=masks, resolution=int(resolution), source=source, matching="substring",
                       match_names=names, provenance=provenance)
