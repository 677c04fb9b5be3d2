"""The station's reported state: what it serves right now, retained on `{prefix}/{station}/state`.

`onen fleet status` and `onen fleet apply` compare it with the desired state of a fleet file. It is
retained (and republished on every reconnect), so a central broker answers for every station at once,
the last word of an offline one included. Per model: name, version, sha256 of `model.onnx`, backend.
Per camera: its model and the calibration it serves, as the calibration store's version name
(`<NNNN>-<sha12>`, sha12 of the stored YAML and AOI) when that version was made for the serving model,
else null (the bundle's default thresholds or the engineer's file of the station YAML).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from onen.edge.calibration_store import CalibrationStore

if TYPE_CHECKING:
    from onen.edge.daemon import Daemon

STATE_SCHEMA = "onen.station-state/1"


def station_state(daemon: Daemon) -> dict[str, Any]:
    """The retained state message of a running daemon."""
    store = daemon.commands.calibrations if daemon.commands is not None else None
    cameras = {}
    for camera_cfg in daemon.config.cameras:
        info = daemon.model_infos[camera_cfg.model]
        cameras[camera_cfg.name] = {
            "model": camera_cfg.model,
            "calibration": _serving_calibration(store, camera_cfg.name, info.sha256),
        }
    return {
        "schema": STATE_SCHEMA,
        "station": daemon.config.station,
        "run_id": daemon.run_id,
        "at": time.time(),
        "models": {name: info.to_dict() for name, info in daemon.model_infos.items()},
        "cameras": cameras,
    }


def _serving_calibration(store: CalibrationStore | None, camera: str, model_sha256: str) -> str | None:
    current = store.current(camera) if store is not None else None
    if current is None:
        return None
    try:
        return current.name if CalibrationStore.model_sha_of(current) == model_sha256 else None
    except (OSError, KeyError, TypeError, ValueError):
        return None
