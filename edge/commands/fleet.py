"""`onen fleet`: stations managed as a set through the central broker their local brokers bridge to.

- `onen fleet apply FLEET.yaml`: reconcile every station with its group's bundle and calibrations through the
  signed push, canary first, then waves gated on answers, a soak and the reject rate (edge.fleet_rollout);
- `onen fleet status FLEET.yaml`: reported vs desired state per station (the retained state topics);
- `onen fleet bridge-conf` / `onen fleet central-conf`: the mosquitto configurations (edge.fleet_brokers).
Exit status: 0 in sync / written, 1 halted or out of sync, 2 usage errors or an unreachable broker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onen.edge.fleet_config import FleetConfig
    from onen.edge.fleet_link import FleetLink
    from onen.edge.fleet_state import DesiredGroup


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="stations as a set: apply a desired-state file in waves, show its status, render broker configs",
        description="Fleet management over the central MQTT broker (see docs/fleet.md).",
    )
    commands = parser.add_subparsers(dest="fleet_command", metavar="ACTION")
    commands.required = True

    apply = commands.add_parser("apply", help="bring every station to its group's model and calibrations, in waves")
    apply.add_argument("fleet_file", type=Path, metavar="FLEET.yaml")
    apply.add_argument("--dry-run", action="store_true", help="print the waves and what would change, send nothing")
    apply.add_argument("--wait", type=float, default=5.0, help="seconds to collect the stations' reports (default 5)")
    apply.set_defaults(handler=run_apply)

    status = commands.add_parser("status", help="reported vs desired state per station")
    status.add_argument("fleet_file", type=Path, metavar="FLEET.yaml")
    status.add_argument("--json", action="store_true", help="one JSON object per station")
    status.add_argument("--wait", type=float, default=3.0, help="seconds to collect the stations' reports (default 3)")
    status.set_defaults(handler=run_status)

    bridge = commands.add_parser("bridge-conf", help="a station's mosquitto.conf bridged to the central broker")
    bridge.add_argument("--station", required=True, help="the station id (its config's 'station')")
    bridge.add_argument("--central", required=True, metavar="HOST:PORT", help="the central broker")
    bridge.add_argument("--prefix", default="onen", help="the topic prefix (the stations' mqtt.prefix)")
    bridge.add_argument("--listen", default="127.0.0.1:1883", metavar="HOST:PORT", help="the local listener")
    bridge.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto/"))
    bridge.add_argument("--password-file", type=Path, help="file holding the station's password at the central broker")
    bridge.add_argument("--ca", type=Path, help="CA file to verify the central broker (turns TLS on)")
    bridge.add_argument("--cert", type=Path, help="the station's client certificate (with --key)")
    bridge.add_argument("--key", type=Path, help="the station's client key")
    bridge.add_argument("--out", type=Path, help="write here (default: print)")
    bridge.set_defaults(handler=run_bridge_conf)

    central = commands.add_parser("central-conf", help="the central broker's mosquitto.conf and ACL file")
    central.add_argument("--out", type=Path, required=True, help="the .conf to write; the ACL goes next to it (.acl)")
    central.add_argument("--prefix", default="onen")
    central.add_argument("--listen", default="0.0.0.0:8883", metavar="HOST:PORT")
    central.add_argument("--persistence-dir", type=Path, default=Path("/var/lib/mosquitto/"))
    central.add_argument("--password-file", type=Path, help="mosquitto_passwd file of the users")
    central.add_argument("--ca", type=Path)
    central.add_argument("--cert", type=Path)
    central.add_argument("--key", type=Path)
    central.add_argument(
        "--client-certificates", action="store_true", help="stations log in with certificates (CN = station id)"
    )
    central.set_defaults(handler=run_central_conf)


def _prepare(fleet_file: Path) -> tuple[FleetConfig, dict[str, DesiredGroup]]:
    from onen.edge.fleet_config import load_fleet
    from onen.edge.fleet_state import prepare_group

    config = load_fleet(fleet_file)
    groups = {name: prepare_group(name, group, config.signing_key) for name, group in config.groups.items()}
    return config, groups


def _collect(link: FleetLink, config: FleetConfig, wait_s: float) -> None:
    """Retained states arrive at once; wait up to wait_s until every station reported."""
    link.wait(lambda: all(s in link.reported and link.reported[s].state for s in config.stations), wait_s)


def run_status(args: argparse.Namespace) -> int:
    from onen.edge.fleet_link import FleetLink
    from onen.edge.fleet_state import format_views, views

    config, groups = _prepare(args.fleet_file)
    with FleetLink(config.broker) as link:
        _collect(link, config, args.wait)
        rows = views(config, groups, link.snapshot())
    if args.json:
        for row in rows:
            print(json.dumps(row.to_dict()))
    else:
        print(format_views(rows))
    return 0 if all(row.verdict == "in sync" for row in rows) else 1


def run_apply(args: argparse.Namespace) -> int:
    from onen.edge.fleet_link import FleetLink
    from onen.edge.fleet_rollout import Rollout, plan_waves
    from onen.edge.fleet_state import format_views, views

    config, groups = _prepare(args.fleet_file)
    with FleetLink(config.broker) as link:
        _collect(link, config, args.wait)
        if args.dry_run:
            rows = {row.station: row for row in views(config, groups, link.snapshot())}
            for number, wave in enumerate(plan_waves(list(config.stations), config.canary(), config.rollout.wave_size)):
                label = "canary" if number == 0 else f"wave {number}"
                print(f"{label}: " + ", ".join(f"{s} ({rows[s].verdict})" for s in wave))
            return 0
        code = Rollout(config, groups, link, say=lambda text: print(text, flush=True)).run()
        _collect(link, config, 1.0)
        print(format_views(views(config, groups, link.snapshot())))
    return code


def run_bridge_conf(args: argparse.Namespace) -> int:
    from onen.edge.cli import UsageError
    from onen.edge.fleet_brokers import station_conf

    password = None
    if args.password_file is not None:
        if not args.password_file.is_file():
            raise UsageError(f"--password-file {args.password_file}: file not found")
        password = args.password_file.read_text().strip()
    text = station_conf(
        args.station,
        args.central,
        prefix=args.prefix,
        listen=args.listen,
        persistence_dir=args.persistence_dir,
        password=password,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
    )
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
        if password is not None:
            args.out.chmod(0o600)  # it holds the station's password
        print(f"wrote {args.out}")
    return 0


def run_central_conf(args: argparse.Namespace) -> int:
    from onen.edge.fleet_brokers import central_conf

    acl_path = args.out.with_suffix(".acl")
    conf, acl = central_conf(
        acl_path.resolve(),
        listen=args.listen,
        prefix=args.prefix,
        persistence_dir=args.persistence_dir,
        password_file=args.password_file,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        client_certificates=args.client_certificates,
    )
    args.out.write_text(conf)
    acl_path.write_text(acl)
    print(f"wrote {args.out} and {acl_path}")
    return 0
