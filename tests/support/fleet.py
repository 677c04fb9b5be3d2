"""Brokers of a fleet on loopback: real mosquitto processes run on the configurations `onen fleet` renders.

Each broker gets a free port, its own folder (persistence, log) and is stopped by its PID: SIGTERM for a clean
stop, SIGKILL for a crash.
"""

from __future__ import annotations

import getpass
import signal
from collections.abc import Callable
from pathlib import Path

from onen.edge.local_broker import MosquittoBroker
from support.daemon import Collector


class ConfiguredBroker(MosquittoBroker):
    """MosquittoBroker on `make_conf(port, folder)`'s text (the configurations `onen fleet` renders); start(),
    stop() and kill() keep the port and the folder (persistence, log)."""

    def __init__(self, make_conf: Callable[[int, Path], str]):
        super().__init__(start_timeout_s=10.0)
        self.folder = self._dir
        self._make_conf = make_conf

    def _write_config(self) -> Path:
        config = self.folder / "mosquitto.conf"
        config.write_text(self._make_conf(self.port, self.folder))
        return config

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond the last autosave."""
        self.stop(sig=signal.SIGKILL)

    def close(self) -> None:
        self.__exit__()


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

    return ConfiguredBroker(make).start()


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

    return ConfiguredBroker(anonymous if password_file is None else shipped).start()


class Subscriber(Collector):
    """A real MQTT subscriber with a persistent session (what an archiver or MES gateway runs): it keeps every
    message in arrival order and misses nothing its broker queued for it while it reconnected."""

    def __init__(self, port: int, topics: list[str], client_id: str, clean_session: bool = False, **login):
        super().__init__("127.0.0.1", port, topics, client_id, clean_session=clean_session, **login)
