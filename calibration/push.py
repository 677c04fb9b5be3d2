"""Send a calibration to a running station over MQTT, and wait for its answer on the events topic.

Topic `{prefix}/{station}/cmd/{camera}/calibration`, payload from edge.calibration_file.calibration_message
(YAML + AOI). The station checks it (bundle sha256 included) and applies it between frames, announcing
"calibration_updated" or "calibration_rejected" on `{prefix}/{station}/events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onen.edge.calibration_file import calibration_message, calibration_rollback_message
from onen.edge.errors import OnenError
from onen.edge.station_client import send_command


@dataclass
class PushOutcome:
    topic: str
    answer: dict[str, Any] | None  # the station's event, None when none came within the wait


def calibration_topic(prefix: str, station: str, camera: str) -> str:
    return f"{prefix}/{station}/cmd/{camera}/calibration"


def push_calibration(yaml_path: Path | None, station_config: Path, camera: str, wait_s: float = 10.0) -> PushOutcome:
    """Send `yaml_path` (None: a rollback to the camera's previous calibration) and wait for the answer."""
    from onen.edge.config import load_config

    config = load_config(station_config)
    if camera not in [c.name for c in config.cameras]:
        raise OnenError(
            f"{station_config}: station {config.station!r} has no camera {camera!r} (cameras: "
            f"{', '.join(c.name for c in config.cameras)})"
        )
    topic = calibration_topic(config.mqtt.prefix, config.station, camera)

    def is_answer(event: dict[str, Any]) -> bool:
        return (
            str(event.get("kind", "")).startswith("calibration") and (event.get("detail") or {}).get("camera") == camera
        )

    payload = calibration_rollback_message(camera) if yaml_path is None else calibration_message(yaml_path)
    answer = send_command(config, topic, payload, is_answer, wait_s)
    return PushOutcome(topic, answer)
