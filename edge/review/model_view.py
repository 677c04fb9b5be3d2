"""The model page's data: each configured bundle's manifest (identity, training metrics) and each camera's
calibration (its thresholds and promised false-reject bound, or "default thresholds" when it has none).

Read from disk on each request (manifests are small), so a pushed model shows up; with an `updates` section
the current and previous versions of the station's model store are listed too. The serving model as seen in
results is added by the app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import load_calibration
from onen.edge.calibration_store import FILE as CALIBRATION_FILE
from onen.edge.calibration_store import calibration_store_of

if TYPE_CHECKING:
    from onen.edge.bundle import Bundle
    from onen.edge.config import StationConfig

log = logging.getLogger(__name__)


def model_report(config: StationConfig) -> dict[str, Any]:
    models: dict[str, dict[str, Any]] = {}
    bundles: dict[str, Bundle] = {}
    for name, model_cfg in config.models.items():
        try:
            bundle = load_bundle(model_cfg.bundle, verify=False)
        except Exception as error:  # the page still shows the rest; the daemon reports the real failure
            models[name] = {"name": name, "error": f"{model_cfg.bundle}: {error}"}
            continue
        bundles[name] = bundle
        models[name] = {"name": name, **_describe(bundle), "versions": _store_versions(config, name)}
    cameras: dict[str, dict[str, Any]] = {}
    store = calibration_store_of(config)
    for camera in config.cameras:
        served = bundles.get(camera.model)
        # what the station serves: the store's version for this model when one was pushed, else the YAML's file
        version = store.for_model(camera.name, served.onnx_sha256) if served is not None else None
        path = version / CALIBRATION_FILE if version is not None else camera.calibration
        entry: dict[str, Any] = {"camera": camera.name, "model": camera.model, "default_thresholds": path is None}
        if path is not None and served is not None:
            try:
                calibration = load_calibration(path, served)
                entry.update(
                    file=str(path),
                    image_threshold=calibration.image_threshold,
                    pixel_threshold=calibration.pixel_threshold,
                    created=calibration.created,
                    counts=calibration.counts,
                    statistics=calibration.statistics,
                )
            except Exception as error:
                entry.update(file=str(path), error=str(error))
        elif served is not None:
            entry.update(image_threshold=served.manifest.thresholds.image)
        cameras[camera.name] = entry
    return {"station": config.station, "models": models, "cameras": cameras}


def _describe(bundle: Bundle) -> dict[str, Any]:
    manifest = bundle.manifest
    return {
        "bundle": str(bundle.path),
        "model_name": manifest.name,
        "version": manifest.version,
        "family": manifest.family,
        "created": manifest.created,
        "classes": manifest.class_names,
        "sha256": bundle.onnx_sha256,
        "metrics": manifest.metrics,
        "training": manifest.training,
        "thresholds": {"image": manifest.thresholds.image},
    }


def _store_versions(config: StationConfig, model: str) -> dict[str, Any]:
    """Current and previous version in the station's model store (`updates.dir`), when it has one."""
    if config.updates is None:
        return {}
    from onen.edge.updates import ModelStore

    store, versions = ModelStore(config.updates.dir), {}
    for pointer, path in (("current", store.current(model)), ("previous", store.previous(model))):
        if path is None:
            continue
        try:
            described = _describe(load_bundle(path, verify=False))
            versions[pointer] = {k: described[k] for k in ("model_name", "version", "sha256", "created", "metrics")}
        except Exception as error:
            versions[pointer] = {"error": f"{path}: {error}"}
    return versions
