"""Validation of a station config file: YAML syntax, the shipped JSON Schema, then semantic checks.

Every problem becomes a `ConfigIssue` with file, line, key path, value and expectation, and all of them
are collected before anything is raised, so an integrator fixes a config in one round, not ten.
Line numbers come from `yaml.compose` (the node tree keeps marks), mapped by key path.
"""
from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from edge.config import LIVE_SOURCE_KINDS, ConfigError, ConfigIssue, env_references, resolve_path

KeyPath = tuple[Any, ...]

# Which source keys make sense for which kind; anything else is reported (a typo or a misunderstanding).
_COMMON_SOURCE_KEYS = {"kind", "open_timeout_s", "read_timeout_s", "backoff_initial_s", "backoff_max_s",
                       "reject_black", "black_level", "reject_repeated"}
SOURCE_KEYS_BY_KIND = {
    "v4l2": {"device", "width", "height", "fps", "fourcc"},
    "rtsp": {"uri"},
    "http": {"uri"},
    "gstreamer": {"pipeline"},
    "file": {"path", "loop", "realtime", "fps"},
    "folder": {"path", "patterns", "existing", "watch", "settle_s", "poll_s"},
}
REQUIRED_SOURCE_KEY = {"v4l2": "device", "rtsp": "uri", "http": "uri", "gstreamer": "pipeline",
                       "file": "path", "folder": "path"}
URI_SCHEMES = {"rtsp": ("rtsp://", "rtsps://"), "http": ("http://", "https://")}
REQUIRED_HINTS = {
    "station": "a station id, e.g. 'station: line3-press'",
    "mqtt": "an mqtt section with at least 'host'",
    "models": "a models section: name -> {bundle: path/to/bundle}",
    "cameras": "a list of cameras, each with name and source",
    "host": "the broker's host name or address",
    "bundle": "the path of a model bundle directory (or .tar)",
    "name": "a camera name",
    "source": "a source with at least 'kind'",
    "kind": "one of v4l2, rtsp, http, gstreamer, file, folder",
    "dir": "the folder where pushed model versions are kept, e.g. /var/lib/onen/models",
}
_PASSWORD_HINT = ("passwords are never written in the config: use password_env (the name of an environment "
                  "variable) or password_file (a file readable only by the service user)")


@lru_cache(maxsize=1)
def station_schema() -> dict:
    """The JSON Schema of the station config, shipped as package data."""
    text = resources.files("edge").joinpath("schemas/station-config.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_file(path: Path) -> dict:
    """Return the parsed config as plain data, or raise ConfigError with every issue found."""
    name = str(path)
    if not path.is_file():
        raise ConfigError([ConfigIssue(name, None, "", "config file not found" if not path.exists()
                                       else "not a file", expected="the path of a station YAML file")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigIssue(name, None, "", f"cannot read the file: {error}",
                                       expected="a readable UTF-8 YAML file")]) from None
    lines = LineMap(name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise ConfigError([ConfigIssue(name, mark.line + 1 if mark else None, "", f"not valid YAML: {problem}",
                                       expected="valid YAML (check indentation, colons and quotes)")]) from None
    except yaml.YAMLError as error:
        raise ConfigError([ConfigIssue(name, None, "", f"not valid YAML: {error}",
                                       expected="valid YAML")]) from None
    if data is None:
        raise ConfigError([ConfigIssue(name, None, "", "the file is empty (or only comments)",
                                       expected="a mapping with station, mqtt, models and cameras")])
    issues = lines.index(root)
    issues += schema_issues(data, lines)
    if isinstance(data, dict):
        issues += SemanticChecks(data, path.resolve().parent, lines).run()
    if issues:
        raise ConfigError(sorted(_unique(issues), key=lambda i: (i.line or 0, i.key_path)))
    return data


class LineMap:
    """Key path -> line number (1-based) of where it is written, built from the composed YAML tree."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[KeyPath, int] = {}

    def index(self, node: yaml.Node | None, path: KeyPath = ()) -> list[ConfigIssue]:
        """Record lines under `node`; report duplicate keys (YAML silently keeps the last one)."""
        issues: list[ConfigIssue] = []
        if node is None:
            return issues
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = _scalar_key(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    issues.append(ConfigIssue(self.file, line, format_path(path + (key,)),
                                              f"duplicate key (first written on line {seen[key]})",
                                              expected="each key once per section"))
                seen.setdefault(key, line)
                self.lines[path + (key,)] = line
                issues += self.index(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                issues += self.index(item, path + (i,))
        return issues

    def line(self, path: Iterable[Any]) -> int | None:
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def issue(self, path: Iterable[Any], problem: str, value: Any = None,
              expected: str | None = None, show_value: bool = True) -> ConfigIssue:
        path = tuple(path)
        shown = show(value, path) if show_value else None
        return ConfigIssue(self.file, self.line(path), format_path(path), problem, shown, expected)


def _scalar_key(node: yaml.Node) -> Any:
    """The key as safe_load would build it (ints stay ints), so paths from both trees agree."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        return yaml.SafeLoader("").construct_object(node)
    return str(node.start_mark)


def format_path(path: Iterable[Any]) -> str:
    """('cameras', 1, 'source', 'uri') -> 'cameras[1].source.uri'."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _is_secret(path: KeyPath) -> bool:
    return any(isinstance(p, str) and p == "password" for p in path)


def show(value: Any, path: KeyPath = ()) -> str:
    """The bad value as a person would recognise it in their YAML; secrets redacted."""
    if _is_secret(path):
        return "a value, not shown"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "a mapping (key: value lines)", "array": "a list ('- item' lines)", "null": "nothing (null)"}


def _expected_from_schema(error: jsonschema.ValidationError) -> str:
    schema, kind, rule = error.schema, error.validator, error.validator_value
    if kind == "type":
        types = rule if isinstance(rule, list) else [rule]
        return " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    if kind == "enum":
        return "one of " + ", ".join(show(v) for v in rule)
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        low_word = ">" if "exclusiveMinimum" in schema else ">="
        high = schema.get("maximum")
        noun = "an integer" if schema.get("type") == "integer" else "a number"
        if low is not None and high is not None:
            return f"{noun} from {low} to {high}" if low_word == ">=" else f"{noun} > {low} and <= {high}"
        return f"{noun} {low_word} {low}" if low is not None else f"{noun} <= {high}"
    if kind == "pattern":
        return schema.get("x-expected", f"text matching {rule}")
    if kind == "minLength":
        return "a non-empty string"
    if kind == "maxLength":
        return f"at most {rule} characters"
    if kind == "minItems":
        return f"at least {rule} item{'s' if rule != 1 else ''}"
    if kind == "minProperties":
        return f"at least {rule} entr{'ies' if rule != 1 else 'y'}"
    return error.message


def schema_issues(data: Any, lines: LineMap) -> list[ConfigIssue]:
    """Turn JSON Schema errors into issues: one per unknown key and per missing key, with close-match hints."""
    validator = jsonschema.Draft202012Validator(station_schema())
    issues: list[ConfigIssue] = []
    errors = list(validator.iter_errors(data))
    wrong_type = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator != "type" and path in wrong_type:
            continue                  # 'high' for qos: "expected an integer" says it; no second enum message
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = sorted(error.schema.get("properties", {}))
            for key in error.instance:
                if key in known:
                    continue
                if key == "password":
                    issues.append(lines.issue(path + (key,), "unknown key 'password'", show_value=False,
                                              expected=_PASSWORD_HINT))
                    continue
                guess = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                issues.append(lines.issue(path + (key,), f"unknown key '{key}'{hint}", show_value=False,
                                          expected="one of " + ", ".join(known)))
        elif error.validator == "required":
            for key in error.validator_value:
                if isinstance(error.instance, dict) and key not in error.instance:
                    issues.append(lines.issue(path + (key,), f"missing required key '{key}'", show_value=False,
                                              expected=REQUIRED_HINTS.get(key)))
        elif "propertyNames" in error.schema_path:
            issues.append(lines.issue(path + (error.instance,), "bad name", error.instance,
                                      expected=_expected_from_schema(error)))
        else:
            issues.append(lines.issue(path, "wrong value" if error.validator != "type" else "wrong type",
                                      error.instance, expected=_expected_from_schema(error)))
    return issues


class SemanticChecks:
    """What the schema cannot say: references between sections, files on disk, secrets, per-kind keys.

    Each check looks only at values of the right type (the schema already reported the others), so one
    mistake is never reported twice under different names.
    """

    def __init__(self, data: dict, base: Path, lines: LineMap):
        self.data, self.base, self.lines = data, base, lines
        self.issues: list[ConfigIssue] = []

    def run(self) -> list[ConfigIssue]:
        mqtt = self.data.get("mqtt")
        if isinstance(mqtt, dict):
            self.check_mqtt(mqtt)
        models = self.data.get("models")
        if isinstance(models, dict):
            for name, model in models.items():
                if isinstance(model, dict) and isinstance(model.get("bundle"), str):
                    self.check_bundle(("models", name, "bundle"), model["bundle"])
        cameras = self.data.get("cameras")
        if isinstance(cameras, list):
            self.check_cameras(cameras, models if isinstance(models, dict) else {})
        updates = self.data.get("updates")
        if isinstance(updates, dict):
            self.check_updates(updates)
        return self.issues

    # -- helpers -------------------------------------------------------------------------------------------
    def add(self, path: KeyPath, problem: str, value: Any = None, expected: str | None = None,
            show_value: bool = True) -> None:
        self.issues.append(self.lines.issue(path, problem, value, expected, show_value))

    def path_of(self, value: str) -> Path:
        return resolve_path(value, self.base)

    def check_file(self, key: KeyPath, value: Any, what: str) -> None:
        if not isinstance(value, str) or not value:
            return
        path = self.path_of(value)
        if not path.exists():
            note = "" if Path(value).is_absolute() else " (relative paths are taken from the config file's folder)"
            self.add(key, f"{what} not found: {path}", value, expected=f"an existing {what}{note}")
        elif not path.is_file():
            self.add(key, f"{what} is not a file: {path}", value, expected=f"the path of a {what}")
        elif not os.access(path, os.R_OK):
            self.add(key, f"{what} is not readable by this user: {path}", value,
                     expected=f"a {what} the service user can read")

    # -- sections ------------------------------------------------------------------------------------------
    def check_mqtt(self, mqtt: dict) -> None:
        tls = mqtt.get("tls")
        if isinstance(tls, dict):
            for key in ("ca", "cert", "key"):
                self.check_file(("mqtt", "tls", key), tls.get(key), f"TLS {key} file")
            if ("cert" in tls) != ("key" in tls):
                missing = "key" if "cert" in tls else "cert"
                self.add(("mqtt", "tls", missing), f"missing '{missing}'", show_value=False,
                         expected="both cert and key for a client certificate, or neither")
        env, file = mqtt.get("password_env"), mqtt.get("password_file")
        if env is not None and file is not None:
            self.add(("mqtt", "password_file"), "both password_env and password_file are set", show_value=False,
                     expected="one source of the password")
        if isinstance(env, str) and not os.environ.get(env):
            self.add(("mqtt", "password_env"), f"environment variable {env} is not set (or empty)", env,
                     expected=f"{env} set in the service's environment (e.g. the systemd EnvironmentFile)")
        if isinstance(file, str) and file:
            self.check_file(("mqtt", "password_file"), file, "password file")
            path = self.path_of(file)
            if path.is_file() and os.access(path, os.R_OK) and not path.read_text(errors="replace").strip():
                self.add(("mqtt", "password_file"), f"password file is empty: {path}", file,
                         expected="a file holding the password")
        if (env is not None or file is not None) and "username" not in mqtt:
            self.add(("mqtt", "username"), "a password is configured but no username", show_value=False,
                     expected="mqtt.username next to password_env / password_file")

    def check_updates(self, updates: dict) -> None:
        """The versions folders must be folders (it is created when missing); trusted keys must be ed25519 public keys."""
        folder = updates.get("dir")
        if isinstance(folder, str) and folder and self.path_of(folder).exists() and not self.path_of(folder).is_dir():
            self.add(("updates", "dir"), f"not a folder: {self.path_of(folder)}", folder,
                     expected="a folder the station may write model versions into (e.g. /var/lib/onen/models)")
        folder = updates.get("calibration_dir")
        if isinstance(folder, str) and folder and self.path_of(folder).exists() and not self.path_of(folder).is_dir():
            self.add(("updates", "calibration_dir"), f"not a folder: {self.path_of(folder)}", folder,
                     expected="a folder the station may write calibration versions into (e.g. /var/lib/onen/calibrations)")
        keys = updates.get("trusted_keys")
        if not isinstance(keys, list):
            return
        for i, key in enumerate(keys):
            if not isinstance(key, str) or not key:
                continue
            before = len(self.issues)
            self.check_file(("updates", "trusted_keys", i), key, "public key file")
            if len(self.issues) > before:
                continue
            from edge.updates import UpdateError, load_public_key

            try:
                load_public_key(self.path_of(key))
            except UpdateError as error:
                self.add(("updates", "trusted_keys", i), f"not an ed25519 public key: {error}", key,
                         expected="the .pub.pem file written by `onen keys generate`")

    def check_bundle(self, key: KeyPath, value: str) -> None:
        path = self.path_of(value)
        if not path.exists():
            self.add(key, f"model bundle not found: {path}", value,
                     expected="a bundle directory (model.onnx + manifest.json) or a .tar of one")
        elif path.is_dir() and not (path / "manifest.json").is_file():
            self.add(key, f"not a model bundle (no manifest.json in {path})", value,
                     expected="a bundle directory as written by `onen export`")
        elif path.is_file() and not path.name.endswith(".tar"):
            self.add(key, f"not a model bundle: {path}", value, expected="a bundle directory or a .tar of one")

    def check_cameras(self, cameras: list, models: dict) -> None:
        first_seen: dict[str, int] = {}
        exclusive: dict[tuple, int] = {}      # a device or a watched folder serves one camera only
        for i, camera in enumerate(cameras):
            if not isinstance(camera, dict):
                continue
            here = ("cameras", i)
            name = camera.get("name")
            if isinstance(name, str):
                if name in first_seen:
                    self.add(here + ("name",), f"duplicate camera name (also cameras[{first_seen[name]}])", name,
                             expected="a different name for every camera (names are MQTT topics)")
                first_seen.setdefault(name, i)
            model = camera.get("model")
            if model is None and len(models) > 1:
                self.add(here + ("model",), "missing 'model' (several models are defined)", show_value=False,
                         expected="one of " + ", ".join(map(str, models)))
            elif isinstance(model, str) and models and model not in models:
                self.add(here + ("model",), "names a model that is not defined under models", model,
                         expected="one of " + ", ".join(map(str, models)))
            self.check_file(here + ("aoi",), camera.get("aoi"), "AOI mask file")
            self.check_file(here + ("calibration",), camera.get("calibration"), "calibration file")
            if isinstance(camera.get("source"), dict):
                self.check_source(here + ("source",), camera["source"])
                owned = self._exclusive_resource(camera["source"])
                if owned is not None and owned in exclusive:
                    key = "device" if owned[0] == "v4l2" else "path"
                    self.add(here + ("source", key), f"already used by cameras[{exclusive[owned]}]",
                             camera["source"][key], expected="one camera per device or watched folder")
                elif owned is not None:
                    exclusive[owned] = i
            if isinstance(camera.get("trigger"), dict):
                self.check_trigger(here + ("trigger",), camera["trigger"])

    def check_source(self, here: KeyPath, source: dict) -> None:
        kind = source.get("kind")
        if kind not in SOURCE_KEYS_BY_KIND:
            return                                  # the schema reported it
        allowed = _COMMON_SOURCE_KEYS | SOURCE_KEYS_BY_KIND[kind]
        for key in source:
            if key not in allowed and isinstance(key, str) and key in _all_source_keys():
                self.add(here + (key,), f"'{key}' does not apply to kind '{kind}'", source[key],
                         expected="for kind " + kind + ": " + ", ".join(sorted(SOURCE_KEYS_BY_KIND[kind])))
        needed = REQUIRED_SOURCE_KEY[kind]
        if needed not in source:
            self.add(here + (needed,), f"missing '{needed}' for kind '{kind}'", show_value=False,
                     expected=_SOURCE_HINTS[kind])
        uri = source.get("uri")
        if kind in URI_SCHEMES and isinstance(uri, str) and not uri.lower().startswith(URI_SCHEMES[kind]):
            self.add(here + ("uri",), f"not a {kind} URL", uri,
                     expected="a URL starting with " + " or ".join(URI_SCHEMES[kind]))
        for key in ("uri", "pipeline"):
            if isinstance(source.get(key), str):
                for var in env_references(source[key]):
                    if not os.environ.get(var):
                        self.add(here + (key,), f"environment variable {var} (used as ${{{var}}}) is not set",
                                 show_value=False, expected=f"{var} set in the service's environment")
        pipeline = source.get("pipeline")
        if kind == "gstreamer" and isinstance(pipeline, str) and "appsink" not in pipeline:
            self.add(here + ("pipeline",), "GStreamer pipeline has no appsink", pipeline,
                     expected="a pipeline ending in '! appsink' (OpenCV reads frames from the appsink)")
        path = source.get("path")
        if kind == "file" and isinstance(path, str):
            self.check_file(here + ("path",), path, "video file")
        if kind == "folder" and isinstance(path, str) and not self.path_of(path).is_dir():
            self.add(here + ("path",), f"image folder not found: {self.path_of(path)}", path,
                     expected="an existing folder the camera writes images into")
        if kind == "folder" and source.get("watch") is False and source.get("existing") is not True:
            self.add(here + ("watch",), "watch is false and existing is not true: no image would ever be read",
                     False, expected="watch: true, or existing: true to read the images already there")
        if ("width" in source) != ("height" in source):
            missing = "height" if "width" in source else "width"
            self.add(here + (missing,), f"missing '{missing}'", show_value=False,
                     expected="both width and height, or neither")
        low, high = source.get("backoff_initial_s"), source.get("backoff_max_s", 30.0)
        if _number(low) and _number(high) and high < low:
            self.add(here + ("backoff_max_s",), "backoff ceiling below its initial delay", high,
                     expected=f"a number >= backoff_initial_s ({low})")
        if kind in LIVE_SOURCE_KINDS and _number(source.get("black_level")) and source.get("reject_black") is False:
            self.add(here + ("black_level",), "black_level is set but reject_black is false", source["black_level"],
                     expected="reject_black: true, or no black_level")

    def _exclusive_resource(self, source: dict) -> tuple | None:
        device = source.get("device")
        if source.get("kind") == "v4l2" and isinstance(device, (int, str)) and not isinstance(device, bool):
            text = str(device)
            return ("v4l2", f"/dev/video{text}" if text.isdigit() else text)
        if source.get("kind") == "folder" and isinstance(source.get("path"), str):
            return ("folder", str(self.path_of(source["path"]).resolve()))
        return None

    def check_trigger(self, here: KeyPath, trigger: dict) -> None:
        mode = trigger.get("mode", "continuous")
        if mode == "interval" and "interval_s" not in trigger:
            self.add(here + ("interval_s",), "mode 'interval' needs interval_s", show_value=False,
                     expected="interval_s: seconds between inspections, e.g. 1.0")
        if isinstance(mode, str) and mode != "interval" and "interval_s" in trigger:
            self.add(here + ("interval_s",), f"interval_s does not apply to mode '{mode}'", trigger["interval_s"],
                     expected="mode: interval, or no interval_s")


_SOURCE_HINTS = {
    "v4l2": "device: 0 (index) or device: /dev/video0",
    "rtsp": "uri: rtsp://host:554/stream",
    "http": "uri: http://host:port/stream.mjpg",
    "gstreamer": "pipeline: '... ! videoconvert ! video/x-raw,format=BGR ! appsink'",
    "file": "path: a video file",
    "folder": "path: a folder of images",
}


@lru_cache(maxsize=1)
def _all_source_keys() -> frozenset[str]:
    return frozenset(_COMMON_SOURCE_KEYS.union(*SOURCE_KEYS_BY_KIND.values()))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen, out = set(), []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out
