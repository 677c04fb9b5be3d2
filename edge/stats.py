"""Rolling figures of a running station: latency percentiles per stage, frames per second, counters.

Windows are bounded (the last N latency samples; frame counts in one-second buckets over the last few
seconds for fps) so a station that runs for months keeps constant memory, and a stats message says how
the line runs *now*. Frames are counted per bucket, never kept one timestamp each, so fps is right at
any rate.

CPU accounting (`CpuAccount`): the daemon's own work per frame, by stage, on the CPU clock of the thread
doing it (`time.thread_time_ns`), not wall time: waiting costs nothing here, work does. Threads that run
a library's loop (ONNX Runtime's calls, paho's network loop) are read from outside with their thread
CPU clocks, and the whole process with `time.process_time_ns`, both counted from the first finished
frame so start-up (imports, parity check) stays out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)
# thread name prefixes -> the group their CPU time is reported under (edge.inference, paho-mqtt)
THREAD_GROUPS = (("onen-engine-", "engine_threads"), ("paho-mqtt-client-", "mqtt_network_thread"))


def percentiles_of(values: Any) -> dict[str, float]:
    """p50/p95/p99 of a sequence of latencies (ms), rounded to microseconds; NaN for none."""
    samples = np.asarray(values, dtype=float)
    if samples.size == 0:
        return {f"p{p}": float("nan") for p in PERCENTILES}
    return {f"p{p}": round(float(np.percentile(samples, p)), 3) for p in PERCENTILES}


def thread_cpu_ns(thread: threading.Thread) -> int | None:
    """CPU time a running thread has used (Linux/POSIX thread CPU clocks); None where it cannot be read."""
    try:
        ident = thread.ident
        if ident is None or not thread.is_alive():
            return None
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, ValueError):
        return None


class CpuAccount:
    """CPU nanoseconds per stage, summed over all frames (thread-safe; each stage adds its own thread's time).

    `since_first_frame` starts the whole-process and library-thread clocks; `per_frame` divides by frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stage_ns: Counter[str] = Counter()
        self._process_base: int | None = None
        self._thread_base: dict[int, int] = {}

    def add(self, stage: str, nanoseconds: int) -> None:
        with self._lock:
            self._stage_ns[stage] += nanoseconds

    def since_first_frame(self) -> None:
        """Called once, when the first frame is done: from here the process and library threads are counted."""
        with self._lock:
            if self._process_base is not None:
                return
            self._process_base = time.process_time_ns()
        for thread in threading.enumerate():
            used = thread_cpu_ns(thread)
            if used is not None and thread.ident is not None:
                self._thread_base[thread.ident] = used

    def per_frame(self, frames: int, frames_at_base: int) -> dict[str, float]:
        """Milliseconds of CPU per frame: each stage, the library threads, the process, and the process
        without the engine threads (the daemon's own work)."""
        with self._lock:
            stages = dict(self._stage_ns)
            process_base = self._process_base
        result = {stage: round(ns / frames / 1e6, 4) for stage, ns in sorted(stages.items())} if frames else {}
        counted = frames - frames_at_base
        if process_base is None or counted <= 0:
            return result
        groups: Counter[str] = Counter()
        for thread in threading.enumerate():
            used = thread_cpu_ns(thread)
            for prefix, group in THREAD_GROUPS:
                if used is not None and thread.name.startswith(prefix):
                    groups[group] += used - self._thread_base.get(thread.ident or 0, 0)
        process = time.process_time_ns() - process_base
        for group in sorted(groups):
            result[group] = round(groups[group] / counted / 1e6, 4)
        result["process"] = round(process / counted / 1e6, 4)
        result["process_outside_engine"] = round((process - groups["engine_threads"]) / counted / 1e6, 4)
        return result


class RollingStats:
    """Thread-safe: pipelines record, the stats publisher reads."""

    def __init__(self, window: int = 2048, fps_window_s: int = 10, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._window = window
        self._fps_window_s = int(fps_window_s)
        self._clock = clock
        self._latency: dict[str, deque[float]] = {}
        self._done: dict[str, deque[list[int]]] = {}  # camera -> [second, frames finished in it]
        self.counters: Counter[str] = Counter()
        self.started = clock()
        self.cpu = CpuAccount()
        self._frames_at_cpu_base: int | None = None

    def record(self, camera: str, latency_ms: dict[str, float]) -> None:
        second = math.floor(self._clock())
        with self._lock:
            for stage, value in latency_ms.items():
                self._latency.setdefault(stage, deque(maxlen=self._window)).append(float(value))
            buckets = self._done.setdefault(camera, deque(maxlen=self._fps_window_s + 1))
            if buckets and buckets[-1][0] == second:
                buckets[-1][1] += 1
            else:
                buckets.append([second, 1])
            self.counters["frames"] += 1
            self.counters[f"frames.{camera}"] += 1
            first = self._frames_at_cpu_base is None
            if first:
                self._frames_at_cpu_base = self.counters["frames"]
        if first:
            self.cpu.since_first_frame()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self._lock:
            samples = {stage: np.fromiter(values, float) for stage, values in self._latency.items() if values}
        return {stage: percentiles_of(v) for stage, v in samples.items()}

    def fps(self) -> dict[str, float]:
        """Frames per second per camera over the last `fps_window_s` whole seconds (and 'total').

        The current, unfinished second is left out so a half-full bucket never lowers the figure.
        """
        now = self._clock()
        current = math.floor(now)
        first = max(current - self._fps_window_s, math.ceil(self.started))
        span = current - first
        result: dict[str, float] = {}
        with self._lock:
            for camera, buckets in self._done.items():
                frames = sum(count for second, count in buckets if first <= second < current)
                if span > 0:
                    result[camera] = round(frames / span, 3)
                else:  # less than a second since start: the best figure there is
                    elapsed = now - self.started
                    result[camera] = round(sum(c for _, c in buckets) / elapsed, 3) if elapsed > 0 else 0.0
        result["total"] = round(sum(result.values()), 3)
        return result

    def uptime_s(self) -> float:
        return self._clock() - self.started

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self.counters)
            base = self._frames_at_cpu_base
        return {
            "fps": self.fps(),
            "latency_ms": self.percentiles(),
            "cpu_ms_per_frame": self.cpu.per_frame(counters.get("frames", 0), base or 0),
            "counters": counters,
            "uptime_s": round(self.uptime_s(), 1),
        }
