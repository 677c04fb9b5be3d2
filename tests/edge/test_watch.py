"""`onen watch` against a real mosquitto: one verdict line per published result, or raw JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.daemon import write_station

from onen.edge.config import MqttConfig
from onen.edge.local_broker import MosquittoBroker
from onen.edge.publisher import Publisher
from onen.edge.spool import Spool


def _result(camera: str, seq: int, verdict: str, source: dict) -> bytes:
    return json.dumps(
        {
            "camera": camera,
            "seq": seq,
            "verdict": verdict,
            "score": 0.91 if verdict == "defect" else 0.12,
            "threshold": 0.5,
            "class": {"name": "scratch" if verdict == "defect" else "good", "probability": 0.8},
            "regions": [{"bbox": [1, 2, 3, 4], "area": 12, "peak": 0.9, "polygon": None}]
            * (2 if verdict == "defect" else 0),
            "source": source,
        }
    ).encode()


def _watch(config, broker, tmp_path, *flags, messages):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onen.edge.cli",
            "watch",
            "--config",
            str(config),
            "--count",
            str(len(messages)),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("mqtt: watching onen/w1/+/result"), first + process.stderr.read()
        publisher = Publisher(
            MqttConfig(host=broker.host, port=broker.port, client_id="onen-w1-test", prefix="onen"),
            "w1",
            Spool(tmp_path / f"spool{len(flags)}.db"),
        )
        publisher.start()
        assert publisher.wait_connected(5)
        for camera, payload in messages:
            publisher.publish_result(camera, payload)
        assert publisher.flush(10)
        out, err = process.communicate(timeout=20)
        publisher.stop()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return out.splitlines()


@pytest.fixture
def station(tmp_path, tiny_bundle):
    broker = MosquittoBroker().start()
    (tmp_path / "images").mkdir()
    camera = {
        "name": "top",
        "model": "m",
        "source": {"kind": "folder", "path": str(tmp_path / "images")},
        "trigger": {"mode": "continuous", "queue_size": 2},
    }
    config = write_station(tmp_path, broker.port, tiny_bundle, [camera], station="w1")
    yield config, broker
    broker.stop()


def test_watch_prints_one_verdict_line_per_result(station, tmp_path):
    config, broker = station
    lines = _watch(
        config,
        broker,
        tmp_path,
        messages=[
            ("top", _result("top", 1, "ok", {"kind": "folder", "file": "a/part1.png"})),
            ("side", _result("side", 7, "defect", {"kind": "file", "file": "line3.avi", "frame_index": 41})),
        ],
    )
    assert len(lines) == 2
    assert lines[0].split()[:6] == ["top", "seq", "1", "ok", "score", "0.120"]
    assert "class good 0.80" in lines[0] and "regions 0" in lines[0] and lines[0].endswith("a/part1.png")
    assert lines[1].split()[:4] == ["side", "seq", "7", "defect"]
    assert "0.910 / 0.50" in lines[1] and "class scratch 0.80" in lines[1] and "regions 2" in lines[1]
    assert lines[1].endswith("line3.avi frame 41")


def test_watch_json_prints_the_raw_messages(station, tmp_path):
    config, broker = station
    payload = _result("top", 3, "defect", {"kind": "folder", "file": "b.png"})
    lines = _watch(config, broker, tmp_path, "--json", messages=[("top", payload)])
    assert [json.loads(line) for line in lines] == [json.loads(payload)]
