"""The whole daemon with real parts: trained bundle, ONNX Runtime, OpenCV videos/folders, mosquitto, processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from support.daemon import (
    Collector,
    file_camera,
    reference_frames,
    start_daemon,
    unique_in_order,
    write_station,
    write_video,
)

from onen.edge.cameras.frame import Frame
from onen.edge.local_broker import MosquittoBroker, free_port
from onen.edge.result import validate_result

STAGES = ("capture", "preprocess", "infer", "postprocess", "total")


@pytest.fixture(scope="module")
def frames(tiny_bundle):
    return reference_frames(tiny_bundle)


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


_start = start_daemon  # the broker may be down at start here: no waiting for the connection


def _subprocess(config_path: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "onen.edge.cli", "run", "--config", str(config_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_two_cameras_every_frame_a_valid_result_stats_status_archive(tmp_path, broker, tiny_bundle, frames):
    images, expected_scores = frames
    video = write_video(tmp_path / "parts.avi", images, count=16)
    config = write_station(
        tmp_path, broker.port, tiny_bundle, [file_camera("left", video), file_camera("right", video)]
    )
    collector = Collector(broker.host, broker.port)
    daemon, thread = _start(config, exit_when_finished=True)
    thread.join(60)
    assert not thread.is_alive()
    assert collector.wait(lambda c: len(c.results()) >= 32)
    results = collector.results()
    for result in results:
        validate_result(result)
        expected = expected_scores[result["seq"] % len(expected_scores)]
        assert result["raw_score"] == pytest.approx(expected, abs=0.02)  # MJPG video: close, not identical
    for camera in ("left", "right"):
        assert unique_in_order([r for r in results if r["camera"] == camera]) == list(range(16))
    for result in results:  # each verdict says which frame of which file it is about
        assert result["source"] == {"kind": "file", "file": "parts.avi", "frame_index": result["seq"]}
        assert result["capture_id"] == f"{result['run_id']}-{result['camera']}-{result['seq']}"
    assert {r["verdict"] for r in results} == {"ok", "defect"}

    # Messages published just before the daemon stopped may still be on their way to the collector.
    def last_stats(c):
        stats = [json.loads(p) for p, _ in c.on("/stats")]
        return stats[-1] if stats else None

    assert collector.wait(lambda c: (last_stats(c) or {}).get("counters", {}).get("frames") == 32), (
        "final stats published"
    )
    last = last_stats(collector)
    assert (
        last["counters"]["frames"] == 32
        and last["spool_depth"] >= 0
        and last["engine"]["m"]["backend"] == "onnxruntime"
    )
    assert set(last["latency_ms"]) == set(STAGES)
    assert all(set(v) == {"p50", "p95", "p99"} for v in last["latency_ms"].values())
    for key in ("fps", "dropped_frames", "queue_depth", "uptime_s"):
        assert key in last
    cpu = last["cpu_ms_per_frame"]  # the daemon's own CPU time per frame, by stage (onen bench daemon)
    stages = ("capture", "checks", "preprocess", "postprocess", "result_encoding", "spool", "mqtt_publish")
    assert all(cpu[stage] > 0 for stage in stages), cpu
    assert cpu["process"] >= cpu["process_outside_engine"] > 0 and cpu["engine_threads"] > 0, cpu

    def statuses(c):
        return [json.loads(p)["status"] for p, _ in c.on("/left/status")]

    assert collector.wait(lambda c: statuses(c)[-1:] == ["finished"]), statuses(collector)
    assert "starting" in statuses(collector)
    defects = sum(r["verdict"] == "defect" for r in results)
    assert collector.wait(lambda c: len(c.on("/overlay")) >= 1), "heat-map overlay JPEG published on defect"
    jpeg = collector.on("/overlay")[0][0]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    archived = list((tmp_path / "archive").rglob("*_frame.png"))
    assert 0 < len(archived) <= defects
    assert collector.wait(lambda c: [p for p, _ in c.on("/availability")][-1:] == [b"offline"])
    collector.close()


@pytest.mark.slow
def test_broker_outage_mid_run_every_result_arrives_in_order(tmp_path, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=60, fps=20)
    with MosquittoBroker(persistence=True) as broker:
        received: list[dict] = []
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-watcher", clean_session=False)
        watcher.on_message = lambda c, u, m: received.append(json.loads(m.payload))
        watcher.on_connect = lambda c, u, f, rc, p: c.subscribe("onen/t1/+/result", qos=1)
        watcher.reconnect_delay_set(0.2, 1)
        watcher.connect(broker.host, broker.port)
        watcher.loop_start()
        config = write_station(
            tmp_path,
            broker.port,
            tiny_bundle,
            [file_camera("cam", video, realtime=True, trigger={"mode": "continuous", "queue_size": 8})],
        )
        daemon, thread = _start(config, exit_when_finished=True)
        deadline = time.monotonic() + 20
        while len(received) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        broker.stop()  # outage in the middle of the run
        inspected_before = daemon.pipelines["cam"].inspected
        time.sleep(1.0)
        assert daemon.pipelines["cam"].inspected > inspected_before, "inspection goes on during the outage"
        broker.start()  # same port
        thread.join(60)
        assert not thread.is_alive()
        inspected = daemon.pipelines["cam"].inspected
        deadline = time.monotonic() + 10
        while len(unique_in_order(received)) < inspected and time.monotonic() < deadline:
            time.sleep(0.05)
        order = unique_in_order(received)
        assert len(order) == inspected >= 50
        assert order == sorted(order), "delivered in order"
        watcher.loop_stop()
        watcher.disconnect()


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def _datagrams(sock: socket.socket, seconds: float) -> list[str]:
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return messages


@pytest.mark.slow
def test_sigterm_finishes_flushes_publishes_offline_and_exits_0(tmp_path, broker, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=20, fps=25)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, realtime=True, loop=True)])
    collector = Collector(broker.host, broker.port)
    notify = _notify_socket(tmp_path / "notify.sock")
    process = _subprocess(config, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"})
    try:
        assert collector.wait(lambda c: len(c.results()) >= 5, 30), (
            process.stdout.read() if process.poll() is not None else ""
        )
        systemd = _datagrams(notify, 0.6)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    systemd += _datagrams(notify, 0.3)
    assert systemd[0].startswith("READY=1") and "WATCHDOG=1" in systemd and "STOPPING=1" in systemd, systemd
    assert collector.wait(lambda c: c.on("/availability") and c.on("/availability")[-1][0] == b"offline")
    final_stats = json.loads(collector.on("/stats")[-1][0])
    assert len(unique_in_order(collector.results())) == final_stats["counters"]["frames"], (
        "every inspected frame was published before exit"
    )
    spool = sqlite3.connect(str(tmp_path / "spool" / "results.sqlite3"))
    assert spool.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    collector.close()


@pytest.mark.slow
def test_kill_9_then_restart_delivers_every_spooled_result(tmp_path, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=12)
    port = free_port()  # no broker yet: every result stays in the spool
    config = write_station(tmp_path, port, tiny_bundle, [file_camera("cam", video)])
    spool_path = tmp_path / "spool" / "results.sqlite3"
    process = _subprocess(config)
    try:
        deadline = time.monotonic() + 30
        rows = 0
        while time.monotonic() < deadline and rows < 12:
            time.sleep(0.1)
            if spool_path.exists():
                try:
                    rows = sqlite3.connect(str(spool_path)).execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                except sqlite3.OperationalError:
                    rows = 0
        assert rows == 12, f"spool holds {rows} rows"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)
    spooled = [
        json.loads(p) for (p,) in sqlite3.connect(str(spool_path)).execute("SELECT payload FROM outbox ORDER BY id")
    ]
    first_run = spooled[0]["run_id"]
    assert [r["seq"] for r in spooled] == list(range(12))
    with MosquittoBroker(port=port) as broker:
        collector = Collector(broker.host, broker.port)
        restarted = _subprocess(config, "--exit-when-finished")
        output, _ = restarted.communicate(timeout=60)
        assert restarted.returncode == 0, output
        results = collector.results()
        old = [r["seq"] for r in results if r["run_id"] == first_run]
        assert list(dict.fromkeys(old)) == list(range(12)), (
            "every result spooled before kill -9 was delivered, in order"
        )
        assert len(unique_in_order([r for r in results if r["run_id"] != first_run])) == 12
        assert sqlite3.connect(str(spool_path)).execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        collector.close()


def test_mqtt_trigger_publishes_with_its_correlation_id(tmp_path, broker, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=20, fps=25)
    camera = file_camera("cam", video, realtime=True, loop=True, trigger={"mode": "mqtt", "queue_size": 2})
    config = write_station(tmp_path, broker.port, tiny_bundle, [camera])
    collector = Collector(broker.host, broker.port)
    daemon, thread = _start(config)
    try:
        assert daemon.publisher.wait_connected(10)
        assert collector.wait(lambda c: c.on("/cam/status"), 10)
        time.sleep(0.5)
        assert collector.results() == [], "mqtt trigger mode inspects only on request"
        asked = time.time()
        collector.client.publish("onen/t1/cmd/cam/trigger", json.dumps({"correlation_id": "job-42"}), qos=1)
        assert collector.wait(lambda c: len(c.results()) == 1, 10)
        collector.client.publish("onen/t1/cmd/cam/trigger", "plain-7", qos=1)
        assert collector.wait(lambda c: len(c.results()) == 2, 10)
        first, second = collector.results()
        assert (first["correlation_id"], second["correlation_id"]) == ("job-42", "plain-7")
        assert second["seq"] > first["seq"]
        for result in (first, second):
            validate_result(result)
        assert first["captured_at_epoch"] >= asked - 0.05, "a frame captured after the trigger, not an old one"
    finally:
        daemon.request_stop()
        thread.join(30)
    collector.close()


def test_corrupt_frames_and_a_dead_camera_do_not_stop_the_daemon(tmp_path, broker, tiny_bundle, frames):
    images, _ = frames
    folder = tmp_path / "drop"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    (folder / "b.png").write_bytes(b"\x89PNG but truncated garbage")
    cv2.imwrite(str(folder / "c.png"), cv2.cvtColor(images[2], cv2.COLOR_RGB2BGR))
    dead = {
        "name": "dead",
        "model": "m",
        "source": {
            "kind": "http",
            "uri": f"http://127.0.0.1:{free_port()}/stream.mjpg",
            "open_timeout_s": 1,
            "read_timeout_s": 1,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.5,
        },
    }
    folder_cam = {
        "name": "line",
        "model": "m",
        "source": {"kind": "folder", "path": str(folder), "existing": True, "watch": True},
    }
    config = write_station(tmp_path, broker.port, tiny_bundle, [folder_cam, dead])
    collector = Collector(broker.host, broker.port)
    daemon, thread = _start(config)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 2, 20)
        # a frame that is not an image reaches the pipeline: counted, reported, and the loop goes on
        broken = Frame(
            camera="line",
            seq=999,
            image=np.zeros((0, 0), np.uint8),
            captured_at=time.time(),
            capture_ms=0.0,
            source_index=999,
        )
        assert daemon.pipelines["line"].inspect(broken) is None
        assert daemon.pipelines["line"].failed == 1
        cv2.imwrite(str(folder / "d.png"), cv2.cvtColor(images[3], cv2.COLOR_RGB2BGR))
        assert collector.wait(lambda c: len(c.results()) >= 3, 20), "still inspecting after a bad frame"
        assert sorted(r["source"]["file"] for r in collector.results()) == ["a.png", "c.png", "d.png"]
        rejected = [e["detail"] for e in collector.events() if e["kind"] == "frame_rejected"]
        assert rejected and rejected[0]["file"] == "b.png" and rejected[0]["reason"] == "unreadable"
        kinds = lambda c: {e["kind"] for e in c.events()}  # noqa: E731
        assert collector.wait(
            lambda c: {"frame_error", "camera_reconnecting"} <= kinds(c) or {"frame_error", "camera_lost"} <= kinds(c),
            10,
        ), kinds(collector)
        assert thread.is_alive() and daemon.pipelines["dead"].alive
        assert {r["camera"] for r in collector.results()} == {"line"}
        healthy, problems = daemon.health()
        assert healthy, problems  # a camera that is reconnecting is not a hung pipeline
    finally:
        daemon.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    collector.close()


@pytest.mark.slow
def test_watchdog_pings_stop_while_the_engine_hangs(tmp_path, broker, tiny_bundle, frames, monkeypatch):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=20, fps=25)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, realtime=True, loop=True)])
    notify = _notify_socket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    daemon, thread = _start(config, engine_mode="lock", pipeline_stale_s=0.3, engine_stuck_s=0.3)
    try:
        healthy = _datagrams(notify, 1.0)
        assert healthy[0].startswith("READY=1") and healthy.count("WATCHDOG=1") >= 3, healthy
        backend = daemon.engines["m"].backend
        release = threading.Event()
        real_infer = backend.infer
        backend.infer = lambda batch: (release.wait(10), real_infer(batch))[1]  # every engine call hangs
        try:
            _datagrams(notify, 0.8)  # time for the pipeline heartbeat to go stale
            hung = _datagrams(notify, 1.0)
        finally:
            backend.infer = real_infer
            release.set()
        assert "WATCHDOG=1" not in hung and any(m.startswith("STATUS=unhealthy") for m in hung), hung
        recovered = _datagrams(notify, 1.0)
        assert "WATCHDOG=1" in recovered, recovered
    finally:
        daemon.request_stop()
        thread.join(30)


@pytest.mark.slow
def test_spool_cap_drops_oldest_and_announces_it_after_reconnect(tmp_path, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=10)
    port = free_port()  # broker down: results pile up in a tiny spool
    config = write_station(
        tmp_path,
        port,
        tiny_bundle,
        [file_camera("cam", video)],
        spool={"path": str(tmp_path / "spool"), "max_mb": 0.004},
    )
    daemon, thread = _start(config, exit_when_finished=False)
    deadline = time.monotonic() + 20
    while daemon.pipelines["cam"].inspected < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    spool = daemon.publisher.spool
    assert spool.dropped > 0 and spool.depth + spool.dropped == 10
    with MosquittoBroker(port=port) as broker:
        collector = Collector(broker.host, broker.port)
        assert collector.wait(lambda c: len(c.results()) >= 10 - spool.dropped, 15)
        assert [r["seq"] for r in collector.results()] == list(range(spool.dropped, 10)), "the newest survive, in order"
        assert collector.wait(lambda c: any(e["kind"] == "spool_overflow" for e in c.events()), 10)
        daemon.request_stop()
        thread.join(30)
        collector.close()


def test_run_check_and_a_calibration_for_another_model_fail_before_cameras_open(tmp_path, broker, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=4)
    good = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)])
    check = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "run", "--config", str(good), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "OK" in check.stdout
    wrong = tmp_path / "other.yaml"
    wrong.write_text(
        yaml.safe_dump(
            {
                "camera": "cam",
                "bundle": {"name": "x", "version": "1", "model_sha256": "0" * 64},
                "image_threshold": 0.5,
                "pixel_threshold": 0.5,
                "min_region_area": 4,
                "normalisation": {"raw_low": 0.0, "raw_threshold": 0.5, "raw_high": 1.0},
            }
        )
    )
    camera = {**file_camera("cam", video), "calibration": wrong.name}  # relative: the file named in full, not cut
    bad = write_station(tmp_path, broker.port, tiny_bundle, [camera])
    collector = Collector(broker.host, broker.port)
    run = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "run", "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert (
        run.returncode == 2
        and "other.yaml" in run.stderr
        and "recalibrate" in run.stderr
        and "Traceback" not in run.stderr
    ), run.stderr
    assert collector.results() == [] and collector.on("/status") == [], "nothing started"
    collector.close()


def test_prometheus_endpoint_serves_the_stats(tmp_path, broker, tiny_bundle, frames):
    pytest.importorskip("prometheus_client", reason="optional dependency prometheus_client not installed")
    import urllib.request

    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=8)
    port = free_port()
    config = write_station(
        tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)], metrics={"prometheus_port": port}
    )
    daemon, thread = _start(config, metrics_address="127.0.0.1")
    try:
        deadline = time.monotonic() + 20
        while daemon.pipelines["cam"].inspected < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'onen_frames_inspected_total{camera="cam"} 8.0' in text
        assert 'onen_latency_ms{quantile="0.99",stage="infer"}' in text and "onen_healthy 1.0" in text
    finally:
        daemon.request_stop()
        thread.join(30)


def test_interval_trigger_inspects_one_fresh_frame_per_interval(tmp_path, broker, tiny_bundle, frames):
    images, _ = frames
    video = write_video(tmp_path / "parts.avi", images, count=20, fps=25)
    camera = file_camera("cam", video, realtime=True, loop=True, trigger={"mode": "interval", "interval_s": 0.4})
    config = write_station(tmp_path, broker.port, tiny_bundle, [camera], backend="auto")  # no GPU here: ONNX Runtime
    collector = Collector(broker.host, broker.port)
    daemon, thread = _start(config)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 4, 15)
    finally:
        daemon.request_stop()
        thread.join(30)
    captured = [r["captured_at_epoch"] for r in collector.results()]
    gaps = np.diff(captured)
    assert (gaps > 0.3).all() and (gaps < 1.5).all(), gaps  # about one every 0.4 s, not every video frame
    if not daemon.engines["m"].backend.name == "tensorrt":
        assert any(e["kind"] == "backend_fallback" for e in collector.events()), (
            "the fallback is announced on the events topic"
        )
    collector.close()


def test_daemon_modules_never_import_torch_or_train():
    """An edge station has no torch: every daemon module and `onen run` must load with torch blocked."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import onen.edge.archive, onen.edge.daemon, onen.edge.inference, onen.edge.local_broker, onen.edge.metrics, "
        "onen.edge.overlay, onen.edge.pipeline, onen.edge.postprocess, onen.edge.publisher, onen.edge.result, "
        "onen.edge.spool, onen.edge.stats, onen.edge.systemd_notify, onen.edge.commands.run\n"
        "from onen.edge.cli import main\n"
        "sys.exit(main(['run', '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--config" in done.stdout, done.stderr
