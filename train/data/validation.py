"""Decode and check every file of a DataIndex, so a bad file is found before hours of training.

The readers only check structure (cheap); `validate` opens every image, mask and AOI. The same per-file
checks (`load_sample_arrays`) are used by the data set, so a file that slips past is still named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onen.edge.errors import DataError
from onen.edge.images import read_image_rgb, read_mask
from onen.train.data.sample import DataIndex, Sample

MAX_LISTED_PROBLEMS = 20


@dataclass
class ValidationReport:
    images: int = 0
    masks: int = 0
    defects_with_empty_mask: list[Path] = field(default_factory=list)  # allowed (e.g. 4 MT_Uneven), listed
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "masks": self.masks,
            "defects_with_empty_mask": [str(p) for p in self.defects_with_empty_mask],
            "sizes": self.sizes,
        }


def read_aoi(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """An AOI mask as bool; an AOI with no pixel set would hide every defect, so it is an error."""
    aoi = read_mask(path, expected_hw)
    if not aoi.any():
        raise DataError(f"{path}: AOI mask is empty (no pixel > 127); it would hide every defect")
    return aoi


def load_sample_arrays(sample: Sample) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Decode a sample's image (RGB uint8), mask (bool or None) and own AOI (bool or None), with checks."""
    image = read_image_rgb(sample.image)
    hw = image.shape[:2]
    mask = read_mask(sample.mask, expected_hw=hw) if sample.mask is not None else None
    if mask is not None and sample.label == 0 and mask.any():
        raise DataError(
            f"{sample.mask}: mask of {sample.image} marks {int(mask.sum())} defect pixels but the image is labelled "
            "good (0); "
            "fix the label or the mask"
        )
    aoi = read_aoi(sample.aoi, expected_hw=hw) if sample.aoi is not None else None
    return image, mask, aoi


def validate(index: DataIndex, progress: bool = True) -> ValidationReport:
    """Open every file of the index; raise one DataError listing every bad file (never skip one)."""
    report = ValidationReport()
    problems: list[str] = []
    if index.aoi is not None:
        try:
            read_aoi(index.aoi)
        except DataError as error:
            problems.append(str(error))
    from tqdm import tqdm  # the [calibration]/[train] extra: `onen` commands load this module on a station too

    for sample in tqdm(index.samples, desc="validating data", unit="img", disable=not progress):
        try:
            image, mask, _ = load_sample_arrays(sample)
        except DataError as error:
            problems.append(str(error))
            continue
        report.images += 1
        key = f"{image.shape[1]}x{image.shape[0]}"
        report.sizes[key] = report.sizes.get(key, 0) + 1
        if mask is not None:
            report.masks += 1
            if sample.label == 1 and not mask.any():
                report.defects_with_empty_mask.append(sample.image)
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DataError(f"{index.source}: {len(problems)} bad file(s) in the data set:\n  {listed}{more}")
    return report
