"""The mosquitto configurations of a fleet, rendered from the files `systemd/` ships (one source for both).

`mosquitto-station.conf`: a station's local broker with its bridge to the central one;
`mosquitto-central.conf` + `mosquitto-central.acl`: the central broker, per-station users and ACLs.
Templates hold `{{name}}` fields; a line that starts with `{{tls}}`, `{{client_cert}}` or `{{auth}}` is kept
when that option is given and written as a comment (`# off: ...`) when not. Every field must be filled: a
missing one is an error, never an empty setting in a broker's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from onen.edge.errors import OnenError

STATION_TEMPLATE = "mosquitto-station.conf"
CENTRAL_TEMPLATE = "mosquitto-central.conf"
CENTRAL_ACL_TEMPLATE = "mosquitto-central.acl"
SWITCHES = ("tls", "client_cert", "auth")
_FIELD = re.compile(r"\{\{([a-z_]+)\}\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a station id as the station YAML allows it


class BrokerConfError(OnenError):
    """A broker configuration that cannot be rendered (a missing field, a bad station id)."""


@dataclass(frozen=True)
class Queues:
    """Queue limits of a broker (per client): what a station holds for the central side during an outage."""

    max_messages: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


def template_text(name: str) -> str:
    return resources.files("onen.edge").joinpath("fleet_templates").joinpath(name).read_text()


def render(name: str, fields: dict[str, object], switches: dict[str, bool]) -> str:
    """The template `name` with `fields` filled in and its optional lines on or off."""
    lines = []
    for line in template_text(name).splitlines():
        for switch in SWITCHES:
            marker = "{{" + switch + "}}"
            if line.startswith(marker):
                line = line[len(marker) :] if switches.get(switch) else "# off: " + line[len(marker) :]
        lines.append(line)
    text = "\n".join(lines) + "\n"
    active = "\n".join(line for line in text.splitlines() if not line.startswith("# off: "))
    missing = sorted({m for m in _FIELD.findall(active) if fields.get(m) is None})
    if missing:
        raise BrokerConfError(f"{name}: no value for {', '.join(missing)}")
    return _FIELD.sub(
        lambda m: str(fields[m.group(1)]) if fields.get(m.group(1)) is not None else f"<{m.group(1)}>", text
    )


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerConfError(f"{what} must be HOST:PORT, got {text!r}")
    return host, int(port)


def station_conf(
    station: str,
    central: str,
    prefix: str = "onen",
    listen: str = "127.0.0.1:1883",
    persistence_dir: Path = Path("/var/lib/mosquitto/"),
    password: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    queues: Queues = Queues(),
    user: str = "mosquitto",
    log_dest: str = "syslog",
    restart_s: tuple[int, int] = (5, 60),
) -> str:
    """A station broker's mosquitto.conf bridging `{prefix}/{station}/#` out and `.../cmd/#` in."""
    if not _NAME.match(station):
        raise BrokerConfError(f"station id {station!r}: letters, digits, '_', '-', '.' (it becomes a topic level)")
    if (cert is None) != (key is None):
        raise BrokerConfError("a client certificate needs both --cert and --key")
    if cert is not None and ca is None:
        raise BrokerConfError("a client certificate needs --ca (TLS to the central broker)")
    central_host, central_port = _host_port(central, "--central")
    listen_host, listen_port = _host_port(listen, "--listen")
    fields = {
        "station": station,
        "prefix": prefix,
        "central_host": central_host,
        "central_port": central_port,
        "listen_host": listen_host,
        "listen_port": listen_port,
        "persistence_dir": f"{str(persistence_dir).rstrip('/')}/",
        "password": password,
        "ca": ca,
        "cert": cert,
        "key": key,
        "max_queued_messages": queues.max_messages,
        "max_queued_bytes": queues.max_bytes,
        "user": user,
        "log_dest": log_dest,
        "restart_base_s": int(restart_s[0]),
        "restart_max_s": int(restart_s[1]),
    }
    switches = {"tls": ca is not None, "client_cert": cert is not None, "auth": password is not None}
    return render(STATION_TEMPLATE, fields, switches)


def central_conf(
    acl_file: Path,
    listen: str = "0.0.0.0:8883",
    prefix: str = "onen",
    persistence_dir: Path = Path("/var/lib/mosquitto/"),
    password_file: Path | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    client_certificates: bool = False,
    fleet_user: str = "onen-fleet",
    consumer_user: str = "onen-consumer",
    queues: Queues = Queues(),
    user: str = "mosquitto",
    log_dest: str = "syslog",
) -> tuple[str, str]:
    """The central broker's mosquitto.conf and its ACL file (`pattern readwrite {prefix}/%u/#`)."""
    if (cert is None) != (key is None) or (cert is not None and ca is None):
        raise BrokerConfError("TLS on the central broker needs --ca, --cert and --key together")
    if client_certificates and cert is None:
        raise BrokerConfError("--client-certificates needs TLS (--ca, --cert, --key)")
    if password_file is None and not client_certificates:
        raise BrokerConfError("give --password-file (users and passwords) or --client-certificates")
    listen_host, listen_port = _host_port(listen, "--listen")
    fields = {
        "prefix": prefix,
        "listen_host": listen_host,
        "listen_port": listen_port,
        "persistence_dir": f"{str(persistence_dir).rstrip('/')}/",
        "password_file": password_file,
        "acl_file": acl_file,
        "ca": ca,
        "cert": cert,
        "key": key,
        "fleet_user": fleet_user,
        "consumer_user": consumer_user,
        "max_queued_messages": queues.max_messages,
        "max_queued_bytes": queues.max_bytes,
        "user": user,
        "log_dest": log_dest,
    }
    switches = {"tls": cert is not None, "client_cert": client_certificates, "auth": password_file is not None}
    return render(CENTRAL_TEMPLATE, fields, switches), render(CENTRAL_ACL_TEMPLATE, fields, switches)
