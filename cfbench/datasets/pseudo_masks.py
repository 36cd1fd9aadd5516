"""Pseudo masks: where a finding usually appears, from expert bounding boxes.

InstructX2X's Region-Specific Editing builds, per finding, the union of all expert boxes of that finding
on PA images (MS-CXR in the paper), rescaled to the image size; an instruction selects the masks of the
findings it names (merged with max) and uses the whole image when it names no known finding. cfbench uses
the same masks to measure edit locality on real data: how much a model changed the image inside vs
outside the region of the instruction's findings.

How an instruction selects masks (``matching``): "findings" (cfbench's) takes the findings parsed from the
instruction, each restricted to its location words; "substring" (the InstructX2X release's, see
:mod:`cfbench.datasets.instructx2x_masks`) searches each of ``match_names`` as a case-insensitive
substring of the instruction text, merges the matched names' masks and uses the whole image when nothing
matches or a matched name has no mask; locations play no part.

The public default is built from NIH ChestX-ray14's ``BBox_List_2017.csv.gz`` (984 boxes in 1024-px
space), which ships inside the torchxrayvision wheel; PA images only (``View Position`` of
``Data_Entry_2017_v2020.csv.gz``). NIH has no Edema boxes: Edema selects no mask (whole image).
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from cfbench.core.findings import Operation
from cfbench.core.storage import atomic_write_bytes

NIH_IMAGE_SIZE = 1024
# NIH box label -> finding as instructions spell it
NIH_BOX_FINDINGS: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Pneumonia": "pneumonia",
    "Infiltrate": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
}


def torchxrayvision_data_file(name: str) -> Path:
    import torchxrayvision

    path = Path(torchxrayvision.__file__).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this torchxrayvision install does not ship {name}")
    return path


MATCHING_RULES: tuple[str, ...] = ("findings", "substring")


@dataclass(eq=False)  # hashed by identity, for the union cache
class PseudoMasks:
    """One bool HxW mask per finding, all at ``resolution`` x ``resolution``.

    masks: finding -> mask (instruction spelling with ``matching="findings"``; with "substring", the names
        of ``match_names`` that have a mask). source: one line saying where the masks came from.
    matching, match_names: how an instruction selects masks (see the module docstring).
    provenance: a JSON-able record of the files the masks were read from (e.g. a release's checksums), or {}.
    """

    masks: dict[str, np.ndarray]
    resolution: int
    source: str
    matching: str = "findings"
    match_names: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.matching not in MATCHING_RULES:
            raise ValueError(f"pseudo mask matching must be one of {MATCHING_RULES}, got {self.matching!r}")

    def mask_for(self, operations: Iterable[Operation], resolution: int | None = None,
                 instruction: str | None = None) -> np.ndarray:
        """The region an instruction may edit, bool ``resolution`` x ``resolution``.

        matching="findings": union of the masks of the operations' findings, each restricted to the
        operation's location (see :func:`location_region`); the whole image when no finding has a mask.
        matching="substring": the names of ``match_names`` found in ``instruction`` (else in the
        operations' finding names joined); the whole image when none is found or one has no mask.
        The result is shared between calls with the same findings: do not modify it."""
        resolution = resolution or self.resolution
        if self.matching == "substring":
            text = (instruction if instruction is not None else " ".join(op.finding for op in operations)).lower()
            found = [name for name in self.match_names if name.lower() in text]
            if not found or any(name not in self.masks for name in found):
                return self._union((), resolution)
            return self._union(tuple(sorted((name, "") for name in set(found))), resolution)
        keys = tuple(sorted({(op.finding, op.location or "") for op in operations if op.finding in self.masks}))
        return self._union(keys, resolution)

    @functools.lru_cache(maxsize=256)  # noqa: B019 -- a handful of finding sets per dataset
    def _union(self, keys: tuple[tuple[str, str], ...], resolution: int) -> np.ndarray:
        if not keys:
            union = np.ones((resolution, resolution), dtype=bool)
        else:
            union = np.logical_or.reduce([self.masks[finding] & location_region(location, self.resolution)
                                          for finding, location in keys])
            union = union if resolution == self.resolution else _resize_mask(union, resolution)
        union.flags.writeable = False
        return union

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, resolution=np.array(self.resolution), source=np.array(self.source),
                            matching=np.array(self.matching), match_names=np.array(self.match_names, dtype=str),
                            provenance=np.array(json.dumps(self.provenance, sort_keys=True)),
                            **{f"mask/{name}": mask for name, mask in self.masks.items()})
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "PseudoMasks":
        """Read a file :meth:`save` wrote (files from before ``matching`` existed match findings)."""
        with np.load(path, allow_pickle=False) as archive:
            masks = {key[len("mask/"):]: archive[key].astype(bool) for key in archive.files if key.startswith("mask/")}
            side = archive["resolution"] if "resolution" in archive.files else archive["size"]  # older files: "size"
            files = set(archive.files)
            return cls(masks=masks, resolution=int(side), source=str(archive["source"]),
                       matching=str(archive["matching"]) if "matching" in files else "findings",
                       match_names=tuple(str(name) for name in archive["match_names"]) if "match_names" in files
                       else (),
                       provenance=json.loads(str(archive["provenance"])) if "provenance" in files else {})


def location_region(location: str, size: int) -> np.ndarray:
    """The part of a PA image a location phrase names (radiological convention: the patient's left is the
    image right): left / right halves, base (lower half) / apical (upper half), both combined for
    "left base" etc.; "bilateral", unknown phrases and none -> the whole image."""
    region = np.ones((size, size), dtype=bool)
    words = set(location.lower().replace("-", " ").split())
    half = size // 2
    if "left" in words:
        region[:, :half] = False
    elif "right" in words:
        region[:, half:] = False
    if words & {"base", "bibasilar", "basilar", "lower"}:
        region[:half, :] = False
    elif words & {"apical", "apex", "upper"}:
        region[half:, :] = False
    return region


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square bool mask."""
    index = (np.arange(size) * mask.shape[0] / size).astype(int)
    return mask[np.ix_(index, index)]


def boxes_to_masks(boxes: pd.DataFrame, source_size: int | None, resolution: int, source: str) -> PseudoMasks:
    """Union of boxes per finding, rescaled to resolution x resolution (the dataset images are resized to a square).

    ``boxes`` columns: finding, x, y, w, h (top-left corner and extent, source pixels), and either a
    common ``source_size`` or per-box ``image_width`` / ``image_height`` columns (MS-CXR)."""
    boxes = boxes.copy()
    if source_size is not None:
        boxes["image_width"] = boxes["image_height"] = source_size
    masks: dict[str, np.ndarray] = {}
    for finding, group in boxes.groupby("finding"):
        mask = np.zeros((resolution, resolution), dtype=bool)
        for x, y, w, h, width, height in group[["x", "y", "w", "h", "image_width", "image_height"]].astype(float).itertuples(index=False):
            scale_x, scale_y = resolution / width, resolution / height
            top, left = int(np.floor(y * scale_y)), int(np.floor(x * scale_x))
            bottom, right = int(np.ceil((y + h) * scale_y)), int(np.ceil((x + w) * scale_x))
            mask[max(top, 0) : min(bottom, resolution), max(left, 0) : min(right, resolution)] = True
        masks[str(finding)] = mask
    return PseudoMasks(masks=masks, resolution=resolution, source=source)


def nih_pseudo_masks(resolution: int = 512, bbox_csv: str | Path | None = None,
                     data_entry_csv: str | Path | None = None) -> PseudoMasks:
    """Pseudo masks from NIH ChestX-ray14's boxes on PA images (the files torchxrayvision ships by default)."""
    bbox_csv = Path(bbox_csv) if bbox_csv else torchxrayvision_data_file("BBox_List_2017.csv.gz")
    data_entry_csv = Path(data_entry_csv) if data_entry_csv else torchxrayvision_data_file("Data_Entry_2017_v2020.csv.gz")
    boxes = pd.read_csv(bbox_csv)
    # header: Image Index, Finding Label, Bbox [x, y, w, h], plus empty columns
    boxes = boxes.iloc[:, :6]
    boxes.columns = ["image", "label", "x", "y", "w", "h"]
    views = pd.read_csv(data_entry_csv, usecols=["Image Index", "View Position"])
    boxes = boxes.merge(views.rename(columns={"Image Index": "image", "View Position": "view"}), on="image")
    boxes = boxes[(boxes["view"] == "PA") & boxes["label"].isin(NIH_BOX_FINDINGS)]
    boxes = boxes.assign(finding=boxes["label"].map(NIH_BOX_FINDINGS))
    return boxes_to_masks(boxes, NIH_IMAGE_SIZE, resolution, source=f"NIH ChestX-ray14 BBox_List_2017, PA, {len(boxes)} boxes")


MS_CXR_COLUMNS = ("dicom_id", "category_name", "x", "y", "w", "h", "image_width", "image_height")


def ms_cxr_pseudo_masks(ms_cxr_csv: str | Path, metadata_csv: str | Path, resolution: int = 512) -> PseudoMasks:
    """Pseudo masks from MS-CXR boxes on PA images (the paper's source): ``MS_CXR_Local_Alignment_*.csv``
    and MIMIC-CXR's ``mimic-cxr-2.0.0-metadata.csv(.gz)`` for the view position."""
    boxes = pd.read_csv(ms_cxr_csv, dtype={"dicom_id": str})
    missing = [column for column in MS_CXR_COLUMNS if column not in boxes.columns]
    if missing:
        raise ValueError(f"{ms_cxr_csv} is missing column(s) {missing}")
    views = pd.read_csv(metadata_csv, dtype=str, usecols=["dicom_id", "ViewPosition"])
    boxes = boxes.merge(views, on="dicom_id", how="left")
    pa = boxes[boxes["ViewPosition"].fillna("").str.upper() == "PA"]
    pa = pa.assign(finding=pa["category_name"].str.strip().str.lower())
    return boxes_to_masks(pa, None, resolution, source=f"MS-CXR {Path(ms_cxr_csv).name}, PA, {len(pa)} boxes")


DATASET_MASKS = "pseudo_masks.npz"  # written into a dataset folder by `cfbench data build mimic --ms-cxr`


def default_pseudo_masks(dataset_root: str | Path | None, resolution: int) -> PseudoMasks:
    """The pseudo masks a dataset comes with (``{root}/pseudo_masks.npz``, e.g. MS-CXR boxes as in the
    InstructX2X paper), else the public NIH ChestX-ray14 box unions."""
    if dataset_root is not None and (Path(dataset_root) / DATASET_MASKS).is_file():
        return PseudoMasks.load(Path(dataset_root) / DATASET_MASKS)
    return nih_pseudo_masks(resolution)
