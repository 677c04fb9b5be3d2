"""Masks and images that do not pair up: what `onen data check` flags besides unreadable files.

An orphan mask is a mask whose image is missing. Readers that take `<stem>.png` beside `<stem>.jpg` as the
mask (magnetic tile) see a lone `<stem>.png` as an image, so it would silently train as a part: a
single-channel, black-and-white PNG in a folder whose other images carry such masks is flagged as one, as is
any unreferenced file in a masks/ (ground_truth/) folder. Defect images without a mask are listed too:
they train the image score but teach nothing about where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from onen.train.data.readers import MASK_FOLDER_NAMES
from onen.train.data.sample import DataIndex

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass
class Completeness:
    orphan_masks: list[str] = field(default_factory=list)
    defects_without_mask: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"orphan_masks": self.orphan_masks, "defects_without_mask": self.defects_without_mask}


def _looks_like_mask(path: Path) -> bool:
    """A binary (only black and white) single-channel PNG."""
    if path.suffix.lower() != ".png":
        return False
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image is not None and image.ndim == 2 and bool(np.isin(np.unique(image), (0, 255)).all())


def check_completeness(index: DataIndex) -> Completeness:
    result = Completeness()
    referenced = {Path(s.mask).resolve() for s in index.samples if s.mask is not None}
    folders_with_side_masks = {
        Path(s.image).parent
        for s in index.samples
        if s.mask is not None and Path(s.mask).parent == Path(s.image).parent
    }
    for sample in index.samples:
        image = Path(sample.image)
        if image.parent in folders_with_side_masks and sample.mask is None and _looks_like_mask(image):
            result.orphan_masks.append(str(image))
        elif sample.label == 1 and sample.mask is None:
            result.defects_without_mask.append(str(image))
    root = Path(index.source)
    root = root if root.is_dir() else root.parent
    for folder in (p for p in root.rglob("*") if p.is_dir() and p.name.lower() in MASK_FOLDER_NAMES):
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and file.resolve() not in referenced:
                result.orphan_masks.append(str(file))
    return result
