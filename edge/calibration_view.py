"""A camera's calibration as the daemon uses it on every frame: score normalisation, the decision, the
frame's rectification and the AOI at model input size.

Decision rule (used by calibration when fitting and by the daemon when deciding):
    defect  <=>  raw score > image_threshold  <=>  normalise(raw) > 0.5
A region is a connected set of anomaly-map pixels > pixel_threshold (inside the AOI) of at least
min_region_area px at the model input resolution. Reading and writing the file is `edge.calibration_file`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import numpy as np

from onen.edge.bundle import ScoreNormalisation
from onen.edge.errors import OnenError
from onen.edge.images import read_mask, resize_mask
from onen.edge.rectify import Rectification


class CalibrationError(OnenError):
    """A calibration file that is unreadable, malformed, or made for another bundle."""


def check_normalisation(norm: ScoreNormalisation, source: str) -> ScoreNormalisation:
    """The three raw points must be finite and strictly increasing, else the mapping is not a function."""
    values = (norm.raw_low, norm.raw_threshold, norm.raw_high)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        raise CalibrationError(f"{source}: raw_low, raw_threshold, raw_high must be numbers, got {values}")
    if not norm.raw_low < norm.raw_threshold < norm.raw_high:
        raise CalibrationError(f"{source}: expected raw_low < raw_threshold < raw_high, got {values}")
    return norm


@overload
def normalise_score(norm: ScoreNormalisation, raw: float) -> float: ...
@overload
def normalise_score(norm: ScoreNormalisation, raw: np.ndarray) -> np.ndarray: ...
def normalise_score(norm: ScoreNormalisation, raw: float | np.ndarray) -> float | np.ndarray:
    """Piecewise linear: raw_low -> 0, raw_threshold -> 0.5, raw_high -> 1, clipped to 0..1."""
    result = np.interp(raw, [norm.raw_low, norm.raw_threshold, norm.raw_high], [0.0, 0.5, 1.0])
    return float(result) if np.ndim(result) == 0 else result


@dataclass
class CameraCalibration:
    """What the daemon needs to turn one camera's model outputs into a verdict and regions."""

    camera: str
    bundle_sha256: str  # sha256 of the bundle's model.onnx
    image_threshold: float  # on the raw model score
    pixel_threshold: float  # on the anomaly map (0..1)
    min_region_area: int  # px at model input resolution
    normalisation: ScoreNormalisation
    localisation: str = "regions"  # "regions" | "off": calibration found the model cannot localise here
    aoi: Path | None = None  # PNG mask at camera resolution (before rectification)
    rectification: Rectification | None = None
    bundle_name: str = ""
    bundle_version: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    counts: dict[str, int] = field(default_factory=dict)  # images used: good, defect
    statistics: dict[str, Any] = field(default_factory=dict)  # target FRR, confidence, bounds (informational)
    source_path: Path | None = None
    _aoi_mask: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _aoi_cache: dict[tuple[int, int], np.ndarray | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # --- used per frame by the daemon -------------------------------------------------------------
    @overload
    def normalise(self, raw: float) -> float: ...
    @overload
    def normalise(self, raw: np.ndarray) -> np.ndarray: ...
    def normalise(self, raw: float | np.ndarray) -> float | np.ndarray:
        """Published score: 0..1 with the decision threshold at 0.5."""
        return normalise_score(self.normalisation, raw)

    def is_defect(self, raw: float) -> bool:
        return float(raw) > self.image_threshold

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        """The camera frame as the model must see it (rectified when configured); resize happens after."""
        if self._aoi_mask is not None and frame_rgb.shape[:2] != self._aoi_mask.shape:
            raise CalibrationError(
                f"{self.aoi}: AOI is {self._aoi_mask.shape[1]}x{self._aoi_mask.shape[0]} but camera {self.camera!r} "
                f"delivers {frame_rgb.shape[1]}x{frame_rgb.shape[0]} frames; the AOI must have the camera's resolution"
            )
        if self.rectification is None:
            return frame_rgb
        height, width = frame_rgb.shape[:2]
        if any(not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5) for x, y in self.rectification.corners):
            raise CalibrationError(
                f"{self.source_path or 'calibration'}: rectification corners "
                f"{[list(c) for c in self.rectification.corners]} lie outside "
                f"the {width}x{height} frames of camera {self.camera!r}; was the camera's resolution changed? "
                "recalibrate"
            )
        return self.rectification.apply(frame_rgb)

    def aoi_for_input(self, height: int, width: int) -> np.ndarray | None:
        """The AOI as a bool mask at model input size, rectified like the frames (None = everywhere)."""
        if self._aoi_mask is None:
            return None
        key = (height, width)
        if key not in self._aoi_cache:
            mask = self.rectification.apply_mask(self._aoi_mask) if self.rectification else self._aoi_mask
            self._aoi_cache[key] = resize_mask(mask, height, width)
        return self._aoi_cache[key]

    def load_aoi(self) -> None:
        """Read the AOI mask once (at load time, so a missing file fails before the line starts)."""
        self._aoi_cache = {}
        self._aoi_mask = read_mask(self.aoi) if self.aoi is not None else None
        if self._aoi_mask is not None and not self._aoi_mask.any():
            raise CalibrationError(f"{self.aoi}: AOI mask is empty (all black); nothing would ever be inspected")
