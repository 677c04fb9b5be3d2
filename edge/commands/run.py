"""`onen run --config station.yaml [--check]`: run an inspection station until SIGTERM/SIGINT.

With --check the config is validated (every mistake listed, exit 2) and nothing starts. The edge
install has no torch; this command imports only edge modules, and those only inside the handler.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the inspection daemon of a station (cameras -> model -> MQTT)",
        description="Run the station daemon: cameras from the YAML file, one engine call per frame, results over MQTT. "
        "SIGTERM/SIGINT stop it cleanly (frames in flight finished, spool flushed, availability offline).",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the station YAML file")
    parser.add_argument(
        "--check", action="store_true", help="validate the config and exit (0 good, 2 with every mistake listed)"
    )
    parser.add_argument(
        "--exit-when-finished",
        action="store_true",
        help="stop once every camera source has ended (file/folder sources; for tests and batch runs)",
    )
    parser.add_argument(
        "--engine-mode",
        choices=("lock", "thread"),
        default=None,
        help="how cameras share a model's engine (default: the faster one measured by `onen bench daemon`)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.edge.config import load_config
    from onen.edge.daemon import DaemonOptions, run_station
    from onen.edge.inference import DEFAULT_MODE

    config = load_config(args.config)  # ConfigError -> listed by the CLI, exit 2, before anything opens
    if args.check:
        from onen.edge.commands.check_config import summary

        print(summary(config))
        return 0
    options = DaemonOptions(exit_when_finished=args.exit_when_finished, engine_mode=args.engine_mode or DEFAULT_MODE)
    return run_station(config, options)
