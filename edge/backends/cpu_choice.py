"""`auto` without TensorRT: ONNX Runtime, or OpenVINO where this CPU runs the model measurably faster.

Both backends are opened with the same CPU layout; OpenVINO keeps its reference check (a model it does not
reproduce is never a candidate), so a bundle without reference images stays on ONNX Runtime untimed. Both are
then timed on the bundle's reference images: WARMUP_ROUNDS each, then rounds alternating the two (the order
flips every round) until MIN_ROUNDS are done and TIME_BUDGET_S is spent, or MAX_ROUNDS. A round is
`parallel_calls` calls at once (the layout's; one thread per call, one reference image per call), timed wall
clock, so the figure is what the daemon's engine sees. OpenVINO is kept only if its median round is at least
MARGIN faster; else ONNX Runtime, the reference. The one not kept is closed. The decision is cached
(`cpu_choice_cache`) and announced by the caller as a `backend_selected` event with the detail made here.
"""

from __future__ import annotations

import importlib
import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort

from onen.edge.backends.base import Backend
from onen.edge.backends.cpu_choice_cache import (
    ChoiceKey,
    ChoiceRecord,
    CpuBackendName,
    choice_key,
    read_choice,
    write_choice,
)
from onen.edge.backends.onnxruntime_backend import CpuLayout, OnnxRuntimeBackend
from onen.edge.bundle import Bundle
from onen.edge.images import prepare_batch, read_image_rgb

log = logging.getLogger(__name__)
EventCallback = Callable[[str, dict[str, Any]], None]
OpenBackend = Callable[..., Backend]

MARGIN = 0.05  # OpenVINO must be at least 5 % faster than ONNX Runtime to be kept
WARMUP_ROUNDS = 3
MIN_ROUNDS = 5
MAX_ROUNDS = 25
TIME_BUDGET_S = 1.0  # of timed rounds (both backends), once MIN_ROUNDS are done


def choose_cpu_backend(
    bundle: Bundle, layout: CpuLayout | None, on_event: EventCallback | None = None
) -> tuple[Backend, dict[str, Any] | None]:
    """The CPU backend `auto` serves, and the `backend_selected` detail (None where OpenVINO is not installed or
    the bundle has no reference images: ONNX Runtime, untimed, as before)."""
    layout = layout or CpuLayout(1, 0)
    try:
        openvino = importlib.import_module("openvino")
        from onen.edge.backends.openvino_backend import OpenVinoBackend
    except ImportError:
        return OnnxRuntimeBackend(bundle, layout=layout), None
    if not bundle.manifest.reference:
        log.info("%s: no reference images to check OpenVINO against; ONNX Runtime", bundle.path)
        return OnnxRuntimeBackend(bundle, layout=layout), None
    key = choice_key(bundle, layout, ort.__version__, openvino.__version__)
    record = read_choice(bundle, key)
    backend = None if record is None else _open_cached(bundle, layout, record, on_event, OpenVinoBackend)
    cached = backend is not None
    if backend is None or record is None:
        backend, record = _measure(bundle, layout, key, on_event, OpenVinoBackend)
        write_choice(bundle, record)
    detail = {
        "bundle": str(bundle.path),
        "requested": "auto",
        "using": record.using,
        "onnxruntime_ms": record.onnxruntime_ms,
        "openvino_ms": record.openvino_ms,
        "margin": MARGIN,
        "cached": cached,
        "openvino_precision": record.openvino_precision,
        "calls_at_once": record.calls_at_once,
        "rounds": record.rounds,
        "reason": record.reason,
    }
    source = "cached choice" if cached else "measured now"
    if record.openvino_ms is None:
        log.info("%s: auto runs onnxruntime on the CPU (%s; %s)", bundle.path, record.reason, source)
    else:
        log.info(
            "%s: auto runs %s on the CPU (median round of %d call(s) at once over %d rounds: ONNX Runtime %.3f ms, "
            "OpenVINO %s %.3f ms; OpenVINO kept only if %.0f %% faster; %s)",
            bundle.path,
            record.using,
            record.calls_at_once,
            record.rounds,
            record.onnxruntime_ms,
            record.openvino_precision,
            record.openvino_ms,
            MARGIN * 100,
            source,
        )
    return backend, detail


def _open_cached(
    bundle: Bundle, layout: CpuLayout, record: ChoiceRecord, on_event: EventCallback | None, open_openvino: OpenBackend
) -> Backend | None:
    """The backend the cached record chose, or None where OpenVINO no longer opens (then the choice is made again)."""
    if record.using == "onnxruntime":
        return OnnxRuntimeBackend(bundle, layout=layout)
    try:
        return open_openvino(bundle, layout=layout, on_event=on_event)
    except Exception as error:  # reference check or compile failure: choose again, never fail `auto`
        log.warning("%s: cached choice OpenVINO does not open (%s); timing again", bundle.path, error)
        return None


def _measure(
    bundle: Bundle, layout: CpuLayout, key: ChoiceKey, on_event: EventCallback | None, open_openvino: OpenBackend
) -> tuple[Backend, ChoiceRecord]:
    """Open both, time both, keep one: the kept backend and the record of why."""
    onnxruntime = OnnxRuntimeBackend(bundle, layout=layout)
    calls = layout.parallel_calls
    try:
        openvino = open_openvino(bundle, layout=layout, on_event=on_event)
    except Exception as error:  # OnenError from the reference check, RuntimeError from OpenVINO's compiler
        reason = f"OpenVINO is no candidate: {error}"
        record = ChoiceRecord(
            key=key,
            using="onnxruntime",
            onnxruntime_ms=None,
            openvino_ms=None,
            openvino_precision=None,
            calls_at_once=calls,
            rounds=0,
            reason=reason,
        )
        return onnxruntime, record
    height, width = bundle.manifest.input_height, bundle.manifest.input_width
    images = [read_image_rgb(bundle.path / ref.file) for ref in bundle.manifest.reference]
    frames = [prepare_batch([image], height, width) for image in images]
    medians, rounds = time_interleaved({"onnxruntime": onnxruntime, "openvino": openvino}, frames, calls)
    faster = medians["openvino"] <= medians["onnxruntime"] * (1 - MARGIN)
    using: CpuBackendName = "openvino" if faster else "onnxruntime"
    kept, dropped = (openvino, onnxruntime) if using == "openvino" else (onnxruntime, openvino)
    dropped.close()
    record = ChoiceRecord(
        key=key,
        using=using,
        onnxruntime_ms=round(medians["onnxruntime"], 4),
        openvino_ms=round(medians["openvino"], 4),
        openvino_precision=getattr(openvino, "precision", None),
        calls_at_once=calls,
        rounds=rounds,
    )
    return kept, record


def time_interleaved(
    backends: dict[str, Backend], frames: list[np.ndarray], calls_at_once: int
) -> tuple[dict[str, float], int]:
    """Median wall time (ms) of a round of `calls_at_once` calls at once per backend, and the rounds timed."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    order = list(backends)
    with ThreadPoolExecutor(max_workers=calls_at_once) as pool:

        def one_round(backend: Backend) -> float:
            start = time.perf_counter()
            if calls_at_once == 1:
                backend.infer(frames[0])
            else:
                list(pool.map(backend.infer, [frames[i % len(frames)] for i in range(calls_at_once)]))
            return time.perf_counter() - start

        for name in order:
            for _ in range(WARMUP_ROUNDS):
                one_round(backends[name])
        started = time.perf_counter()
        rounds = 0
        while rounds < MAX_ROUNDS and (rounds < MIN_ROUNDS or time.perf_counter() - started < TIME_BUDGET_S):
            for name in order if rounds % 2 == 0 else reversed(order):
                times[name].append(one_round(backends[name]))
            rounds += 1
    return {name: statistics.median(spent) * 1000 for name, spent in times.items()}, rounds
