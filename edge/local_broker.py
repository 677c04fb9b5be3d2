"""A real mosquitto on loopback, for tests and `onen demo` (never a mock broker).

It listens on 127.0.0.1 only, allows anonymous clients and by default keeps nothing on disk, so a
restart is a real outage that forgets retained messages, which is exactly what clients must cope with.
`persistence=True` keeps sessions across a restart (a test subscriber with a persistent session then
misses nothing published while it reconnects).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from onen.edge.errors import OnenError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class BrokerError(OnenError):
    """mosquitto is missing or did not start."""


def find_mosquitto() -> str:
    for path in MOSQUITTO_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("mosquitto")
    if found:
        return found
    raise BrokerError(
        "mosquitto is not installed; install it (Debian/Ubuntu: apt-get install mosquitto) or point the station at "
        "another broker"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """`with MosquittoBroker() as broker:` -> broker.host, broker.port, broker.pid; stop()/start() for outages."""

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        start_timeout_s: float = 10.0,
        persistence: bool = False,
        anonymous: bool = True,
        extra_config: str = "",
    ):
        self.port = port or free_port()
        self.persistence = persistence  # True: sessions and retained messages survive a stop()/start()
        self.anonymous = anonymous  # False: clients need a user from a password_file in extra_config
        self.extra_config = extra_config  # more lines for the listener, e.g. cafile/certfile/keyfile for TLS
        self.start_timeout_s = start_timeout_s
        self.binary = find_mosquitto()
        self._dir = Path(tempfile.mkdtemp(prefix="onen-mosquitto-"))
        self._log = self._dir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        config = self._dir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            # started as root, mosquitto would switch to user 'mosquitto', who cannot write our 0700 temp dir
            f"user {getpass.getuser()}\n"
            + (f"persistence true\npersistence_location {self._dir}/\n" if self.persistence else "persistence false\n")
            + f"log_dest file {self._log}\n"
            "set_tcp_nodelay true\n"  # as the shipped station broker: small messages leave at once
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (self.extra_config.strip() + "\n" if self.extra_config else "")
        )
        return config

    def start(self) -> MosquittoBroker:
        """Start (or restart, on the same port) and wait until the port accepts connections."""
        if self.running:
            return self
        config = self._write_config()
        self._process = subprocess.Popen(
            [self.binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = (self._process.stderr.read() or b"").decode(errors="replace") if self._process.stderr else ""
                log_text = self._log.read_text(errors="replace") if self._log.exists() else ""
                raise BrokerError(
                    f"mosquitto exited with status {self._process.returncode} on port {self.port}: "
                    f"{(error or log_text).strip()}"
                )
            if port_accepts(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within {self.start_timeout_s:.0f} s"
        )

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """`sig` (SIGTERM: a clean stop) by PID, SIGKILL if it does not exit in time; waits until the port is
        closed."""
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
        deadline = time.monotonic() + timeout
        while port_accepts(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
