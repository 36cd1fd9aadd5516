"""Pseudo masks of the phantom suite: per finding, the union of the true lesion masks over the phantoms of
the training split, the phantom analogue of the MS-CXR boxes InstructX2X's RSE uses on MIMIC.

Computed once (``cfbench phantom pseudo-masks``) at 128 px and shipped as
``cfbench/data/phantom_pseudo_masks.npz``; every phantom dataset gets a copy as its ``pseudo_masks.npz``,
so ``pseudo_masks=auto`` finds them as it finds MS-CXR masks in a MIMIC build. The pairs come from the
phantom *training* stream (dataset seed 0, the generator recipe's), never from an evaluation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.core.seeds import derive_seed
from cfbench.datasets.pseudo_masks import PseudoMasks
from cfbench.phantom.render import MASK_THRESHOLD, lesion_layer
from cfbench.phantom.scenario import FINDING_FIELDS, PHANTOM_VERSION, FindingState, sample_pair

SHIPPED_PSEUDO_MASKS = PACKAGE_DATA_DIR / "phantom_pseudo_masks.npz"
TRAIN_DATASET_SEED = 0  # the phantom training stream (pair seeds derive_seed(0, index))
MASK_RESOLUTION = 128
DEFAULT_PAIRS = 300


def phantom_pseudo_masks(n_pairs: int = DEFAULT_PAIRS, resolution: int = MASK_RESOLUTION,
                         progress: bool = True) -> PseudoMasks:
    """Per finding (instruction spelling), the union over ``n_pairs`` training pairs (both time points) of
    the pixels where that finding alone changes the image (lesion layer > the phantom's mask threshold)."""
    masks = {spelling: np.zeros((resolution, resolution), dtype=bool) for spelling, _ in FINDING_FIELDS.values()}
    for index in tqdm(range(n_pairs), desc="phantom pseudo masks", unit="pair", disable=not progress):
        pair = sample_pair(derive_seed(TRAIN_DATASET_SEED, index))
        for state, pose in ((pair.past, pair.past_pose), (pair.current, pair.current_pose)):
            for field, (spelling, _) in FINDING_FIELDS.items():
                value = getattr(state, field)
                if value is not None:
                    layer = lesion_layer(pair.patient, FindingState(**{field: value}), pose, resolution)
                    masks[spelling] |= np.abs(layer) > MASK_THRESHOLD
    return PseudoMasks(masks=masks, resolution=resolution,
                       source=f"phantom v{PHANTOM_VERSION} train stream, {n_pairs} pairs, union of true lesion masks")


def shipped_phantom_pseudo_masks() -> PseudoMasks:
    """The shipped masks (see the module); FileNotFoundError naming the file when the package lacks it."""
    if not SHIPPED_PSEUDO_MASKS.is_file():
        raise FileNotFoundError(f"{SHIPPED_PSEUDO_MASKS} is missing: rebuild it with `cfbench phantom pseudo-masks "
                                f"--out {SHIPPED_PSEUDO_MASKS}`")
    return PseudoMasks.load(SHIPPED_PSEUDO_MASKS)


def write_dataset_pseudo_masks(dataset_root: str | Path) -> Path:
    """Copy the shipped phantom pseudo masks into a phantom dataset as its ``pseudo_masks.npz``."""
    from cfbench.datasets.pseudo_masks import DATASET_MASKS

    target = Path(dataset_root) / DATASET_MASKS
    shipped_phantom_pseudo_masks().save(target)
    return target
