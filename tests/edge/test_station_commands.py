"""A new calibration sent to a running station: real daemon, real mosquitto, the real `onen push-calibration`.

The daemon inspects a looping video the whole time; the calibration changes between frames, every result
is computed with either the old or the new calibration (never a mix), and a refused push changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from support.daemon import Collector, file_camera, reference_frames, unique_in_order, write_station, write_video
from support.daemon import start_daemon as start_station

from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import from_bundle_defaults, save_calibration
from onen.edge.cli import main
from onen.edge.local_broker import MosquittoBroker

NEW_THRESHOLD = 0.9995  # above every reference score: the defective references become "ok"


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


def start_daemon(config_path, **options):
    return start_station(config_path, wait_connected_s=10, **options)


def expected_score(raw: float, low: float, threshold: float, high: float) -> float:
    return float(np.clip(np.interp(raw, [low, threshold, high], [0.0, 0.5, 1.0]), 0.0, 1.0))


@pytest.mark.slow
def test_pushed_calibration_is_applied_between_frames_and_a_wrong_one_changes_nothing(
    tmp_path, broker, tiny_bundle, capsys
):
    bundle = load_bundle(tiny_bundle)
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=16)
    station_calibration = save_calibration(from_bundle_defaults(bundle, "cam"), tmp_path / "station-calib" / "cam.yaml")
    old = yaml.safe_load(station_calibration.read_text())
    camera = file_camera("cam", video, realtime=True, loop=True)
    camera["calibration"] = str(station_calibration)
    config = write_station(tmp_path, broker.port, tiny_bundle, [camera])

    new = dict(
        old,
        image_threshold=NEW_THRESHOLD,
        normalisation={"raw_low": 0.0, "raw_threshold": NEW_THRESHOLD, "raw_high": 1.0},
    )
    (tmp_path / "pushed").mkdir()
    new_file = tmp_path / "pushed" / "cam.yaml"
    new_file.write_text(yaml.safe_dump(new, sort_keys=False))
    other = dict(new, bundle={"name": "other-model", "version": "7", "model_sha256": "0" * 64})
    other_file = tmp_path / "pushed" / "cam-other.yaml"
    other_file.write_text(yaml.safe_dump(other, sort_keys=False))

    collector = Collector(broker.host, broker.port)
    daemon, thread = start_daemon(config)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 8, timeout=20), "daemon inspects before the push"
        dropped_before = daemon.cameras["cam"].dropped
        assert main(["push-calibration", str(new_file), "--config", str(config), "--wait", "10"]) == 0
        assert "station answered calibration_updated" in capsys.readouterr().out
        pushed_at = len(collector.results())
        assert collector.wait(lambda c: any(e["kind"] == "calibration_updated" for e in c.events()), timeout=5)
        updated = [e for e in collector.events() if e["kind"] == "calibration_updated"]
        assert len(updated) == 1 and updated[0]["detail"]["camera"] == "cam"
        assert updated[0]["detail"]["image_threshold"] == NEW_THRESHOLD
        stored = Path(updated[0]["detail"]["file"])  # kept in the calibration store, so a restart keeps it
        assert yaml.safe_load(stored.read_text())["image_threshold"] == NEW_THRESHOLD
        assert yaml.safe_load(station_calibration.read_text()) == old  # the engineer's file is never written
        assert collector.wait(lambda c: len(c.results()) >= pushed_at + 12, timeout=20)

        assert main(["push-calibration", str(other_file), "--config", str(config), "--wait", "10"]) == 1
        answer = capsys.readouterr().out
        assert "calibration_rejected" in answer and "other-model" in answer
        assert collector.wait(lambda c: any(e["kind"] == "calibration_rejected" for e in c.events()), timeout=5)
        rejected = [e for e in collector.events() if e["kind"] == "calibration_rejected"]
        assert (
            len(rejected) == 1
            and rejected[0]["detail"]["camera"] == "cam"
            and "other-model" in rejected[0]["detail"]["reason"]
        )
        assert yaml.safe_load(stored.read_text())["image_threshold"] == NEW_THRESHOLD
        assert daemon.commands.calibrations.current("cam") == stored.parent
        rejected_at = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= rejected_at + 12, timeout=20), (
            "daemon alive after a refused push"
        )
        assert thread.is_alive() and daemon.pipelines["cam"].alive
        dropped = daemon.cameras["cam"].dropped - dropped_before
        failed = daemon.pipelines["cam"].failed
        apply_ms = updated[0]["detail"]["apply_ms"]
    finally:
        daemon.request_stop()
        thread.join(30)
        collector.close()

    # Each result was computed with exactly one of the two calibrations, switching once, at a frame boundary.
    results = {r["seq"]: r for r in collector.results()}
    old_norm = old["normalisation"]
    which = []
    for seq in sorted(results):
        r = results[seq]
        raw = r["raw_score"]
        as_old = expected_score(raw, old_norm["raw_low"], old_norm["raw_threshold"], old_norm["raw_high"])
        as_new = expected_score(raw, 0.0, NEW_THRESHOLD, 1.0)
        if abs(r["score"] - as_old) < 1e-5 and r["verdict"] == ("defect" if raw > old["image_threshold"] else "ok"):
            which.append("old")
        elif abs(r["score"] - as_new) < 1e-5 and r["verdict"] == ("defect" if raw > NEW_THRESHOLD else "ok"):
            which.append("new")
        else:
            pytest.fail(f"result seq {seq} matches neither calibration: {r}")
    switch = which.index("new")
    assert set(which[:switch]) == {"old"} and set(which[switch:]) == {"new"}, which
    assert any(
        r["raw_score"] > old["image_threshold"] and r["verdict"] == "ok" for r in list(results.values())[switch:]
    )
    assert failed == 0
    order = unique_in_order(collector.results())
    print(
        f"calibration swap: checked, stored and applied in {apply_ms} ms; {len(order)} results, switch at seq "
        f"{sorted(results)[switch]}, camera dropped {dropped} frame(s) "
        f"during the pushes, seq gaps {order[-1] + 1 - len(order)}"
    )
