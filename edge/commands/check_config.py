"""`onen check-config --config station.yaml`: validate a station config and exit 0 (good) or 2 (mistakes).

Meant for integrators editing a station file and for deployment scripts: every mistake is listed with
file, line, key path, bad value and what was expected; nothing is opened or started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onen.edge.config import StationConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a station config file (exit 0 when good, 2 with every mistake listed)",
        description="Validate a station YAML config: schema, referenced files, models, secrets. Opens nothing.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the station YAML file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.edge.config import load_config

    config = load_config(args.config)  # ConfigError (an OnenError) -> printed by the CLI, exit 2
    print(summary(config))
    return 0


def summary(config: StationConfig) -> str:
    """A few lines saying what the station will run, so a good config is also a readable one."""
    mqtt = config.mqtt
    auth = f", user {mqtt.username} (password from {mqtt.password_source})" if mqtt.username else ""
    lines = [
        f"{config.source_path}: OK",
        f"  station {config.station}; MQTT {mqtt.host}:{mqtt.port} prefix '{mqtt.prefix}' qos {mqtt.qos}"
        f"{' TLS' if mqtt.tls else ''}{auth}",
    ]
    for model in config.models.values():
        lines.append(f"  model {model.name}: {model.bundle} (backend {model.backend})")
    for camera in config.cameras:
        lines.append(
            f"  camera {camera.name}: {camera.source.describe()} -> model {camera.model}, trigger {camera.trigger.mode}"
        )
    lines.append(
        f"  spool {config.spool.path} (max {config.spool.max_mb} MB); archive "
        f"{config.archive.path if config.archive.enabled else 'off'}"
    )
    if config.updates is not None:
        lines.append(
            f"  updates: models in {config.updates.dir}, calibrations in {config.updates.calibration_dir}, "
            f"{len(config.updates.trusted_keys)} trusted key(s)"
        )
    token = "with a token" if config.review.token else "no token (loopback only)"
    lines.append(
        f"  review page (onen review) on {config.review.listen}, {token}, last {config.review.history} verdicts"
    )
    return "\n".join(lines)
