"""A camera's calibration file: thresholds, score normalisation, AOI and rectification, for one bundle.

`onen calibrate` writes it, the daemon reads it with `load_calibration(path, bundle)`. A calibration
belongs to one model: the file records the sha256 of the bundle's `model.onnx` (the graph that produced
the scores it was fitted on; we do not use the manifest's own hash, which also changes when only metadata
such as metrics or notes is rewritten and the scores stay the same) and loading refuses any other bundle.

What the file holds is used per frame through `edge.calibration_view.CameraCalibration`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from onen.edge.bundle import MODEL, Bundle, ScoreNormalisation
from onen.edge.calibration_view import CalibrationError, CameraCalibration, check_normalisation
from onen.edge.command_message import CommandError, load_command
from onen.edge.errors import BundleError, OnenError
from onen.edge.rectify import Rectification

FORMAT_VERSION = 1
LOCALISATION = ("regions", "off")  # "off": results carry no regions (the model does not localise on this camera)


def calibration_to_dict(calibration: CameraCalibration, relative_to: Path | None = None) -> dict[str, Any]:
    """The file form of a calibration (AOI path relative to the file's folder when it can be)."""
    aoi = None
    if calibration.aoi is not None:
        aoi = str(calibration.aoi)
        if relative_to is not None:
            try:
                aoi = str(Path(calibration.aoi).resolve().relative_to(relative_to.resolve()))
            except ValueError:
                aoi = str(Path(calibration.aoi).resolve())
    return {
        "format_version": FORMAT_VERSION,
        "camera": calibration.camera,
        "bundle": {
            "name": calibration.bundle_name,
            "version": calibration.bundle_version,
            "model_sha256": calibration.bundle_sha256,
        },
        "created": calibration.created,
        "image_threshold": float(calibration.image_threshold),
        "pixel_threshold": float(calibration.pixel_threshold),
        "min_region_area": int(calibration.min_region_area),
        "localisation": calibration.localisation,
        "normalisation": {
            "raw_low": float(calibration.normalisation.raw_low),
            "raw_threshold": float(calibration.normalisation.raw_threshold),
            "raw_high": float(calibration.normalisation.raw_high),
        },
        "aoi": aoi,
        "rectification": calibration.rectification.to_dict() if calibration.rectification else None,
        "counts": dict(calibration.counts),
        "statistics": _plain(calibration.statistics),
    }


def save_calibration(calibration: CameraCalibration, path: str | Path) -> Path:
    """Write the calibration YAML (with a header naming camera and bundle); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# onen camera calibration for {calibration.camera!r}; "
        f"made for bundle {calibration.bundle_name} {calibration.bundle_version}\n"
    )
    path.write_text(header + yaml.safe_dump(calibration_to_dict(calibration, relative_to=path.parent), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python, so the YAML stays readable by safe_load."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


_REQUIRED = ("camera", "bundle", "image_threshold", "pixel_threshold", "min_region_area", "normalisation")
_OPTIONAL = ("format_version", "created", "localisation", "aoi", "rectification", "counts", "statistics")


def _number(data: dict[str, Any], key: str, source: str, low: float | None = None, high: float | None = None) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise CalibrationError(f"{source}: key '{key}': expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise CalibrationError(f"{source}: key '{key}': expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def load_calibration(path: str | Path, bundle: Bundle) -> CameraCalibration:
    """Read and check a calibration YAML; refuse it when it was made for another bundle's model."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file does not exist (make one with `onen calibrate`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CalibrationError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from error
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a mapping of calibration keys, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CalibrationError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = [k for k in data if k not in _REQUIRED + _OPTIONAL]
    if unknown:
        raise CalibrationError(
            f"{path}: unknown key(s) {', '.join(map(str, unknown))}; expected {', '.join(_REQUIRED + _OPTIONAL)}"
        )
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CalibrationError(
            f"{path}: key 'format_version': this software reads version {FORMAT_VERSION}, got {version!r}"
        )
    if not isinstance(data["camera"], str) or not data["camera"]:
        raise CalibrationError(f"{path}: key 'camera': expected the camera name, got {data['camera']!r}")

    made_for = data["bundle"]
    if not isinstance(made_for, dict) or not isinstance(made_for.get("model_sha256"), str):
        raise CalibrationError(
            f"{path}: key 'bundle': expected a mapping with name, version and model_sha256 (sha256 of {MODEL})"
        )
    if made_for["model_sha256"] != bundle.onnx_sha256:
        raise CalibrationError(
            f"{path}: made for bundle {made_for.get('name')!r} version {made_for.get('version')!r} "
            f"({MODEL} sha256 {made_for['model_sha256'][:12]}...), but the camera runs bundle "
            f"{bundle.manifest.name!r} version {bundle.manifest.version!r} ({MODEL} sha256 "
            f"{bundle.onnx_sha256[:12]}...); "
            f"recalibrate with `onen calibrate --bundle {bundle.path} ...`"
        )

    norm = data["normalisation"]
    if not isinstance(norm, dict) or set(norm) != {"raw_low", "raw_threshold", "raw_high"}:
        raise CalibrationError(f"{path}: key 'normalisation': expected raw_low, raw_threshold, raw_high, got {norm!r}")
    normalisation = check_normalisation(ScoreNormalisation(**norm), f"{path}: key 'normalisation'")
    image_threshold = _number(data, "image_threshold", str(path))
    if abs(image_threshold - normalisation.raw_threshold) > 1e-9:
        raise CalibrationError(
            f"{path}: key 'normalisation.raw_threshold' ({normalisation.raw_threshold}) must equal image_threshold "
            f"({image_threshold})"
        )
    pixel_threshold = _number(data, "pixel_threshold", str(path), 0.0, None)
    min_area = data["min_region_area"]
    if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
        raise CalibrationError(f"{path}: key 'min_region_area': expected a whole number of px >= 1, got {min_area!r}")

    localisation = data.get("localisation", "regions")
    if localisation not in LOCALISATION:
        raise CalibrationError(
            f"{path}: key 'localisation': expected one of {', '.join(LOCALISATION)}, got {localisation!r}"
        )
    aoi = data.get("aoi")
    if aoi is not None:
        if not isinstance(aoi, str):
            raise CalibrationError(f"{path}: key 'aoi': expected a path to a PNG mask, got {aoi!r}")
        aoi = Path(aoi) if Path(aoi).is_absolute() else path.parent / aoi
        if not aoi.is_file():
            raise CalibrationError(f"{path}: key 'aoi': mask file {aoi} does not exist")
    rect = data.get("rectification")
    try:
        rectification = Rectification.from_dict(rect, f"{path}: key 'rectification'") if rect is not None else None
    except OnenError as error:
        raise CalibrationError(f"{path}: key 'rectification': {error}") from error

    for key in ("counts", "statistics"):
        if not isinstance(data.get(key, {}), dict):
            raise CalibrationError(f"{path}: key '{key}': expected a mapping")
    calibration = CameraCalibration(
        camera=data["camera"],
        bundle_sha256=made_for["model_sha256"],
        image_threshold=image_threshold,
        pixel_threshold=pixel_threshold,
        min_region_area=min_area,
        normalisation=normalisation,
        localisation=localisation,
        aoi=aoi,
        rectification=rectification,
        bundle_name=str(made_for.get("name", "")),
        bundle_version=str(made_for.get("version", "")),
        created=str(data.get("created", "")),
        counts=dict(data.get("counts") or {}),
        statistics=dict(data.get("statistics") or {}),
        source_path=path,
    )
    try:
        calibration.load_aoi()
    except OnenError as error:
        raise CalibrationError(f"{path}: key 'aoi': {error}") from error
    return calibration


def from_bundle_defaults(
    bundle: Bundle, camera: str = "", aoi: str | Path | None = None, rectification: Rectification | None = None
) -> CameraCalibration:
    """The bundle's own thresholds, for a camera that names no calibration file (not yet calibrated)."""
    manifest = bundle.manifest
    norm = manifest.score_normalisation
    if abs(norm.raw_threshold - manifest.thresholds.image) > 1e-9:
        # Older manifests may carry a default normalisation; centre it on the bundle's image threshold.
        low, high = (
            min(norm.raw_low, manifest.thresholds.image - 1e-6),
            max(norm.raw_high, manifest.thresholds.image + 1e-6),
        )
        norm = ScoreNormalisation(raw_threshold=manifest.thresholds.image, raw_low=low, raw_high=high)
    source = f"{bundle.path}/manifest.json: score_normalisation"
    try:
        check_normalisation(norm, source)
    except CalibrationError as error:
        raise BundleError(str(error)) from error
    calibration = CameraCalibration(
        camera=camera,
        bundle_sha256=bundle.onnx_sha256,
        image_threshold=manifest.thresholds.image,
        pixel_threshold=manifest.thresholds.pixel,
        min_region_area=max(1, int(manifest.thresholds.min_region_area)),
        normalisation=norm,
        aoi=Path(aoi) if aoi is not None else None,
        rectification=rectification,
        bundle_name=manifest.name,
        bundle_version=manifest.version,
        statistics={"source": "bundle defaults (not calibrated for this camera)"},
    )
    calibration.load_aoi()
    return calibration


# --- sending a new calibration to a running station (MQTT {prefix}/{station}/cmd/{camera}/calibration) ---
MESSAGE_SCHEMA = "onen.calibration/1"


def calibration_message(yaml_path: str | Path) -> bytes:
    """The payload `onen calibrate --push-to` sends: the YAML text plus the AOI PNG it names (base64),
    so the station needs no shared file system."""
    import base64
    import json

    yaml_path = Path(yaml_path)
    text = yaml_path.read_text()
    data = yaml.safe_load(text)
    aoi_name = aoi_b64 = None
    if isinstance(data, dict) and data.get("aoi"):
        aoi_path = Path(data["aoi"]) if Path(data["aoi"]).is_absolute() else yaml_path.parent / data["aoi"]
        if not aoi_path.is_file():
            raise CalibrationError(f"{yaml_path}: key 'aoi': mask file {aoi_path} does not exist")
        aoi_name, aoi_b64 = aoi_path.name, base64.b64encode(aoi_path.read_bytes()).decode("ascii")
    message = {
        "schema": MESSAGE_SCHEMA,
        "camera": data.get("camera") if isinstance(data, dict) else None,
        "file_name": yaml_path.name,
        "calibration_yaml": text,
        "aoi_name": aoi_name,
        "aoi_png_base64": aoi_b64,
    }
    return json.dumps(message).encode()


ROLLBACK_SCHEMA = "onen.calibration-rollback/1"


def read_calibration_message(payload: bytes, camera: str) -> tuple[dict[str, Any], bytes | None] | None:
    """Station side: the calibration mapping and AOI bytes a push carries (None for a rollback request);
    edge.calibration_store.CalibrationStore.add does the checks against the model and keeps it."""
    import base64
    import binascii

    def refuse(reason: str) -> CalibrationError:
        return CalibrationError(f"calibration pushed for camera {camera!r}: {reason}")

    try:
        message = load_command(
            payload, (MESSAGE_SCHEMA, ROLLBACK_SCHEMA), text_fields=("camera", "calibration_yaml", "aoi_png_base64")
        )
    except CommandError as error:
        raise refuse(str(error)) from error
    if message["schema"] == ROLLBACK_SCHEMA:
        if message.get("camera") != camera:
            raise refuse(f"the rollback names camera {message.get('camera')!r}")
        return None
    if message.get("camera") != camera:
        raise refuse(f"it was made for camera {message.get('camera')!r}")
    if not isinstance(message.get("calibration_yaml"), str):
        raise refuse("'calibration_yaml' must be the calibration file's text")
    try:
        data = yaml.safe_load(message["calibration_yaml"])
    except yaml.YAMLError as error:
        raise refuse(f"invalid YAML ({error})") from error
    if not isinstance(data, dict):
        raise refuse("'calibration_yaml' is not a calibration mapping")
    aoi_bytes = None
    if message.get("aoi_png_base64"):
        try:
            aoi_bytes = base64.b64decode(message["aoi_png_base64"], validate=True)
        except (binascii.Error, TypeError) as error:
            raise refuse("'aoi_png_base64' is not base64") from error
    elif data.get("aoi") is not None and not Path(str(data["aoi"])).is_absolute():
        raise refuse(f"names AOI {data['aoi']!r} but does not carry it")
    return data, aoi_bytes


def calibration_rollback_message(camera: str) -> bytes:
    """The payload `onen push-calibration --rollback` sends: back to the camera's previous calibration."""
    import json

    return json.dumps({"schema": ROLLBACK_SCHEMA, "camera": camera}).encode()
