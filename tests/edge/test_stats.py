"""The stats message's figures: fps right at any rate, bounded memory, latency percentiles."""

from __future__ import annotations

import threading
import time

import pytest

from onen.edge.stats import RollingStats


class FakeClock:
    """A clock the test moves by hand, so rates are exact and nothing is timed."""

    def __init__(self, start: float = 1000.25):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("rate", [3, 204.8, 511, 5000])
def test_fps_is_right_at_any_rate(rate):
    clock = FakeClock()
    stats = RollingStats(fps_window_s=10, clock=clock)
    step = 1.0 / rate
    for _ in range(int(rate * 30)):  # 30 s at a steady rate, two cameras
        stats.record("a", {"total": 1.0})
        stats.record("b", {"total": 1.0})
        clock.now += step
    fps = stats.fps()
    assert fps["a"] == pytest.approx(rate, rel=0.02)
    assert fps["b"] == pytest.approx(rate, rel=0.02)
    assert fps["total"] == pytest.approx(2 * rate, rel=0.02)


def test_fps_memory_is_bounded_and_old_frames_fall_out():
    clock = FakeClock()
    stats = RollingStats(fps_window_s=10, clock=clock)
    for _ in range(100_000):
        stats.record("a", {"total": 1.0})
        clock.now += 0.0001
    assert len(stats._done["a"]) <= 11
    clock.now += 60  # the camera stopped a minute ago
    assert stats.fps()["a"] == 0.0
    assert stats.counters["frames.a"] == 100_000


def test_fps_in_the_first_second_is_not_zero():
    clock = FakeClock()
    stats = RollingStats(clock=clock)
    for _ in range(50):
        stats.record("a", {"total": 1.0})
        clock.now += 0.01
    assert stats.fps()["a"] == pytest.approx(100, rel=0.05)


def test_latency_percentiles():
    stats = RollingStats(window=100)
    for value in range(1, 201):
        stats.record("a", {"infer": float(value)})
    p = stats.percentiles()["infer"]  # only the last 100 samples (101..200) count
    assert p["p50"] == pytest.approx(150.5)
    assert p["p99"] == pytest.approx(199.01)


def test_cpu_per_frame_by_stage_and_by_thread():
    """Stage times are summed and divided by frames; library threads and the process are read from their CPU
    clocks from the first finished frame on."""
    stats = RollingStats()
    stats.cpu.add("preprocess", 3_000_000)
    stats.record("a", {"total": 1.0})  # the first frame: from here threads and process are counted
    busy, done = threading.Event(), threading.Event()

    def engine() -> None:  # named like an engine worker of edge.inference
        started = time.thread_time_ns()
        while time.thread_time_ns() - started < 20_000_000:  # 20 ms of CPU work
            sum(range(1000))
        busy.set()
        done.wait(10)

    worker = threading.Thread(target=engine, name="onen-engine-m-0")
    worker.start()
    assert busy.wait(30)
    stats.cpu.add("preprocess", 1_000_000)
    stats.record("a", {"total": 1.0})
    cpu = stats.snapshot()["cpu_ms_per_frame"]
    done.set()
    worker.join()
    assert cpu["preprocess"] == pytest.approx(2.0)  # 4 ms over 2 frames
    assert cpu["engine_threads"] >= 20.0  # one frame counted since the first: all of the worker's 20 ms
    assert cpu["process"] >= cpu["engine_threads"]
    assert cpu["process_outside_engine"] == pytest.approx(cpu["process"] - cpu["engine_threads"], abs=1e-3)
