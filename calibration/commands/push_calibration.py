"""`onen push-calibration`: send a calibration file to a running station (applied between frames)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "push-calibration",
        help="send a camera calibration (YAML + its AOI) to a running station over MQTT",
        description=(
            "Publishes FILE on {prefix}/{station}/cmd/{camera}/calibration using the MQTT settings of the station "
            "config, then waits for the station's calibration_updated / calibration_rejected event. The station keeps "
            "every calibration as a version (`onen calibrations list`); --rollback goes back to the previous one."
        ),
    )
    parser.add_argument("file", type=Path, nargs="?", help="calibration YAML written by `onen calibrate`")
    parser.add_argument(
        "--rollback", action="store_true", help="back to the camera's previous calibration (needs --camera)"
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="the station's config YAML (MQTT broker, station id)"
    )
    parser.add_argument("--camera", help="camera name (default: the one in FILE)")
    parser.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the station's answer (default 10)"
    )
    parser.set_defaults(handler=run)


def push_and_report(yaml_path: Path | None, station_config: Path, camera: str, wait_s: float) -> int:
    from onen.calibration.push import push_calibration

    outcome = push_calibration(yaml_path, station_config, camera, wait_s)
    what = "a rollback" if yaml_path is None else yaml_path
    if outcome.answer is None:
        print(
            f"sent {what} on {outcome.topic}; no answer from the station within {wait_s:g} s (is its daemon running?)"
        )
        return 1
    kind, detail = outcome.answer.get("kind"), outcome.answer.get("detail", {})
    print(f"sent {what} on {outcome.topic}; station answered {kind}: {detail}")
    return 0 if kind == "calibration_updated" else 1


def run(args: argparse.Namespace) -> int:
    import yaml

    from onen.edge.errors import DataError

    if args.rollback:
        if args.file is not None or not args.camera:
            raise DataError("--rollback takes no FILE and needs --camera")
        return push_and_report(None, args.config, args.camera, args.wait)
    if args.file is None:
        raise DataError("give the calibration FILE to push (or --rollback --camera X)")
    if not args.file.is_file():
        raise DataError(f"{args.file}: calibration file does not exist")
    camera = args.camera or (yaml.safe_load(args.file.read_text()) or {}).get("camera")
    if not camera:
        raise DataError(f"{args.file}: names no camera; give --camera")
    return push_and_report(args.file, args.config, camera, args.wait)
