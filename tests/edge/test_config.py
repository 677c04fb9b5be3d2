"""Station config: every mistake reported with file, line, key, value and expectation; exit 2, no traceback.

Real files on disk (a bundle directory with a manifest, a video file, AOI/calibration/TLS/password files),
the real `onen` command (main() in-process for the many cases, one real subprocess)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from onen.edge.cli import main
from onen.edge.config import ConfigError, load_config
from onen.edge.updates import generate_keys

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "s3cret-Pa55word"


@pytest.fixture
def station_dir(tmp_path: Path) -> Path:
    """A folder with every file a station config may point at (paths in BASE are relative to it)."""
    bundle = tmp_path / "bundles" / "widget"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"name": "widget"}')
    (bundle / "model.onnx").write_bytes(b"not checked here")
    (tmp_path / "bundles" / "empty-dir").mkdir()
    (tmp_path / "bundles" / "no-model").mkdir()
    (tmp_path / "bundles" / "no-model" / "manifest.json").write_text('{"name": "widget"}')
    (tmp_path / "bundles" / "fake.tar").write_text("this is not a tar archive\n" * 40)
    (tmp_path / "not-an-image.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((24, 32), np.uint8))
    (tmp_path / "calibration-other-model.yaml").write_text(
        "image_threshold: 0.5\nbundle: {name: gadget, version: '1', model_sha256: " + "ab" * 32 + "}\n"
    )
    (tmp_path / "calibration-broken.yaml").write_text("image_threshold: 0.5\nbundle: {name: widget\n")
    (tmp_path / "videos").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "videos" / "line.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 40 * (i + 1), np.uint8))
    writer.release()
    (tmp_path / "incoming").mkdir()
    cv2.imwrite(str(tmp_path / "aoi.png"), np.full((24, 32), 255, np.uint8))
    (tmp_path / "calibration.yaml").write_text("image_threshold: 0.5\n")
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "mqtt-password").write_text(SECRET + "\n")
    return tmp_path


BASE = {
    "station": "line3",
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "qos": 1,
        "username": "line3",
        "password_file": "mqtt-password",
        "tls": {"ca": "ca.pem", "cert": "client.pem", "key": "client.key"},
    },
    "models": {"widget": {"bundle": "bundles/widget", "backend": "onnxruntime"}},
    "cameras": {
        "top": {
            "model": "widget",
            "aoi": "aoi.png",
            "calibration": "calibration.yaml",
            "source": {"kind": "rtsp", "uri": "rtsp://10.0.0.5/stream1", "read_timeout_s": 2},
            "trigger": {"mode": "continuous", "queue_size": 2},
            "publish": {"heatmap": "on_defect", "jpeg_quality": 80},
        },
        "replay": {
            "model": "widget",
            "source": {"kind": "file", "path": "videos/line.avi", "loop": True, "realtime": False},
            "trigger": {"mode": "interval", "interval_s": 1.5},
        },
    },
    "spool": {"path": "spool", "max_mb": 64},
    "archive": {"path": "archive", "max_mb": 128, "enabled": True},
    "metrics": {"prometheus_port": 9108},
}


def _set(path: str, value):
    """A mutation that sets a key path like 'cameras.replay.source.uri' (value DELETE removes it)."""

    def mutate(config: dict) -> dict:
        parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
        node = config
        for part in parts[:-1]:
            node = node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
        return config

    return mutate


DELETE = object()

# (id, mutation of BASE or raw YAML text, text the message must contain)
MALFORMED = [
    ("unknown-top-key", _set("stations", "x"), "stations"),
    ("unknown-source-key", _set("cameras.top.source.urii", "rtsp://x/y"), "cameras.top.source.urii"),
    ("wrong-type-port", _set("mqtt.port", "eighteen"), "mqtt.port"),
    ("missing-station", _set("station", DELETE), "station"),
    ("port-out-of-range", _set("mqtt.port", 70000), "mqtt.port"),
    ("unknown-model-ref", _set("cameras.top.model", "gadget"), "cameras.top.model"),
    ("missing-bundle", _set("models.widget.bundle", "bundles/nothere"), "models.widget.bundle"),
    ("bundle-without-manifest", _set("models.widget.bundle", "bundles/empty-dir"), "models.widget.bundle"),
    ("missing-calibration", _set("cameras.top.calibration", "nope.yaml"), "cameras.top.calibration"),
    ("missing-aoi", _set("cameras.top.aoi", "nope.png"), "cameras.top.aoi"),
    ("bad-trigger-mode", _set("cameras.top.trigger.mode", "sometimes"), "cameras.top.trigger.mode"),
    ("source-kind-a-list", _set("cameras.top.source.kind", ["rtsp"]), "cameras.top.source.kind"),
    (
        "interval-without-interval_s",
        _set("cameras.replay.trigger.interval_s", DELETE),
        "cameras.replay.trigger.interval_s",
    ),
    ("interval_s-with-continuous", _set("cameras.top.trigger.interval_s", 2), "cameras.top.trigger.interval_s"),
    (
        "password-env-unset",
        lambda c: (c["mqtt"].pop("password_file"), _set("mqtt.password_env", "ONEN_TEST_UNSET_PW")(c))[1],
        "mqtt.password_env",
    ),
    ("password-file-missing", _set("mqtt.password_file", "no-such-password"), "mqtt.password_file"),
    ("password-without-username", _set("mqtt.username", DELETE), "mqtt.username"),
    ("bad-backend", _set("models.widget.backend", "cuda"), "models.widget.backend"),
    ("parallel-calls-zero", _set("models.widget.parallel_calls", 0), "models.widget.parallel_calls"),
    ("threads-per-call-text", _set("models.widget.threads_per_call", "many"), "models.widget.threads_per_call"),
    ("negative-spool-size", _set("spool.max_mb", -5), "spool.max_mb"),
    ("bad-qos", _set("mqtt.qos", 3), "mqtt.qos"),
    (
        "cameras-as-a-list",
        _set("cameras", [{"name": "top", "source": {"kind": "rtsp", "uri": "rtsp://x/y"}}]),
        "keyed by their name",
    ),
    ("cameras-empty", _set("cameras", []), "cameras"),
    ("models-empty", _set("models", {}), "models"),
    ("station-with-slash", _set("station", "line/3"), "station"),
    ("rtsp-uri-not-rtsp", _set("cameras.top.source.uri", "http://10.0.0.5/x"), "cameras.top.source.uri"),
    ("rtsp-without-uri", _set("cameras.top.source.uri", DELETE), "cameras.top.source.uri"),
    ("loop-on-rtsp", _set("cameras.top.source.loop", True), "cameras.top.source.loop"),
    ("bad-source-kind", _set("cameras.top.source.kind", "webcam"), "cameras.top.source.kind"),
    ("tls-cert-without-key", _set("mqtt.tls.key", DELETE), "mqtt.tls.key"),
    ("tls-ca-missing", _set("mqtt.tls.ca", "/nonexistent/ca.pem"), "mqtt.tls.ca"),
    ("plain-password", _set("mqtt.password", SECRET), "mqtt.password"),
    (
        "gstreamer-without-appsink",
        _set("cameras.top.source", {"kind": "gstreamer", "pipeline": "videotestsrc ! fakesink"}),
        "cameras.top.source.pipeline",
    ),
    ("prometheus-port-zero", _set("metrics.prometheus_port", 0), "metrics.prometheus_port"),
    ("video-file-missing", _set("cameras.replay.source.path", "videos/gone.avi"), "cameras.replay.source.path"),
    (
        "folder-missing",
        _set("cameras.replay.source", {"kind": "folder", "path": "no-such-folder"}),
        "cameras.replay.source.path",
    ),
    (
        "backoff-ceiling-below-initial",
        lambda c: _set("cameras.top.source.backoff_max_s", 5)(_set("cameras.top.source.backoff_initial_s", 10)(c)),
        "cameras.top.source.backoff_max_s",
    ),
    ("jpeg-quality-zero", _set("cameras.top.publish.jpeg_quality", 0), "cameras.top.publish.jpeg_quality"),
    ("queue-size-zero", _set("cameras.top.trigger.queue_size", 0), "cameras.top.trigger.queue_size"),
    ("bad-heatmap", _set("cameras.top.publish.heatmap", "sometimes"), "cameras.top.publish.heatmap"),
    ("bool-as-port", _set("mqtt.port", True), "mqtt.port"),
    (
        "width-without-height",
        _set("cameras.top.source", {"kind": "v4l2", "device": 0, "width": 640}),
        "cameras.top.source.height",
    ),
    ("bad-yaml-syntax", "station: line3\nmqtt:\n  host: [127.0.0.1\n", "not valid YAML"),
    ("empty-file", "", "empty"),
    ("comments-only", "# nothing here\n", "empty"),
    ("top-level-list", "- station: line3\n", "(top level)"),
    ("duplicate-yaml-key", None, "mqtt.port"),
    (
        "same-device-twice",
        lambda c: _set("cameras.replay.source", {"kind": "v4l2", "device": "/dev/video0"})(
            _set("cameras.top.source", {"kind": "v4l2", "device": 0})(c)
        ),
        "cameras.replay.source.device",
    ),
    (
        "same-folder-twice",
        lambda c: _set("cameras.replay.source", {"kind": "folder", "path": "./incoming"})(
            _set("cameras.top.source", {"kind": "folder", "path": "incoming"})(c)
        ),
        "cameras.replay.source.path",
    ),
    ("updates-without-dir", _set("updates", {"trusted_keys": []}), "updates.dir"),
    ("unknown-updates-key", _set("updates", {"dir": "models", "trusted_key": "keys/a.pub.pem"}), "updates.trusted_key"),
    (
        "trusted-key-missing",
        _set("updates", {"dir": "models", "trusted_keys": ["keys/none.pub.pem"]}),
        "updates.trusted_keys[0]",
    ),
    (
        "trusted-key-not-a-key",
        _set("updates", {"dir": "models", "trusted_keys": ["ca.pem"]}),
        "updates.trusted_keys[0]",
    ),
    ("updates-dir-is-a-file", _set("updates", {"dir": "aoi.png"}), "updates.dir"),
    # onen check-config must catch what would otherwise fail only on the line (issue 13, item 10)
    ("bundle-without-model-onnx", _set("models.widget.bundle", "bundles/no-model"), "no model.onnx"),
    ("bundle-tar-not-a-tar", _set("models.widget.bundle", "bundles/fake.tar"), "not a tar archive"),
    ("aoi-not-an-image", _set("cameras.top.aoi", "not-an-image.png"), "AOI mask is not an image"),
    ("aoi-all-black", _set("cameras.top.aoi", "black.png"), "all black"),
    (
        "aoi-of-another-size",
        _set("cameras.top.source", {"kind": "v4l2", "device": 0, "width": 640, "height": 480}),
        "AOI mask is 32x24 but the camera is configured for 640x480",
    ),
    (
        "calibration-for-another-model",
        _set("cameras.top.calibration", "calibration-other-model.yaml"),
        "calibration made for another model",
    ),
    (
        "calibration-yaml-syntax",
        _set("cameras.top.calibration", "calibration-broken.yaml"),
        "calibration file is not valid YAML",
    ),
    ("review-open-without-token", _set("review", {"listen": "0.0.0.0:8765"}), "review.listen"),
    ("review-bad-listen", _set("review", {"listen": "8765"}), "review.listen"),
    (
        "review-token-env-unset",
        _set("review", {"listen": "0.0.0.0:8765", "token_env": "ONEN_TEST_UNSET_PW"}),
        "review.token_env",
    ),
    ("tab-indentation", "station: line3\nmqtt:\n\thost: x\n", "not valid YAML"),
    ("two-yaml-documents", "station: a\n---\nstation: b\n", "not valid YAML"),
]


def _write(station_dir: Path, case) -> Path:
    path = station_dir / "station.yaml"
    if isinstance(case, str):
        path.write_text(case)
    elif case is None:  # duplicate key: only expressible as text
        text = yaml.safe_dump(BASE, sort_keys=False).replace("  port: 1883\n", "  port: 1883\n  port: 1884\n")
        path.write_text(text)
    else:
        path.write_text(yaml.safe_dump(case(copy.deepcopy(BASE)), sort_keys=False))
    return path


def _check(path: Path, capsys) -> tuple[int, str]:
    status = main(["check-config", "--config", str(path)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_there_are_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


def test_shipped_schema_is_generated_from_the_models_and_closed():
    import json

    import jsonschema

    from onen.edge.config_schema import SCHEMA_FILE, schema_text, station_schema

    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "run: python -m onen.edge.config_schema"
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema == station_schema()
    jsonschema.Draft202012Validator.check_schema(schema)

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)

    for node in objects(schema):
        extra = node.get("additionalProperties")
        assert extra is False or isinstance(extra, dict), node  # unknown keys are errors everywhere


def test_valid_config_loads_and_resolves_paths(station_dir, capsys, monkeypatch):
    path = _write(station_dir, lambda c: c)
    monkeypatch.chdir("/")  # relative paths follow the file, not the cwd
    config = load_config(path)
    assert config.station == "line3"
    assert config.mqtt.client_id == "onen-line3"
    assert config.mqtt.password == SECRET
    assert config.models["widget"].bundle == station_dir / "bundles" / "widget"
    assert config.camera("top").aoi == station_dir / "aoi.png"
    assert config.camera("replay").source.path == station_dir / "videos" / "line.avi"
    assert config.camera("replay").trigger.interval_s == 1.5
    assert config.camera("top").source.rejects_repeated and not config.camera("replay").source.rejects_repeated
    assert config.spool.path == station_dir / "spool" and config.spool.max_mb == 64
    assert config.metrics.prometheus_port == 9108
    status, output = _check(path, capsys)
    assert status == 0, output
    assert "OK" in output


@pytest.mark.parametrize("case_id,case,needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_config_exits_2_naming_the_key(station_dir, capsys, monkeypatch, case_id, case, needle):
    monkeypatch.delenv("ONEN_TEST_UNSET_PW", raising=False)
    path = _write(station_dir, case)
    status, output = _check(path, capsys)
    assert status == 2, output
    assert "Traceback" not in output
    assert str(path) in output
    assert needle in output, output
    assert "expected" in output
    assert SECRET not in output
    if not isinstance(case, str):
        assert re.search(re.escape(str(path)) + r":\d+: ", output), "no line number in: " + output


def test_line_numbers_point_at_the_mistake(station_dir):
    text = (
        "station: line3\n"  # 1
        "mqtt:\n"  # 2
        "  host: 127.0.0.1\n"  # 3
        "  qos: 7\n"  # 4
        "models:\n"  # 5
        "  widget: {bundle: bundles/widget}\n"  # 6
        "cameras:\n"  # 7
        "  top:\n"  # 8
        "    source:\n"  # 9
        "      kind: http\n"  # 10
        "      uri: rtsp://wrong/scheme\n"  # 11
        "      colour: red\n"  # 12
    )
    path = station_dir / "lines.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    by_key = {issue.key_path: issue for issue in caught.value.issues}
    assert by_key["mqtt.qos"].line == 4 and by_key["mqtt.qos"].value == "7"
    assert by_key["cameras.top.source.uri"].line == 11
    assert by_key["cameras.top.source.colour"].line == 12
    assert "one of 0, 1, 2" in by_key["mqtt.qos"].expected


def test_several_mistakes_are_all_reported(station_dir, capsys, monkeypatch):
    monkeypatch.delenv("ONEN_TEST_UNSET_PW", raising=False)

    def many(config):
        config["mqtt"]["port"] = 0
        config["mqtt"]["qos"] = "high"
        config["models"]["widget"]["backend"] = "cuda"
        config["cameras"]["top"]["model"] = "gadget"
        config["cameras"]["top"]["source"]["urii"] = "x"
        config["cameras"]["replay"]["source"]["fourcc"] = "MJPG"
        config["cameras"]["replay"]["trigger"] = {"mode": "interval"}
        config["spool"]["max_mb"] = -1
        config["colour"] = "blue"
        return config

    path = _write(station_dir, many)
    status, output = _check(path, capsys)
    assert status == 2
    expected_keys = [
        "mqtt.port",
        "mqtt.qos",
        "models.widget.backend",
        "cameras.top.model",
        "cameras.top.source.urii",
        "cameras.replay.source.fourcc",
        "cameras.replay.trigger.interval_s",
        "spool.max_mb",
        "colour",
    ]
    for key in expected_keys:
        assert f": {key}: " in output, f"{key} missing from:\n{output}"
    assert output.count("\n  - ") == len(expected_keys), output
    assert "did you mean 'uri'" in output


def test_password_is_never_printed(station_dir, capsys):
    path = _write(station_dir, _set("cameras.top.source.uri", "rtsp://admin:" + SECRET + "@10.0.0.5/s"))
    config = load_config(path)
    assert config.mqtt.password == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in config.camera("top").source.describe()
    status, output = _check(path, capsys)
    assert status == 0 and SECRET not in output
    assert "file:" in output  # says where the password comes from


def test_password_from_env_and_env_references_in_uri(station_dir, monkeypatch):
    def use_env(config):
        config["mqtt"].pop("password_file")
        config["mqtt"]["password_env"] = "ONEN_TEST_PW"
        config["cameras"]["top"]["source"]["uri"] = "rtsp://cam:${ONEN_TEST_CAM_PW}@10.0.0.5/s"
        return config

    path = _write(station_dir, use_env)
    monkeypatch.setenv("ONEN_TEST_PW", SECRET)
    monkeypatch.delenv("ONEN_TEST_CAM_PW", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [i.key_path for i in caught.value.issues] == ["cameras.top.source.uri"]
    monkeypatch.setenv("ONEN_TEST_CAM_PW", "campw")
    config = load_config(path)
    assert config.mqtt.password == SECRET and config.mqtt.password_source == "env:ONEN_TEST_PW"
    assert config.camera("top").source.uri == "rtsp://cam:campw@10.0.0.5/s"
    assert "campw" not in repr(config)


def test_missing_config_file_is_a_clean_error(tmp_path, capsys):
    status, output = _check(tmp_path / "nope.yaml", capsys)
    assert status == 2 and "not found" in output and "Traceback" not in output


def test_check_config_as_a_real_subprocess(station_dir):
    path = _write(station_dir, _set("mqtt.qos", 5))
    result = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "mqtt.qos" in result.stderr and "Traceback" not in result.stderr


def _materialise_example(name: str, root: Path) -> Path:
    """Copy an example into `root`, pointing its absolute paths into `root` and creating what it names."""
    text = (EXAMPLES / name).read_text()
    for prefix in ("/etc/onen/", "/var/lib/onen/", "/opt/onen/", "/data/"):
        text = text.replace(prefix, f"{root}/abs/{prefix.strip('/').replace('/', '_')}/")
    path = root / name
    path.write_text(text)
    raw = yaml.safe_load(text)
    base = path.parent

    def make_file(value):
        target = Path(value) if Path(value).is_absolute() else base / value
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")

    for model in raw["models"].values():
        bundle = Path(model["bundle"]) if Path(model["bundle"]).is_absolute() else base / model["bundle"]
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "manifest.json").write_text("{}")
        (bundle / "model.onnx").write_bytes(b"x")
    for key in ("ca", "cert", "key"):
        if key in raw["mqtt"].get("tls", {}):
            make_file(raw["mqtt"]["tls"][key])
    for camera in raw["cameras"].values():
        if "aoi" in camera:
            make_file(camera["aoi"])
            cv2.imwrite(
                str(Path(camera["aoi"]) if Path(camera["aoi"]).is_absolute() else base / camera["aoi"]),
                np.full((24, 32), 255, np.uint8),
            )
        if "calibration" in camera:
            make_file(camera["calibration"])
            (
                Path(camera["calibration"])
                if Path(camera["calibration"]).is_absolute()
                else base / camera["calibration"]
            ).write_text("image_threshold: 0.5\n")
        source = camera["source"]
        if source["kind"] == "file":
            make_file(source["path"])
        if source["kind"] == "folder":
            (Path(source["path"]) if Path(source["path"]).is_absolute() else base / source["path"]).mkdir(
                parents=True, exist_ok=True
            )
    for key in raw.get("updates", {}).get("trusted_keys", []):
        target = Path(key) if Path(key).is_absolute() else base / key
        _, public = generate_keys(target.parent, name="example")
        public.rename(target)
    return path


@pytest.mark.parametrize("name", ["station.yaml", "station-jetson-csi.yaml", "station-line-scan-folder.yaml"])
def test_examples_are_valid(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ONEN_MQTT_PASSWORD", SECRET)
    monkeypatch.setenv("CAM_TOP_PASSWORD", "campw")
    path = _materialise_example(name, tmp_path)
    config = load_config(path)
    assert config.cameras and config.models
    status, output = _check(path, capsys)
    assert status == 0, output
    assert SECRET not in output and "campw" not in output


def test_example_two_cameras_rtsp_and_file():
    raw = yaml.safe_load((EXAMPLES / "station.yaml").read_text())
    assert sorted(c["source"]["kind"] for c in raw["cameras"].values()) == ["file", "rtsp"]
    csi = yaml.safe_load((EXAMPLES / "station-jetson-csi.yaml").read_text())
    assert "nvarguscamerasrc" in next(iter(csi["cameras"].values()))["source"]["pipeline"]


def test_cameras_as_a_list_are_refused_showing_the_mapping_form(station_dir, capsys):
    def as_list(config):
        config["cameras"] = [{"name": name, **camera} for name, camera in config["cameras"].items()]
        return config

    status, output = _check(_write(station_dir, as_list), capsys)
    assert status == 2
    assert "cameras: cameras is a list; cameras are now keyed by their name" in output
    assert "cameras:\n        top:\n" in output  # the message shows the new form
    assert output.count("\n  - ") == 1, output  # no follow-up noise about the list's items


def test_calibration_made_for_this_model_is_accepted(station_dir, capsys):
    from onen.edge.bundle import sha256_file

    sha = sha256_file(station_dir / "bundles" / "widget" / "model.onnx")
    (station_dir / "calibration.yaml").write_text(
        f"image_threshold: 0.5\nbundle: {{name: widget, version: '1', model_sha256: {sha}}}\n"
    )
    status, output = _check(_write(station_dir, lambda c: c), capsys)
    assert status == 0, output


def test_calibration_syntax_error_names_its_own_line(station_dir, capsys):
    status, output = _check(_write(station_dir, _set("cameras.top.calibration", "calibration-broken.yaml")), capsys)
    assert status == 2 and "calibration-broken.yaml:" in output and "cameras.top.calibration" in output


BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["station: *i", "mqtt: {host: 127.0.0.1}", ""]
)


def test_yaml_alias_bomb_is_refused_without_expanding(station_dir):
    path = station_dir / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    result = subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "aliases are limited" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_unclosed_quote_is_reported_where_the_quote_opens(station_dir):
    text = (
        "station: line3\n"  # 1
        "mqtt:\n"  # 2
        '  host: "127.0.0.1\n'  # 3: the quote opens here and never closes
        "models:\n"  # 4
        "  widget: {bundle: bundles/widget}\n"  # 5
        "cameras:\n"  # 6
        "  top: {source: {kind: rtsp, uri: 'rtsp://x/y'}}\n"
    )
    path = station_dir / "quote.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert issue.line == 3 and "not valid YAML" in issue.problem and "quoted scalar" in issue.problem


def test_closed_pipe_prints_no_traceback(station_dir):
    """`onen check-config ... | head -1`: the reader is gone before onen writes; it exits quietly."""
    path = _write(station_dir, lambda c: c)
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `head` having exited already
    try:
        result = subprocess.run(
            [sys.executable, "-m", "onen.edge.cli", "check-config", "--config", str(path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode in (0, 141)


def test_review_section_defaults_and_token_from_a_file(station_dir, monkeypatch):
    config = load_config(_write(station_dir, _set("review", {})))
    assert (config.review.listen, config.review.host, config.review.port) == ("127.0.0.1:8765", "127.0.0.1", 8765)
    assert config.review.token is None and config.review.history == 500
    (station_dir / "review-token").write_text("t0ken-" + SECRET + "\n")
    config = load_config(
        _write(station_dir, _set("review", {"listen": "0.0.0.0:9000", "token_file": "review-token", "history": 50}))
    )
    assert config.review.token == "t0ken-" + SECRET and config.review.port == 9000 and config.review.history == 50
    assert SECRET not in repr(config) and SECRET not in str(config.review)
    monkeypatch.setenv("ONEN_TEST_REVIEW_TOKEN", "env-" + SECRET)
    config = load_config(
        _write(station_dir, _set("review", {"listen": "[::]:9000", "token_env": "ONEN_TEST_REVIEW_TOKEN"}))
    )
    assert config.review.host == "::" and config.review.token == "env-" + SECRET


def test_updates_calibration_dir_defaults_under_dir_and_resolves_against_the_file(station_dir, monkeypatch):
    monkeypatch.chdir("/")
    config = load_config(_write(station_dir, _set("updates", {"dir": "models"})))
    assert config.updates.calibration_dir == station_dir / "models" / "calibrations"
    config = load_config(_write(station_dir, _set("updates", {"dir": "models", "calibration_dir": "cals"})))
    assert config.updates.calibration_dir == station_dir / "cals"
    assert load_config(_write(station_dir, lambda c: c)).updates is None


def test_defaults_are_written_once_in_the_models(station_dir):
    """What the file leaves out comes from the models (the same values the generated schema advertises)."""
    from onen.edge.config_schema import station_schema

    config = load_config(_write(station_dir, lambda c: c))
    defs = station_schema()["$defs"]
    assert config.mqtt.keepalive_s == defs["MqttConfig"]["properties"]["keepalive_s"]["default"] == 30
    assert config.camera("top").source.open_timeout_s == defs["RtspSource"]["properties"]["open_timeout_s"]["default"]
    assert (
        config.camera("replay").publish.jpeg_quality == defs["PublishConfig"]["properties"]["jpeg_quality"]["default"]
    )


def test_default_spool_and_archive_follow_the_config_file(station_dir, monkeypatch):
    monkeypatch.chdir("/")

    def without(config):
        del config["spool"], config["archive"]
        return config

    config = load_config(_write(station_dir, without))
    assert config.spool.path == station_dir / "spool" and config.archive.path == station_dir / "archive"
    assert config.spool.max_mb == 512 and config.archive.enabled


def test_calibration_for_the_installed_model_version_is_accepted(station_dir, capsys):
    """After `onen push`, the station runs the version in its model store: a calibration for it is right."""
    from onen.edge.bundle import sha256_file
    from onen.edge.updates import ModelStore

    store = ModelStore(station_dir / "models")
    version = store.folder("widget") / "2-abc"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"the pushed model")
    (store.folder("widget") / "current").write_text(str(version))
    assert store.current("widget") == version
    sha = sha256_file(version / "model.onnx")
    (station_dir / "calibration.yaml").write_text(f"bundle: {{name: widget, version: '2', model_sha256: {sha}}}\n")
    status, output = _check(_write(station_dir, _set("updates", {"dir": "models"})), capsys)
    assert status == 0, output
    status, output = _check(_write(station_dir, lambda c: c), capsys)  # without the store: another model
    assert status == 2 and "calibration made for another model" in output
