"""Station config: every mistake reported with file, line, key, value and expectation; exit 2, no traceback.

Real files on disk (a bundle directory with a manifest, a video file, AOI/calibration/TLS/password files),
the real `onen` command (main() in-process for the many cases, one real subprocess)."""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.cli import main
from edge.config import ConfigError, load_config
from edge.updates import generate_keys

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SECRET = "s3cret-Pa55word"


@pytest.fixture
def station_dir(tmp_path: Path) -> Path:
    """A folder with every file a station config may point at (paths in BASE are relative to it)."""
    bundle = tmp_path / "bundles" / "widget"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"name": "widget"}')
    (tmp_path / "bundles" / "empty-dir").mkdir()
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
    "mqtt": {"host": "127.0.0.1", "port": 1883, "qos": 1, "username": "line3", "password_file": "mqtt-password",
             "tls": {"ca": "ca.pem", "cert": "client.pem", "key": "client.key"}},
    "models": {"widget": {"bundle": "bundles/widget", "backend": "onnxruntime"}},
    "cameras": [
        {"name": "top", "model": "widget", "aoi": "aoi.png", "calibration": "calibration.yaml",
         "source": {"kind": "rtsp", "uri": "rtsp://10.0.0.5/stream1", "read_timeout_s": 2},
         "trigger": {"mode": "continuous", "queue_size": 2},
         "publish": {"heatmap": "on_defect", "jpeg_quality": 80}},
        {"name": "replay", "model": "widget",
         "source": {"kind": "file", "path": "videos/line.avi", "loop": True, "realtime": False},
         "trigger": {"mode": "interval", "interval_s": 1.5}},
    ],
    "spool": {"path": "spool", "max_mb": 64},
    "archive": {"path": "archive", "max_mb": 128, "enabled": True},
    "metrics": {"prometheus_port": 9108},
}


def _set(path: str, value):
    """A mutation that sets a key path like 'cameras[1].source.uri' (value DELETE removes it)."""
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
    ("unknown-source-key", _set("cameras[0].source.urii", "rtsp://x/y"), "cameras[0].source.urii"),
    ("wrong-type-port", _set("mqtt.port", "eighteen"), "mqtt.port"),
    ("missing-station", _set("station", DELETE), "station"),
    ("port-out-of-range", _set("mqtt.port", 70000), "mqtt.port"),
    ("unknown-model-ref", _set("cameras[0].model", "gadget"), "cameras[0].model"),
    ("missing-bundle", _set("models.widget.bundle", "bundles/nothere"), "models.widget.bundle"),
    ("bundle-without-manifest", _set("models.widget.bundle", "bundles/empty-dir"), "models.widget.bundle"),
    ("missing-calibration", _set("cameras[0].calibration", "nope.yaml"), "cameras[0].calibration"),
    ("missing-aoi", _set("cameras[0].aoi", "nope.png"), "cameras[0].aoi"),
    ("bad-trigger-mode", _set("cameras[0].trigger.mode", "sometimes"), "cameras[0].trigger.mode"),
    ("interval-without-interval_s", _set("cameras[1].trigger.interval_s", DELETE), "cameras[1].trigger.interval_s"),
    ("interval_s-with-continuous", _set("cameras[0].trigger.interval_s", 2), "cameras[0].trigger.interval_s"),
    ("duplicate-camera-names", _set("cameras[1].name", "top"), "cameras[1].name"),
    ("password-env-unset", lambda c: (c["mqtt"].pop("password_file"), _set("mqtt.password_env", "ONEN_TEST_UNSET_PW")(c))[1],
     "mqtt.password_env"),
    ("password-file-missing", _set("mqtt.password_file", "no-such-password"), "mqtt.password_file"),
    ("password-without-username", _set("mqtt.username", DELETE), "mqtt.username"),
    ("bad-backend", _set("models.widget.backend", "cuda"), "models.widget.backend"),
    ("parallel-calls-zero", _set("models.widget.parallel_calls", 0), "models.widget.parallel_calls"),
    ("threads-per-call-text", _set("models.widget.threads_per_call", "many"), "models.widget.threads_per_call"),
    ("negative-spool-size", _set("spool.max_mb", -5), "spool.max_mb"),
    ("bad-qos", _set("mqtt.qos", 3), "mqtt.qos"),
    ("cameras-not-a-list", _set("cameras", {"top": {"source": {"kind": "rtsp"}}}), "cameras"),
    ("cameras-empty", _set("cameras", []), "cameras"),
    ("models-empty", _set("models", {}), "models"),
    ("station-with-slash", _set("station", "line/3"), "station"),
    ("rtsp-uri-not-rtsp", _set("cameras[0].source.uri", "http://10.0.0.5/x"), "cameras[0].source.uri"),
    ("rtsp-without-uri", _set("cameras[0].source.uri", DELETE), "cameras[0].source.uri"),
    ("loop-on-rtsp", _set("cameras[0].source.loop", True), "cameras[0].source.loop"),
    ("bad-source-kind", _set("cameras[0].source.kind", "webcam"), "cameras[0].source.kind"),
    ("tls-cert-without-key", _set("mqtt.tls.key", DELETE), "mqtt.tls.key"),
    ("tls-ca-missing", _set("mqtt.tls.ca", "/nonexistent/ca.pem"), "mqtt.tls.ca"),
    ("plain-password", _set("mqtt.password", SECRET), "mqtt.password"),
    ("gstreamer-without-appsink", _set("cameras[0].source", {"kind": "gstreamer", "pipeline": "videotestsrc ! fakesink"}),
     "cameras[0].source.pipeline"),
    ("prometheus-port-zero", _set("metrics.prometheus_port", 0), "metrics.prometheus_port"),
    ("video-file-missing", _set("cameras[1].source.path", "videos/gone.avi"), "cameras[1].source.path"),
    ("folder-missing", _set("cameras[1].source", {"kind": "folder", "path": "no-such-folder"}), "cameras[1].source.path"),
    ("backoff-ceiling-below-initial", lambda c: _set("cameras[0].source.backoff_max_s", 5)(
        _set("cameras[0].source.backoff_initial_s", 10)(c)), "cameras[0].source.backoff_max_s"),
    ("jpeg-quality-zero", _set("cameras[0].publish.jpeg_quality", 0), "cameras[0].publish.jpeg_quality"),
    ("queue-size-zero", _set("cameras[0].trigger.queue_size", 0), "cameras[0].trigger.queue_size"),
    ("bad-heatmap", _set("cameras[0].publish.heatmap", "sometimes"), "cameras[0].publish.heatmap"),
    ("bool-as-port", _set("mqtt.port", True), "mqtt.port"),
    ("width-without-height", _set("cameras[0].source", {"kind": "v4l2", "device": 0, "width": 640}),
     "cameras[0].source.height"),
    ("bad-yaml-syntax", "station: line3\nmqtt:\n  host: [127.0.0.1\n", "not valid YAML"),
    ("empty-file", "", "empty"),
    ("comments-only", "# nothing here\n", "empty"),
    ("top-level-list", "- station: line3\n", "(top level)"),
    ("duplicate-yaml-key", None, "mqtt.port"),
    ("same-device-twice", lambda c: _set("cameras[1].source", {"kind": "v4l2", "device": "/dev/video0"})(
        _set("cameras[0].source", {"kind": "v4l2", "device": 0})(c)), "cameras[1].source.device"),
    ("same-folder-twice", lambda c: _set("cameras[1].source", {"kind": "folder", "path": "./incoming"})(
        _set("cameras[0].source", {"kind": "folder", "path": "incoming"})(c)), "cameras[1].source.path"),
    ("updates-without-dir", _set("updates", {"trusted_keys": []}), "updates.dir"),
    ("unknown-updates-key", _set("updates", {"dir": "models", "trusted_key": "keys/a.pub.pem"}), "updates.trusted_key"),
    ("trusted-key-missing", _set("updates", {"dir": "models", "trusted_keys": ["keys/none.pub.pem"]}), "updates.trusted_keys[0]"),
    ("trusted-key-not-a-key", _set("updates", {"dir": "models", "trusted_keys": ["ca.pem"]}), "updates.trusted_keys[0]"),
    ("updates-dir-is-a-file", _set("updates", {"dir": "aoi.png"}), "updates.dir"),
    ("tab-indentation", "station: line3\nmqtt:\n\thost: x\n", "not valid YAML"),
    ("two-yaml-documents", "station: a\n---\nstation: b\n", "not valid YAML"),
]


def _write(station_dir: Path, case) -> Path:
    path = station_dir / "station.yaml"
    if isinstance(case, str):
        path.write_text(case)
    elif case is None:      # duplicate key: only expressible as text
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


def test_shipped_schema_is_a_valid_json_schema_and_closed():
    import jsonschema

    from edge.config_checks import station_schema

    schema = station_schema()
    jsonschema.Draft202012Validator.check_schema(schema)

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)

    for node in objects(schema):
        extra = node.get("additionalProperties")
        assert extra is False or isinstance(extra, dict), node   # unknown keys are errors everywhere


def test_valid_config_loads_and_resolves_paths(station_dir, capsys, monkeypatch):
    path = _write(station_dir, lambda c: c)
    monkeypatch.chdir("/")                                  # relative paths follow the file, not the cwd
    config = load_config(path)
    assert config.station == "line3"
    assert config.mqtt.client_id == "onen-line3"
    assert config.mqtt.password == SECRET
    assert config.models["widget"].bundle == station_dir / "bundles" / "widget"
    assert config.cameras[0].aoi == station_dir / "aoi.png"
    assert config.cameras[1].source.path == station_dir / "videos" / "line.avi"
    assert config.cameras[1].trigger.interval_s == 1.5
    assert config.cameras[0].source.rejects_repeated and not config.cameras[1].source.rejects_repeated
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
        "station: line3\n"                       # 1
        "mqtt:\n"                                # 2
        "  host: 127.0.0.1\n"                    # 3
        "  qos: 7\n"                             # 4
        "models:\n"                              # 5
        "  widget: {bundle: bundles/widget}\n"   # 6
        "cameras:\n"                             # 7
        "  - name: top\n"                        # 8
        "    source:\n"                          # 9
        "      kind: http\n"                     # 10
        "      uri: rtsp://wrong/scheme\n"       # 11
        "      colour: red\n"                    # 12
    )
    path = station_dir / "lines.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    by_key = {issue.key_path: issue for issue in caught.value.issues}
    assert by_key["mqtt.qos"].line == 4 and by_key["mqtt.qos"].value == "7"
    assert by_key["cameras[0].source.uri"].line == 11
    assert by_key["cameras[0].source.colour"].line == 12
    assert "one of 0, 1, 2" in by_key["mqtt.qos"].expected


def test_several_mistakes_are_all_reported(station_dir, capsys, monkeypatch):
    monkeypatch.delenv("ONEN_TEST_UNSET_PW", raising=False)
    def many(config):
        config["mqtt"]["port"] = 0
        config["mqtt"]["qos"] = "high"
        config["models"]["widget"]["backend"] = "cuda"
        config["cameras"][0]["model"] = "gadget"
        config["cameras"][0]["source"]["urii"] = "x"
        config["cameras"][1]["name"] = "top"
        config["cameras"][1]["trigger"] = {"mode": "interval"}
        config["spool"]["max_mb"] = -1
        config["colour"] = "blue"
        return config
    path = _write(station_dir, many)
    status, output = _check(path, capsys)
    assert status == 2
    expected_keys = ["mqtt.port", "mqtt.qos", "models.widget.backend", "cameras[0].model", "cameras[0].source.urii",
                     "cameras[1].name", "cameras[1].trigger.interval_s", "spool.max_mb", "colour"]
    for key in expected_keys:
        assert f": {key}: " in output, f"{key} missing from:\n{output}"
    assert output.count("\n  - ") == len(expected_keys), output
    assert "did you mean 'uri'" in output


def test_password_is_never_printed(station_dir, capsys):
    path = _write(station_dir, _set("cameras[0].source.uri", "rtsp://admin:" + SECRET + "@10.0.0.5/s"))
    config = load_config(path)
    assert config.mqtt.password == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in config.cameras[0].source.describe()
    status, output = _check(path, capsys)
    assert status == 0 and SECRET not in output
    assert "file:" in output                               # says where the password comes from


def test_password_from_env_and_env_references_in_uri(station_dir, monkeypatch):
    def use_env(config):
        config["mqtt"].pop("password_file")
        config["mqtt"]["password_env"] = "ONEN_TEST_PW"
        config["cameras"][0]["source"]["uri"] = "rtsp://cam:${ONEN_TEST_CAM_PW}@10.0.0.5/s"
        return config
    path = _write(station_dir, use_env)
    monkeypatch.setenv("ONEN_TEST_PW", SECRET)
    monkeypatch.delenv("ONEN_TEST_CAM_PW", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [i.key_path for i in caught.value.issues] == ["cameras[0].source.uri"]
    monkeypatch.setenv("ONEN_TEST_CAM_PW", "campw")
    config = load_config(path)
    assert config.mqtt.password == SECRET and config.mqtt.password_source == "env:ONEN_TEST_PW"
    assert config.cameras[0].source.uri == "rtsp://cam:campw@10.0.0.5/s"
    assert "campw" not in repr(config)


def test_missing_config_file_is_a_clean_error(tmp_path, capsys):
    status, output = _check(tmp_path / "nope.yaml", capsys)
    assert status == 2 and "not found" in output and "Traceback" not in output


def test_check_config_as_a_real_subprocess(station_dir):
    path = _write(station_dir, _set("mqtt.qos", 5))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check-config", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
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
    for key in ("ca", "cert", "key"):
        if key in raw["mqtt"].get("tls", {}):
            make_file(raw["mqtt"]["tls"][key])
    for camera in raw["cameras"]:
        for key in ("aoi", "calibration"):
            if key in camera:
                make_file(camera[key])
        source = camera["source"]
        if source["kind"] == "file":
            make_file(source["path"])
        if source["kind"] == "folder":
            (Path(source["path"]) if Path(source["path"]).is_absolute() else base / source["path"]).mkdir(
                parents=True, exist_ok=True)
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
    assert sorted(c["source"]["kind"] for c in raw["cameras"]) == ["file", "rtsp"]
    csi = yaml.safe_load((EXAMPLES / "station-jetson-csi.yaml").read_text())
    assert "nvarguscamerasrc" in csi["cameras"][0]["source"]["pipeline"]
