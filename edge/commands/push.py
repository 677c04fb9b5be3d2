"""`onen push BUNDLE --config STATION.yaml`: install a model on a running station without stopping the line.

The station checks the bundle (sha256s, signature when it trusts keys, parity of the engine it loads
with the bundle's reference outputs) before it swaps it in between frames, and answers on its events
topic. `onen push --rollback --config STATION.yaml` goes back to the model served before.
Exit status: 0 swapped, 1 refused by the station, 2 usage errors or no answer in time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ANSWERS = ("model_swapped", "model_update_rejected")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "push",
        help="install a model bundle on a running station (or --rollback), answered on its events topic",
        description="Sends BUNDLE (a directory or .tar) over MQTT to the station of --config, which verifies it, "
        "loads it, "
        "checks the engine against the bundle's reference outputs, and swaps it in between frames. "
        "Exit 0 swapped, 1 refused (the reason is printed), 2 usage errors or no answer within --wait.",
    )
    parser.add_argument("bundle", nargs="?", type=Path, metavar="BUNDLE", help="model bundle directory or .tar")
    parser.add_argument(
        "--config", "-c", required=True, type=Path, help="the station's config YAML (broker, station id)"
    )
    parser.add_argument("--model", help="which of the station's models to replace (default: its only one)")
    parser.add_argument(
        "--sign-key", type=Path, metavar="KEY.pem", help="sign the bundle with this ed25519 key before sending"
    )
    parser.add_argument(
        "--on-station",
        action="store_true",
        help="BUNDLE is a path on the station's own file system (nothing is uploaded)",
    )
    parser.add_argument(
        "--rollback", action="store_true", help="go back to the model the station served before the last install"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for the station's answer (default 120; "
        "a TensorRT engine build on a Jetson may need more)",
    )
    parser.set_defaults(handler=run)


def bundle_payload(bundle: Path, sign_key: Path | None) -> tuple[bytes, str]:
    """The bundle as .tar bytes (signed in a temporary copy when a key is given), checked before it leaves."""
    import tempfile

    from onen.edge.bundle import load_bundle
    from onen.edge.updates import key_fingerprint, load_private_key, pack_bundle_bytes, sign_bundle, unpack_into

    key = load_private_key(sign_key) if sign_key is not None else None
    if key is None and bundle.is_dir():
        load_bundle(bundle)
        return pack_bundle_bytes(bundle), "unsigned" if not (bundle / "signature").is_file() else "signed (as found)"
    with tempfile.TemporaryDirectory(prefix="onen-push-") as temporary:
        staging = Path(temporary)
        root = unpack_into(staging, path=bundle.resolve())
        load_bundle(root)
        note = "unsigned" if not (root / "signature").is_file() else "signed (as found)"
        if key is not None:
            sign_bundle(root, key)
            note = f"signed with key {key_fingerprint(key)}"
        return pack_bundle_bytes(root), note


def run(args: argparse.Namespace) -> int:
    from onen.edge.cli import UsageError
    from onen.edge.config import load_config
    from onen.edge.publisher import Topics
    from onen.edge.station_client import send_command
    from onen.edge.updates import install_message, rollback_message

    if args.rollback == (args.bundle is not None):
        raise UsageError("give either BUNDLE (to install) or --rollback")
    if args.wait <= 0:
        raise UsageError(f"--wait must be > 0 seconds, got {args.wait}")
    if args.rollback and (args.sign_key or args.on_station):
        raise UsageError("--sign-key and --on-station apply to an install, not to --rollback")
    if args.on_station and not args.bundle.is_absolute():
        raise UsageError(f"--on-station: {args.bundle} must be an absolute path on the station")
    if args.on_station and args.sign_key:
        raise UsageError(
            "--sign-key signs a local bundle; a bundle already on the station must be signed before it is copied there"
        )
    config = load_config(args.config)
    if args.model is not None and args.model not in config.models:
        raise UsageError(
            f"{args.config}: station {config.station!r} has no model {args.model!r} (models: "
            f"{', '.join(config.models)})"
        )
    topics = Topics(config.mqtt.prefix, config.station)
    if args.rollback:
        payload, request_id = rollback_message(args.model)
        topic, what = topics.model_rollback, "rollback"
    elif args.on_station:
        payload, request_id = install_message(model=args.model, path=str(args.bundle))
        topic, what = topics.model_install, f"{args.bundle} (on the station)"
    else:
        if not args.bundle.exists():
            raise UsageError(f"{args.bundle}: bundle does not exist")
        tar_bytes, note = bundle_payload(args.bundle, args.sign_key)
        payload, request_id = install_message(model=args.model, tar_bytes=tar_bytes)
        topic, what = topics.model_install, f"{args.bundle} ({len(tar_bytes) / 1e6:.2f} MB, {note})"
    print(f"sending {what} to station {config.station!r} on {topic} (request {request_id})", flush=True)
    answer = send_command(
        config,
        topic,
        payload,
        lambda event: event.get("kind") in ANSWERS and (event.get("detail") or {}).get("request_id") == request_id,
        args.wait,
    )
    if answer is None:
        print(
            f"no answer from station {config.station!r} within {args.wait:g} s (is its daemon running? does its "
            "config have an 'updates' section?)"
        )
        return 2
    detail = answer.get("detail") or {}
    if answer["kind"] == "model_swapped":
        old, new = detail.get("old", {}), detail.get("new", {})
        print(
            f"station {config.station!r} swapped model {detail.get('model')!r}: {old.get('name')} {old.get('version')} "
            f"(sha256 {str(old.get('sha256'))[:12]}) -> {new.get('name')} {new.get('version')} (sha256 "
            f"{str(new.get('sha256'))[:12]}) "
            f"on {new.get('backend')}; checked and loaded in {detail.get('prepare_ms')} ms, swapped between frames "
            f"in {detail.get('swap_ms')} ms"
        )
        for camera, info in (detail.get("cameras") or {}).items():
            print(f"  camera {camera}: calibration {info.get('calibration')}")
        if detail.get("recalibrate"):
            print(
                f"  recalibrate camera(s) {', '.join(detail['recalibrate'])} for the new model (onen calibrate ... "
                f"--push-to {args.config})"
            )
        return 0
    print(f"station {config.station!r} refused the {detail.get('action', 'update')}: {detail.get('reason')}")
    return 1
