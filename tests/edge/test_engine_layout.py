"""How a model's engine uses the CPU: the layout chosen from the config, and an engine that runs two
calls at once on a real ONNX Runtime session still gives every frame its own outputs, in order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support.onnx_models import HEIGHT, WIDTH

from onen.edge.backends.factory import create_backend
from onen.edge.backends.onnxruntime_backend import CpuLayout, OnnxRuntimeBackend
from onen.edge.inference import SharedEngine


@pytest.mark.parametrize(
    "parallel, threads, cores, expected",
    [
        (None, None, 2, CpuLayout(2, 1)),  # the default on this 2-core machine: two single-threaded calls
        (None, None, 8, CpuLayout(2, 4)),
        (None, None, 1, CpuLayout(1, 1)),  # one core: nothing to run in parallel
        (1, None, 2, CpuLayout(1, 2)),  # the latency layout: one call on every core
        (3, 2, 4, CpuLayout(3, 2)),  # what the config says wins
    ],
)
def test_cpu_layout_fills_what_the_config_leaves_out(parallel, threads, cores, expected):
    assert CpuLayout.choose(parallel, threads, cores) == expected


def test_a_sequential_caller_gets_one_call_at_a_time_and_the_daemon_layout_more(mean_bundle):
    assert OnnxRuntimeBackend(mean_bundle).concurrent_calls == 1
    backend = create_backend(mean_bundle, "onnxruntime", cpu_layout=CpuLayout(2, 1))
    assert backend.concurrent_calls == 2
    assert backend.describe()["parallel_calls"] == 2 and backend.describe()["threads_per_call"] == 1


class Overlap:
    """Wraps a real backend and records how many of its calls ran at the same time."""

    def __init__(self, backend, hold_s: float):
        self.backend, self.hold_s = backend, hold_s
        self.concurrent_calls = backend.concurrent_calls
        self.running = self.most = 0
        self.lock = threading.Lock()

    def infer(self, batch):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.hold_s)  # long enough for a second call to start if the engine allows it
            return self.backend.infer(batch)
        finally:
            with self.lock:
                self.running -= 1

    def describe(self):
        return self.backend.describe()

    def close(self):
        self.backend.close()

    @property
    def bundle(self):
        return self.backend.bundle


@pytest.mark.parametrize("mode", ["thread", "lock"])
def test_engine_runs_as_many_calls_at_once_as_the_backend_allows(mean_bundle, mode):
    backend = Overlap(create_backend(mean_bundle, "onnxruntime", cpu_layout=CpuLayout(2, 1)), hold_s=0.05)
    engine = SharedEngine(backend, mode, max_batch=1)
    assert engine.workers == 2
    levels = [10, 60, 110, 160, 210, 250]
    results: dict[int, float] = {}

    def camera(level: int) -> None:  # lock mode calls in the camera's own thread
        outputs, _ = engine.submit(np.full((1, HEIGHT, WIDTH, 3), level, np.uint8)).result(timeout=10)
        results[level] = float(outputs.score[0])

    threads = [threading.Thread(target=camera, args=(level,)) for level in levels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    engine.close()
    assert backend.most == 2, "two calls overlapped, never more"
    for level in levels:  # the mean model's score is the image mean / 255: no frame got another's outputs
        assert results[level] == pytest.approx(level / 255, rel=1e-5)
    assert engine.calls == len(levels)


def test_stuck_reports_the_oldest_running_call(mean_bundle):
    backend = Overlap(create_backend(mean_bundle, "onnxruntime", cpu_layout=CpuLayout(2, 1)), hold_s=0.4)
    engine = SharedEngine(backend, "thread")
    future = engine.submit(np.zeros((1, HEIGHT, WIDTH, 3), np.uint8))
    time.sleep(0.2)
    assert engine.stuck(0.1) and not engine.stuck(5.0)
    future.result(timeout=5)
    assert not engine.stuck(0.1)
    engine.close()
