"""Check a calibration on fresh images from the line: is the false-reject rate still within its bound?

After installing a calibration (or when lighting, parts or the camera may have drifted), collect new
images of good parts and run them through exactly the daemon's path. If the observed false rejects are
improbable under the stated bound (one-sided exact binomial test), the camera needs recalibrating.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onen.calibration.runner import FrameSource, open_backend, run_source
from onen.calibration.thresholds import RateEstimate
from onen.edge.binomial import binom_cdf
from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import load_calibration
from onen.edge.errors import DataError


@dataclass
class VerifyReport:
    camera: str
    stated_frr_bound: float
    false_reject: RateEstimate
    p_value: float  # P(at least this many false rejects | true FRR = stated bound)
    consistent: bool  # p_value >= alpha
    escape: RateEstimate | None
    calibrated_escape_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["false_reject"] = self.false_reject.to_dict()
        data["escape"] = self.escape.to_dict() if self.escape else None
        return data


def verify_calibration(
    bundle_path: Path,
    calibration_path: Path,
    good: Path,
    defect: Path | None = None,
    backend_kind: str = "auto",
    every: int = 1,
    alpha: float = 0.01,
    confidence: float = 0.95,
) -> VerifyReport:
    bundle = load_bundle(bundle_path)
    calibration = load_calibration(calibration_path, bundle)
    bound = calibration.statistics.get("frr_upper_bound")
    if bound is None:
        raise DataError(
            f"{calibration_path}: has no statistics.frr_upper_bound (not written by `onen calibrate`); nothing to "
            "check against"
        )
    backend = open_backend(bundle, backend_kind)
    try:
        good_run = run_source(backend, calibration, FrameSource(good, every), "good", keep_examples=0, keep_maps=False)
        defect_run = (
            run_source(backend, calibration, FrameSource(defect, every), "defective", keep_examples=0, keep_maps=False)
            if defect
            else None
        )
    finally:
        backend.close()
    rejects = int(sum(calibration.is_defect(s) for s in good_run.scores))
    n = len(good_run)
    p_value = 1.0 if rejects == 0 else 1.0 - binom_cdf(rejects - 1, n, float(bound))
    escape = None
    if defect_run is not None:
        escapes = int(sum(not calibration.is_defect(s) for s in defect_run.scores))
        escape = RateEstimate.of(escapes, len(defect_run), confidence)
    return VerifyReport(
        camera=calibration.camera,
        stated_frr_bound=float(bound),
        false_reject=RateEstimate.of(rejects, n, confidence),
        p_value=float(p_value),
        consistent=p_value >= alpha,
        escape=escape,
        calibrated_escape_rate=calibration.statistics.get("escape_rate"),
    )
