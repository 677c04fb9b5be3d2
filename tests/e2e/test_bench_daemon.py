"""`onen bench daemon` runs end to end on a real bundle: bare loops, the daemon as its own process through a real
mosquitto, two cameras, and the triggered run answering every MQTT trigger (its figures are the bench's to
print; here only that each is measured and consistent)."""

from __future__ import annotations

import json

from onen.edge.cli import main as onen


def test_bench_daemon_measures_every_figure(tiny_bundle, tmp_path):
    out = tmp_path / "bench.json"
    code = onen(
        [
            "bench", "daemon", "--bundle", str(tiny_bundle), "--frames", "24", "--camera-size", "160x128",
            "--repeats", "1", "--engine-modes", "thread", "--triggers", "8", "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["camera_size"] == "160x128" and figures["frames"] == 24
    assert figures["daemon_fps_median"] > 0 and figures["ratio_to_best_bare"] > 0
    assert set(figures["two_cameras"]) == {"thread"} and figures["two_cameras"]["thread"]["ratio_to_best_bare"] > 0
    live = figures["live_camera"]
    assert live["fps"] > 0 and live["latency_ms"]["total"]["p50"] >= live["latency_ms"]["infer"]["p50"] > 0
    triggered = figures["triggered"]
    assert triggered["triggers"] == 8 and triggered["missed"] == 0
    for part in ("total", "before_capture", "after_capture", "capture_to_spool", "infer"):
        assert triggered[part]["p50"] > 0, part
    # per trigger, on one wall clock: the frame is captured after the trigger was sent, the engine call comes after
    # the capture and before the result is received (so the medians keep that order too)
    assert triggered["total"]["p50"] >= triggered["after_capture"]["p50"] >= triggered["infer"]["p50"]


def test_bench_daemon_on_a_raw_mono_film_takes_the_one_channel_path(tiny_bundle, tmp_path):
    """A machine-vision mono camera: uncompressed grey frames (Y800), read through OpenCV as the MJPG film is."""
    out = tmp_path / "bench.json"
    code = onen(
        [
            "bench", "daemon", "--bundle", str(tiny_bundle), "--frames", "16", "--camera-size", "128", "--color",
            "mono", "--codec", "raw", "--repeats", "1", "--engine-modes", "thread", "--triggers", "0",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["color"] == "mono" and figures["codec"] == "raw" and figures["colour_frames_on_mono_cameras"] == 0
    assert figures["daemon_fps_median"] > 0 and figures["cpu_ms_per_frame_one_camera"]["preprocess"] > 0
