"""A broker the station cannot reach is said at once, with the reason, then with a backoff; real mosquitto."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import time

import pytest
from support.daemon import Collector
from support.tls import tls_files

from onen.edge.broker_link import BrokerLink, describe_failure
from onen.edge.config import MqttConfig, TlsConfig
from onen.edge.local_broker import MosquittoBroker, free_port
from onen.edge.publisher import Publisher
from onen.edge.spool import Spool


def _publisher(tmp_path, port, name="p1", **cfg) -> Publisher:
    mqtt_cfg = MqttConfig(host="127.0.0.1", port=port, client_id=f"onen-{name}-{port}", prefix="onen", **cfg)
    return Publisher(mqtt_cfg, name, Spool(tmp_path / f"{name}.db"), reconnect_min_s=0.2, reconnect_max_s=1.0)


def _wait(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _mqtt_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "onen.edge.mqtt" and r.levelno >= logging.WARNING]


@pytest.mark.slow
def test_wrong_port_is_logged_at_once_with_the_reason_then_the_spool_drains(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="onen.edge.mqtt")
    port = free_port()
    publisher = _publisher(tmp_path, port)
    publisher.start()
    try:
        for seq in range(5):
            publisher.publish_result("cam", json.dumps({"seq": seq}).encode())
        assert _wait(lambda: _mqtt_warnings(caplog), timeout=3), "no connection error logged"
        first = _mqtt_warnings(caplog)[0]
        assert f"cannot connect to 127.0.0.1:{port}" in first and "connection refused" in first
        state = publisher.link.describe()
        assert state["state"] == "failing" and "refused" in state["reason"]
        assert _wait(lambda: publisher.link.failures >= 4, timeout=10)
        logged = len(_mqtt_warnings(caplog))
        assert logged < publisher.link.failures and logged <= 2, "retries within the backoff are not logged again"
        assert "refused" in publisher.link.summary() and "5 in spool" in publisher.link.summary()

        with MosquittoBroker(port=port) as broker:
            collector = Collector(broker.host, broker.port, "onen/p1/#")
            assert publisher.wait_connected(10)
            assert publisher.flush(10), "the spooled results go out once the broker is there"
            assert _wait(lambda: len(collector.on("/cam/result")) == 5)
            assert publisher.link.describe()["state"] == "connected"
            assert any("connected to" in r.getMessage() and "failed attempt" in r.getMessage() for r in caplog.records)
            collector.close()
            publisher.stop()
    finally:
        publisher.stop(flush_timeout=0)


def test_bad_password_and_untrusted_tls_are_named(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="onen.edge.mqtt")
    files = tls_files(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "line3", "s3cret"], check=True, capture_output=True)
    extra = f"cafile {files['ca']}\ncertfile {files['cert']}\nkeyfile {files['key']}\npassword_file {passwords}\n"
    with MosquittoBroker(anonymous=False, extra_config=extra) as broker:
        wrong = _publisher(
            tmp_path, broker.port, "auth", tls=TlsConfig(ca=files["ca"]), username="line3", password="wrong"
        )
        (tmp_path / "other").mkdir()
        other_ca = tls_files(tmp_path / "other")  # a CA the broker's certificate was not signed by
        untrusted = _publisher(
            tmp_path, broker.port, "tls", tls=TlsConfig(ca=other_ca["ca"]), username="line3", password="s3cret"
        )
        wrong.start()
        untrusted.start()
        try:
            assert _wait(lambda: wrong.link.failures and untrusted.link.failures, timeout=5)
            assert (
                "not authorized" in wrong.link.reason.lower()
                or "bad user name or password" in wrong.link.reason.lower()
            )
            assert "TLS" in untrusted.link.reason and "certificate" in untrusted.link.reason
            logged = "\n".join(_mqtt_warnings(caplog))
            assert logged.count("cannot connect") >= 2 and "s3cret" not in logged and "wrong" not in logged
        finally:
            wrong.stop(flush_timeout=0)
            untrusted.stop(flush_timeout=0)


def test_backoff_of_repeated_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="onen.edge.mqtt")
    clock = [0.0]
    link = BrokerLink("h:1", backlog=lambda: 3, clock=lambda: clock[0])
    for _ in range(400):  # one failed attempt per second for 400 s
        link.failed("connection refused")
        clock[0] += 1.0
    times = [
        float(r.getMessage().split(" over ")[1].split(" s")[0])
        for r in caplog.records
        if "cannot connect" in r.getMessage()
    ]
    assert times == [0.0, 10.0, 40.0, 100.0]  # at once, then after 10 s, 30 s, 60 s; next in 300 s
    link.connected(2)
    assert link.describe() == {
        "broker": "h:1",
        "state": "connected",
        "reason": None,
        "failed_attempts": 0,
        "failing_for_s": None,
    }


@pytest.mark.parametrize(
    "error, words",
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "DNS"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (TimeoutError("timed out"), "timed out"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS handshake failed"),
        (OSError(113, "No route to host"), "no route to host"),
        (None, "no reason given"),
    ],
)
def test_failure_reasons_in_words(error, words):
    assert words in describe_failure(error)


def test_a_station_on_a_wrong_port_says_so_in_its_stats_and_keeps_inspecting(tmp_path, tiny_bundle, caplog):
    from support.daemon import file_camera, reference_frames, start_daemon, write_station, write_video

    caplog.set_level(logging.INFO, logger="onen.edge.mqtt")
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=6)
    port = free_port()
    daemon, thread = start_daemon(write_station(tmp_path, port, tiny_bundle, [file_camera("cam", video)]))
    try:
        assert _wait(lambda: daemon.pipelines["cam"].inspected == 6, timeout=30)
        stats = daemon.stats_message()
        assert stats["mqtt"]["state"] == "failing" and "connection refused" in stats["mqtt"]["reason"]
        assert stats["healthy"], "a broker outage does not withhold the watchdog: results wait in the spool"
        assert daemon.publisher.pending == 6
        assert any(f"cannot connect to 127.0.0.1:{port}: connection refused" in m for m in _mqtt_warnings(caplog))
    finally:
        daemon.request_stop()
        thread.join(30)
