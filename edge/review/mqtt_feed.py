"""The review process's own MQTT subscriber: station topics -> ReviewState, reconnecting on its own.

A separate client (own client id, subscribe only, never publishes), so the page cannot slow or stop the
station: paho's network thread does nothing but hand each message to the bounded in-memory state.
With `fleet=True` it subscribes to every station under the prefix (a central broker's view).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from onen.edge.review.state import ReviewState

if TYPE_CHECKING:
    from paho.mqtt.client import ConnectFlags, DisconnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from onen.edge.config import MqttConfig

log = logging.getLogger(__name__)


class MqttFeed:
    def __init__(self, mqtt_cfg: MqttConfig, station: str, state: ReviewState, fleet: bool = False) -> None:
        self.cfg = mqtt_cfg
        self.state = state
        self.topic_filter = f"{mqtt_cfg.prefix}/{'+' if fleet else station}/#"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"onen-review-{station}-{os.getpid()}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        tls = getattr(mqtt_cfg, "tls", None)
        if tls is not None:
            self.client.tls_set(
                ca_certs=_str(getattr(tls, "ca", None)),
                certfile=_str(getattr(tls, "cert", None)),
                keyfile=_str(getattr(tls, "key", None)),
            )
            if getattr(tls, "insecure", False):
                self.client.tls_insecure_set(True)
        if getattr(mqtt_cfg, "username", None):
            self.client.username_pw_set(mqtt_cfg.username, getattr(mqtt_cfg, "password", None))
        self.client.reconnect_delay_set(min_delay=0.5, max_delay=5)  # type: ignore[arg-type]  # paho annotates int; it sleeps any float
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda client, userdata, message: self.state.apply(message.topic, message.payload)

    def start(self) -> None:
        self.client.connect_async(
            self.cfg.host, int(self.cfg.port), keepalive=int(getattr(self.cfg, "keepalive_s", 30))
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("review: broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        client.subscribe(self.topic_filter, qos=0)
        self.state.set_broker(True)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        log.warning("review: lost the broker %s:%s (%s)", self.cfg.host, self.cfg.port, reason_code)
        self.state.set_broker(False)


def _str(value: object) -> str | None:
    return None if value is None else str(value)
