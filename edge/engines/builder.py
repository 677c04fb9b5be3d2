"""Build a TensorRT 10 engine from a bundle's `model.onnx` (the only module here that drives the builder).

Steps, all with the documented TensorRT 10 Python API: parse the ONNX (every parser error reported by
node), one optimisation profile for the batch axis (min 1, opt = max = max_batch), FP16 when the GPU
has fast FP16 (else FP32, said and recorded), INT8 through an entropy calibrator whose cache lives beside
the engine, a timing cache loaded before and saved after the build, the workspace pool limit, the build
log and phase progress on the console, then `build_serialized_network`. Option checks and shapes are
plain Python (tested without a GPU); TensorRT is imported only inside `build_engine`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onen.edge.bundle import Bundle, sha256_file
from onen.edge.engines.keys import (
    PRECISIONS,
    EngineSidecar,
    RuntimeTarget,
    TensorSpec,
    calibration_cache_path,
    engine_file_name,
    read_sidecar,
    sidecar_path,
    timing_cache_path,
    write_sidecar,
)
from onen.edge.errors import OnenError

log = logging.getLogger("onen.edge.engines.build")
trt_log = logging.getLogger("tensorrt")


class BuildOptionsError(OnenError):
    """An engine build was asked for with options that cannot work."""


class EngineBuildError(OnenError):
    """TensorRT could not parse the model or build the engine; the message says where."""


@dataclass
class BuildOptions:
    precision: str = "fp16"
    max_batch: int = 1
    workspace_gb: float = 1.0
    calib_images: Path | None = None  # folder or list file, for int8
    calib_batch_size: int = 8
    timing_cache: Path | None = None  # default: engines/timing_<cc>_trt<ver>.cache
    verbose: bool = False  # TensorRT INFO messages too (WARNING and worse always)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise BuildOptionsError(f"precision {self.precision!r} is unknown; expected one of {', '.join(PRECISIONS)}")
        if self.max_batch < 1:
            raise BuildOptionsError(f"--max-batch must be >= 1, got {self.max_batch}")
        if not self.workspace_gb > 0:
            raise BuildOptionsError(f"--workspace must be > 0 GB, got {self.workspace_gb}")
        if self.precision == "int8" and self.calib_images is None:
            raise BuildOptionsError(
                "--int8 needs --calib-images DIR|LIST (a folder of good-part images or a file with one image path "
                "per line)"
            )
        if self.precision != "int8" and self.calib_images is not None:
            raise BuildOptionsError("--calib-images is only used with --int8")
        if self.calib_batch_size < 1:
            raise BuildOptionsError(f"calibration batch size must be >= 1, got {self.calib_batch_size}")

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gb * (1 << 30))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in data.items()}


@dataclass
class BuildResult:
    engine_path: Path
    sidecar: EngineSidecar
    notes: list[str] = field(default_factory=list)


def batch_profile(height: int, width: int, max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of the uint8 NHWC input: batch 1 up to `max_batch`, tuned for `max_batch`."""
    return (1, height, width, 3), (max_batch, height, width, 3), (max_batch, height, width, 3)


def check_network_input(
    name: str, shape: list[int], expected_name: str, height: int, width: int, max_batch: int
) -> None:
    """The parsed network must take the bundle contract's input; a fixed batch axis limits max_batch."""
    if name != expected_name:
        raise EngineBuildError(f"model.onnx input is named {name!r}, the manifest says {expected_name!r}")
    if len(shape) != 4 or list(shape[1:]) != [height, width, 3]:
        raise EngineBuildError(
            f"model.onnx input {name!r} has shape {shape}; expected [N, {height}, {width}, 3] (uint8 NHWC)"
        )
    if shape[0] != -1 and shape[0] < max_batch:
        raise EngineBuildError(
            f"model.onnx has a fixed batch of {shape[0]}; use --max-batch {shape[0]} or export with a dynamic batch "
            "axis"
        )


def calibration_cache_is_stale(previous: EngineSidecar | None, onnx_sha256: str, calib_images: Path | None) -> bool:
    """A kept INT8 calibration cache is reused only for the same model.onnx and the same image source;
    TensorRT would otherwise silently apply another model's (or data set's) scales."""
    if previous is None:
        return True
    return previous.onnx_sha256 != onnx_sha256 or previous.build_options.get("calib_images") != (
        str(calib_images) if calib_images else None
    )


def describe_parser_error(error: Any) -> str:  # a trt.ParserError (tensorrt has no types)
    """One line per ONNX parser error: node index, name and operator when TensorRT reports them."""
    parts = []
    node = error.node() if hasattr(error, "node") else -1
    if node is not None and node >= 0:
        where = f"node {node}"
        name = error.node_name() if hasattr(error, "node_name") else ""
        operator = error.node_operator() if hasattr(error, "node_operator") else ""
        if name:
            where += f" '{name}'"
        if operator:
            where += f" ({operator})"
        parts.append(where)
    parts.append(f"{error.code()}: {error.desc()}")
    return ": ".join(parts)


def _dtype_name(dtype: object) -> str:
    return str(getattr(dtype, "name", dtype)).lower()


_LOGGER: Any = None  # the one ConsoleLogger (a trt.ILogger)


def tensorrt_logger(trt: Any, verbose: bool) -> Any:  # trt: the tensorrt module (it has no types)
    """The process's one ILogger (TensorRT wants a single logger for builder and runtime), sending
    TensorRT's messages to Python logging, hence to the console."""
    global _LOGGER
    if _LOGGER is None:
        levels = {
            trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
            trt.ILogger.Severity.ERROR: logging.ERROR,
            trt.ILogger.Severity.WARNING: logging.WARNING,
            trt.ILogger.Severity.INFO: logging.INFO,
            trt.ILogger.Severity.VERBOSE: logging.DEBUG,
        }

        class ConsoleLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.threshold = logging.WARNING

            def log(self, severity: Any, msg: str) -> None:
                level = levels.get(severity, logging.INFO)
                if level >= self.threshold:
                    trt_log.log(level, msg)

        _LOGGER = ConsoleLogger()
    _LOGGER.threshold = logging.INFO if verbose else logging.WARNING
    return _LOGGER


def _make_progress_monitor(trt: Any) -> Any:
    """Phase progress on the console (IProgressMonitor, TensorRT >= 10.0); None if this TensorRT lacks it."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class ConsoleProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._steps: dict[str, int] = {}
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = num_steps
                self._started[phase_name] = time.monotonic()
            if parent_phase is None:
                log.info("build phase: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % max(1, total // 10) == 0:
                log.info("  %s: %d / %d", phase_name, step + 1, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                started = self._started.pop(phase_name, time.monotonic())
                self._steps.pop(phase_name, None)
            log.debug("build phase done: %s (%.1f s)", phase_name, time.monotonic() - started)

    return ConsoleProgress()


def build_engine(bundle: Bundle, options: BuildOptions, target: RuntimeTarget) -> BuildResult:
    """Build, write `engines/<cc>_trt<ver>_<precision>.engine` + sidecar, and return them. Needs a GPU."""
    options.validate()
    import tensorrt as trt

    from onen.edge.engines.cuda_context import cuda_context

    manifest = bundle.manifest
    height, width = manifest.input_height, manifest.input_width
    notes: list[str] = []
    started = time.monotonic()
    logger = tensorrt_logger(trt, options.verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    log.info("parsing %s", bundle.model_path)
    if not parser.parse_from_file(str(bundle.model_path)):
        errors = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{bundle.model_path}: TensorRT {trt.__version__} cannot parse the model ({len(errors)} error(s)):\n  "
            + "\n  ".join(errors)
        )
    if network.num_inputs != 1:
        raise EngineBuildError(
            f"{bundle.model_path}: the bundle contract has one input, the network has {network.num_inputs}"
        )
    network_input = network.get_input(0)
    check_network_input(
        network_input.name, list(network_input.shape), manifest.input_name, height, width, options.max_batch
    )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    profile = builder.create_optimization_profile()
    shape_min, shape_opt, shape_max = batch_profile(height, width, options.max_batch)
    profile.set_shape(network_input.name, shape_min, shape_opt, shape_max)
    config.add_optimization_profile(profile)
    monitor = _make_progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor

    used = "fp32"
    calibrator = None
    if options.precision in ("fp16", "int8"):
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            used = "fp16"
        else:
            notes.append("this GPU has no fast FP16; FP16 not enabled, the engine computes in FP32")
    engine_name_precision = used
    if options.precision == "int8":
        if builder.platform_has_fast_int8:
            from onen.edge.engines.int8_calibration import list_calibration_images, make_entropy_calibrator

            notes.append(
                "INT8 by implicit calibration (IInt8EntropyCalibrator2): deprecated in TensorRT 10 in favour of "
                "explicit Q/DQ quantisation, still supported"
            )
            config.set_flag(trt.BuilderFlag.INT8)
            used = engine_name_precision = "int8"
        else:
            notes.append(f"this GPU has no fast INT8; built {used.upper()} instead")
    engine_path = bundle.engines_dir / engine_file_name(target, engine_name_precision)
    bundle.engines_dir.mkdir(parents=True, exist_ok=True)

    cache_path = Path(options.timing_cache or timing_cache_path(bundle.engines_dir, target))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cached = cache_path.read_bytes() if cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cached)
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        notes.append(f"timing cache {cache_path} does not fit this GPU/TensorRT; starting an empty one")
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    elif cached:
        log.info("timing cache: reusing %s (%d bytes)", cache_path, len(cached))

    for note in notes:
        log.warning(note)
    with cuda_context():
        if used == "int8":
            assert options.calib_images is not None  # BuildOptions.validate: --int8 needs --calib-images
            paths = list_calibration_images(options.calib_images)
            calibration_cache = calibration_cache_path(engine_path)
            previous = read_sidecar(sidecar_path(engine_path)) if sidecar_path(engine_path).is_file() else None
            if calibration_cache.is_file() and calibration_cache_is_stale(
                previous, bundle.onnx_sha256, options.calib_images
            ):
                log.info(
                    "INT8 calibration cache %s belongs to another model or image set: recalibrating", calibration_cache
                )
                calibration_cache.unlink()
            calibrator = make_entropy_calibrator(paths, options.calib_batch_size, height, width, calibration_cache)
            config.int8_calibrator = calibrator
            calibration_profile = builder.create_optimization_profile()
            fixed = (options.calib_batch_size, height, width, 3)
            calibration_profile.set_shape(network_input.name, fixed, fixed, fixed)
            config.set_calibration_profile(calibration_profile)
            log.info("INT8 calibration over %d image(s) from %s", len(paths), options.calib_images)
        log.info(
            "building %s engine for %s (compute %s, TensorRT %s); this can take minutes on a Jetson",
            used.upper(),
            target.gpu_name,
            target.compute_capability,
            target.tensorrt_version,
        )
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
    if serialized is None:
        raise EngineBuildError(
            f"{bundle.model_path}: TensorRT could not build the engine; the TensorRT errors above say why"
        )

    temporary = engine_path.with_suffix(".engine.tmp")
    with open(temporary, "wb") as handle:
        handle.write(serialized)
    temporary.replace(engine_path)
    with open(cache_path, "wb") as handle:
        handle.write(timing_cache.serialize())  # the cache set on the config grew during the build

    sidecar = EngineSidecar(
        tensorrt_version=target.tensorrt_version,
        compute_capability=target.compute_capability,
        gpu_name=target.gpu_name,
        precision=used,
        requested_precision=options.precision,
        onnx_sha256=bundle.onnx_sha256,
        engine_file=engine_path.name,
        engine_sha256=sha256_file(engine_path),
        inputs=[
            TensorSpec(t.name, list(t.shape), _dtype_name(t.dtype))
            for t in (network.get_input(i) for i in range(network.num_inputs))
        ],
        outputs=[
            TensorSpec(t.name, list(t.shape), _dtype_name(t.dtype))
            for t in (network.get_output(i) for i in range(network.num_outputs))
        ],
        build_seconds=round(time.monotonic() - started, 1),
        build_options=options.to_dict() | {"timing_cache": str(cache_path)},
        notes=notes,
    )
    write_sidecar(engine_path, sidecar)
    log.info("wrote %s (%.1f MB) in %.0f s", engine_path, engine_path.stat().st_size / 1e6, sidecar.build_seconds)
    return BuildResult(engine_path, sidecar, notes)
