"""A fleet on loopback, every part real: a mosquitto per station bridged (the shipped station conf) to a
central mosquitto, a daemon per station on the small bundle, consumers and `onen fleet` on the central broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from support.calibration import write_calibration
from support.daemon import file_camera, reference_frames, start_daemon, unique_in_order, write_station, write_video
from support.fleet import Subscriber, central_broker, station_broker

from onen.edge.bundle import load_bundle
from onen.edge.cli import main
from onen.edge.updates import generate_keys

STATIONS = ("press-1", "press-2", "press-3")


@pytest.fixture
def central():
    broker = central_broker()
    yield broker
    broker.close()


@pytest.fixture
def station_brokers(central):
    brokers = {station: station_broker(station, central.port) for station in STATIONS}
    yield brokers
    for broker in brokers.values():
        broker.close()


def _stations(tmp_path: Path, brokers, bundle: Path, video: Path, updates=None, **camera) -> dict:
    """Three daemons, one per station broker, each with one file camera on `video`; started and connected."""
    daemons = {}
    for station, broker in brokers.items():
        folder = tmp_path / station
        folder.mkdir()
        extra = {"updates": updates(station, folder)} if updates else {}
        config = write_station(
            folder, broker.port, bundle, [file_camera("cam", video, **camera)], station=station, **extra
        )
        daemons[station] = start_daemon(config, wait_connected_s=30, exit_when_finished=True)
    return daemons


def _by_station(subscriber: Subscriber) -> dict[str, list[dict]]:
    results = subscriber.results()
    return {s: [r for r in results if r["station"] == s] for s in STATIONS}


def _join(daemons: dict) -> None:
    for _daemon, thread in daemons.values():
        thread.join(60)
        assert not thread.is_alive(), "the daemon finished its video"


def test_results_of_every_station_arrive_centrally_and_shared_consumers_split_them(
    tmp_path, central, station_brokers, tiny_bundle
):
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=24)
    everything = Subscriber(central.port, ["onen/+/+/result"], "archiver-all")
    shared = [Subscriber(central.port, ["$share/mes/onen/+/+/result"], f"mes-gateway-{i}") for i in range(2)]
    daemons = _stations(tmp_path, station_brokers, tiny_bundle, video)
    _join(daemons)
    assert everything.wait(lambda s: all(len(set(unique_in_order(r))) == 24 for r in _by_station(s).values()), 30)
    for station, results in _by_station(everything).items():
        assert unique_in_order(results) == list(range(24)), station
        assert {r["station"] for r in results} == {station}
    total = 3 * 24
    assert shared[0].wait(lambda _: sum(len(_keys(s)) for s in shared) >= total, 20)
    keys = [_keys(s) for s in shared]
    assert all(keys), "both consumers got a share of the load"
    assert not keys[0] & keys[1], "each result went to one consumer of the group"
    assert keys[0] | keys[1] == _keys(everything), "together they missed nothing"
    for subscriber in [everything, *shared]:
        subscriber.close()


def _keys(subscriber: Subscriber) -> set[tuple[str, str, str, int]]:
    """The idempotency key of every result (station, run, camera, seq): a QoS 1 redelivery has the same key."""
    results = subscriber.results()
    return {(r["station"], r["run_id"], r["camera"], r["seq"]) for r in results}


def test_central_broker_killed_mid_run_every_result_arrives_and_per_station_order_is_restored_by_seq(
    tmp_path, central, station_brokers, tiny_bundle
):
    """SIGKILL of the central broker mid-run: nothing is lost. Each station's broker gets its results in order;
    across the bridge's reconnect mosquitto 2.0 may let a result published during the reconnect overtake the
    backlog (docs/fleet.md), so the consumer orders by seq; it holds every result the station's broker got."""
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=60, fps=20)
    archiver = Subscriber(central.port, ["onen/+/+/result"], "archiver")  # a persistent session
    local = {s: Subscriber(b.port, [f"onen/{s}/+/result"], f"local-{s}") for s, b in station_brokers.items()}
    time.sleep(1.5)  # the central broker saves its sessions every second (autosave_interval 1)
    daemons = _stations(tmp_path, station_brokers, tiny_bundle, video, realtime=True)
    assert archiver.wait(lambda s: all(len(r) >= 10 for r in _by_station(s).values()), 30)
    central.kill()  # SIGKILL: the plant's central broker crashes mid-run
    time.sleep(1.0)
    central.start()
    _join(daemons)
    expected = {s: daemons[s][0].pipelines["cam"].inspected for s in STATIONS}
    assert all(n >= 40 for n in expected.values()), expected  # 60 frames paced at 20 fps, a few may be dropped

    def complete(subscriber: Subscriber) -> bool:
        return all(len(set(unique_in_order(r))) == expected[n] for n, r in _by_station(subscriber).items())

    assert archiver.wait(complete, 30)
    for station, subscriber in local.items():
        assert subscriber.wait(lambda s, n=station: len(unique_in_order(_by_station(s)[n])) == expected[n])
    for station, results in _by_station(archiver).items():
        on_station = unique_in_order(_by_station(local[station])[station])
        assert on_station == sorted(on_station), f"{station}: in order on its own broker"
        # seq counts the camera's frames: one the paced camera dropped on a loaded machine is a gap, not a loss
        assert sorted(unique_in_order(results)) == on_station, f"{station}: every result crossed the bridge"
    for subscriber in local.values():
        subscriber.close()
    archiver.close()


def _fleet_file(tmp_path: Path, central_port: int, bundle: Path, calibration: Path, key: Path) -> Path:
    fleet = {
        "broker": {"host": "127.0.0.1", "port": central_port, "prefix": "onen"},
        "signing_key": str(key),
        "groups": {"line-a": {"bundle": str(bundle), "calibrations": {"cam": str(calibration)}}},
        "stations": {station: {"group": "line-a"} for station in STATIONS},
        "rollout": {"canary": ["press-1"], "wave_size": 1, "soak_s": 1.0, "min_results": 3, "answer_timeout_s": 30},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return path


def test_rollout_halts_on_the_station_that_refuses_and_leaves_the_rest_on_the_old_model(
    tmp_path, central, station_brokers, tiny_bundle, second_bundle, capsys
):
    release, stranger = generate_keys(tmp_path / "keys", "release"), generate_keys(tmp_path / "keys", "stranger")
    new = load_bundle(second_bundle)
    old_sha = load_bundle(tiny_bundle).onnx_sha256
    frames, scores = reference_frames(second_bundle)
    good = [frame for frame, score in zip(frames, scores, strict=True) if score < 0.5]
    video = write_video(tmp_path / "good.avi", good, count=40, fps=20)
    calibration = write_calibration(
        tmp_path / "cam.yaml",
        new,
        camera="cam",
        image_threshold=0.9,
        normalisation={"raw_low": 0.01, "raw_threshold": 0.9, "raw_high": 0.99},
        statistics={"target_frr": 0.005, "confidence": 0.95},
    )

    def updates(station: str, folder: Path) -> dict:  # press-2 trusts another key: it refuses the release
        public = stranger[1] if station == "press-2" else release[1]
        return {"dir": str(folder / "models"), "trusted_keys": [str(public)]}

    daemons = _stations(tmp_path, station_brokers, tiny_bundle, video, updates=updates, realtime=True, loop=True)
    fleet = _fleet_file(tmp_path, central.port, second_bundle, calibration, release[0])
    try:
        assert main(["fleet", "apply", str(fleet), "--dry-run"]) == 0
        planned = capsys.readouterr().out.splitlines()
        assert planned == [
            f"{label}: {s} (model differs)" for label, s in zip(("canary", "wave 1", "wave 2"), STATIONS, strict=True)
        ]
        code = main(["fleet", "apply", str(fleet)])
        output = capsys.readouterr().out
        assert code == 1, output
        assert "HALTED in wave 1: station press-2 refused the model" in output and "not signed" not in output
        assert "not touched: press-3" in output
        served = {s: daemons[s][0].model_infos["m"].sha256 for s in STATIONS}
        assert served == {"press-1": new.onnx_sha256, "press-2": old_sha, "press-3": old_sha}
        assert main(["fleet", "status", str(fleet), "--json"]) == 1
        rows = {row["station"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
        assert rows["press-1"]["verdict"] == "in sync"
        assert rows["press-1"]["calibrations"]["cam"]["reported"].endswith(
            rows["press-1"]["calibrations"]["cam"]["desired"]
        )
        assert rows["press-2"]["verdict"] == rows["press-3"]["verdict"] == "model differs"
        assert all(row["availability"] == "online" and row["link"] == "1" for row in rows.values())
    finally:
        for daemon, _thread in daemons.values():
            daemon.request_stop()
        _join(daemons)


def test_rollout_halts_at_the_canary_when_it_rejects_more_than_its_calibration_promises(
    tmp_path, central, station_brokers, tiny_bundle, second_bundle, capsys
):
    """A calibration whose threshold rejects good parts: the canary swaps, then its soak halts the rollout."""
    release = generate_keys(tmp_path / "keys", "release")
    new, old_sha = load_bundle(second_bundle), load_bundle(tiny_bundle).onnx_sha256
    frames, _ = reference_frames(second_bundle)
    video = write_video(tmp_path / "parts.avi", frames, count=40, fps=20)
    calibration = write_calibration(
        tmp_path / "cam.yaml",
        new,
        camera="cam",
        image_threshold=0.0001,  # every part is a reject
        normalisation={"raw_low": 0.00001, "raw_threshold": 0.0001, "raw_high": 0.99},
        statistics={"target_frr": 0.005, "confidence": 0.95},
    )
    daemons = _stations(
        tmp_path,
        station_brokers,
        tiny_bundle,
        video,
        updates=lambda station, folder: {"dir": str(folder / "models"), "trusted_keys": [str(release[1])]},
        realtime=True,
        loop=True,
    )
    fleet = _fleet_file(tmp_path, central.port, second_bundle, calibration, release[0])
    try:
        assert main(["fleet", "apply", str(fleet)]) == 1
        output = capsys.readouterr().out
        assert "HALTED in canary: station press-1 camera cam:" in output, output
        assert "rejected on the new model, above the bound 0.500% at 95% confidence" in output
        assert "not touched: press-2, press-3" in output
        served = {s: daemons[s][0].model_infos["m"].sha256 for s in STATIONS}
        assert served == {"press-1": new.onnx_sha256, "press-2": old_sha, "press-3": old_sha}
    finally:
        for daemon, _thread in daemons.values():
            daemon.request_stop()
        _join(daemons)
