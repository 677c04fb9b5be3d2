"""`onen calibrations list --config station.yaml [--camera X]`: the station's calibration history.

Read on the station from its calibration store (edge.calibration_store): one line each time a version
became current, with the model sha256 it was made for; `*` marks the camera's current version.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calibrations = subparsers.add_parser(
        "calibrations",
        help="the calibrations a station keeps per camera",
        description="Show the versions of every camera's calibration the station keeps.",
    )
    actions = calibrations.add_subparsers(dest="calibrations_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="print each camera's calibration history (version, model sha, installed at)",
        description="Prints one line each time a calibration version became current; * marks the current one.",
    )
    listing.add_argument("--config", required=True, type=Path, help="the station's config YAML")
    listing.add_argument("--camera", help="only this camera")
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    from onen.edge.calibration_store import calibration_store_of
    from onen.edge.config import load_config
    from onen.edge.errors import OnenError

    config = load_config(args.config)
    names = [c.name for c in config.cameras]
    if args.camera is not None and args.camera not in names:
        raise OnenError(
            f"{args.config}: station {config.station!r} has no camera {args.camera!r} (cameras: {', '.join(names)})"
        )
    store = calibration_store_of(config)
    for camera in [args.camera] if args.camera else names:
        history = store.history(camera)
        current = store.current(camera)
        if not history:
            seed = config.camera(camera).calibration
            print(
                f"{camera}: no calibration pushed yet ({'serves ' + str(seed) if seed else 'bundle defaults'}); "
                f"store {store.folder(camera)}"
            )
            continue
        print(f"{camera}: {store.folder(camera)}")
        for entry in history:
            marker = (
                "*"
                if current is not None
                and entry["version"] == current.name
                and entry is _last_for(history, current.name)
                else " "
            )
            print(
                f" {marker} {entry['version']:<20} model {entry['model_sha256'][:12]}  {entry['installed_at']}  "
                f"{entry['action']}"
            )
    return 0


def _last_for(history: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """The line where the current version last became current (the one to mark)."""
    return next(e for e in reversed(history) if e["version"] == version)
