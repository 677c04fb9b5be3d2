"""Decode and check every file of a DataIndex, so a bad file is found before hours of training.

The readers only check structure (cheap); `validate` opens every image, mask and AOI. The same per-file
checks (`load_sample_arrays`) are used by the data set, so a file that slips past is still named.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.errors import DataError
from edge.images import read_image_rgb, read_mask
from train.data.sample import DataIndex, Sample

MAX_LISTED_PROBLEMS = 20


@dataclass
class ValidationReport:
    images: int = 0
    masks: int = 0
    good: int = 0
    defects: int = 0
    defects_with_empty_mask: list[Path] = field(default_factory=list)   # allowed (e.g. 4 MT_Uneven), listed
    defects_without_mask: list[Path] = field(default_factory=list)      # flagged when other defects have one
    orphan_masks: list[Path] = field(default_factory=list)              # read as images: a mask lost its image
    sizes: dict[str, int] = field(default_factory=dict)                 # "WxH" -> count

    def warnings(self) -> list[str]:
        found = []
        if self.orphan_masks:
            found.append(f"{len(self.orphan_masks)} file(s) look like masks without their image and were read as images "
                         f"(first: {self.orphan_masks[0]}); remove them or add the image")
        if self.defects_without_mask and self.masks:
            found.append(f"{len(self.defects_without_mask)} defect image(s) have no mask while {self.masks} have one "
                         f"(first: {self.defects_without_mask[0]}); pixel metrics and calibration skip them")
        if self.defects_with_empty_mask:
            found.append(f"{len(self.defects_with_empty_mask)} defect image(s) have an empty mask (first: {self.defects_with_empty_mask[0]})")
        return found

    def verdict(self, source) -> str:
        """One line: what was read and whether it is fit to train on."""
        sizes = ", ".join(f"{k} ({v})" for k, v in sorted(self.sizes.items(), key=lambda kv: -kv[1])[:3])
        more = f" and {len(self.sizes) - 3} more size(s)" if len(self.sizes) > 3 else ""
        head = "ok" if not self.warnings() else f"ok with {len(self.warnings())} warning(s)"
        return (f"{source}: {head}: {self.images} images ({self.good} good, {self.defects} defect), "
                f"{self.masks} masks, sizes {sizes}{more}")

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "good": self.good,
            "defects": self.defects,
            "masks": self.masks,
            "defects_with_empty_mask": [str(p) for p in self.defects_with_empty_mask],
            "defects_without_mask": [str(p) for p in self.defects_without_mask],
            "orphan_masks": [str(p) for p in self.orphan_masks],
            "sizes": self.sizes,
            "warnings": self.warnings(),
        }


def looks_like_orphan_mask(sample: Sample, image: np.ndarray, folder_suffixes: set[str]) -> bool:
    """A .png holding only black and white, in a folder whose images are of another format: a mask whose
    image is missing (the magnetic-tile layout keeps `x.jpg` and its mask `x.png` side by side)."""
    if sample.image.suffix.lower() != ".png" or not (folder_suffixes - {".png"}):
        return False
    gray = image[..., 0]
    return bool((image == gray[..., None]).all() and np.isin(gray, (0, 255)).all())


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
            f"{sample.mask}: mask of {sample.image} marks {int(mask.sum())} defect pixels but the image is labelled good (0); "
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
    suffixes: dict[Path, set[str]] = {}
    for sample in index.samples:
        suffixes.setdefault(sample.image.parent, set()).add(sample.image.suffix.lower())
    for sample in tqdm(index.samples, desc="validating data", unit="img", disable=not progress):
        try:
            image, mask, _ = load_sample_arrays(sample)
        except DataError as error:
            problems.append(str(error))
            continue
        report.images += 1
        key = f"{image.shape[1]}x{image.shape[0]}"
        report.sizes[key] = report.sizes.get(key, 0) + 1
        if sample.label == 1:
            report.defects += 1
        else:
            report.good += 1
        if looks_like_orphan_mask(sample, image, suffixes[sample.image.parent]):
            report.orphan_masks.append(sample.image)
        if mask is not None:
            report.masks += 1
            if sample.label == 1 and not mask.any():
                report.defects_with_empty_mask.append(sample.image)
        elif sample.label == 1:
            report.defects_without_mask.append(sample.image)
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DataError(f"{index.source}: {len(problems)} bad file(s) in the data set:\n  {listed}{more}")
    return report
