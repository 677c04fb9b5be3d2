"""The torch Dataset every trainer and evaluator reads: images at model input size with masks and AOI.

Resizing is `edge.images.resize_to_input`, the same call the edge makes, so training never sees pixels
prepared differently from production. Random choices (synthetic defects, flips) come from an rng seeded
by (seed, epoch, index): a run is reproducible, and `set_epoch` gives each epoch fresh defects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from onen.edge.errors import DataError
from onen.train.data.loading import load_resized, shared_aoi_at
from onen.train.data.sample import Sample
from onen.train.data.synthetic import SyntheticDefects
from onen.train.repeatability import add_sensor_noise

SYNTHETIC_CLASS_INDEX = -1  # synthetic defects have no real class; classifier losses ignore -1
MIN_OUTSIDE_PIXELS = 64  # an AOI that leaves less outside gets no outside marks


class InspectionDataset(Dataset):
    """Items: image uint8 [H,W,3], mask float32 [H,W], has_mask, aoi float32 [H,W], label, class_index,
    synthetic (some pixels were generated), path. `has_mask` is True for good images too (their mask is known to be
    empty) and False for
    a defect whose mask is missing or empty (no pixel target for it)."""

    def __init__(
        self,
        samples: list[Sample],
        class_names: list[str],
        height: int,
        width: int,
        aoi: Path | None = None,
        synthetic: SyntheticDefects | None = None,
        synthetic_probability: float = 0.5,
        augment: bool = False,
        seed: int = 0,
        cache: bool = False,
        outside_marks: SyntheticDefects | None = None,
        outside_probability: float = 0.0,
        outside_in_mask: bool = False,
        sensor_noise: float = 0.0,
    ):
        """outside_marks: with outside_probability, a synthetic mark is also pasted outside the AOI of an image that has
        an outside; the label and mask stay as they are, because outside the AOI a mark is not a defect (seed 001's
        zipper relabelling, made from the AOI alone). outside_in_mask: the mask also holds those marks (GRD-Net's ROI
        term, train.losses_grdnet, decides itself what a mark outside the AOI counts for); the label stays.
        sensor_noise: each item gets train.repeatability's sensor noise with a sigma drawn from 0 to this many grey
        levels, so the model learns that the camera's own noise is not a defect."""
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.height, self.width = int(height), int(width)
        self.synthetic = synthetic
        self.synthetic_probability = float(synthetic_probability)
        self.augment = augment
        self.outside_marks = outside_marks
        self.outside_probability = float(outside_probability)
        self.outside_in_mask = outside_in_mask
        self.sensor_noise = float(sensor_noise)
        self.seed = int(seed)
        self.epoch = 0
        self.cache: dict[int, tuple] | None = {} if cache else None
        self.aoi_path = Path(aoi) if aoi is not None else None
        self.shared_aoi = shared_aoi_at(self.aoi_path, self.height, self.width)
        for sample in self.samples:
            if sample.class_name not in self.class_names:
                raise DataError(
                    f"{sample.image}: class '{sample.class_name}' is not one of the model's classes {self.class_names}"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Fresh synthetic defects and flips each epoch, still reproducible."""
        self.epoch = int(epoch)

    def load_resized(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Image uint8 [H,W,3], mask bool [H,W] or None, AOI bool [H,W] at model input size."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image, mask, aoi = load_resized(self.samples[index], self.height, self.width, self.shared_aoi)
        result = (image, mask, aoi)
        if self.cache is not None:
            self.cache[index] = result
        return result

    def item_labels(self, index: int) -> tuple[Sample, int, str, str]:
        """(sample, label, class name, key) of item `index`; the key names the item (the teacher's cache key). An
        item is one image here; a tile view (train.data.tiles) answers per tile."""
        sample = self.samples[index]
        return sample, sample.label, sample.class_name, str(sample.image)

    def __getitem__(self, index: int) -> dict:
        sample, label, class_name, key = self.item_labels(index)
        image, mask, aoi = self.load_resized(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        class_index = self.class_names.index(class_name)
        # a good image's mask is known (empty); a defect's only when it marks something (4 MT_Uneven masks are empty)
        has_mask = label == 0 or (mask is not None and bool(mask.any()))
        mask = mask if mask is not None else np.zeros(image.shape[:2], bool)
        synthetic = False
        # no mark where there is no AOI (a tile outside it): there a mark would not be a defect
        if self.synthetic is not None and label == 0 and aoi.any() and rng.random() < self.synthetic_probability:
            image, mask = self.synthetic.make(image, aoi, rng)
            label, class_index, has_mask, synthetic = 1, SYNTHETIC_CLASS_INDEX, True, True
        if self.outside_marks is not None:
            outside = ~aoi.astype(bool)
            # no draw without an outside: a data set without an AOI keeps the random stream it had without the option
            if outside.sum() >= MIN_OUTSIDE_PIXELS and rng.random() < self.outside_probability:
                image, outside_mask = self.outside_marks.make(image, outside, rng)
                if self.outside_in_mask:
                    mask = mask | outside_mask.astype(bool)
                synthetic = True  # the pixels are generated: not the file's (no teacher cache)
        if self.augment:
            if rng.random() < 0.5:
                image, mask, aoi = image[:, ::-1], mask[:, ::-1], aoi[:, ::-1]
            if rng.random() < 0.5:
                image, mask, aoi = image[::-1], mask[::-1], aoi[::-1]
        if self.sensor_noise > 0:  # drawn last: without it every other draw is what it was
            image = add_sensor_noise(image[None], rng.uniform(0, self.sensor_noise), rng)[0]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)),
            "has_mask": torch.tensor(has_mask),
            "aoi": torch.from_numpy(np.ascontiguousarray(aoi, dtype=np.float32)),
            "label": torch.tensor(label, dtype=torch.int64),
            "class_index": torch.tensor(class_index, dtype=torch.int64),
            "synthetic": torch.tensor(synthetic),
            "path": key,
        }
