"""Engine cache keys: the file name and the sidecar JSON that say what an engine was built for.

A TensorRT engine only runs on the GPU architecture (compute capability) and the TensorRT version it was
built with, and only means something for the exact `model.onnx` it came from. The sidecar records all
three, so a station can decide from files alone whether an engine may be loaded or must be rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onen.edge.errors import BundleError

SIDECAR_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ".engine"
_NAME = re.compile(r"^(?P<cc>\d+\.\d+)_trt(?P<trt>[0-9][0-9A-Za-z.+-]*)_(?P<precision>fp32|fp16|int8)\.engine$")


@dataclass(frozen=True)
class RuntimeTarget:
    """The GPU and TensorRT an engine runs on; part of every cache key."""

    compute_capability: str  # "8.7" (Jetson Orin), "8.9" (RTX 40xx)...
    tensorrt_version: str  # trt.__version__, e.g. "10.3.0"
    gpu_name: str = ""


@dataclass
class TensorSpec:
    """One input or output of the engine as TensorRT sees it (-1 marks the dynamic batch axis)."""

    name: str
    shape: list[int]
    dtype: str


@dataclass
class EngineSidecar:
    """What `<engine>.json` beside every engine file holds."""

    tensorrt_version: str
    compute_capability: str
    gpu_name: str
    precision: str  # precision actually used
    requested_precision: str  # what the build asked for (fp16 may become fp32 without fast FP16)
    onnx_sha256: str
    engine_file: str
    engine_sha256: str = ""
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    built_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    build_seconds: float = 0.0
    build_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "platform has no fast FP16: built FP32"
    parity: dict[str, Any] | None = None  # ParityReport.to_dict() once checked
    format_version: int = SIDECAR_FORMAT

    @property
    def target(self) -> RuntimeTarget:
        return RuntimeTarget(self.compute_capability, self.tensorrt_version, self.gpu_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> EngineSidecar:
        if not isinstance(data, dict):
            raise BundleError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(
                f"{source}: unknown key(s) {', '.join(unknown)}; expected only {', '.join(sorted(known))}"
            )
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise BundleError(f"{source}: missing key(s) {', '.join(missing)}")
        if data.get("format_version", SIDECAR_FORMAT) > SIDECAR_FORMAT:
            raise BundleError(
                f"{source}: format_version {data['format_version']} is newer than this software reads "
                f"({SIDECAR_FORMAT})"
            )
        for key in ("precision", "requested_precision"):
            if data[key] not in PRECISIONS:
                raise BundleError(f"{source}: key '{key}' is {data[key]!r}; expected one of {', '.join(PRECISIONS)}")
        data = dict(data)
        try:
            data["inputs"] = [TensorSpec(**spec) for spec in data.get("inputs", [])]
            data["outputs"] = [TensorSpec(**spec) for spec in data.get("outputs", [])]
        except TypeError as error:
            raise BundleError(f"{source}: 'inputs'/'outputs' entries need name, shape, dtype: {error}") from error
        return cls(**data)


def engine_file_name(target: RuntimeTarget, precision: str) -> str:
    """`<compute capability>_trt<version>_<precision>.engine`, e.g. `8.7_trt10.3.0_fp16.engine`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    name = f"{target.compute_capability}_trt{target.tensorrt_version}_{precision}{ENGINE_SUFFIX}"
    if not _NAME.match(name):
        raise ValueError(
            f"cannot make an engine file name from compute capability {target.compute_capability!r} and TensorRT "
            f"{target.tensorrt_version!r}"
        )
    return name


def parse_engine_file_name(name: str) -> tuple[RuntimeTarget, str] | None:
    """The (target, precision) an engine file name claims, or None for a name we did not write."""
    match = _NAME.match(name)
    if match is None:
        return None
    return RuntimeTarget(match["cc"], match["trt"]), match["precision"]


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(".json")


def calibration_cache_path(engine_path: Path) -> Path:
    """The INT8 calibration cache, kept beside its engine so a rebuild skips calibration."""
    return engine_path.with_suffix(".calib")


def timing_cache_path(engines_dir: Path, target: RuntimeTarget) -> Path:
    """One timing cache per GPU architecture and TensorRT version (TensorRT refuses others' caches)."""
    return engines_dir / f"timing_{target.compute_capability}_trt{target.tensorrt_version}.cache"


def lock_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(".lock")


def write_sidecar(engine_path: Path, sidecar: EngineSidecar) -> Path:
    """Write the sidecar atomically (temp file + rename) so a reader never sees half a JSON."""
    path = sidecar_path(engine_path)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    temporary.replace(path)
    return path


def read_sidecar(path: Path) -> EngineSidecar:
    if not path.is_file():
        raise BundleError(f"{path}: engine sidecar does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error
    return EngineSidecar.from_dict(data, source=str(path))
