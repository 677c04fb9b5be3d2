"""The shipped mosquitto configurations of a fleet, run as real brokers on loopback (tests/support/fleet.py).

A station broker on `systemd/mosquitto-station.conf` bridges its station's topics to a central broker and the
station's commands back, reports its link state, queues both ways across outages; the central broker on
`systemd/mosquitto-central.conf` + `.acl` keeps every station to its own topics.
"""

from __future__ import annotations

import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.fleet import Subscriber, central_broker, station_broker
from support.tls import tls_files

from onen.edge.fleet_brokers import BrokerConfError, central_conf, station_conf


def _publish(port: int, topic: str, payload: bytes, retain=False, user=None, password=None, ca=None) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    if user:
        client.username_pw_set(user, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.connect("127.0.0.1", port)
    client.loop_start()
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    return info.is_published()


def _payloads(subscriber: Subscriber, topic: str) -> list[bytes]:
    return subscriber.payloads(topic)


def test_station_broker_bridges_its_topics_out_its_commands_in_and_reports_the_link():
    central = central_broker()
    station = station_broker("st1", central.port)
    try:
        up = Subscriber(central.port, ["onen/#"], "central-watcher")
        local = Subscriber(station.port, ["onen/#"], "local-watcher")
        assert up.wait(lambda c: _payloads(c, "onen/st1/bridge")[-1:] == [b"1"]), "link state 1 at the central side"
        _publish(station.port, "onen/st1/cam/result", b"r1")
        _publish(station.port, "onen/st1/state", b"s1", retain=True)
        _publish(station.port, "onen/st2/cam/result", b"not-mine")  # another station's topic stays local
        _publish(central.port, "onen/st1/cmd/model/install", b"c1")
        _publish(central.port, "onen/st2/cmd/model/install", b"c2")  # not for this station
        assert up.wait(lambda c: _payloads(c, "onen/st1/cam/result") == [b"r1"])
        assert local.wait(lambda c: _payloads(c, "onen/st1/cmd/model/install") == [b"c1"])
        time.sleep(0.5)
        assert _payloads(local, "onen/st2/cmd/model/install") == []
        assert _payloads(up, "onen/st2/cam/result") == []
        assert _payloads(up, "onen/st1/cmd/model/install") == [b"c1"], "a command is not echoed back out"

        station.stop()  # the station's broker goes down: its bridge's will says so centrally
        assert up.wait(lambda c: _payloads(c, "onen/st1/bridge")[-1:] == [b"0"])
        _publish(central.port, "onen/st1/cmd/model/rollback", b"while-down")  # kept for the bridge's session
        station.start()
        assert local.wait(lambda c: _payloads(c, "onen/st1/cmd/model/rollback") == [b"while-down"], 20)
        assert up.wait(lambda c: _payloads(c, "onen/st1/bridge")[-1:] == [b"1"], 20)

        central.stop()  # the plant network is down: results queue on the station's broker
        for i in range(5):
            _publish(station.port, "onen/st1/cam/result", f"q{i}".encode())
        central.start()
        assert up.wait(lambda c: _payloads(c, "onen/st1/cam/result")[1:] == [f"q{i}".encode() for i in range(5)], 20)
        assert up.wait(lambda c: _payloads(c, "onen/st1/bridge")[-1:] == [b"1"], 20), "link up again, not the stale 0"
        retained = subprocess.run(
            ["mosquitto_sub", "-p", str(central.port), "-t", "onen/st1/state", "-W", "2", "--retained-only", "-C", "1"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert retained.stdout.strip() == "s1", "the retained state reaches the central broker and survives it"
        up.close()
        local.close()
    finally:
        station.close()
        central.close()


def test_central_broker_over_tls_keeps_each_station_to_its_own_topics(tmp_path):
    """The shipped central conf with TLS, passwords and the ACL; the station's bridge verifies it with the CA."""
    tls = tls_files(tmp_path)
    passwords = tmp_path / "passwd"
    users = {"st1": "pw-st1", "st2": "pw-st2", "onen-consumer": "pw-c", "onen-fleet": "pw-f"}
    for i, (user, password) in enumerate(users.items()):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwords), user, password], check=True
        )
    central = central_broker(password_file=passwords, tls=tls)
    station = station_broker("st1", central.port, password=users["st1"], ca=tls["ca"])
    try:
        consumer = Subscriber(
            central.port, ["$share/archive/onen/#"], "consumer", user="onen-consumer", password="pw-c", ca=tls["ca"]
        )
        assert consumer.wait(lambda s: s.payloads("onen/st1/bridge")[-1:] == [b"1"]), (
            "the bridge logged in as st1 over TLS, the consumer reads through a shared subscription"
        )
        _publish(station.port, "onen/st1/cam/result", b"ok-from-st1")
        central_port, ca = central.port, tls["ca"]
        assert _publish(central_port, "onen/st2/cam/result", b"forged", user="st1", password="pw-st1", ca=ca)
        assert _publish(central_port, "onen/st1/cmd/model/install", b"cmd", user="onen-fleet", password="pw-f", ca=ca)
        assert _publish(central_port, "onen/st2/cam/result", b"real-st2", user="st2", password="pw-st2", ca=ca)
        assert consumer.wait(lambda s: s.payloads("onen/st2/cam/result")[-1:] == [b"real-st2"])
        assert consumer.payloads("onen/st1/cam/result") == [b"ok-from-st1"]
        assert consumer.payloads("onen/st1/cmd/model/install") == [b"cmd"]
        assert consumer.payloads("onen/st2/cam/result") == [b"real-st2"], "st1 cannot publish under st2"
        consumer.close()
    finally:
        station.close()
        central.close()


def test_rendering_refuses_what_would_make_a_broken_broker_config(tmp_path):
    with pytest.raises(BrokerConfError, match="station id"):
        station_conf("a/b", "central:8883")
    with pytest.raises(BrokerConfError, match="HOST:PORT"):
        station_conf("st1", "central")
    with pytest.raises(BrokerConfError, match="--cert and --key"):
        station_conf("st1", "central:8883", ca=tmp_path / "ca.pem", cert=tmp_path / "c.pem")
    with pytest.raises(BrokerConfError, match="password-file"):
        central_conf(tmp_path / "acl")
    text = station_conf("st1", "central:8883", password="secret", ca=tmp_path / "ca.pem")
    assert "\nremote_username st1\nremote_password secret\n" in text
    assert f"\nbridge_cafile {tmp_path / 'ca.pem'}\n" in text and "# off: bridge_certfile" in text
    assert "{{" not in text
    conf, acl = central_conf(tmp_path / "acl", password_file=tmp_path / "passwd", prefix="plant7")
    assert "pattern readwrite plant7/%u/#" in acl and f"acl_file {tmp_path / 'acl'}" in conf


def test_onen_fleet_writes_the_confs_it_documents(tmp_path, capsys):
    from onen.edge.cli import main

    (tmp_path / "pw").write_text("secret\n")
    out = tmp_path / "onen-station.conf"
    args = ["--station", "press-1", "--central", "central.plant:8883", "--ca", str(tmp_path / "ca.pem")]
    assert main(["fleet", "bridge-conf", *args, "--password-file", str(tmp_path / "pw"), "--out", str(out)]) == 0
    assert out.read_text() == station_conf("press-1", "central.plant:8883", ca=tmp_path / "ca.pem", password="secret")
    assert out.stat().st_mode & 0o777 == 0o600, "it holds the station's password"
    assert (
        main(
            [
                "fleet",
                "central-conf",
                "--password-file",
                "/etc/mosquitto/onen.passwd",
                "--out",
                str(tmp_path / "c.conf"),
            ]
        )
        == 0
    )
    assert f"acl_file {tmp_path / 'c.acl'}" in (tmp_path / "c.conf").read_text()
    assert "pattern readwrite onen/%u/#" in (tmp_path / "c.acl").read_text()
    assert main(["fleet", "bridge-conf", "--station", "a b", "--central", "c:1"]) == 2
    assert "station id 'a b'" in capsys.readouterr().err
