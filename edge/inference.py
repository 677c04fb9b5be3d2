"""One backend per model, shared by every camera that uses the model.

Two ways to share it, chosen by `mode`:
- "lock": each camera thread calls the backend itself, at most `workers` at once (`submit` returns a done
  future);
- "thread": `workers` inference threads take requests from a queue, may batch frames of several cameras
  into one call (up to `max_batch`), and let camera threads pre-process the next frame and
  post-process the previous one while the engine runs (ONNX Runtime/TensorRT release the GIL).
`workers` is the backend's `concurrent_calls`: 1 on a GPU, 2 for ONNX Runtime on a multi-core CPU, where
two frames in two single-threaded calls at once keep the cores busier than one call on all cores.
`onen bench daemon` measures both; DEFAULT_MODE is the faster one there. Either way a frame costs
exactly one engine call.
The engine also reports whether a call has been running suspiciously long, for the systemd watchdog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from onen.edge.backends.base import Backend, ModelOutputs

log = logging.getLogger(__name__)

MODES = ("lock", "thread")
DEFAULT_MODE = "thread"


class SharedEngine:
    def __init__(self, backend: Backend, mode: str = DEFAULT_MODE, max_batch: int = 4):
        if mode not in MODES:
            raise ValueError(f"engine mode must be one of {MODES}, got {mode!r}")
        self.backend = backend
        self.mode = mode
        self.max_batch = max(1, max_batch)
        self.workers = max(1, int(getattr(backend, "concurrent_calls", 1)))
        self.calls = 0
        self._busy: dict[int, float] = {}  # thread id -> monotonic start of its running call
        self._users = 0  # frames queued or running on this engine (see hold/release)
        self._users_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.workers)  # lock mode: calls running at once
        self._requests: queue.Queue[tuple[np.ndarray, Future[tuple[ModelOutputs, float]]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        if mode == "thread":
            for index in range(self.workers):
                thread = threading.Thread(
                    target=self._serve, name=f"onen-engine-{backend.bundle.manifest.name}-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, batch: np.ndarray) -> Future[tuple[ModelOutputs, float]]:
        """Queue one frame batch; the future gives (ModelOutputs, engine milliseconds)."""
        future: Future[tuple[ModelOutputs, float]] = Future()
        if self.mode == "lock":
            try:
                with self._slots:
                    future.set_result(self._call(batch))
            except Exception as error:
                future.set_exception(error)
            return future
        self._requests.put((batch, future))
        return future

    def hold(self) -> None:
        """A camera is about to queue a frame here; `release` once its outputs are back. A swapped-out engine
        is closed only when nobody holds it, so no frame in flight waits on a closed engine."""
        with self._users_lock:
            self._users += 1

    def release(self) -> None:
        with self._users_lock:
            self._users -= 1

    @property
    def in_use(self) -> int:
        return self._users

    def close_when_idle(self, timeout_s: float = 30.0) -> bool:
        """Close once no frame holds the engine (after a swap); True when it was idle before the timeout."""
        deadline = time.monotonic() + timeout_s
        while self.in_use > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        idle = self.in_use == 0
        if not idle:
            log.warning(
                "engine %s still held by %d frame(s) after %.0f s; closing it anyway",
                self.backend.bundle.manifest.name,
                self.in_use,
                timeout_s,
            )
        self.close()
        return idle

    def infer(self, batch: np.ndarray) -> ModelOutputs:
        """Run one frame batch and wait for its outputs."""
        return self.submit(batch).result()[0]

    def _call(self, batch: np.ndarray) -> tuple[ModelOutputs, float]:
        started = time.monotonic()
        me = threading.get_ident()
        self._busy[me] = started
        try:
            outputs = self.backend.infer(batch)
            with self._users_lock:
                self.calls += 1
            return outputs, (time.monotonic() - started) * 1000
        finally:
            self._busy.pop(me, None)

    def _serve(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            pending = [first]
            while len(pending) < self.max_batch:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._requests.put(None)
                    break
                pending.append(item)
            self._run_batch(pending)

    def _run_batch(self, pending: list[tuple[np.ndarray, Future[tuple[ModelOutputs, float]]]]) -> None:
        try:
            outputs, milliseconds = self._call(
                np.concatenate([batch for batch, _ in pending]) if len(pending) > 1 else pending[0][0]
            )
        except Exception as error:  # every waiting camera learns about the failure
            for _, future in pending:
                future.set_exception(error)
            return
        start = 0
        for batch, future in pending:
            stop = start + len(batch)
            future.set_result(
                (
                    ModelOutputs(
                        outputs.score[start:stop], outputs.anomaly_map[start:stop], outputs.class_logits[start:stop]
                    ),
                    milliseconds,
                )
            )
            start = stop

    def stuck(self, limit_s: float) -> bool:
        """True when one engine call has been running longer than `limit_s` (a hung GPU/driver)."""
        starts = list(self._busy.values())
        return bool(starts) and time.monotonic() - min(starts) > limit_s

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "mode": self.mode, "workers": self.workers, "calls": self.calls}

    def close(self) -> None:
        for _ in self._threads:
            self._requests.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self.backend.close()
