"""One MQTT connection to a fleet's central broker: what the stations report, and commands to them.

It keeps, per station, the retained reported state (`{prefix}/{station}/state`, edge.station_state), the
availability and the bridge's link state, and appends every event (`{prefix}/+/events`) and watched result to
logs that the rollout reads by position. Commands go out at QoS 1 on the station's `cmd/` topics; the central
broker keeps them for a bridge whose link is down (persistent session), so a late station still gets them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onen.edge.station_client import StationUnreachable

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from onen.edge.config import MqttConfig


@dataclass
class Reported:
    """What the central broker knows of one station."""

    state: dict[str, Any] | None = None
    availability: str | None = None  # "online" / "offline" (the daemon's last will)
    link: str | None = None  # the bridge's notification: "1" up, "0" down


@dataclass
class Logs:
    events: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


class FleetLink:
    """`with FleetLink(mqtt_cfg) as link:` -> link.reported, link.send(...), link.wait(...)."""

    def __init__(self, cfg: MqttConfig, connect_timeout_s: float = 10.0) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix
        self.connect_timeout_s = connect_timeout_s
        self.reported: dict[str, Reported] = {}
        self.logs = Logs()
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self._watched: set[str] = set()  # stations whose results are logged
        self._client: Client | None = None

    # ---- connection ---------------------------------------------------------------------------------------
    def __enter__(self) -> FleetLink:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from onen.edge.publisher import apply_security

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"onen-fleet-{os.getpid()}", clean_session=True)
        apply_security(client, self.cfg)
        client.on_connect, client.on_message = self._on_connect, self._on_message
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.reconnect_delay_set(1, 5)
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=30)
        except OSError as error:
            raise StationUnreachable(
                f"cannot reach the central broker {self.cfg.host}:{self.cfg.port} ({error})"
            ) from error
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(self.connect_timeout_s):
            self.__exit__()
            raise StationUnreachable(
                f"the central broker {self.cfg.host}:{self.cfg.port} did not accept the connection within "
                f"{self.connect_timeout_s:g} s (user, password, TLS?)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None

    def _filters(self) -> list[str]:
        p = self.prefix
        station_topics = [f"{p}/+/{leaf}" for leaf in ("state", "availability", "bridge", "events")]
        return station_topics + [f"{p}/{station}/+/result" for station in sorted(self._watched)]

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self._filters()])

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        parts = message.topic.split("/")
        base = len(self.prefix.split("/"))
        if len(parts) < base + 2:
            return
        station, leaf = parts[base], parts[-1]
        text = bytes(message.payload).decode("utf-8", errors="replace")
        with self.lock:
            reported = self.reported.setdefault(station, Reported())
            if leaf == "availability":
                reported.availability = text
            elif leaf == "bridge":
                reported.link = text
            elif leaf in ("state", "events", "result"):
                try:
                    data = json.loads(text)
                except ValueError:
                    return
                if not isinstance(data, dict):
                    return
                if leaf == "state":
                    reported.state = data
                elif leaf == "events":
                    self.logs.events.append({**data, "station": station})
                else:
                    self.logs.results.append(data)

    # ---- use ----------------------------------------------------------------------------------------------
    def watch_results(self, stations: list[str]) -> None:
        """Log the results of these stations from now on (the rollout's soak)."""
        new = [s for s in stations if s not in self._watched]
        self._watched.update(new)
        if new and self._client is not None:
            self._client.subscribe([(f"{self.prefix}/{s}/+/result", 1) for s in new])

    def send(self, station: str, leaf: str, payload: bytes) -> None:
        """Publish a command on `{prefix}/{station}/cmd/{leaf}` and wait for the central broker's ack."""
        assert self._client is not None, "use FleetLink as a context manager"
        topic = f"{self.prefix}/{station}/cmd/{leaf}"
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=max(10.0, len(payload) / 1e6))
        if not info.is_published():
            raise StationUnreachable(f"the central broker did not acknowledge the command on {topic}")

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Poll `predicate` (called under the lock) until it holds or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                if predicate():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def snapshot(self) -> dict[str, Reported]:
        with self.lock:
            return {name: Reported(r.state, r.availability, r.link) for name, r in self.reported.items()}
