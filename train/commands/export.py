"""`onen export`: a trained run -> model bundle (model.onnx + manifest.json + reference outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained run as a model bundle",
        description="Writes BUNDLE/model.onnx (uint8 NHWC input 'image', outputs score/anomaly_map/class_logits, "
        "opset 18, "
        "one file), reference images with their expected outputs, and manifest.json (sha256 of every file, "
        "training summary, metrics, default thresholds). ONNX Runtime is checked against torch first.",
    )
    parser.add_argument("--run", required=True, type=Path, help="run directory of `onen train`")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing bundle at --out (all its files, signature included)"
    )
    parser.add_argument("--teacher", action="store_true", help="export the run's CNN teacher instead of the student")
    parser.add_argument("--name", help="model name in the manifest (default: the run directory's name)")
    parser.add_argument("--version", default="1", help="model version in the manifest")
    parser.add_argument("--references", type=int, default=4, help="reference images stored in the bundle")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.train.export import export_run

    bundle = export_run(
        args.run,
        args.out,
        teacher=args.teacher,
        name=args.name,
        version=args.version,
        reference_count=args.references,
        force=args.force,
    )
    print(f"bundle written to {bundle}")
    return 0
