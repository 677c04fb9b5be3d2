"""Brokers of a fleet on loopback: real mosquitto processes run on the configurations `onen fleet` renders.

Each broker gets a free port, its own folder (persistence, log) and is stopped by its PID: SIGTERM for a clean
stop, SIGKILL for a crash.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onen.edge.local_broker import BrokerError, find_mosquitto, free_port, port_accepts


class ConfiguredBroker:
    """mosquitto run on `make_conf(port, folder)`'s text; start()/stop()/kill() keep the port and the folder."""

    host = "127.0.0.1"

    def __init__(self, make_conf: Callable[[int, Path], str], name: str = "broker"):
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"onen-{name}-"))
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text(make_conf(self.port, self.folder))
        self.log = self.folder / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 10.0) -> ConfiguredBroker:
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise BrokerError(f"mosquitto -c {self.conf} exited: {error or self.log_text()}")
            if port_accepts(self.host, self.port):
                return self
            time.sleep(0.05)
        raise BrokerError(f"mosquitto -c {self.conf} did not listen on {self.port} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stderr:
            process.stderr.close()
        while port_accepts(self.host, self.port):
            time.sleep(0.05)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond the last autosave."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def station_broker(station: str, central_port: int, prefix: str = "onen", **options) -> ConfiguredBroker:
    """A station's broker on the shipped station template, bridged to a central broker on loopback."""
    from onen.edge.fleet_brokers import station_conf

    def make(port: int, folder: Path) -> str:
        return station_conf(
            station,
            f"127.0.0.1:{central_port}",
            prefix=prefix,
            listen=f"127.0.0.1:{port}",
            persistence_dir=folder,
            user=getpass.getuser(),
            log_dest=f"file {folder / 'mosquitto.log'}",
            restart_s=(1, 2),
            **options,
        )

    return ConfiguredBroker(make, name=f"station-{station}").start()


def central_broker(
    password_file: Path | None = None, prefix: str = "onen", tls: dict[str, Path] | None = None
) -> ConfiguredBroker:
    """The central broker. With a password file: the shipped central template and ACL. Without: anonymous, with
    persistence saved every second, so a SIGKILL keeps the consumers' sessions (the template saves every 10 s)."""
    from onen.edge.fleet_brokers import central_conf

    def anonymous(port: int, folder: Path) -> str:
        return (
            f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nmax_queued_messages 100000\n"
            f"log_dest file {folder / 'mosquitto.log'}\nlog_type error\nlog_type warning\nlog_type notice\n"
        )

    def shipped(port: int, folder: Path) -> str:
        conf, acl = central_conf(
            folder / "acl",
            listen=f"127.0.0.1:{port}",
            prefix=prefix,
            persistence_dir=folder,
            password_file=password_file,
            **(tls or {}),
            user=getpass.getuser(),
            log_dest=f"file {folder / 'mosquitto.log'}",
        )
        (folder / "acl").write_text(acl)
        return conf

    return ConfiguredBroker(anonymous if password_file is None else shipped, name="central").start()


class Subscriber:
    """A real MQTT subscriber with a persistent session (what an archiver or MES gateway runs): it keeps
    (topic, payload) in arrival order and misses nothing its broker queued for it while it reconnected."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        client_id: str,
        user: str | None = None,
        password: str | None = None,
        clean_session: bool = False,
        ca: Path | None = None,
    ):
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if user:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), f"{client_id} could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def wait(self, predicate, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
