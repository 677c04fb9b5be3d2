"""The model page's data: each configured bundle's manifest (identity, training metrics) and each camera's
calibration (its thresholds and promised false-reject bound, or "default thresholds" when it has none).

Read once at start from the station YAML's files; the serving model as seen in results is added by the page.
"""
from __future__ import annotations

import logging

from edge.bundle import load_bundle
from edge.calibration_file import load_calibration

log = logging.getLogger(__name__)


def model_report(config) -> dict:
    models, bundles = {}, {}
    for name, model_cfg in config.models.items():
        try:
            bundle = load_bundle(model_cfg.bundle, verify=False)
        except Exception as error:      # the page still shows the rest; the daemon reports the real failure
            models[name] = {"name": name, "error": f"{model_cfg.bundle}: {error}"}
            continue
        bundles[name] = bundle
        manifest = bundle.manifest
        models[name] = {
            "name": name, "bundle": str(model_cfg.bundle), "model_name": manifest.name, "version": manifest.version,
            "family": manifest.family, "created": manifest.created, "classes": manifest.class_names,
            "sha256": bundle.onnx_sha256, "metrics": manifest.metrics, "training": manifest.training,
            "thresholds": {"image": manifest.thresholds.image},
        }
    cameras = {}
    for camera in config.cameras:
        entry = {"camera": camera.name, "model": camera.model, "default_thresholds": camera.calibration is None}
        bundle = bundles.get(camera.model)
        if camera.calibration is not None and bundle is not None:
            try:
                calibration = load_calibration(camera.calibration, bundle)
                entry.update(file=str(camera.calibration), image_threshold=calibration.image_threshold,
                             pixel_threshold=calibration.pixel_threshold, created=calibration.created,
                             counts=calibration.counts, statistics=calibration.statistics)
            except Exception as error:
                entry.update(file=str(camera.calibration), error=str(error))
        elif bundle is not None:
            entry.update(image_threshold=bundle.manifest.thresholds.image)
        cameras[camera.name] = entry
    return {"station": config.station, "models": models, "cameras": cameras}
