"""Rolling figures of a running station: latency percentiles per stage, frames per second, counters.

Windows are bounded (the last N samples, the last few seconds for fps) so a station that runs for
months keeps constant memory, and a stats message says how the line runs *now*.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

PERCENTILES = (50, 95, 99)


class RollingStats:
    """Thread-safe: pipelines record, the stats publisher reads."""

    def __init__(self, window: int = 2048, fps_window_s: float = 10.0):
        self._lock = threading.Lock()
        self._window = window
        self._fps_window_s = fps_window_s
        self._latency: dict[str, deque[float]] = {}
        self._done: dict[str, deque[float]] = {}          # camera -> monotonic times of finished frames
        self.counters: Counter[str] = Counter()
        self.started = time.monotonic()

    def record(self, camera: str, latency_ms: dict[str, float]) -> None:
        now = time.monotonic()
        with self._lock:
            for stage, value in latency_ms.items():
                self._latency.setdefault(stage, deque(maxlen=self._window)).append(float(value))
            self._done.setdefault(camera, deque(maxlen=self._window)).append(now)
            self.counters["frames"] += 1
            self.counters[f"frames.{camera}"] += 1

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self._lock:
            samples = {stage: np.fromiter(values, float) for stage, values in self._latency.items() if values}
        return {stage: {f"p{p}": round(float(np.percentile(v, p)), 3) for p in PERCENTILES} for stage, v in samples.items()}

    def fps(self) -> dict[str, float]:
        """Frames per second per camera over the recent window (and 'total')."""
        now = time.monotonic()
        result: dict[str, float] = {}
        with self._lock:
            for camera, times in self._done.items():
                recent = [t for t in times if now - t <= self._fps_window_s]
                span = min(self._fps_window_s, now - self.started)
                result[camera] = round(len(recent) / span, 3) if span > 0 else 0.0
        result["total"] = round(sum(result.values()), 3)
        return result

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def snapshot(self) -> dict:
        with self._lock:
            counters = dict(self.counters)
        return {"fps": self.fps(), "latency_ms": self.percentiles(), "counters": counters, "uptime_s": round(self.uptime_s(), 1)}
