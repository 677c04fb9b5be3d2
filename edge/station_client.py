"""Talk to a running station as the maintenance team does: publish one command, wait for its answer event.

Used by `onen push`. The station answers every command on `{prefix}/{station}/events`; the answer is
recognised by the request id the command carried. The client uses the station config's broker settings
(TLS, user/password) but its own client id: reusing the station's would disconnect the daemon.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onen.edge.errors import OnenError

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from onen.edge.config import StationConfig


class StationUnreachable(OnenError):
    """The broker could not be reached or did not take the command."""


def send_command(
    config: StationConfig, topic: str, payload: bytes, answered: Callable[[dict[str, Any]], bool], wait_s: float
) -> dict[str, Any] | None:
    """Publish `payload` on `topic` (QoS 1) and return the first event for which `answered(event)` is true,
    or None when none came within `wait_s` seconds."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from onen.edge.publisher import apply_security

    cfg = config.mqtt
    events_topic = f"{cfg.prefix}/{config.station}/events"
    answer: dict[str, Any] = {}
    got_answer, subscribed = threading.Event(), threading.Event()

    def on_connect(
        client: Client, userdata: Any, flags: ConnectFlags, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(events_topic, qos=1)

    def on_message(client: Client, userdata: Any, message: MQTTMessage) -> None:
        try:
            event = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(event, dict) and not got_answer.is_set() and answered(event):
            answer.update(event)
            got_answer.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"onen-push-{config.station}-{os.getpid()}", clean_session=True
    )
    apply_security(client, cfg)
    client.on_connect, client.on_message = on_connect, on_message
    client.on_subscribe = lambda *args: subscribed.set()
    try:
        client.connect(cfg.host, cfg.port, keepalive=30)
    except OSError as error:
        raise StationUnreachable(
            f"cannot reach the MQTT broker {cfg.host}:{cfg.port} of station {config.station!r} ({error})"
        ) from error
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise StationUnreachable(f"MQTT broker {cfg.host}:{cfg.port} did not accept the connection within 10 s")
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=max(10.0, len(payload) / 1e6))  # a few MB take a moment on a slow link
        if not info.is_published():
            raise StationUnreachable(f"MQTT broker {cfg.host}:{cfg.port} did not acknowledge the command on {topic}")
        got_answer.wait(wait_s)
    finally:
        client.loop_stop()
        client.disconnect()
    return dict(answer) if got_answer.is_set() else None
