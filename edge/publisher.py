"""MQTT publishing of a station (paho-mqtt >= 2, callback API version 2).

Results never go straight to the broker: they are written to the spool first, published from it in
order, and deleted only when the broker acknowledged them (QoS 1 PUBACK -> `on_publish(mid)`).
While the broker is unreachable they pile up on disk; paho re-sends what was in flight on reconnect
(same message ids, so the acks still delete the right rows) and the sender continues with the rest.
One spool transaction (one fsync) per sender round stores the new results and deletes the acknowledged
ones; a round with only acknowledgements waits up to DELETE_DELAY_S so its delete rides along with the
next results. `publish_result` returns an event set once the result is on disk: the pipeline counts a
frame done only then, and a result is published only after its transaction committed, so nothing
acknowledged to the pipeline is lost on kill -9; an acknowledged row not yet deleted is sent once more after a restart
(at least once, as QoS 1 is anyway).

Availability is retained, with a last will "offline", and republished on every (re)connect because
a broker restarted without persistence forgets retained messages. The client id is unique per
station: two clients sharing one make the broker kick them in turn and availability flap.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from onen.edge.broker_link import BrokerLink, describe_failure
from onen.edge.spool import Spool, SpoolItem
from onen.edge.stats import CpuAccount

if TYPE_CHECKING:
    from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, Any], None]  # topic, payload, properties
UNSENT_IN_MEMORY = 1024  # committed rows kept in memory for sending (beyond that they are read from the spool)
DELETE_DELAY_S = 0.05  # longest an acknowledged row waits for the next results' transaction
Handed = tuple[str, bytes, int, threading.Event]  # topic, payload, qos, an event set once it is on disk


@dataclass(frozen=True)
class Topics:
    """Every topic of a station, in one place (DESIGN.md "Result message")."""

    prefix: str
    station: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.station}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def result(self, camera: str) -> str:
        return f"{self.base}/{camera}/result"

    def status(self, camera: str) -> str:
        return f"{self.base}/{camera}/status"

    def overlay(self, camera: str) -> str:
        return f"{self.base}/{camera}/overlay"

    def trigger(self, camera: str) -> str:
        return f"{self.base}/cmd/{camera}/trigger"

    def calibration(self, camera: str) -> str:
        return f"{self.base}/cmd/{camera}/calibration"

    @property
    def model_install(self) -> str:
        return f"{self.base}/cmd/model/install"

    @property
    def model_rollback(self) -> str:
        return f"{self.base}/cmd/model/rollback"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/#"


class Publisher:
    """One MQTT connection per station: results via the spool, plus availability, events, stats, status."""

    def __init__(
        self,
        mqtt_cfg: Any,
        station: str,
        spool: Spool,
        inflight_window: int = 64,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        cpu: CpuAccount | None = None,
    ):
        self.cfg = mqtt_cfg
        self.cpu = cpu or CpuAccount()  # the sender thread's CPU time per stage (spool, MQTT publish)
        self.station = station
        self.spool = spool
        self.topics = Topics(mqtt_cfg.prefix, station)
        self.qos = mqtt_cfg.qos
        self.window = inflight_window
        self.reconnect_s = (reconnect_min_s, reconnect_max_s)
        self._incoming: queue.SimpleQueue[Handed] = queue.SimpleQueue()
        self._unspooled: list[Handed] = []  # a batch the spool could not take yet
        self.spool_ok = True  # False while the spool refuses writes (results then wait in memory, in order)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ack_lock = threading.Lock()  # guards _acked_mids (appended by the paho thread)
        self._acked_mids: list[int] = []
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id; sender thread only
        self._done_rows: list[int] = []  # acknowledged (or sent at QoS 0), deleted with the next commit
        # committed rows not yet sent, kept so they need not be read back; False: the spool holds unsent rows
        # memory does not (a backlog from before a restart, a long outage, rows dropped by the cap)
        self._unsent: collections.deque[SpoolItem] = collections.deque()
        self._unsent_complete = False
        self._last_commit = 0.0
        self._last_sent_id = 0
        self._handlers: dict[str, MessageHandler] = {}
        self._handlers_lock = threading.Lock()  # subscribe() vs the subscriptions _on_connect makes
        self._subscribed = False  # this connection has subscribed every handler's filter
        self._camera_status: dict[str, dict[str, Any]] = {}
        self._state: dict[str, Any] | None = None  # the retained reported state (edge.station_state)
        self.connects = 0
        self.published = 0
        self.sender_heartbeat = time.monotonic()
        self.link = BrokerLink(f"{mqtt_cfg.host}:{mqtt_cfg.port}", backlog=lambda: self.pending)
        self.client = self._make_client()
        self._sender = threading.Thread(target=self._send_loop, name="onen-publisher", daemon=True)

    # ---- connection -------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client_id = cfg.client_id or f"onen-{self.station}"  # set by the station config; code-built configs may omit it
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        apply_security(client, cfg)
        send_without_delay(client)
        client.reconnect_delay_set(min_delay=self.reconnect_s[0], max_delay=self.reconnect_s[1])  # type: ignore[arg-type]  # paho annotates int; it sleeps any float
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background (the broker may be down at start) and start the sender."""
        self.client.connect_async(self.cfg.host, int(self.cfg.port), keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.link.failed(f"the broker refused the connection: {reason_code}")
            return
        self.connects += 1
        self.link.connected(self.connects)
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        with self._handlers_lock:
            for topic_filter in self._handlers:
                client.subscribe(topic_filter, qos=1)
            self._subscribed = True
        for camera, status in list(self._camera_status.items()):
            client.publish(self.topics.status(camera), json.dumps(status), qos=1, retain=True)
        if self._state is not None:
            client.publish(self.topics.state, json.dumps(self._state, default=str), qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._handlers_lock:
            self._subscribed = False
        if self._connected.is_set() and not self._stop.is_set():
            self.link.lost(str(reason_code))
        self._connected.clear()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the attempt: the exception is the reason.
        self.link.failed(describe_failure(sys.exc_info()[1]))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        # Runs in paho's thread while paho holds its own lock: only note the mid, never call paho here.
        with self._ack_lock:
            self._acked_mids.append(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: MQTTMessage) -> None:
        for topic_filter, handler in list(self._handlers.items()):
            if mqtt.topic_matches_sub(topic_filter, message.topic):
                try:
                    handler(message.topic, bytes(message.payload), getattr(message, "properties", None))
                except Exception:  # a bad command must never take the connection down
                    log.exception("handler for %s failed", message.topic)

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call `handler` for messages on `topic_filter`; kept across reconnects. Under the lock _on_connect
        holds while it subscribes, so a filter added while a connection comes up is subscribed exactly once
        (by one or the other), never missed until the next reconnect."""
        with self._handlers_lock:
            self._handlers[topic_filter] = handler
            if self._subscribed:
                self.client.subscribe(topic_filter, qos=1)

    # ---- results through the spool ------------------------------------------------------------
    def publish_result(self, camera: str, payload: bytes) -> threading.Event:
        """Hand a result to the sender: it is spooled (the event is set once it is on disk), then published,
        then deleted on ack."""
        stored = threading.Event()
        self._incoming.put((self.topics.result(camera), payload, self.qos, stored))
        self._wake.set()
        return stored

    @property
    def pending(self) -> int:
        """Results not yet acknowledged (waiting for the spool + in the spool)."""
        return self._incoming.qsize() + len(self._unspooled) + max(0, self.spool.depth - len(self._done_rows))

    def _send_loop(self) -> None:
        while True:
            self.sender_heartbeat = time.monotonic()
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._send_once()
            except Exception:
                log.exception("spool/publish step failed; retrying")
                time.sleep(0.5)
            if self._stop.is_set() and self._incoming.empty() and not self._unspooled and not self._done_rows:
                return

    def _send_once(self) -> None:
        cpu_started = time.thread_time_ns()
        batch, self._unspooled = self._unspooled, []
        while True:
            try:
                batch.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        self._done_rows.extend(self._take_acked_rows())
        now = time.monotonic()
        if batch or (self._done_rows and (now - self._last_commit >= DELETE_DELAY_S or self._stop.is_set())):
            dropped_before = self.spool.dropped
            rows = [(topic, payload, qos) for topic, payload, qos, _ in batch]
            try:
                ids = self.spool.commit(rows, self._done_rows)
            except Exception:
                self._unspooled = batch  # disk full/locked: keep them, in order, and try again
                self.spool_ok = False
                raise
            self.spool_ok = True
            for *_, stored in batch:
                stored.set()
            self._done_rows, self._last_commit = [], now
            self._remember_unsent(ids, rows, dropped=self.spool.dropped != dropped_before)
        cpu_spooled = time.thread_time_ns()
        self.cpu.add("spool", cpu_spooled - cpu_started)
        if not self.connected:
            return
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        items = self._next_to_send(room)
        cpu_read = time.thread_time_ns()
        self.cpu.add("spool", cpu_read - cpu_spooled)
        try:
            for item in items:
                info = self.client.publish(item.topic, item.payload, qos=item.qos)
                if item.qos == 0:
                    self._done_rows.append(item.id)
                else:
                    self._inflight[info.mid] = item.id
                self._last_sent_id = item.id
                self.published += 1
        except Exception:
            self._unsent.clear()  # the rest is on disk: the next round reads it from after the last one sent
            self._unsent_complete = False
            raise
        self.cpu.add("mqtt_publish", time.thread_time_ns() - cpu_read)

    def _remember_unsent(self, ids: list[int], batch: list[tuple[str, bytes, int]], dropped: bool) -> None:
        """Keep the rows just committed in memory so they are sent without reading them back from disk, as
        long as memory holds every unsent row (not after a restart with a backlog, a long outage or a cap drop)."""
        if not self._unsent_complete:
            return
        if dropped or len(self._unsent) + len(ids) > UNSENT_IN_MEMORY:
            self._unsent.clear()
            self._unsent_complete = False  # read from the spool until it has caught up again
            return
        self._unsent.extend(SpoolItem(i, t, p, q) for i, (t, p, q) in zip(ids, batch, strict=True))

    def _next_to_send(self, room: int) -> list[SpoolItem]:
        """Up to `room` committed rows after the last one sent, oldest first: from memory when it holds every
        unsent row, else from the spool (and once a read finds no more than that, memory holds them again)."""
        if self._unsent_complete:
            count = min(room, len(self._unsent))
            return [self._unsent.popleft() for _ in range(count)]
        items = self.spool.after(self._last_sent_id, room)
        if len(items) < room:  # every unsent row on disk is in `items`: what is committed next is remembered
            self._unsent.clear()
            self._unsent_complete = True
        return items

    def _take_acked_rows(self) -> list[int]:
        """Rows whose PUBACK arrived. An ack whose mid is not mapped belongs to a non-result message:
        the mapping is made right after publish() returns, in this thread, before acks are resolved."""
        with self._ack_lock:
            mids, self._acked_mids = self._acked_mids, []
        return [self._inflight.pop(mid) for mid in mids if mid in self._inflight]

    def flush(self, timeout: float) -> bool:
        """Wait until every result handed over was acknowledged (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._incoming.empty() and not self._unspooled and self.spool.depth == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return self._incoming.empty() and not self._unspooled and self.spool.depth == 0

    # ---- other topics -------------------------------------------------------------------------
    def publish_event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Events are QoS 1; paho keeps them while disconnected and sends them on reconnect."""
        message = {"kind": kind, "station": self.station, "at": time.time(), "detail": detail or {}}
        self.client.publish(self.topics.events, json.dumps(message, default=str), qos=1)

    def publish_camera_status(self, camera: str, status: str, detail: dict[str, Any] | None = None) -> None:
        """Retained per-camera status; the last one is republished after a reconnect."""
        message = {"camera": camera, "status": status, "at": time.time(), **(detail or {})}
        self._camera_status[camera] = message
        self.client.publish(self.topics.status(camera), json.dumps(message, default=str), qos=1, retain=True)

    def publish_state(self, state: dict[str, Any]) -> None:
        """Retained reported state (edge.station_state); the last one is republished after a reconnect."""
        self._state = state
        self.client.publish(self.topics.state, json.dumps(state, default=str), qos=1, retain=True)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """Stats are a snapshot: QoS 0, skipped while disconnected (the next one is fresher anyway)."""
        if self.connected:
            self.client.publish(self.topics.stats, json.dumps(stats, default=str), qos=0)

    def publish_overlay(self, camera: str, jpeg: bytes) -> None:
        if self.connected:
            self.client.publish(self.topics.overlay(camera), jpeg, qos=0)

    def stop(self, flush_timeout: float = 10.0) -> bool:
        """Flush the spool, publish offline, disconnect. True if flushed. A connection still being made (a short
        run ends before its first connect on a loaded machine) gets the same `flush_timeout` to come up first;
        what is not flushed stays in the spool for the next start."""
        deadline = time.monotonic() + flush_timeout
        connected = self.wait_connected(flush_timeout)
        flushed = self.flush(max(0.0, deadline - time.monotonic())) if connected else False
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5)
        if self.connected:
            info = self.client.publish(self.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()
        return flushed


def send_without_delay(client: mqtt.Client) -> None:
    """TCP_NODELAY on the client's socket: without it, Nagle's algorithm holds a small message back until the
    broker acknowledges the previous segment, which the broker's delayed ACK postpones by up to 40 ms."""

    def on_socket_open(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not every socket (websockets) has TCP options
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = on_socket_open


def apply_security(client: mqtt.Client, cfg: Any) -> None:
    """TLS and credentials of the station's mqtt config (the daemon and `onen watch` connect alike)."""
    if cfg.tls is not None:
        client.tls_set(ca_certs=_str(cfg.tls.ca), certfile=_str(cfg.tls.cert), keyfile=_str(cfg.tls.key))
        if cfg.tls.insecure:
            client.tls_insecure_set(True)  # no hostname check: test benches only, the config says so
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
