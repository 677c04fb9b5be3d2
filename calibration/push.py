"""Send a calibration to a running station over MQTT, and wait for its answer on the events topic.

Topic `{prefix}/{station}/cmd/{camera}/calibration`, payload from edge.calibration_file.calibration_message
(YAML + AOI). The station checks it (bundle sha256 included) and applies it between frames, announcing
"calibration_updated" or "calibration_rejected" on `{prefix}/{station}/events`.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.calibration_file import calibration_message
from edge.errors import OnenError


class PushError(OnenError):
    """The broker could not be reached or did not take the message."""


@dataclass
class PushOutcome:
    topic: str
    answer: dict | None          # the station's event, None when none came within the wait


def calibration_topic(prefix: str, station: str, camera: str) -> str:
    return f"{prefix}/{station}/cmd/{camera}/calibration"


def push_calibration(yaml_path: Path, station_config: Path, camera: str, wait_s: float = 10.0) -> PushOutcome:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.config import load_config

    config = load_config(station_config)
    if camera not in [c.name for c in config.cameras]:
        raise PushError(f"{station_config}: station {config.station!r} has no camera {camera!r} (cameras: {', '.join(c.name for c in config.cameras)})")
    cfg = config.mqtt
    payload = calibration_message(yaml_path)
    topic = calibration_topic(cfg.prefix, config.station, camera)
    events_topic = f"{cfg.prefix}/{config.station}/events"
    answer: dict = {}
    answered = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(events_topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        try:
            event = json.loads(message.payload)
        except ValueError:
            return
        if str(event.get("kind", "")).startswith("calibration") and (event.get("detail") or {}).get("camera") == camera:
            answer.update(event)
            answered.set()

    # Own client id: reusing the station's would disconnect the daemon.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"onen-calibrate-{config.station}-{os.getpid()}", clean_session=True)
    if cfg.tls is not None:
        client.tls_set(ca_certs=_str(cfg.tls.ca), certfile=_str(cfg.tls.cert), keyfile=_str(cfg.tls.key))
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(cfg.host, cfg.port, keepalive=30)
    except OSError as error:
        raise PushError(f"cannot reach the MQTT broker {cfg.host}:{cfg.port} of station {config.station!r} ({error})") from error
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise PushError(f"MQTT broker {cfg.host}:{cfg.port} did not accept the connection within 10 s")
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            raise PushError(f"MQTT broker {cfg.host}:{cfg.port} did not acknowledge the calibration on {topic}")
        deadline = time.monotonic() + wait_s
        answered.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()
    return PushOutcome(topic, dict(answer) if answered.is_set() else None)


def _str(value) -> str | None:
    return str(value) if value is not None else None
