"""Calibrate one camera: run the bundle on its good (and defective) images, fit, write YAML + report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from onen.calibration.normalisation import fit_normalisation
from onen.calibration.pixel import GoodMapStatistics, PixelCalibration
from onen.calibration.report import PICTURES, pictures_skipped, plot_histograms, plot_overlays, plot_rates, write_json
from onen.calibration.runner import FrameSource, RunResult, mask_beside, open_backend, run_source
from onen.calibration.thresholds import (
    OperatingPoint,
    RateEstimate,
    TooFewGoodImages,
    f1_optimal_threshold,
    frr_threshold,
    needed_good_images,
    operating_point,
)
from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import calibration_to_dict, from_bundle_defaults, save_calibration
from onen.edge.calibration_view import CameraCalibration
from onen.edge.errors import DataError
from onen.edge.images import read_mask, resize_mask
from onen.edge.rectify import Rectification


@dataclass
class CalibrationRequest:
    bundle: Path
    camera: str
    good: Path
    out: Path  # the YAML the daemon reads
    defect: Path | None = None
    aoi: Path | None = None
    rectification: Rectification | None = None
    target_frr: float = 0.005
    confidence: float = 0.95
    backend: str = "auto"
    every: int = 1  # video sources: every n-th frame
    batch_size: int = 8
    pixel_margin: float = 0.1

    @property
    def report_dir(self) -> Path:
        return self.out.with_name(self.out.stem + ".report")


@dataclass
class CalibrationOutcome:
    calibration: CameraCalibration
    yaml_path: Path
    report_dir: Path
    report: dict[str, Any]


def calibrate_camera(request: CalibrationRequest) -> CalibrationOutcome:
    need = needed_good_images(request.target_frr, request.confidence)
    if request.out.suffix.lower() not in (".yaml", ".yml"):
        raise DataError(f"--out {request.out}: expected a .yaml file name, e.g. calib/{request.camera}.yaml")
    if request.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {request.batch_size}")
    bundle = load_bundle(request.bundle)
    # A provisional calibration carries the AOI and rectification so frames are prepared like the daemon's.
    provisional = from_bundle_defaults(bundle, request.camera, request.aoi, request.rectification)
    good_source = FrameSource(request.good, every=request.every)
    if not good_source.is_video and len(good_source) < need:  # fail before running the model
        raise TooFewGoodImages(len(good_source), need, request.target_frr, request.confidence, str(request.good))
    defect_source = FrameSource(request.defect, every=request.every) if request.defect else None
    backend = open_backend(bundle, request.backend)
    good_maps = GoodMapStatistics(provisional.aoi_for_input(backend.input_height, backend.input_width))
    try:
        good = run_source(
            backend, provisional, good_source, "good", request.batch_size, keep_maps=False, on_map=good_maps.add
        )
        defect = (
            run_source(backend, provisional, defect_source, "defective", request.batch_size) if defect_source else None
        )
    finally:
        backend.close()

    chosen = frr_threshold(good.scores, request.target_frr, request.confidence)  # raises with the count needed
    defect_scores = defect.scores if defect else None
    at_threshold = operating_point(chosen.threshold, good.scores, defect_scores, request.confidence)
    f1_alternative = None
    if defect is not None:
        f1_alternative = operating_point(
            f1_optimal_threshold(good.scores, defect.scores), good.scores, defect.scores, request.confidence
        )
    defect_masks = (
        _defect_masks(defect, provisional, backend.input_height, backend.input_width)
        if defect and defect_source is not None and not defect_source.is_video
        else None
    )
    pixel = good_maps.fit(request.pixel_margin, defect.maps if defect else None, chosen.rank, defect_masks)
    normalisation = fit_normalisation(chosen.threshold, good.scores, defect_scores)

    counts = {"good": len(good), "defect": len(defect) if defect else 0}
    statistics = {
        "target_frr": request.target_frr,
        "confidence": request.confidence,
        "frr_upper_bound": chosen.frr_upper_bound,
        "frr_expected": chosen.frr_expected,
        "threshold_rank": chosen.rank,
        "escape_rate": at_threshold.escape.rate if at_threshold.escape else None,
        "escape_rate_interval": [at_threshold.escape.low, at_threshold.escape.high] if at_threshold.escape else None,
        "f1_optimal_threshold": f1_alternative.threshold if f1_alternative else None,
        "map_max": pixel.map_max,
        "localisation_reason": pixel.reason or None,
        "good_source": str(request.good),
        "defect_source": str(request.defect) if request.defect else None,
    }
    calibration = CameraCalibration(
        camera=request.camera,
        bundle_sha256=bundle.onnx_sha256,
        image_threshold=chosen.threshold,
        pixel_threshold=pixel.pixel_threshold,
        min_region_area=pixel.min_region_area,
        localisation=pixel.localisation,
        normalisation=normalisation,
        aoi=request.aoi,
        rectification=request.rectification,
        bundle_name=bundle.manifest.name,
        bundle_version=bundle.manifest.version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        counts=counts,
        statistics=statistics,
    )
    yaml_path = save_calibration(calibration, request.out)

    report_dir = request.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    no_pictures = pictures_skipped()
    report = {
        "camera": request.camera,
        "bundle": {
            "path": str(bundle.path),
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
            "model_sha256": bundle.onnx_sha256,
        },
        "backend": backend.describe(),
        "created": calibration.created,
        "calibration_file": str(yaml_path),
        "counts": counts,
        "decision_rule": "defect when raw score > image_threshold (published score > 0.5)",
        "image_threshold": chosen.to_dict(),
        "at_threshold": at_threshold.to_dict(),
        "f1_alternative": f1_alternative.to_dict() if f1_alternative else None,
        "pixel": pixel.to_dict(),
        "normalisation": calibration_to_dict(calibration)["normalisation"],
        "score_summary": {name: _summary(run) for name, run in (("good", good), ("defect", defect)) if run is not None},
        "escape_by_folder": _escape_by_folder(defect, request.defect, chosen.threshold, request.confidence)
        if defect and request.defect is not None
        else {},
        "closest_to_reject_good": [{"name": e.name, "score": e.score} for e in good.highest],
        "closest_to_escape_defect": [{"name": e.name, "score": e.score} for e in defect.lowest] if defect else [],
        "notes": _notes(good_source, defect_source, f1_alternative is not None),
        "warnings": _warnings(chosen.threshold, pixel, at_threshold, good) + ([no_pictures] if no_pictures else []),
        "files": [] if no_pictures else list(PICTURES),
    }
    plot_histograms(
        good.scores,
        defect_scores,
        chosen.threshold,
        f1_alternative.threshold if f1_alternative else None,
        report_dir / "score_hist.png",
    )
    plot_rates(report, report_dir / "rates.png")
    groups = [("good, closest to reject", good.highest)]
    if defect is not None:
        groups += [("defective, closest to escape", defect.lowest), ("defective, highest", defect.highest)]
    plot_overlays(groups, chosen.threshold, pixel.pixel_threshold, pixel.min_region_area, report_dir / "overlays.png")
    write_json(report, report_dir)
    return CalibrationOutcome(calibration, yaml_path, report_dir, report)


def _defect_masks(
    run: RunResult, provisional: CameraCalibration, height: int, width: int
) -> list[np.ndarray | None] | None:
    """Ground-truth masks beside the defect images, rectified and resized like the frames (None: no masks at all)."""
    masks: list[np.ndarray | None] = []
    for name in run.names:
        path = mask_beside(Path(name))
        if path is None:
            masks.append(None)
            continue
        mask = read_mask(path)
        if provisional.rectification is not None:
            mask = provisional.rectification.apply_mask(mask)
        masks.append(resize_mask(mask, height, width))
    return masks if any(m is not None for m in masks) else None


def _escape_by_folder(run: RunResult, root: Path, threshold: float, confidence: float) -> dict[str, dict[str, Any]]:
    """Escape rate per defect sub-folder (usually one per defect class), when the folder has sub-folders."""
    if Path(root).is_file():
        return {}
    groups: dict[str, list[float]] = {}
    for name, score in zip(run.names, run.scores, strict=True):
        folder = Path(name).parent.relative_to(Path(root)).as_posix()
        groups.setdefault(folder, []).append(float(score))
    if len(groups) < 2:
        return {}
    return {
        folder: RateEstimate.of(int(np.sum(np.asarray(scores) <= threshold)), len(scores), confidence).to_dict()
        for folder, scores in sorted(groups.items())
    }


def _summary(run: RunResult) -> dict[str, float]:
    scores = run.scores
    return {
        "min": float(scores.min()),
        "median": float(np.median(scores)),
        "p99": float(np.quantile(scores, 0.99)),
        "max": float(scores.max()),
    }


def _warnings(threshold: float, pixel: PixelCalibration, at_threshold: OperatingPoint, good: RunResult) -> list[str]:
    """Signs that the model does not suit this camera: said plainly, the calibration is still written."""
    warnings = []
    if pixel.localisation == "off":
        warnings.append(pixel.reason)
    if at_threshold.escape is not None and at_threshold.escape.rate > 0.2:
        warnings.append(
            f"{at_threshold.escape.rate:.0%} of the defective images pass at this threshold: the model separates this "
            "camera's good and defective parts poorly; check the AOI, rectification and lighting, or retrain on its "
            "images"
        )
    if threshold >= 1.0 - 1e-6 or float(np.mean(good.scores >= threshold - 1e-9)) > 0.5:
        warnings.append(
            "most good images score at the threshold (saturated scores): the threshold cannot separate parts"
        )
    return warnings


def _notes(good: FrameSource, defect: FrameSource | None, has_f1: bool) -> list[str]:
    notes = [
        "The FRR bound assumes the good images are independent samples of the parts the line will see "
        "(different parts, the lighting and positions of production).",
    ]
    if good.is_video or (defect is not None and defect.is_video):
        notes.append(
            "Video frames of the same part are not independent: use --every to take one frame per part, or the bound "
            "is optimistic."
        )
    if has_f1:
        notes.append(
            "The F1-optimal threshold is fitted on the same images it is scored on and carries no FRR guarantee."
        )
    return notes
