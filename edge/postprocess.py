"""From the model's three outputs to a verdict (pre-processing lives in edge.preprocess).

The model answers three questions in one call (score, anomaly map, class logits); this module turns
those raw outputs into what a line needs: a calibrated 0..1 score with the decision at 0.5, a verdict,
the most likely defect class, and defect regions in *frame* pixels, counted only inside the camera's
area of interest (AOI). The image score itself is the model's (calibration thresholds were measured
on it), the AOI decides where regions count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from onen.edge.backends.base import ModelOutputs
from onen.edge.bundle import Manifest
from onen.edge.preprocess import Rectifier
from onen.edge.regions import Region, apply_aoi, find_regions

DECISION = 0.5  # published threshold: a calibrated score above 0.5 is a defect


class Calibration(Rectifier, Protocol):
    """What post-processing needs from edge.calibration_view.CameraCalibration (the pipeline hands the same
    object to pre-processing, hence a Rectifier too)."""

    pixel_threshold: float
    min_region_area: int
    localisation: str  # "regions" | "off" (no regions reported)

    def normalise(self, raw: float) -> float: ...

    def is_defect(self, raw: float) -> bool: ...

    def aoi_for_input(self, height: int, width: int) -> np.ndarray | None: ...


@dataclass
class Inspection:
    """The post-processed answer for one frame."""

    raw_score: float
    score: float  # calibrated, 0..1
    verdict: str  # "ok" | "defect"
    class_name: str
    class_probability: float | None
    regions: list[Region]  # frame coordinates
    anomaly_map: np.ndarray = field(repr=False)  # model input resolution, AOI applied
    frame_hw: tuple[int, int] = (0, 0)
    threshold: float = DECISION
    localisation: str = "regions"  # "off": the calibration found the model cannot localise, regions stay empty

    @property
    def is_defect(self) -> bool:
        return self.verdict == "defect"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum()
    return probabilities


class PostProcessor:
    """Per camera: the calibration, the AOI and the bundle's class names, applied to one frame at a time."""

    def __init__(self, manifest: Manifest, calibration: Calibration):
        self.manifest = manifest
        self.calibration = calibration

    def classify(self, logits: np.ndarray, is_defect: bool) -> tuple[str, float | None]:
        """Best defect class for a defect, 'good' for an ok part. No head (C == 1), or a head trained without
        class labels (its names were never learnt), gives 'defect' / 'good' and no probability."""
        names = self.manifest.class_names
        if len(logits) <= 1 or not self.manifest.classes_supervised:
            return ("defect" if is_defect else "good"), None
        probabilities = softmax(logits)
        if not is_defect:
            return names[0], float(probabilities[0])
        best = int(np.argmax(probabilities[1:])) + 1
        return names[best], float(probabilities[best])

    def __call__(self, outputs: ModelOutputs, index: int, frame_hw: tuple[int, int]) -> Inspection:
        raw = float(outputs.score[index])
        score = float(np.clip(self.calibration.normalise(raw), 0.0, 1.0))
        is_defect = bool(self.calibration.is_defect(raw))  # raw > image threshold <=> score > 0.5
        heat = outputs.anomaly_map[index, 0]
        heat = apply_aoi(heat, self.calibration.aoi_for_input(*heat.shape))
        localisation = self.calibration.localisation
        regions = []
        if localisation == "regions":
            regions = find_regions(
                heat, self.calibration.pixel_threshold, max(1, int(self.calibration.min_region_area))
            )
            sy, sx = frame_hw[0] / heat.shape[0], frame_hw[1] / heat.shape[1]
            regions = [_clip_region(r.scaled(sx, sy), frame_hw) for r in regions]
        class_name, probability = self.classify(outputs.class_logits[index], is_defect)
        return Inspection(
            raw,
            score,
            "defect" if is_defect else "ok",
            class_name,
            probability,
            regions,
            heat,
            frame_hw,
            localisation=localisation,
        )


def _clip_region(region: Region, frame_hw: tuple[int, int]) -> Region:
    """Rounding when scaling up may push a box one pixel past the frame; keep it inside."""
    height, width = frame_hw
    x, y, w, h = region.bbox
    x, y = min(max(0, x), width - 1), min(max(0, y), height - 1)
    region.bbox = [x, y, max(1, min(w, width - x)), max(1, min(h, height - y))]
    region.peak = float(min(max(region.peak, 0.0), 1.0))
    if region.polygon:
        region.polygon = [[min(max(0, px), width - 1), min(max(0, py), height - 1)] for px, py in region.polygon]
    return region
