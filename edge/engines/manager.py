"""Find the engine for the running GPU, or build it once, under a lock, and say so.

Used by the TensorRT backend (daemon start, model swap) and by `onen build-engine`. The build itself is
passed in (TensorRT's `build_engine` in production), so this orchestration is plain Python: scan,
decide, lock, decide again (another process may have built the engine while we waited), build, announce.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onen.edge.bundle import Bundle
from onen.edge.engines.builder import BuildOptions, BuildResult, build_engine
from onen.edge.engines.keys import EngineSidecar, RuntimeTarget, engine_file_name, lock_path
from onen.edge.engines.lock import FileLock
from onen.edge.engines.selection import LOAD, EngineDecision, choose_engine, scan_engines
from onen.edge.errors import OnenError

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]


class EngineParityError(OnenError):
    """An engine that does not reproduce the bundle's reference outputs within tolerance; never served."""


BuildFunction = Callable[[Bundle, BuildOptions, RuntimeTarget], BuildResult]


@dataclass
class EngineOutcome:
    engine_path: Path
    sidecar: EngineSidecar
    built: bool  # True when this call built it (then it still needs a parity check)
    decision: EngineDecision  # the first decision, with the reasons engines were rejected


def _loaded(decision: EngineDecision, first: EngineDecision) -> EngineOutcome:
    """The outcome of a LOAD decision (choose_engine names the engine and its sidecar in every LOAD)."""
    assert decision.engine_path is not None and decision.sidecar is not None
    return EngineOutcome(decision.engine_path, decision.sidecar, False, first)


def ensure_engine(
    bundle: Bundle,
    target: RuntimeTarget,
    options: BuildOptions,
    on_event: EventCallback | None = None,
    build: BuildFunction = build_engine,
    lock_timeout_s: float = 3600.0,
    force: bool = False,
    any_precision: bool = False,
) -> EngineOutcome:
    """The engine to load for `target`, built first if no matching one exists (or `force`).

    `any_precision`: accept a matching engine of any precision (the daemon: whatever `onen build-engine`
    made, e.g. INT8 or FP32, is used); otherwise only one built for `options.precision` (the CLI).
    A build always uses `options.precision`."""
    options.validate()

    def emit(kind: str, detail: dict[str, Any]) -> None:
        log.info("%s: %s", kind, detail)
        if on_event is not None:
            on_event(kind, detail)

    def decide() -> EngineDecision:
        return choose_engine(
            scan_engines(bundle.engines_dir), target, bundle.onnx_sha256, None if any_precision else options.precision
        )

    first = decide()
    if first.action == LOAD and not force:
        return _loaded(first, first)
    if first.parity_failed is not None and not force:
        # Rebuilding with the same TensorRT, GPU and model gives the same engine: do not loop on it.
        raise EngineParityError(
            f"{first.parity_failed}: this engine failed the parity check against the bundle's reference outputs "
            f"(see its sidecar) and is not served; build an FP32 engine with `onen build-engine --fp32 BUNDLE`, "
            "or use backend: onnxruntime for this model"
        )
    if not os.access(bundle.path, os.W_OK) or (
        bundle.engines_dir.exists() and not os.access(bundle.engines_dir, os.W_OK)
    ):
        raise OnenError(
            f"{bundle.engines_dir}: an engine must be built ({first.reason}) but this bundle is not writable by this "
            "user; "
            "build it with `onen build-engine` as the bundle's owner or make the folder writable"
        )
    bundle.engines_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(
        lock_path(bundle.engines_dir / engine_file_name(target, options.precision)),
        timeout_s=lock_timeout_s,
        on_wait=lambda message: emit("engine_build_waiting", {"bundle": str(bundle.path), "lock": message}),
    )
    with lock:
        decision = decide()
        if decision.action == LOAD and not force:
            outcome = _loaded(decision, first)
            emit(
                "engine_ready",
                {
                    "bundle": str(bundle.path),
                    "engine": outcome.engine_path.name,
                    "note": "built by another process while we waited",
                },
            )
            return outcome
        detail = {
            "bundle": str(bundle.path),
            "gpu": target.gpu_name,
            "compute_capability": target.compute_capability,
            "tensorrt": target.tensorrt_version,
            "precision": options.precision,
            "reason": "rebuild forced" if force and decision.action == LOAD else decision.reason,
        }
        emit("engine_build_started", detail)
        try:
            result = build(bundle, options, target)
        except OnenError as error:
            emit("engine_build_failed", detail | {"error": str(error)})
            raise
        emit(
            "engine_built",
            {
                "bundle": str(bundle.path),
                "engine": result.engine_path.name,
                "precision": result.sidecar.precision,
                "seconds": result.sidecar.build_seconds,
                "notes": result.notes,
            },
        )
        return EngineOutcome(result.engine_path, result.sidecar, True, first)
