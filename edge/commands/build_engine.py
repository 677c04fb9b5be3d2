"""`onen build-engine BUNDLE`: build the TensorRT engine of a bundle for this station's GPU, then verify it.

Run it on the target (Jetson / RTX station): an engine only runs on the GPU architecture and TensorRT
version it was built with. It writes `engines/<cc>_trt<version>_<precision>.engine` + sidecar JSON into
the bundle and records the parity check, so the daemon finds a ready, checked engine at start.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onen.edge.backends.factory import TensorRtProbe
    from onen.edge.bundle import Bundle
    from onen.edge.engines.builder import BuildOptions


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build (and verify) the TensorRT engine of a bundle for this GPU",
        description="Parse the bundle's model.onnx with TensorRT, build an FP16 (default), FP32 or INT8 engine for "
        "this GPU "
        "into BUNDLE/engines/ with a sidecar JSON, then check it against the bundle's reference outputs. "
        "Needs TensorRT + pycuda + an NVIDIA GPU. Builds take minutes on a Jetson.",
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="model bundle directory")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="FP16 engine (default; FP32 if the GPU has no fast FP16)",
    )
    precision.add_argument(
        "--fp32",
        dest="precision",
        action="store_const",
        const="fp32",
        help="FP32 engine (slowest, closest to ONNX Runtime)",
    )
    precision.add_argument(
        "--int8",
        dest="precision",
        action="store_const",
        const="int8",
        help="INT8 engine by entropy calibration (deprecated in TensorRT 10, still supported); needs --calib-images",
    )
    parser.set_defaults(precision="fp16")
    parser.add_argument(
        "--calib-images",
        type=Path,
        metavar="DIR|LIST",
        help="INT8 calibration images: a folder or a file with one path per line (see `onen int8-images`)",
    )
    parser.add_argument(
        "--calib-batch", type=int, default=8, metavar="N", help="INT8 calibration batch size (default 8)"
    )
    parser.add_argument(
        "--workspace", type=float, default=1.0, metavar="GB", help="builder workspace memory limit in GB (default 1)"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=4,
        metavar="N",
        help="largest batch the engine accepts (default 4); min 1, tuned for N",
    )
    parser.add_argument(
        "--timing-cache",
        type=Path,
        metavar="FILE",
        help="timing cache file (default: BUNDLE/engines/timing_<cc>_trt<version>.cache)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the parity check against the bundle's reference outputs"
    )
    parser.add_argument("--trt-verbose", action="store_true", help="show TensorRT's INFO messages too")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from onen.edge.backends.factory import INSTALL_HINT, BackendUnavailable, probe_tensorrt
    from onen.edge.bundle import load_bundle
    from onen.edge.engines.builder import BuildOptions
    from onen.edge.engines.int8_calibration import list_calibration_images

    options = BuildOptions(
        precision=args.precision,
        max_batch=args.max_batch,
        workspace_gb=args.workspace,
        calib_images=args.calib_images,
        calib_batch_size=args.calib_batch,
        timing_cache=args.timing_cache,
        verbose=args.trt_verbose,
    )
    options.validate()  # argument mistakes first, before any GPU question
    bundle = load_bundle(args.bundle)
    if options.calib_images is not None:
        count = len(list_calibration_images(options.calib_images))
        print(f"INT8 calibration images: {count} from {options.calib_images}")
    probe = probe_tensorrt()
    if not probe.available:
        raise BackendUnavailable(
            f"cannot build a TensorRT engine here: {probe.reason}; {INSTALL_HINT}. "
            "Engines must be built on the station's GPU; ONNX Runtime needs no engine."
        )
    return _build_and_verify(bundle, options, probe, force=args.force, verify=not args.no_verify)


def _build_and_verify(bundle: Bundle, options: BuildOptions, probe: TensorRtProbe, force: bool, verify: bool) -> int:
    from onen.edge.backends.tensorrt_backend import TensorRtBackend
    from onen.edge.engines.keys import RuntimeTarget, write_sidecar
    from onen.edge.engines.manager import ensure_engine
    from onen.edge.parity import check_reference

    target = RuntimeTarget(probe.compute_capability, probe.tensorrt_version, probe.gpu_name)
    print(f"GPU {probe.gpu_name} (compute {probe.compute_capability}), TensorRT {probe.tensorrt_version}")
    outcome = ensure_engine(
        bundle, target, options, on_event=lambda kind, detail: print(f"[{kind}] {detail}"), force=force
    )
    if not outcome.built:
        print(f"{outcome.engine_path}: already built for this GPU, TensorRT and model (use --force to rebuild)")
    for note in outcome.sidecar.notes:
        print(f"note: {note}")
    print(f"engine: {outcome.engine_path} ({outcome.sidecar.precision})")
    if not verify:
        return 0
    backend = TensorRtBackend(bundle, probe=probe, engine_path=outcome.engine_path)
    try:
        report = check_reference(backend, bundle)
    finally:
        backend.close()
    outcome.sidecar.parity = report.to_dict()
    write_sidecar(outcome.engine_path, outcome.sidecar)
    print("\n".join(report.summary_lines()))
    if not report.passed:
        print(
            "the engine is marked as failed in its sidecar and will not be loaded; try --fp32 or use backend: "
            "onnxruntime"
        )
        return 1
    return 0
