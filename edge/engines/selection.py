"""Choose the engine to load for the running GPU, or decide that one must be built.

An engine is loaded only when its sidecar says it was built for this compute capability, this TensorRT
version and this bundle's `model.onnx` (sha256), for the precision asked for, and the engine file is the
one the sidecar describes. Anything else is never deserialised: TensorRT would refuse it at best and run
a stale model at worst. The decision is pure (dataclasses in, dataclass out); only `scan_engines` reads files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onen.edge.bundle import sha256_file
from onen.edge.engines.keys import ENGINE_SUFFIX, EngineSidecar, RuntimeTarget, read_sidecar, sidecar_path
from onen.edge.errors import BundleError

LOAD = "load"
REBUILD = "rebuild"


@dataclass(frozen=True)
class EngineRecord:
    """An engine file found in a bundle, with its sidecar (None when missing or unreadable)."""

    engine_path: Path
    sidecar: EngineSidecar | None
    problem: str = ""  # why the files themselves are unusable (no sidecar, hash mismatch...)


@dataclass(frozen=True)
class EngineDecision:
    action: str  # LOAD or REBUILD
    engine_path: Path | None = None
    sidecar: EngineSidecar | None = None
    rejected: tuple[str, ...] = field(default_factory=tuple)  # one line per engine not used, with the reason
    parity_failed: Path | None = None  # a matching engine whose only fault is a failed parity check

    @property
    def reason(self) -> str:
        if self.action == LOAD:
            assert self.engine_path is not None  # a LOAD decision names its engine
            return f"{self.engine_path.name} matches this GPU, TensorRT and model"
        if not self.rejected:
            return "no engine built yet for this bundle"
        return "no matching engine: " + "; ".join(self.rejected)


def mismatches(
    sidecar: EngineSidecar, target: RuntimeTarget, onnx_sha256: str, precision: str | None, ignore_parity: bool = False
) -> list[str]:
    """Every reason this engine may not run here (empty list = it may)."""
    reasons = []
    if sidecar.compute_capability != target.compute_capability:
        reasons.append(
            f"built for compute capability {sidecar.compute_capability} ({sidecar.gpu_name or 'unknown GPU'}), this "
            f"GPU is {target.compute_capability} ({target.gpu_name or 'unknown GPU'})"
        )
    if sidecar.tensorrt_version != target.tensorrt_version:
        reasons.append(f"built with TensorRT {sidecar.tensorrt_version}, this station runs {target.tensorrt_version}")
    if sidecar.onnx_sha256 != onnx_sha256:
        reasons.append(
            f"built from another model.onnx (sha256 {sidecar.onnx_sha256[:12]}..., bundle has {onnx_sha256[:12]}...)"
        )
    if precision is not None and sidecar.requested_precision != precision:
        reasons.append(f"built for {sidecar.requested_precision}, {precision} asked for")
    if not ignore_parity and sidecar.parity is not None and not sidecar.parity.get("passed", False):
        reasons.append("failed the parity check against the bundle's reference outputs")
    return reasons


def choose_engine(
    records: list[EngineRecord], target: RuntimeTarget, onnx_sha256: str, precision: str | None = "fp16"
) -> EngineDecision:
    """The newest engine that matches, else REBUILD with the reason for each rejected engine."""
    rejected: list[str] = []
    matching: list[tuple[EngineRecord, EngineSidecar]] = []
    parity_failed: Path | None = None
    for record in sorted(records, key=lambda r: r.engine_path.name):
        if record.problem or record.sidecar is None:
            rejected.append(f"{record.engine_path.name}: {record.problem or 'no sidecar'}")
            continue
        reasons = mismatches(record.sidecar, target, onnx_sha256, precision)
        if reasons:
            rejected.append(f"{record.engine_path.name}: " + ", ".join(reasons))
            if not mismatches(record.sidecar, target, onnx_sha256, precision, ignore_parity=True):
                parity_failed = record.engine_path
        else:
            matching.append((record, record.sidecar))
    if not matching:
        return EngineDecision(REBUILD, rejected=tuple(rejected), parity_failed=parity_failed)
    best, best_sidecar = max(matching, key=lambda pair: (pair[1].built_at, pair[0].engine_path.name))
    others = [f"{r.engine_path.name}: an older match" for r, _ in matching if r is not best]
    return EngineDecision(LOAD, best.engine_path, best_sidecar, tuple(rejected + others))


def scan_engines(engines_dir: Path, verify_hash: bool = True) -> list[EngineRecord]:
    """Every `*.engine` in `engines_dir` with its sidecar; a damaged pair is kept with its problem."""
    if not engines_dir.is_dir():
        return []
    records = []
    for engine_path in sorted(engines_dir.glob(f"*{ENGINE_SUFFIX}")):
        try:
            sidecar = read_sidecar(sidecar_path(engine_path))
        except BundleError as error:
            records.append(EngineRecord(engine_path, None, str(error)))
            continue
        problem = ""
        if sidecar.engine_file != engine_path.name:
            problem = f"sidecar describes {sidecar.engine_file}, not this file"
        elif verify_hash and sidecar.engine_sha256 and sha256_file(engine_path) != sidecar.engine_sha256:
            problem = "engine file does not match the sha256 in its sidecar (damaged or replaced)"
        records.append(EngineRecord(engine_path, sidecar, problem))
    return records
