"""`onen verify-engine BUNDLE [--engine FILE]`: run the engine and ONNX Runtime on the bundle's reference
images and fail when the engine's outputs differ beyond tolerance (score 0.01, map mean 0.01 for FP16)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onen.edge.backends.factory import TensorRtProbe
    from onen.edge.bundle import Bundle
    from onen.edge.parity import ParityReport


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-engine",
        help="check a TensorRT engine against the bundle's reference outputs (and ONNX Runtime)",
        description="Runs ONNX Runtime and the TensorRT engine for this GPU (or --engine FILE) on the reference images "
        "stored in the bundle. Exit 0 when the engine is within tolerance, 1 when not, 2 on errors.",
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="model bundle directory")
    parser.add_argument(
        "--engine", type=Path, metavar="FILE", help="engine file (default: the one matching this GPU and TensorRT)"
    )
    parser.add_argument("--score-tol", type=float, default=0.01, help="max abs score difference (default 0.01)")
    parser.add_argument(
        "--map-tol", type=float, default=0.01, help="max mean abs anomaly-map difference (default 0.01)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.edge.backends.factory import INSTALL_HINT, BackendUnavailable, probe_tensorrt
    from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from onen.edge.bundle import load_bundle
    from onen.edge.cli import UsageError
    from onen.edge.parity import check_reference

    if not (args.score_tol > 0 and args.map_tol > 0):
        raise UsageError(f"--score-tol and --map-tol must be > 0, got {args.score_tol} and {args.map_tol}")
    if args.engine is not None and not args.engine.is_file():
        raise UsageError(f"{args.engine}: engine file does not exist")
    bundle = load_bundle(args.bundle)
    reference = check_reference(OnnxRuntimeBackend(bundle), bundle, args.score_tol, args.map_tol)
    print("ONNX Runtime vs bundle references:")
    print("\n".join("  " + line for line in reference.summary_lines()))
    probe = probe_tensorrt()
    if not probe.available:
        raise BackendUnavailable(f"cannot verify a TensorRT engine here: {probe.reason}; {INSTALL_HINT}")
    return _verify_engine(bundle, probe, args, reference)


def _verify_engine(bundle: Bundle, probe: TensorRtProbe, args: argparse.Namespace, reference: ParityReport) -> int:
    from onen.edge.backends.tensorrt_backend import TensorRtBackend
    from onen.edge.cli import UsageError
    from onen.edge.engines.keys import RuntimeTarget, write_sidecar
    from onen.edge.engines.selection import REBUILD, choose_engine, scan_engines
    from onen.edge.parity import check_reference

    engine_path = args.engine
    if engine_path is None:
        target = RuntimeTarget(probe.compute_capability, probe.tensorrt_version, probe.gpu_name)
        decision = choose_engine(scan_engines(bundle.engines_dir), target, bundle.onnx_sha256, precision=None)
        if decision.action == REBUILD:
            raise UsageError(f"{bundle.engines_dir}: {decision.reason}; run `onen build-engine {bundle.path}` first")
        engine_path = decision.engine_path
    backend = TensorRtBackend(bundle, probe=probe, engine_path=engine_path)
    try:
        report = check_reference(backend, bundle, args.score_tol, args.map_tol)
    finally:
        backend.close()
    backend.sidecar.parity = report.to_dict()
    write_sidecar(engine_path, backend.sidecar)
    print(f"TensorRT engine {engine_path.name} ({backend.sidecar.precision}) vs bundle references:")
    print("\n".join("  " + line for line in report.summary_lines()))
    engine_vs_ort = max(abs(a.score - b.score) for a, b in zip(report.comparisons, reference.comparisons, strict=True))
    print(f"max score difference engine vs ONNX Runtime: {engine_vs_ort:.4f}")
    return 0 if report.passed else 1
