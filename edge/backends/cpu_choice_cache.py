"""The cached CPU backend choice of `auto`: `engines/backend_choice.json` in the bundle, beside TensorRT's engines.

The file holds the key that makes the choice valid (the model's sha256, the CPU model, the core count, the
ONNX Runtime and OpenVINO versions, the CPU layout) and the medians it was made from. A file with another key
is stale and a damaged one is ignored (logged); both are timed again and rewritten. A bundle folder that
cannot be written to means timing at every open (logged once per folder), never a failure.
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from onen.edge.backends.onnxruntime_backend import CpuLayout
from onen.edge.bundle import Bundle

log = logging.getLogger(__name__)

CHOICE_FILE = "backend_choice.json"
CHOICE_FORMAT: Literal[1] = 1
CpuBackendName = Literal["onnxruntime", "openvino"]
_unwritable_logged: set[Path] = set()


class ChoiceKey(BaseModel):
    """What the measured choice depends on: another model, CPU, core count, runtime or layout times again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onnx_sha256: str
    cpu: str
    cores: int
    onnxruntime: str
    openvino: str
    parallel_calls: int
    threads_per_call: int  # 0 = the runtime's default


class ChoiceRecord(BaseModel):
    """One measured choice; `openvino_ms` is None when OpenVINO was no candidate (`reason` says why)."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = CHOICE_FORMAT
    key: ChoiceKey
    using: CpuBackendName
    onnxruntime_ms: float | None
    openvino_ms: float | None
    openvino_precision: Literal["bf16", "f32"] | None
    calls_at_once: int
    rounds: int
    reason: str = ""
    chosen_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux x86), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def choice_key(bundle: Bundle, layout: CpuLayout, onnxruntime_version: str, openvino_version: str) -> ChoiceKey:
    return ChoiceKey(
        onnx_sha256=bundle.onnx_sha256,
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        onnxruntime=onnxruntime_version,
        openvino=openvino_version,
        parallel_calls=layout.parallel_calls,
        threads_per_call=layout.threads_per_call,
    )


def choice_path(bundle: Bundle) -> Path:
    return bundle.engines_dir / CHOICE_FILE


def read_choice(bundle: Bundle, key: ChoiceKey) -> ChoiceRecord | None:
    """The cached choice for `key`, or None (no file, another key, or a damaged file: logged, then rewritten)."""
    path = choice_path(bundle)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("%s: cannot read the cached backend choice (%s); timing again", path, error)
        return None
    try:
        record = ChoiceRecord.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        log.warning("%s: damaged cached backend choice (%s: %s); ignored, timing again", path, where, first["msg"])
        return None
    if record.key != key:
        log.info("%s: cached backend choice is for another key; timing again", path)
        return None
    return record


def write_choice(bundle: Bundle, record: ChoiceRecord) -> bool:
    """Write the record atomically (temp file + rename); False, logged once per folder, where that is refused."""
    path = choice_path(bundle)
    temporary = path.with_suffix(".json.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(record.model_dump_json(indent=2) + "\n")
        temporary.replace(path)
    except OSError as error:
        if path.parent not in _unwritable_logged:
            _unwritable_logged.add(path.parent)
            log.warning(
                "%s: cannot cache the backend choice (%s); `auto` times ONNX Runtime and OpenVINO at every open",
                path,
                error,
            )
        return False
    return True
