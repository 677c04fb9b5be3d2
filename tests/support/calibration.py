"""A camera calibration file for a bundle, written as `onen calibrate` would, with any key overridden."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_calibration(path: Path, bundle, **override) -> Path:
    data = {
        "camera": "cam1",
        "bundle": {
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
            "model_sha256": bundle.onnx_sha256,
        },
        "image_threshold": 0.3,
        "pixel_threshold": 0.6,
        "min_region_area": 5,
        "normalisation": {"raw_low": 0.01, "raw_threshold": 0.3, "raw_high": 0.9},
        "aoi": None,
        "rectification": None,
    }
    data.update(override)
    path.write_text(yaml.safe_dump(data))
    return path
