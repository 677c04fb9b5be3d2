"""`onen review` over HTTP: a real mosquitto, the real daemon on the small bundle, the real review process."""

from __future__ import annotations

import csv
import io
import json

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from support.daemon import Collector, file_camera, start_daemon, write_station, write_video
from support.review import ReviewProcess, good_then_defect

from onen.edge.bundle import load_bundle
from onen.edge.config import ConfigError, load_config
from onen.edge.local_broker import MosquittoBroker
from onen.edge.review.state import STRIP, ReviewState

pytest.importorskip("starlette", reason="the [review] extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the [review] extra (starlette, uvicorn) is not installed")


@pytest.fixture()
def broker():
    with MosquittoBroker() as running:
        yield running


def _with_review(config_path, review: dict):
    data = yaml.safe_load(config_path.read_text())
    data["review"] = review
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return config_path


# ---- config -----------------------------------------------------------------------------------
def test_review_config_defaults_token_and_refusals(tmp_path, tiny_bundle, monkeypatch):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    path = write_station(tmp_path, 1883, tiny_bundle, [file_camera("cam", video)])
    review = load_config(path).review
    assert (review.listen, review.host, review.port, review.token, review.history) == (
        "127.0.0.1:8765",
        "127.0.0.1",
        8765,
        None,
        500,
    )

    _with_review(path, {"listen": "0.0.0.0:9000"})
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "review.listen" in str(refused.value) and "token" in str(refused.value)

    monkeypatch.setenv("REVIEW_TOKEN", "s3cret")
    _with_review(path, {"listen": "0.0.0.0:9000", "token_env": "REVIEW_TOKEN", "history": 50})
    review = load_config(path).review
    assert (review.host, review.port, review.token, review.history) == ("0.0.0.0", 9000, "s3cret", 50)
    assert "s3cret" not in repr(review)

    _with_review(path, {"listen": "127.0.0.1", "colour": "red"})
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    text = str(bad.value)
    assert "review.listen" in text and "host:port" in text and "colour" in text


# ---- in-memory state ------------------------------------------------------------------------------
def test_state_is_bounded_latest_wins_and_ignores_garbage():
    state = ReviewState("onen", history=20)
    for seq in range(200):
        verdict = "defect" if seq % 4 == 0 else "ok"
        result = {
            "verdict": verdict,
            "seq": seq,
            "score": seq / 200,
            "threshold": 0.5,
            "class": {"name": "spot" if verdict == "defect" else "good"},
            "captured_at_epoch": 1_800_000_000 + seq,
        }
        state.apply("onen/s1/cam/result", json.dumps(result).encode())
        state.apply("onen/s1/cam/overlay", f"jpeg-{seq}".encode())
    state.apply("onen/s1/cam/result", b"{not json")
    state.apply("onen/s1/cmd/cam/trigger", b"{}")
    camera = state.snapshot()["stations"]["s1"]["cameras"]["cam"]
    assert (camera["ok"], camera["defect"]) == (150, 50)
    assert len(camera["strip"]) == STRIP and camera["last"]["seq"] == 199
    assert state.overlay("s1", "cam") == b"jpeg-199"
    stats = state.station_stats("s1")
    assert len(stats["scores"]) == 20 and stats["scores"][-1]["score"] == 199 / 200
    assert stats["classes"]["spot"]["count"] == 50 and sum(h["ok"] + h["defect"] for h in stats["hourly"]) == 200


# ---- the whole chain over HTTP ---------------------------------------------------------------------
def test_counts_archive_marks_and_files_match_the_station(tmp_path, broker, tiny_bundle):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 8, 6), 14)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)])
    collector = Collector(broker.host, broker.port)
    with ReviewProcess(config) as review:
        assert review.wait_state(lambda s: s["broker_connected"])["broker_connected"]
        daemon, thread = start_daemon(config, wait_connected_s=10, exit_when_finished=True)
        thread.join(120)
        assert collector.wait(lambda c: len(c.results()) == 14)
        results = collector.results()
        ok, defect = sum(r["verdict"] == "ok" for r in results), sum(r["verdict"] == "defect" for r in results)
        state = review.wait_state(
            lambda s: (
                s["stations"]["t1"]["cameras"]["cam"]["ok"] + s["stations"]["t1"]["cameras"]["cam"]["defect"] == 14
            )
        )
        camera = state["stations"]["t1"]["cameras"]["cam"]
        assert (camera["ok"], camera["defect"]) == (ok, defect) and defect > 0
        assert (
            camera["last"]["seq"] == results[-1]["seq"]
            and camera["last"]["model"]["name"] == results[-1]["model"]["name"]
        )

        archived = sorted((tmp_path / "archive").glob("*/*/*_result.json"))
        listing = review.json("/api/defects")
        assert listing["total"] == len(archived) > 0
        assert {item["seq"] for item in listing["items"]} == {json.loads(p.read_text())["seq"] for p in archived}
        assert review.json("/api/defects?camera=nope")["total"] == 0
        first = listing["items"][0]
        assert review.json(f"/api/defects?since={first['captured_at_epoch']}")["total"] >= 1
        detail = review.json(f"/api/defect/{first['id']}")
        assert detail["has_frame"] and detail["has_overlay"] and detail["result"]["regions"] == first["regions"]
        status, body, headers = review.get(f"/api/defects/{first['id']}/file/frame")
        assert status == 200 and body.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
        assert review.get("/api/defects/../../station.yaml/file/frame")[0] == 404
        assert review.get("/api/defect/cam/..%2F..%2Fstation")[0] == 404

        result_file = next(p for p in archived if json.loads(p.read_text())["seq"] == first["seq"])
        published = result_file.read_bytes()
        status, record = review.post_json("/api/marks", {"id": first["id"], "mark": "false reject"})
        assert status == 200 and record["verdict"] == "defect" and record["seq"] == first["seq"]
        assert review.post_json("/api/marks", {"id": first["id"], "mark": "maybe"})[0] == 400
        assert review.post_json("/api/marks", {"id": "cam/2000-01-01/000000_00000000", "mark": "confirmed"})[0] == 404
        assert result_file.read_bytes() == published, "a mark never changes what was published or archived"
        assert (tmp_path / "archive.marks.jsonl").is_file() and not list((tmp_path / "archive").rglob("*.jsonl"))
        rows = list(csv.DictReader(io.StringIO(review.get("/api/marks.csv")[1].decode())))
        assert [(r["id"], r["mark"], r["seq"]) for r in rows] == [(first["id"], "false reject", str(first["seq"]))]
        assert review.json("/api/model")["marked"] == {"cam": {"confirmed": 0, "false reject": 1}}

        stats = review.json("/api/stats")
        assert stats["total"] == 14 and [s["score"] for s in stats["scores"]] == [r["score"] for r in results]
        model = review.json("/api/model")
        assert model["models"]["m"]["model_name"] == results[0]["model"]["name"]
        assert model["cameras"]["cam"]["default_thresholds"] is True
    collector.close()


def test_a_token_guards_every_request(tmp_path, broker, tiny_bundle):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    (tmp_path / "token").write_text("tok-123\n")
    config = _with_review(
        write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)]), {"token_file": "token"}
    )
    with ReviewProcess(config) as review:
        assert review.get("/")[0] == 401 and review.get("/api/state")[0] == 401
        assert review.get("/api/state", {"Authorization": "Bearer wrong"})[0] == 401
        assert review.get("/api/state", {"Authorization": "Bearer tok-123"})[0] == 200
        status, _, headers = review.get("/?token=tok-123")
        assert (
            status == 200
            and "onen_review_token=tok-123" in headers["set-cookie"]
            and "HttpOnly" in headers["set-cookie"]
        )
        assert review.get("/api/state", {"Cookie": "onen_review_token=tok-123"})[0] == 200


def test_fleet_view_lists_every_station_under_the_prefix(tmp_path, broker, tiny_bundle):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-test")
    client.connect(broker.host, broker.port)
    client.loop_start()
    for station, online in (("line-1", "online"), ("line-2", "offline")):
        client.publish(f"onen/{station}/availability", online, qos=1, retain=True).wait_for_publish(5)
    with ReviewProcess(config, "--fleet") as review:
        state = review.wait_state(lambda s: {"line-1", "line-2"} <= set(s["stations"]))
        assert (
            state["fleet"]
            and state["stations"]["line-1"]["online"] is True
            and state["stations"]["line-2"]["online"] is False
        )
        client.publish(
            "onen/line-1/cam/result", json.dumps({"verdict": "defect", "seq": 3, "score": 0.9, "threshold": 0.5}), qos=1
        ).wait_for_publish(5)
        state = review.wait_state(lambda s: "cam" in s["stations"]["line-1"]["cameras"])
        assert state["stations"]["line-1"]["defect"] == 1
    client.loop_stop()
    client.disconnect()


def test_model_page_lists_the_store_versions(tmp_path, broker, tiny_bundle):
    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    store = tmp_path / "models"
    (store / "m").mkdir(parents=True)
    (store / "m" / "current").write_text(str(tiny_bundle))
    config = write_station(tmp_path, broker.port, tiny_bundle, [file_camera("cam", video)], updates={"dir": str(store)})
    with ReviewProcess(config) as review:
        versions = review.json("/api/model")["models"]["m"]["versions"]
        assert (
            set(versions) == {"current"} and versions["current"]["version"] == load_bundle(tiny_bundle).manifest.version
        )
        (store / "m" / "previous").write_text(str(tmp_path / "gone"))
        versions = review.json("/api/model")["models"]["m"]["versions"]
        assert "gone" in versions["previous"]["error"], "read per request: a pushed model shows without a restart"


def test_listen_beyond_loopback_without_a_token_is_refused(tmp_path, tiny_bundle):
    import subprocess
    import sys

    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    config = write_station(tmp_path, 1883, tiny_bundle, [file_camera("cam", video)])
    for listen, expected in (
        ("0.0.0.0:9999", "needs review.token_env or review.token_file"),
        ("nonsense", "expected host:port"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "onen.edge.cli", "review", "--config", str(config), "--listen", listen],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and expected in done.stderr


def test_model_page_shows_a_pushed_calibration_not_default_thresholds(tmp_path, tiny_bundle):
    from onen.edge.calibration_file import calibration_to_dict, from_bundle_defaults
    from onen.edge.calibration_store import calibration_store_of
    from onen.edge.review.model_view import model_report

    video = write_video(tmp_path / "v.avi", good_then_defect(tiny_bundle, 1, 1), 2)
    config = load_config(
        write_station(
            tmp_path, 1883, tiny_bundle, [file_camera("cam", video)], updates={"dir": str(tmp_path / "models")}
        )
    )
    assert model_report(config)["cameras"]["cam"]["default_thresholds"] is True
    bundle = load_bundle(tiny_bundle)
    pushed = dict(
        calibration_to_dict(from_bundle_defaults(bundle, "cam")),
        image_threshold=0.9,
        normalisation={"raw_low": 0.0, "raw_threshold": 0.9, "raw_high": 1.0},
    )
    store = calibration_store_of(config)
    store.make_current("cam", store.add("cam", pushed, None, bundle), "push")
    entry = model_report(config)["cameras"]["cam"]
    assert entry["default_thresholds"] is False and entry["image_threshold"] == 0.9
    assert entry["file"].startswith(str(tmp_path / "models" / "calibrations" / "cam"))
