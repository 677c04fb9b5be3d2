"""Whatever arrives on a station's command topics gets exactly one answer on `events` and no traceback.

A real daemon and a real mosquitto; the payloads are what a fuzzer found (deeply nested JSON, JSON of the
wrong type, binary, wrong field types) plus a few more."""
from __future__ import annotations

import json
import logging

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon_helpers import Collector, file_camera, reference_frames, start_daemon, write_station, write_video
from edge.local_broker import MosquittoBroker

ANSWERS = ("calibration_rejected", "model_update_rejected", "command_failed", "calibration_updated", "model_swapped")

MALFORMED = [
    b"[" * 100_000 + b"]" * 100_000,                                  # RecursionError in json.loads
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b"",
    b"\xff\xfe\x00binary",
    b"{not json",
    json.dumps({"schema": 7}).encode(),
    json.dumps({"schema": "onen.model-install/1", "bundle_path": 12}).encode(),
    json.dumps({"schema": "onen.model-install/1", "bundle_tar_base64": ["x"]}).encode(),
    json.dumps({"schema": "onen.model-install/1", "model": {"a": 1}, "request_id": [1]}).encode(),
    json.dumps({"schema": "onen.model-rollback/1", "model": 5}).encode(),
    json.dumps({"schema": "onen.calibration/1", "camera": "cam", "calibration_yaml": 12}).encode(),
    json.dumps({"schema": "onen.calibration/1", "camera": "cam", "calibration_yaml": "a: [1, 2"}).encode(),
    json.dumps({"schema": "onen.calibration/1", "camera": "cam", "calibration_yaml": "image_threshold: 0.5", "aoi_png_base64": 3}).encode(),
]


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


def test_every_malformed_command_is_answered_without_a_traceback(tmp_path, broker, tiny_bundle, caplog):
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=8)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, loop=True)])
    collector = Collector(broker.host, broker.port)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    caplog.set_level(logging.INFO)
    daemon, thread = start_daemon(config, wait_connected_s=10)
    try:
        topics = ["onen/t1/cmd/cam/calibration", "onen/t1/cmd/model/install", "onen/t1/cmd/model/rollback"]
        sent = 0
        answered = lambda c: sum(e["kind"] in ANSWERS for e in c.events())
        for index, payload in enumerate(MALFORMED):
            for topic in topics:
                sender.publish(topic, payload, qos=1).wait_for_publish(5)
                sent += 1
                assert collector.wait(lambda c: answered(c) >= sent, timeout=20), f"no answer to payload {index} on {topic}"
        events = collector.events()
        assert answered(collector) == sent
        assert not [e for e in events if e["kind"] in ("calibration_updated", "model_swapped")], "a malformed command changed something"
        assert all(e["detail"].get("reason") for e in events if e["kind"] in ANSWERS)
        assert thread.is_alive() and daemon.pipelines["cam"].alive
        before = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) > before + 4, timeout=20), "the station keeps inspecting"
    finally:
        daemon.request_stop()
        thread.join(30)
        sender.loop_stop()
        sender.disconnect()
        collector.close()
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text
