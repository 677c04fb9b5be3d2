"""Malformed command messages on a running station (issue 13 item 12): whatever a command holds (JSON nested
too deeply, JSON of the wrong type, bytes that are not UTF-8, missing or mistyped fields), the station answers
each one on `events` and writes no traceback to its log. Real daemon, real mosquitto, real bundle."""

from __future__ import annotations

import json
import logging

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.daemon import Collector, file_camera, reference_frames, write_station, write_video
from support.daemon import start_daemon as start_station

from onen.edge.local_broker import MosquittoBroker
from onen.edge.publisher import Topics

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def malformed(schema: str) -> list[bytes]:
    """Payloads a fuzzer or a broken client sends; each must get exactly one answer."""
    bodies = [
        b"",
        b"\xff\xfe\x00garbage",
        b"not json",
        DEEP,
        DEEP_OBJECT,
        b"[]",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"{}",
        json.dumps({"schema": schema}).encode(),
        json.dumps({"schema": 7}).encode(),
        json.dumps({"schema": schema, "model": ["m"]}).encode(),
        json.dumps({"schema": schema, "request_id": {"x": 1}}).encode(),
        json.dumps({"schema": schema, "bundle_tar_base64": 12}).encode(),
        json.dumps({"schema": schema, "bundle_tar_base64": "!!!"}).encode(),
        json.dumps({"schema": schema, "bundle_path": 5}).encode(),
        json.dumps({"schema": schema, "bundle_path": "relative/x"}).encode(),
        json.dumps({"schema": schema, "bundle_tar_base64": "aGVsbG8="}).encode(),
        json.dumps({"schema": schema, "camera": "cam", "calibration_yaml": 12}).encode(),
        json.dumps({"schema": schema, "camera": "cam", "calibration_yaml": ["a"]}).encode(),
        json.dumps({"schema": schema, "camera": "cam", "calibration_yaml": "a: [unclosed"}).encode(),
        json.dumps(
            {"schema": schema, "camera": "cam", "calibration_yaml": "image_threshold: x", "aoi_png_base64": 3}
        ).encode(),
        json.dumps({"schema": schema, "camera": "cam", "calibration_yaml": "{}", "aoi_png_base64": "zz"}).encode(),
        b'{"schema": "' + schema.encode() + b'", "model": "m", "request_id": NaN}',
        b'{"a": 1e999999}',
    ]
    return bodies


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


@pytest.mark.slow
def test_every_malformed_command_gets_one_answer_and_no_traceback(tmp_path, broker, tiny_bundle, caplog):
    from onen.edge.calibration_file import MESSAGE_SCHEMA
    from onen.edge.updates import INSTALL_SCHEMA, ROLLBACK_SCHEMA

    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=8)
    config = write_station(
        tmp_path,
        broker.port,
        tiny_bundle,
        [file_camera("cam", video, realtime=True, loop=True)],
        updates={"dir": str(tmp_path / "models")},
    )
    topics = Topics("onen", "t1")
    sends = [(topics.calibration("cam"), p, "calibration_rejected") for p in malformed(MESSAGE_SCHEMA)]
    sends += [(topics.model_install, p, "model_update_rejected") for p in malformed(INSTALL_SCHEMA)]
    sends += [(topics.model_rollback, p, "model_update_rejected") for p in malformed(ROLLBACK_SCHEMA)]

    collector = Collector(broker.host, broker.port)
    caplog.set_level(logging.INFO)
    daemon, thread = start_station(config, wait_connected_s=10)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    try:

        def answers() -> list[dict]:
            return [
                e
                for e in collector.events()
                if e["kind"]
                in ("calibration_rejected", "model_update_rejected", "calibration_updated", "model_swapped")
            ]

        for index, (topic, payload, kind) in enumerate(sends):
            sender.publish(topic, payload, qos=1).wait_for_publish(10)
            # one at a time: the answer to each message is known to be its own
            assert collector.wait(lambda c, n=index + 1: len(answers()) >= n, timeout=30), (
                f"no answer to message {index} on {topic}: {payload[:60]!r}"
            )
            answer = answers()[index]
            assert answer["kind"] == kind, (index, payload[:60], answer)
            assert answer["detail"]["reason"], answer
        assert len(answers()) == len(sends)
        assert thread.is_alive() and daemon.pipelines["cam"].alive
    finally:
        sender.loop_stop()
        sender.disconnect()
        daemon.request_stop()
        thread.join(30)
        collector.close()
    tracebacks = [r for r in caplog.records if r.exc_info is not None or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text
