"""Desired vs reported state of a fleet's stations (what `onen fleet status` prints, what `apply` changes).

Desired, per group: the bundle (name, version, sha256 of its `model.onnx`) and for each listed camera the
calibration version the station will keep it as (`<NNNN>-<sha12>`, sha12 as edge.calibration_store computes
it). Reported: the station's retained state (edge.station_state). A station is in sync when its model slot
serves the bundle's sha256 and every listed camera serves that calibration.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import calibration_message
from onen.edge.calibration_store import stored_form
from onen.edge.errors import OnenError
from onen.edge.fleet_config import FleetConfig, GroupConfig
from onen.edge.fleet_link import Reported


class FleetError(OnenError):
    """A fleet file whose bundles or calibrations cannot be sent as they are."""


@dataclass(frozen=True)
class FrrBound:
    """The false-reject rate a camera's calibration promises, and at what confidence."""

    rate: float
    confidence: float


@dataclass(frozen=True)
class DesiredCalibration:
    camera: str
    sha12: str
    message: bytes
    bound: FrrBound | None


@dataclass
class DesiredGroup:
    name: str
    model: str | None  # the stations' model slot; None: their only one
    bundle_name: str
    version: str
    sha256: str
    payload: bytes  # the bundle as .tar bytes, signed when the fleet has a signing key
    signed: str
    calibrations: dict[str, DesiredCalibration] = field(default_factory=dict)


def prepare_group(name: str, group: GroupConfig, signing_key: Path | None) -> DesiredGroup:
    """Read, check and pack a group's bundle and calibrations once, for every station of the group."""
    from onen.edge.commands.push import bundle_payload
    from onen.edge.updates import unpack_into

    if group.bundle.is_dir():
        bundle = load_bundle(group.bundle)
    else:
        with tempfile.TemporaryDirectory(prefix="onen-fleet-") as temporary:
            bundle = load_bundle(unpack_into(Path(temporary), path=group.bundle.resolve()))
    payload, signed = bundle_payload(group.bundle, signing_key)
    desired = DesiredGroup(
        name, group.model, bundle.manifest.name, str(bundle.manifest.version), bundle.onnx_sha256, payload, signed
    )
    for camera, path in group.calibrations.items():
        desired.calibrations[camera] = _calibration(camera, path, bundle.onnx_sha256, name)
    return desired


def _calibration(camera: str, path: Path, model_sha256: str, group: str) -> DesiredCalibration:
    message = calibration_message(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise FleetError(f"{path}: not a calibration file (group {group!r}, camera {camera!r})")
    made_for = (data.get("bundle") or {}).get("model_sha256") if isinstance(data.get("bundle"), dict) else None
    if made_for != model_sha256:
        raise FleetError(
            f"{path}: key 'bundle.model_sha256' is {str(made_for)[:12]}..., but group {group!r} serves "
            f"{model_sha256[:12]}... (calibrate the camera for the group's bundle)"
        )
    if data.get("camera") != camera:
        raise FleetError(f"{path}: key 'camera' is {data.get('camera')!r}, but the fleet file lists it for {camera!r}")
    aoi = data.get("aoi")
    aoi_bytes = None
    if aoi:
        aoi_path = Path(aoi) if Path(aoi).is_absolute() else path.parent / aoi
        aoi_bytes = aoi_path.read_bytes()
    _, sha12 = stored_form(data, aoi_bytes)
    statistics: dict[str, Any] = data["statistics"] if isinstance(data.get("statistics"), dict) else {}
    rate = statistics.get("target_frr")
    bound = (
        FrrBound(float(rate), float(statistics.get("confidence", 0.95)))
        if isinstance(rate, (int, float)) and not isinstance(rate, bool)
        else None
    )
    return DesiredCalibration(camera, sha12, message, bound)


# ---- comparing ------------------------------------------------------------------------------------------------
@dataclass
class StationView:
    """One station's row of `onen fleet status`."""

    station: str
    group: str
    availability: str | None
    link: str | None
    model_slot: str | None
    desired_model: str
    reported_model: str | None
    calibrations: dict[str, tuple[str, str | None]]  # camera -> (desired version suffix, reported version)
    needs_model: bool
    needs_calibration: list[str]
    problem: str | None = None

    @property
    def verdict(self) -> str:
        if self.problem:
            return self.problem
        if self.needs_model:
            return "model differs"
        if self.needs_calibration:
            return "calibration differs: " + ", ".join(self.needs_calibration)
        return "in sync"

    def to_dict(self) -> dict[str, Any]:
        return {
            "station": self.station,
            "group": self.group,
            "availability": self.availability,
            "link": self.link,
            "model": self.model_slot,
            "desired_model": self.desired_model,
            "reported_model": self.reported_model,
            "calibrations": {c: {"desired": d, "reported": r} for c, (d, r) in self.calibrations.items()},
            "verdict": self.verdict,
        }


def model_slot(group: DesiredGroup, state: dict[str, Any] | None) -> str | None:
    if group.model is not None:
        return group.model
    models = list((state or {}).get("models") or {})
    return models[0] if len(models) == 1 else None


def view(station: str, group: DesiredGroup, reported: Reported | None) -> StationView:
    state = reported.state if reported is not None else None
    slot = model_slot(group, state)
    desired = f"{group.bundle_name} {group.version} ({group.sha256[:12]})"
    models: dict[str, Any] = (state or {}).get("models") or {}
    served = models.get(slot) if slot else None
    reported_model = f"{served['name']} {served['version']} ({str(served['sha256'])[:12]})" if served else None
    cameras: dict[str, Any] = (state or {}).get("cameras") or {}
    calibrations, stale = {}, []
    for camera, wanted in group.calibrations.items():
        have = (cameras.get(camera) or {}).get("calibration")
        calibrations[camera] = (wanted.sha12, have)
        if not (isinstance(have, str) and have.endswith("-" + wanted.sha12)):
            stale.append(camera)
    problem = None
    if state is None:
        problem = "no report (no retained state on the central broker)"
    elif slot is None:
        problem = "several models: name one in the group's 'model'"
    elif served is None:
        problem = f"serves no model {slot!r}"
    else:
        missing = [c for c in group.calibrations if c not in cameras]
        if missing:
            problem = f"has no camera {', '.join(missing)}"
    needs_model = served is None or served.get("sha256") != group.sha256
    return StationView(
        station,
        group.name,
        reported.availability if reported else None,
        reported.link if reported else None,
        slot,
        desired,
        reported_model,
        calibrations,
        needs_model,
        stale,
        problem,
    )


def views(config: FleetConfig, groups: dict[str, DesiredGroup], reported: dict[str, Reported]) -> list[StationView]:
    return [view(s, groups[entry.group], reported.get(s)) for s, entry in config.stations.items()]


def format_views(rows: list[StationView]) -> str:
    """A table: station, group, online/link, desired vs reported model, calibrations, verdict."""
    lines = []
    for row in rows:
        link = {"1": "link up", "0": "link down"}.get(row.link or "", "link ?")
        lines.append(
            f"{row.station:<16} {row.group:<12} {row.availability or '?':<8} {link:<10} "
            f"desired {row.desired_model}  reported {row.reported_model or '-'}  -> {row.verdict}"
        )
        for camera, (wanted, have) in row.calibrations.items():
            lines.append(f"{'':<16}   camera {camera}: calibration desired *-{wanted}, reported {have or '-'}")
    return "\n".join(lines)
