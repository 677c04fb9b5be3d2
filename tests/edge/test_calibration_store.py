"""Versioned calibrations (issue 13 item 1): every pushed calibration kept as its own version bound to its
model, the engineer's file never written, a model rollback bringing back that model's calibration.
Real parts: real trained bundles, real files, mosquitto, a daemon on a looping video, the real CLI."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import yaml
from support.daemon import Collector, file_camera, reference_frames, write_station, write_video
from support.daemon import start_daemon as start_station

from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import calibration_to_dict, from_bundle_defaults
from onen.edge.calibration_store import CalibrationStore
from onen.edge.calibration_view import CalibrationError
from onen.edge.cli import main
from onen.edge.config import ConfigError, load_config
from onen.edge.local_broker import MosquittoBroker


def calibration_data(bundle, threshold: float | None = None) -> dict:
    data = calibration_to_dict(from_bundle_defaults(bundle, "cam"))
    if threshold is not None:
        data.update(
            image_threshold=threshold, normalisation={"raw_low": 0.0, "raw_threshold": threshold, "raw_high": 1.0}
        )
    return data


def write_calibration(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the store on its own ---------------------------------------------------------------------------------
def test_store_keeps_versions_with_pointers_and_history(tmp_path, tiny_bundle, second_bundle):
    v1, v2 = load_bundle(tiny_bundle), load_bundle(second_bundle)
    store = CalibrationStore(tmp_path / "calibrations")
    # one dict for both adds: its `created` stamp has a resolution of a second, and a second boundary between two
    # calls of calibration_data would make two contents
    first_data = calibration_data(v1, 0.991)
    first = store.add("cam", copy.deepcopy(first_data), None, v1)
    store.make_current("cam", first, "push")
    second = store.add("cam", calibration_data(v1, 0.992), b"not checked here", None)
    store.make_current("cam", second, "push")
    assert store.current("cam") == second and store.previous("cam") == first
    assert first.name.startswith("0001-") and second.name.startswith("0002-") and first.name[5:] != second.name[5:]
    assert (second / "aoi.png").read_bytes() == b"not checked here"

    assert store.rollback("cam", v1.onnx_sha256) == first
    assert store.current("cam") == first and store.previous("cam") == second
    assert store.add("cam", copy.deepcopy(first_data), None, v1) == first  # same content: same version
    assert [e["action"] for e in store.history("cam")] == ["push", "push", "rollback"]
    assert {e["model_sha256"] for e in store.history("cam")} == {v1.onnx_sha256}
    assert store.for_model("cam", v1.onnx_sha256) == first and store.for_model("cam", v2.onnx_sha256) is None

    for_v2 = store.add("cam", calibration_data(v2, 0.993), None, v2)
    store.make_current("cam", for_v2, "push")
    with pytest.raises(CalibrationError, match="made for model sha256"):
        store.rollback("cam", v2.onnx_sha256)  # previous was made for v1
    assert store.current("cam") == for_v2 and store.for_model("cam", v1.onnx_sha256) == first


def test_store_refuses_a_calibration_made_for_another_model_and_keeps_nothing(tmp_path, tiny_bundle, second_bundle):
    v1, v2 = load_bundle(tiny_bundle), load_bundle(second_bundle)
    store = CalibrationStore(tmp_path / "calibrations")
    with pytest.raises(CalibrationError, match="made for bundle"):
        store.add("cam", calibration_data(v2), None, v1)
    assert (
        [p.name for p in store.folder("cam").iterdir()] == []
        and store.current("cam") is None
        and store.history("cam") == []
    )


def test_seed_copies_the_engineers_file_without_writing_it(tmp_path, tiny_bundle):
    v1 = load_bundle(tiny_bundle)
    engineer = write_calibration(tmp_path / "calib" / "cam.yaml", calibration_data(v1, 0.994))
    before = engineer.read_bytes()
    engineer.chmod(0o444)
    store = CalibrationStore(tmp_path / "calibrations")
    seeded = store.seed("cam", engineer)
    assert store.current("cam") == seeded and store.load(seeded, v1).image_threshold == 0.994
    assert store.seed("cam", engineer) is None  # only once
    assert engineer.read_bytes() == before and store.history("cam")[0]["source"] == str(engineer)


def test_config_names_the_store_relative_to_the_config_file(tmp_path, tiny_bundle):
    video = write_video(tmp_path / "v.avi", reference_frames(tiny_bundle)[0], count=2)
    config = write_station(tmp_path, 1883, tiny_bundle, [file_camera("cam", video)], updates={"dir": "models"})
    assert load_config(config).updates.calibration_dir == tmp_path / "models" / "calibrations"
    config = write_station(
        tmp_path,
        1883,
        tiny_bundle,
        [file_camera("cam", video)],
        updates={"dir": "models", "calibration_dir": "calib-store"},
    )
    assert load_config(config).updates.calibration_dir == tmp_path / "calib-store"
    (tmp_path / "calib-store").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match=r"updates.calibration_dir: not a folder"):
        load_config(config)


# --- on a running station -----------------------------------------------------------------------------------
def serving_threshold(daemon) -> float:
    return daemon.pipelines["cam"].post.calibration.image_threshold


@pytest.mark.slow
def test_pushes_keep_every_version_and_a_model_rollback_restores_its_calibration(
    tmp_path, tiny_bundle, second_bundle, capsys
):
    v1, v2 = load_bundle(tiny_bundle), load_bundle(second_bundle)
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=16)
    engineer = write_calibration(tmp_path / "calib" / "tile.yaml", calibration_data(v1, 0.9990))
    engineer_bytes = engineer.read_bytes()
    pushed = {
        name: write_calibration(tmp_path / "pushed" / f"{name}.yaml", calibration_data(bundle, threshold))
        for name, bundle, threshold in (("tile-v2", v2, 0.9991), ("tile", v1, 0.9992), ("tile.previous", v1, 0.9993))
    }
    camera = file_camera("cam", video, realtime=True, loop=True)
    camera["calibration"] = str(engineer)
    with MosquittoBroker() as broker:
        config = write_station(tmp_path, broker.port, tiny_bundle, [camera], updates={"dir": str(tmp_path / "models")})
        collector = Collector(broker.host, broker.port)
        daemon, thread = start_station(config, wait_connected_s=10)
        try:

            def swapped(count):
                assert collector.wait(
                    lambda c: sum(e["kind"] == "model_swapped" for e in c.events()) == count, timeout=10
                )
                return [e for e in collector.events() if e["kind"] == "model_swapped"][-1]["detail"]

            def serves(threshold):
                assert collector.wait(lambda c: serving_threshold(daemon) == threshold, timeout=10), (
                    f"serves {serving_threshold(daemon)}"
                )

            assert main(["push", str(second_bundle), "--config", str(config)]) == 0
            assert swapped(1)["recalibrate"] == ["cam"]
            assert main(["push-calibration", str(pushed["tile-v2"]), "--config", str(config)]) == 0
            serves(0.9991)
            assert main(["push", "--rollback", "--config", str(config)]) == 0
            assert Path(swapped(2)["cameras"]["cam"]["calibration"]).name.startswith(
                "0001-"
            )  # the engineer's, as seeded
            serves(0.9990)
            for name in ("tile", "tile.previous"):
                assert main(["push-calibration", str(pushed[name]), "--config", str(config)]) == 0
            serves(0.9993)
            assert main(["push-calibration", "--rollback", "--camera", "cam", "--config", str(config)]) == 0
            serves(0.9992)
            assert main(["push", "--rollback", "--config", str(config)]) == 0  # back to v2, three pushes later
            assert Path(swapped(3)["cameras"]["cam"]["calibration"]).name.startswith("0002-")
            serves(0.9991)
            assert main(["push", "--rollback", "--config", str(config)]) == 0  # and v1 with its last one
            swapped(4)
            serves(0.9992)
            capsys.readouterr()
        finally:
            daemon.request_stop()
            thread.join(30)
        assert not thread.is_alive()

        store = CalibrationStore(tmp_path / "models" / "calibrations")
        versions = sorted(p for p in store.folder("cam").iterdir() if p.is_dir() and not p.name.startswith("."))
        made_for = {p.name: store.model_sha_of(p) for p in versions}
        thresholds = [yaml.safe_load((p / "calibration.yaml").read_text())["image_threshold"] for p in versions]
        assert thresholds == [0.9990, 0.9991, 0.9992, 0.9993]
        assert list(made_for.values()) == [v1.onnx_sha256, v2.onnx_sha256, v1.onnx_sha256, v1.onnx_sha256]
        assert len({hashlib.sha256((p / "calibration.yaml").read_bytes()).hexdigest() for p in versions}) == 4
        assert all(
            p.name.endswith(hashlib.sha256((p / "calibration.yaml").read_bytes()).hexdigest()[:12]) for p in versions
        )
        assert engineer.read_bytes() == engineer_bytes
        assert sorted(p.name for p in engineer.parent.iterdir()) == ["tile.yaml"]

        assert main(["calibrations", "list", "--config", str(config), "--camera", "cam"]) == 0
        lines = capsys.readouterr().out.splitlines()
        marked = [line for line in lines if line.startswith(" * ")]
        assert len(marked) == 1 and versions[2].name in marked[0] and v1.onnx_sha256[:12] in marked[0]
        assert all(any(p.name in line for line in lines) for p in versions)

        # A restart serves the stored calibration of the model it serves.
        daemon, thread = start_station(config, wait_connected_s=10)
        try:
            assert daemon.model_infos["m"].sha256 == v1.onnx_sha256 and serving_threshold(daemon) == 0.9992
        finally:
            daemon.request_stop()
            thread.join(30)
            collector.close()
