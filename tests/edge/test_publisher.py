"""MQTT publishing against a real mosquitto: spool-backed QoS 1 results, outages, availability, last will."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.daemon import Collector
from support.tls import tls_files

from onen.edge.config import MqttConfig
from onen.edge.local_broker import MosquittoBroker, free_port
from onen.edge.publisher import Publisher
from onen.edge.spool import Spool


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


def _publisher(broker, tmp_path, station="p1") -> Publisher:
    cfg = MqttConfig(host=broker.host, port=broker.port, client_id=f"onen-{station}-{broker.port}", prefix="onen")
    return Publisher(cfg, station, Spool(tmp_path / "spool.db"), reconnect_min_s=0.2, reconnect_max_s=1.0)


def _result(seq: int) -> bytes:
    return json.dumps({"run_id": "r", "camera": "cam", "seq": seq}).encode()


def _seqs(collector: Collector) -> list[int]:
    return [json.loads(p)["seq"] for p, _ in collector.on("/cam/result")]


def test_results_arrive_in_order_and_leave_the_spool_on_ack(broker, tmp_path):
    collector = Collector(broker.host, broker.port, "onen/p1/#")
    publisher = _publisher(broker, tmp_path)
    publisher.start()
    assert publisher.wait_connected(5)
    for seq in range(100):
        publisher.publish_result("cam", _result(seq))
    assert publisher.flush(10), f"spool still holds {publisher.spool.depth}"
    assert collector.wait(lambda c: len(_seqs(c)) >= 100)
    assert _seqs(collector) == list(range(100))
    assert publisher.spool.depth == 0
    publisher.stop()
    collector.close()


def test_a_backlog_from_before_a_restart_goes_first_then_new_results_in_order(broker, tmp_path):
    """Rows left in the spool by an earlier run are read from disk and sent before anything new; once the
    sender has caught up it sends new rows from memory (no read-back), still in order, deleting what was acked."""
    earlier = Spool(tmp_path / "spool.db")
    earlier.put_many([("onen/p1/cam/result", _result(seq), 1) for seq in range(700)])  # more than one window
    earlier.close()
    collector = Collector(broker.host, broker.port, "onen/p1/#")
    publisher = _publisher(broker, tmp_path)
    for seq in range(700, 750):  # handed over before the connection is up
        publisher.publish_result("cam", _result(seq))
    publisher.start()
    assert publisher.wait_connected(5)
    for seq in range(750, 1000):
        publisher.publish_result("cam", _result(seq))
    assert publisher.flush(20), f"spool still holds {publisher.spool.depth}"
    assert collector.wait(lambda c: len(_seqs(c)) >= 1000)
    assert _seqs(collector) == list(range(1000))
    assert publisher.spool.depth == 0 and publisher._unsent_complete, "caught up: new rows are sent from memory"
    publisher.stop()
    collector.close()
    assert Spool(tmp_path / "spool.db").depth == 0


def test_a_result_is_acknowledged_only_once_it_is_on_disk(tmp_path):
    """publish_result's event (the pipeline counts a frame done on it) is set only after the spool transaction
    holding the result committed, so what was acknowledged survives a kill -9; no broker needed for that."""
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), client_id="onen-disk", prefix="onen")  # nobody listens
    publisher = Publisher(cfg, "p1", Spool(tmp_path / "spool.db"), reconnect_min_s=0.2, reconnect_max_s=1.0)
    stored = publisher.publish_result("cam", _result(0))
    assert not stored.is_set(), "not acknowledged while it is only in memory"
    on_disk = sqlite3.connect(str(tmp_path / "spool.db"))
    assert on_disk.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    publisher.start()
    assert stored.wait(10)
    assert [json.loads(p)["seq"] for (p,) in on_disk.execute("SELECT payload FROM outbox")] == [0]
    assert publisher.spool_ok and publisher.pending == 1
    publisher.stop(flush_timeout=0)


def test_availability_retained_online_then_offline_on_stop(broker, tmp_path):
    publisher = _publisher(broker, tmp_path)
    publisher.start()
    assert publisher.wait_connected(5)
    late = Collector(broker.host, broker.port, "onen/p1/availability")  # subscribes after the fact
    assert late.wait(lambda c: c.on("/availability"))
    assert late.on("/availability")[0] == (b"online", True)  # retained
    assert publisher.stop() is True
    assert late.wait(lambda c: c.on("/availability")[-1][0] == b"offline")
    after = Collector(broker.host, broker.port, "onen/p1/availability")
    assert after.wait(lambda c: c.on("/availability")) and after.on("/availability")[0] == (b"offline", True)
    late.close()
    after.close()


@pytest.mark.slow
def test_broker_outage_every_result_arrives_in_order(tmp_path):
    """Stop mosquitto mid-stream, keep publishing, restart it on the same port: nothing lost, order kept."""
    with MosquittoBroker(persistence=True) as broker:
        # a persistent session (clean_session=False): the broker queues results for it while it reconnects
        received: list[int] = []
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-watcher", clean_session=False)
        watcher.on_message = lambda c, u, m: received.append(json.loads(m.payload)["seq"])
        watcher.on_connect = lambda c, u, f, rc, p: c.subscribe("onen/p1/+/result", qos=1)
        watcher.reconnect_delay_set(0.2, 1)
        watcher.connect(broker.host, broker.port)
        watcher.loop_start()
        publisher = _publisher(broker, tmp_path)
        publisher.start()
        assert publisher.wait_connected(5)
        time.sleep(0.3)
        for seq in range(30):
            publisher.publish_result("cam", _result(seq))
        assert publisher.flush(10)
        broker.stop()
        for seq in range(30, 80):  # the line keeps inspecting during the outage
            publisher.publish_result("cam", _result(seq))
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while publisher.spool.depth < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher.spool.depth == 50, "results made during the outage wait on disk"
        broker.start()  # same port
        assert publisher.flush(20), f"{publisher.spool.depth} results never acknowledged"
        deadline = time.monotonic() + 10
        while len(set(received)) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        unique = list(dict.fromkeys(received))  # QoS 1 may redeliver; dedupe by seq keeps first arrival
        assert unique == list(range(80))
        assert publisher.connects >= 2
        publisher.stop()
        watcher.loop_stop()
        watcher.disconnect()


def test_availability_and_subscriptions_restored_after_broker_restart(broker, tmp_path):
    triggers = []
    publisher = _publisher(broker, tmp_path)
    publisher.subscribe("onen/p1/cmd/+/trigger", lambda topic, payload, props: triggers.append(payload))
    publisher.start()
    assert publisher.wait_connected(5)
    sender = Collector(broker.host, broker.port, "onen/p1/availability")
    time.sleep(0.3)
    sender.client.publish("onen/p1/cmd/cam/trigger", b"before", qos=1)
    assert sender.wait(lambda c: triggers == [b"before"], 5)
    broker.stop()  # forgets the retained "online" (no persistence)
    deadline = time.monotonic() + 5
    while publisher.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not publisher.connected
    broker.start()
    deadline = time.monotonic() + 10
    while publisher.connects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert publisher.connects >= 2
    fresh = Collector(broker.host, broker.port, "onen/p1/availability")
    assert fresh.wait(lambda c: c.on("/availability")), "availability republished (retained) after reconnect"
    assert fresh.on("/availability")[0] == (b"online", True)
    assert sender.wait(lambda c: c.client.is_connected(), 10)
    sender.client.publish("onen/p1/cmd/cam/trigger", b"after", qos=1)
    assert sender.wait(lambda c: triggers == [b"before", b"after"], 5), triggers
    publisher.stop()
    sender.close()
    fresh.close()


CRASHER = textwrap.dedent("""
    import sys, time
    from onen.edge.config import MqttConfig
    from onen.edge.publisher import Publisher
    from onen.edge.spool import Spool
    cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), client_id="onen-crash", prefix="onen")
    publisher = Publisher(cfg, "crash", Spool(sys.argv[2]))
    publisher.start()
    publisher.wait_connected(10)
    print("connected", flush=True)
    time.sleep(60)
""")


def test_last_will_says_offline_when_the_process_dies(broker, tmp_path):
    collector = Collector(broker.host, broker.port, "onen/crash/availability")
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(broker.port), str(tmp_path / "s.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "connected"
        assert collector.wait(lambda c: [p for p, _ in c.on("/availability")] == [b"online"], 5)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert collector.wait(lambda c: [p for p, _ in c.on("/availability")] == [b"online", b"offline"], 10)
    late = Collector(broker.host, broker.port, "onen/crash/availability")
    assert late.wait(lambda c: c.on("/availability")) and late.on("/availability")[0] == (b"offline", True)
    collector.close()
    late.close()


def test_publishing_from_many_threads_keeps_per_thread_order(broker, tmp_path):
    collector = Collector(broker.host, broker.port, "onen/p1/+/result")
    publisher = _publisher(broker, tmp_path)
    publisher.start()
    assert publisher.wait_connected(5)

    def produce(camera: str) -> None:
        for seq in range(40):
            publisher.publish_result(camera, json.dumps({"seq": seq}).encode())

    threads = [threading.Thread(target=produce, args=(f"c{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert publisher.flush(10)
    assert collector.wait(lambda c: len(c.on("/result")) >= 120)
    for i in range(3):
        assert [json.loads(p)["seq"] for p, _ in collector.on(f"/c{i}/result")] == list(range(40))
    publisher.stop()
    collector.close()


@pytest.mark.slow
def test_tls_and_credentials_from_the_config(tmp_path):
    from onen.edge.config import TlsConfig

    files = tls_files(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "line3", "s3cret"], check=True, capture_output=True)
    extra = f"cafile {files['ca']}\ncertfile {files['cert']}\nkeyfile {files['key']}\npassword_file {passwords}\n"
    with MosquittoBroker(anonymous=False, extra_config=extra) as broker:

        def connect(password):
            cfg = MqttConfig(
                host="127.0.0.1",
                port=broker.port,
                client_id=f"onen-tls-{password}",
                prefix="onen",
                tls=TlsConfig(ca=files["ca"]),
                username="line3",
                password=password,
            )
            publisher = Publisher(
                cfg, "tls", Spool(tmp_path / f"{password}.db"), reconnect_min_s=0.2, reconnect_max_s=1.0
            )
            publisher.start()
            return publisher

        good = connect("s3cret")
        assert good.wait_connected(10), "TLS with the configured CA and user/password connects"
        good.publish_result("cam", _result(0))
        assert good.flush(10)
        wrong = connect("wrong")
        assert not wrong.wait_connected(2), "a wrong password is refused"
        assert wrong.spool.depth == 0
        wrong.publish_result("cam", _result(0))
        time.sleep(0.3)
        assert wrong.pending == 1, "results wait in the spool while the broker refuses us"
        wrong.stop(flush_timeout=0)
        good.stop()


def test_the_station_socket_sends_small_messages_without_nagle_delay(broker, tmp_path):
    """Triggers in and results out are small: with Nagle's algorithm on, each could wait for the broker's
    delayed ACK of the previous segment (up to 40 ms). The socket is set TCP_NODELAY, on every reconnect too."""
    import socket

    publisher = _publisher(broker, tmp_path)
    publisher.start()
    assert publisher.wait_connected(5)
    sock = publisher.client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    broker.stop()
    broker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (publisher.client.socket() in (None, sock) or not publisher.connected):
        time.sleep(0.05)
    assert publisher.connected and publisher.client.socket() is not sock
    assert publisher.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    publisher.stop()
