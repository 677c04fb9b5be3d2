"""From a camera frame to the model's input: rectify (when the calibration has corners), then resize.

Kept apart from post-processing (which reads the model's outputs) so each has one job; the same
steps run here, in calibration and in the parity check, so the model sees the same pixels everywhere.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from onen.edge.bundle import Manifest
from onen.edge.images import prepare_batch


class Rectifier(Protocol):
    """What pre-processing needs from edge.calibration_view.CameraCalibration."""

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray: ...


class PreProcessor:
    """Per camera: the calibration's rectification and the bundle's input size."""

    def __init__(self, manifest: Manifest, calibration: Rectifier):
        self.manifest = manifest
        self.calibration = calibration

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Rectify the frame (when the calibration has corners); resizing comes in to_batch."""
        return self.calibration.prepare(frame_rgb)

    def to_batch(self, frames_rgb: list[np.ndarray]) -> np.ndarray:
        return prepare_batch(frames_rgb, self.manifest.input_height, self.manifest.input_width)
