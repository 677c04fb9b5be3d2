"""Rolling figures of a running station: latency percentiles per stage, frames per second, counters.

Windows are bounded (the last N latency samples; frame counts in one-second buckets over the last few
seconds for fps) so a station that runs for months keeps constant memory, and a stats message says how
the line runs *now*. Frames are counted per bucket, never kept one timestamp each, so fps is right at
any rate.
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

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self._lock:
            samples = {stage: np.fromiter(values, float) for stage, values in self._latency.items() if values}
        return {
            stage: {f"p{p}": round(float(np.percentile(v, p)), 3) for p in PERCENTILES} for stage, v in samples.items()
        }

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
        return {
            "fps": self.fps(),
            "latency_ms": self.percentiles(),
            "counters": counters,
            "uptime_s": round(self.uptime_s(), 1),
        }
