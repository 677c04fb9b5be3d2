"""Model updates on a running station: signatures, install, refusals, rollback, restart. Real parts only:
two real trained bundles, ONNX Runtime, a looping video, mosquitto, and the real `onen push`/`keys`/`sign`."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from support.daemon import Collector, file_camera, reference_frames, unique_in_order, write_station, write_video
from support.daemon import start_daemon as start_station

from onen.edge.bundle import load_bundle
from onen.edge.calibration_file import from_bundle_defaults, save_calibration
from onen.edge.calibration_store import CalibrationStore
from onen.edge.cli import main
from onen.edge.config import load_config
from onen.edge.daemon import Daemon
from onen.edge.local_broker import MosquittoBroker
from onen.edge.publisher import Topics
from onen.edge.station_client import send_command
from onen.edge.station_commands import RECALIBRATE
from onen.edge.updates import (
    ModelStore,
    SignatureError,
    generate_keys,
    install_message,
    load_private_key,
    load_public_key,
    pack_bundle_bytes,
    sign_bundle,
    verify_bundle_signature,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("keys")
    trusted = generate_keys(folder, "release")
    stranger = generate_keys(folder, "stranger")
    return {"private": trusted[0], "public": trusted[1], "stranger": stranger[0]}


@pytest.fixture
def broker():
    with MosquittoBroker() as running:
        yield running


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def start_daemon(config_path, **options):
    return start_station(config_path, wait_connected_s=10, **options)


def stop_daemon(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def station(tmp_path: Path, broker, bundle: Path, keys: dict | None, calibrated: bool = False) -> Path:
    images, _ = reference_frames(bundle)
    video = write_video(tmp_path / "parts.avi", images, count=16)
    camera = file_camera("cam", video, realtime=True, loop=True)
    if calibrated:
        camera["calibration"] = str(
            save_calibration(from_bundle_defaults(load_bundle(bundle), "cam"), tmp_path / "calib" / "cam.yaml")
        )
    updates = {"dir": str(tmp_path / "models")}
    if keys is not None:
        updates["trusted_keys"] = [str(keys["public"])]
    return write_station(tmp_path, broker.port, bundle, [camera], updates=updates)


def sha_of(bundle: Path) -> str:
    return load_bundle(bundle).onnx_sha256


# --- signatures --------------------------------------------------------------------------------------------


def test_sign_and_verify_and_tampering(tmp_path, tiny_bundle, keys, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    with pytest.raises(SignatureError, match="not signed"):
        verify_bundle_signature(load_bundle(bundle), [load_public_key(keys["public"])])
    assert main(["sign", str(bundle), "--key", str(keys["private"])]) == 0
    assert "signed" in capsys.readouterr().out
    trusted = load_public_key(keys["public"])
    stranger = load_private_key(keys["stranger"]).public_key()
    fingerprint = verify_bundle_signature(load_bundle(bundle), [stranger, trusted])
    assert len(fingerprint) == 16
    with pytest.raises(SignatureError, match="does not match"):
        verify_bundle_signature(load_bundle(bundle), [stranger])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["thresholds"]["image"] = 0.01  # hashes of the files still fine, manifest changed
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(SignatureError, match="does not match"):
        verify_bundle_signature(load_bundle(bundle), [trusted])
    (bundle / "signature").write_text("not base64 at all!\n")
    with pytest.raises(SignatureError, match="base64"):
        verify_bundle_signature(bundle, [trusted])


def test_keys_generate_refuses_to_overwrite_and_commands_check_usage(tmp_path, tiny_bundle, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert oct((tmp_path / "k" / "onen-signing.pem").stat().st_mode & 0o777) == "0o600"
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["sign", str(tiny_bundle), "--key", str(tmp_path / "k" / "onen-signing.pub.pem")]) == 2
    )  # a public key cannot sign
    assert "private key" in capsys.readouterr().err
    config = tmp_path / "station.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "station": "s",
                "mqtt": {"host": "127.0.0.1"},
                "models": {"m": {"bundle": str(tiny_bundle)}},
                "cameras": {"c": {"source": {"kind": "folder", "path": str(tmp_path)}}},
            }
        )
    )
    assert main(["push", "--config", str(config)]) == 2  # neither BUNDLE nor --rollback
    assert main(["push", str(tiny_bundle), "--rollback", "--config", str(config)]) == 2
    assert main(["push", "relative/bundle", "--on-station", "--config", str(config)]) == 2
    assert "absolute path on the station" in capsys.readouterr().err
    assert main(["push", str(tiny_bundle), "--model", "nope", "--config", str(config)]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_model_store_keeps_current_and_previous_and_rolls_back_both_ways(tmp_path, tiny_bundle, second_bundle):
    store = ModelStore(tmp_path / "models")
    third = copy_bundle(tiny_bundle, tmp_path / "third")
    manifest = json.loads((third / "manifest.json").read_text())
    manifest["version"] = "3 (tuned)"
    (third / "manifest.json").write_text(json.dumps(manifest))
    versions = []
    serving = Path(tiny_bundle)  # what the config names
    for source in (second_bundle, third):
        staging = store.staging("m")
        root = copy_bundle(source, staging / "b")
        version = store.add("m", root, load_bundle(root))
        store.promote("m", version, serving)
        shutil.rmtree(staging)
        versions.append(version)
        serving = version
    assert (
        versions[1].name.startswith("3__tuned_-")
        and store.current("m") == versions[1]
        and store.previous("m") == versions[0]
    )
    assert (tmp_path / "models" / "m" / "current").read_text().strip() == versions[
        1
    ].name  # relative: the store can move
    store.rollback("m")
    assert store.current("m") == versions[0] and store.previous("m") == versions[1]
    store.rollback("m")
    assert store.current("m") == versions[1] and store.previous("m") == versions[0]
    staging = store.staging("m")
    root = copy_bundle(tiny_bundle, staging / "b")
    newest = store.add("m", root, load_bundle(root))
    store.promote("m", newest, store.current("m"))
    shutil.rmtree(staging)
    assert sorted(p.name for p in (tmp_path / "models" / "m").iterdir() if p.is_dir()) == sorted(
        [newest.name, versions[1].name]
    )


# --- on a running station ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_install_rollback_and_restart_on_a_running_station(tmp_path, broker, tiny_bundle, second_bundle, keys, capsys):
    old_sha, new_sha = sha_of(tiny_bundle), sha_of(second_bundle)
    assert old_sha != new_sha
    config = station(tmp_path, broker, tiny_bundle, keys, calibrated=True)
    collector = Collector(broker.host, broker.port)
    daemon, thread = start_daemon(config)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 8, timeout=20)
        old_engine = daemon.engines["m"]
        dropped_before = daemon.cameras["cam"].dropped
        assert main(["push", str(second_bundle), "--config", str(config), "--sign-key", str(keys["private"])]) == 0
        printed = capsys.readouterr().out
        assert "swapped model 'm'" in printed and "recalibrate camera(s) cam" in printed
        assert collector.wait(lambda c: any(e["kind"] == "model_swapped" for e in c.events()), timeout=5)
        swapped = next(e for e in collector.events() if e["kind"] == "model_swapped")["detail"]
        assert swapped["old"]["sha256"] == old_sha and swapped["new"]["sha256"] == new_sha
        assert swapped["parity"]["passed"] and swapped["signed_by"] and swapped["recalibrate"] == ["cam"]
        assert swapped["cameras"]["cam"]["calibration"] == RECALIBRATE
        count = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= count + 10, timeout=20)
        assert old_engine.in_use == 0 and daemon.commands.swaps[-1]["old_engine_drained"]
        install_figures = dict(daemon.commands.swaps[-1])
        dropped_install = daemon.cameras["cam"].dropped - dropped_before

        store = ModelStore(tmp_path / "models")
        assert store.current("m").parent == tmp_path / "models" / "m" and sha_of(store.current("m")) == new_sha
        assert store.previous("m") == Path(tiny_bundle)

        # The team then calibrates the camera for the new model and pushes it (kept in the calibration store).
        calibration_file = tmp_path / "calib" / "cam.yaml"
        for_new = save_calibration(
            from_bundle_defaults(load_bundle(second_bundle), "cam"), tmp_path / "pushed" / "cam.yaml"
        )
        assert main(["push-calibration", str(for_new), "--config", str(config)]) == 0
        capsys.readouterr()
        calibrations = CalibrationStore(tmp_path / "models" / "calibrations")
        engineer_bytes = calibration_file.read_bytes()
        assert yaml.safe_load(calibration_file.read_text())["bundle"]["model_sha256"] == old_sha  # never written
        assert calibrations.model_sha_of(calibrations.current("cam")) == new_sha

        assert main(["push", "--rollback", "--config", str(config)]) == 0
        assert "swapped model 'm'" in capsys.readouterr().out
        assert collector.wait(lambda c: sum(e["kind"] == "model_swapped" for e in c.events()) == 2, timeout=5)
        rolled = [e for e in collector.events() if e["kind"] == "model_swapped"][-1]["detail"]
        assert rolled["action"] == "rollback" and rolled["new"]["sha256"] == old_sha
        # The old model's calibration comes back with it, also in the store a restart reads.
        assert rolled["cameras"]["cam"]["calibration"] == str(calibrations.current("cam"))
        assert calibrations.model_sha_of(calibrations.current("cam")) == old_sha
        count = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= count + 10, timeout=20)
        assert store.current("m") == Path(tiny_bundle) and sha_of(store.previous("m")) == new_sha

        # The rolled-back version again: the station reuses its kept copy (the pointer names it).
        assert main(["push", str(second_bundle), "--config", str(config), "--sign-key", str(keys["private"])]) == 0
        capsys.readouterr()
        assert collector.wait(lambda c: sum(e["kind"] == "model_swapped" for e in c.events()) == 3, timeout=5)
        again = [e for e in collector.events() if e["kind"] == "model_swapped"][-1]["detail"]
        assert again["cameras"]["cam"]["calibration"] == str(calibrations.current("cam")) and "recalibrate" not in again
        assert (
            calibrations.model_sha_of(calibrations.current("cam")) == new_sha
            and calibration_file.read_bytes() == engineer_bytes
        )
        assert sha_of(store.current("m")) == new_sha and store.previous("m") == Path(tiny_bundle)
        count = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= count + 5, timeout=20)
        failed = daemon.pipelines["cam"].failed
    finally:
        stop_daemon(daemon, thread)

    # Results switch model exactly at the swaps, in frame order: old, new, old, new; no frame failed.
    results = {r["seq"]: r for r in collector.results()}
    runs = []
    for seq in sorted(results):
        sha = results[seq]["model"]["sha256"]
        if not runs or runs[-1] != sha:
            runs.append(sha)
    assert runs == [old_sha, new_sha, old_sha, new_sha]
    assert failed == 0
    order = unique_in_order(collector.results())
    print(
        f"model install: prepared in {install_figures['prepare_ms']} ms, swapped in {install_figures['swap_ms']} ms, "
        f"camera dropped {dropped_install} frame(s) during the install; {len(order)} results, seq gaps "
        f"{order[-1] + 1 - len(order)}"
    )

    # A restart serves the installed version with the calibration made for it; a calibration file made for
    # another model gives way to the bundle's defaults (announced) instead of keeping the line down.
    collector.messages.clear()
    daemon, thread = start_daemon(config)
    try:
        assert daemon.model_infos["m"].sha256 == new_sha
        assert daemon.pipelines["cam"].post.calibration.bundle_sha256 == new_sha
        assert collector.wait(lambda c: any(r["model"]["sha256"] == new_sha for r in c.results()), timeout=20)
        assert not any(e["kind"] == "calibration_stale" for e in collector.events())
    finally:
        stop_daemon(daemon, thread)
    shutil.rmtree(tmp_path / "models" / "calibrations")  # only the config's file is left, made for the old model
    collector.messages.clear()
    daemon, thread = start_daemon(config)
    try:
        assert daemon.model_infos["m"].sha256 == new_sha
        assert collector.wait(lambda c: any(e["kind"] == "calibration_stale" for e in c.events()), timeout=5)
        assert collector.wait(lambda c: any(r["model"]["sha256"] == new_sha for r in c.results()), timeout=20)
    finally:
        stop_daemon(daemon, thread)
    # Someone edits the installed version on disk: its signature no longer holds, the config's bundle serves.
    installed = ModelStore(tmp_path / "models").current("m")
    manifest = json.loads((installed / "manifest.json").read_text())
    manifest["thresholds"]["image"] = 0.0
    (installed / "manifest.json").write_text(json.dumps(manifest))
    collector.messages.clear()
    daemon, thread = start_daemon(config)
    try:
        assert daemon.model_infos["m"].sha256 == old_sha
        assert collector.wait(
            lambda c: any(
                e["kind"] == "model_store_ignored" and "signature" in e["detail"]["reason"] for e in c.events()
            ),
            timeout=5,
        )
    finally:
        stop_daemon(daemon, thread)
        collector.close()


@pytest.mark.slow
def test_broken_updates_are_refused_and_the_old_model_keeps_serving(
    tmp_path, broker, tiny_bundle, second_bundle, keys, capsys
):
    old_sha = sha_of(tiny_bundle)
    config = station(tmp_path, broker, tiny_bundle, keys)
    station_config = load_config(config)
    topic = Topics("onen", station_config.station).model_install
    # A bundle whose engine disagrees with its own reference outputs (signed, hashes intact).
    parity_bad = copy_bundle(second_bundle, tmp_path / "parity-bad")
    manifest = json.loads((parity_bad / "manifest.json").read_text())
    for reference in manifest["reference"]:
        reference["score"] = (
            min(1.0, reference["score"] + 0.3) if reference["score"] < 0.5 else reference["score"] - 0.3
        )
    (parity_bad / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(parity_bad, load_private_key(keys["private"]))
    signed = copy_bundle(second_bundle, tmp_path / "signed")
    sign_bundle(signed, load_private_key(keys["private"]))
    truncated = pack_bundle_bytes(signed)
    truncated = truncated[: len(truncated) // 2]

    collector = Collector(broker.host, broker.port)
    daemon, thread = start_daemon(config)

    def refused(payload: bytes, request_id: str) -> str:
        answer = send_command(
            station_config, topic, payload, lambda e: (e.get("detail") or {}).get("request_id") == request_id, 30
        )
        assert answer is not None and answer["kind"] == "model_update_rejected", answer
        return answer["detail"]["reason"]

    try:
        assert collector.wait(lambda c: len(c.results()) >= 5, timeout=20)
        assert "not a readable .tar" in refused(*install_message(model=None, tar_bytes=b"\x00garbage" * 1000))
        reason = refused(*install_message(model=None, tar_bytes=truncated))
        assert "tar" in reason or "missing" in reason or "sha256" in reason, reason
        assert "bundle_path must be an absolute path" in refused(*install_message(model="m", path="relative/bundle"))
        assert "no model 'other'" in refused(*install_message(model="other", path=str(signed)))

        assert main(["push", str(second_bundle), "--config", str(config)]) == 1  # unsigned
        assert "not signed" in capsys.readouterr().out
        assert main(["push", str(second_bundle), "--config", str(config), "--sign-key", str(keys["stranger"])]) == 1
        assert "does not match" in capsys.readouterr().out
        assert main(["push", str(parity_bad), "--config", str(config)]) == 1
        assert "disagrees with the bundle's reference outputs" in capsys.readouterr().out
        assert main(["push", str(tiny_bundle), "--config", str(config), "--sign-key", str(keys["private"])]) == 1
        assert "already serves" in capsys.readouterr().out
        assert main(["push", "--rollback", "--config", str(config)]) == 1
        assert "no previous version" in capsys.readouterr().out

        count = len(collector.results())
        assert collector.wait(lambda c: len(c.results()) >= count + 5, timeout=20), "still inspecting"
        assert thread.is_alive() and daemon.pipelines["cam"].alive and daemon.pipelines["cam"].failed == 0
        assert {r["model"]["sha256"] for r in collector.results()} == {old_sha}
        assert not any(e["kind"] == "model_swapped" for e in collector.events())
        leftovers = (
            [p.name for p in (tmp_path / "models" / "m").iterdir()] if (tmp_path / "models" / "m").exists() else []
        )
        assert leftovers == [], leftovers  # nothing half-installed
    finally:
        stop_daemon(daemon, thread)
        collector.close()


def test_a_station_without_updates_section_refuses_installs(tmp_path, broker, tiny_bundle, second_bundle, capsys):
    images, _ = reference_frames(tiny_bundle)
    video = write_video(tmp_path / "parts.avi", images, count=16)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video, realtime=True, loop=True)])
    daemon, thread = start_daemon(config)
    try:
        assert main(["push", str(second_bundle), "--config", str(config), "--wait", "20"]) == 1
        assert "no 'updates' section" in capsys.readouterr().out
        assert daemon.model_infos["m"].sha256 == sha_of(tiny_bundle)
    finally:
        stop_daemon(daemon, thread)


def test_no_frame_is_lost_or_mixed_during_a_swap_with_back_pressure(tmp_path, broker, tiny_bundle, second_bundle):
    """A camera that never drops (file, realtime false: every frame, back-pressure): every seq gets exactly one
    result, each from one model, switching once. The install is handed to the command worker directly."""
    old_sha, new_sha = sha_of(tiny_bundle), sha_of(second_bundle)
    images, _ = reference_frames(tiny_bundle)
    frames = 400
    video = write_video(tmp_path / "parts.avi", images, count=frames)
    config = write_station(
        tmp_path,
        broker.port,
        tiny_bundle,
        [file_camera("cam", video, realtime=False)],
        updates={"dir": str(tmp_path / "models")},
    )
    collector = Collector(broker.host, broker.port)
    daemon, thread = start_daemon(config, exit_when_finished=True)
    try:
        assert collector.wait(lambda c: len(c.results()) >= 20, timeout=20)
        payload, _ = install_message(model="m", path=str(second_bundle))
        assert daemon.commands.install_model(payload)
        inspected_at_swap = daemon.pipelines["cam"].inspected
        thread.join(60)
        assert not thread.is_alive()
    finally:
        stop_daemon(daemon, thread)
    assert collector.wait(lambda c: len(unique_in_order(c.results())) >= frames, timeout=20)
    collector.close()
    assert inspected_at_swap < frames, "the video ended before the swap; nothing was tested"
    assert unique_in_order(collector.results()) == list(range(frames))
    by_seq = {r["seq"]: r["model"]["sha256"] for r in collector.results()}
    shas = [by_seq[seq] for seq in range(frames)]
    switch = shas.index(new_sha)
    assert set(shas[:switch]) == {old_sha} and set(shas[switch:]) == {new_sha}
    assert daemon.pipelines["cam"].failed == 0
    figures = daemon.commands.swaps[-1]
    print(
        f"back-pressure swap: {frames} frames, {frames} results, switch at seq {switch}, prepared "
        f"{figures['prepare_ms']} ms, swap {figures['swap_ms']} ms"
    )


def test_update_modules_load_without_torch():
    """A station has no torch: the update modules and commands must load with torch blocked."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import onen.edge.updates, onen.edge.station_commands, onen.edge.station_client, onen.edge.commands.push, "
        "onen.edge.commands.keys\n"
        "from onen.edge.cli import main\n"
        "sys.exit(main(['push', '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--rollback" in done.stdout, done.stderr
