"""Validation of a station config file: YAML syntax, the typed models, then semantic checks.

Every problem becomes a `ConfigIssue` with file, line, key path, value and expectation, and all of them
are collected before anything is raised, so an integrator fixes a config in one round, not ten.
Line numbers come from `yaml.compose` (the node tree keeps marks), mapped by key path; pydantic's error
locations are mapped back onto the same key paths.
"""

from __future__ import annotations

import difflib
import os
import tarfile
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from onen.edge.config import ConfigError, ConfigIssue
from onen.edge.config_models import (
    LIVE_SOURCE_KINDS,
    SOURCE_MODELS,
    SourceBase,
    StationConfig,
    env_references,
    resolve_path,
)

KeyPath = tuple[Any, ...]

MAX_YAML_NODES = 100_000  # a station file has a few hundred; aliases must not expand it beyond this
URI_SCHEMES = {"rtsp": ("rtsp://", "rtsps://"), "http": ("http://", "https://")}
REQUIRED_HINTS = {
    "station": "a station id, e.g. 'station: line3-press'",
    "mqtt": "an mqtt section with at least 'host'",
    "models": "a models section: name -> {bundle: path/to/bundle}",
    "cameras": "a cameras section: name -> {source: ...}, e.g. 'cameras: {top: {source: {kind: rtsp, uri: ...}}}'",
    "source": "a source with at least 'kind'",
    "kind": "one of v4l2, rtsp, http, gstreamer, file, folder",
}
_SOURCE_HINTS = {
    "device": "device: 0 (index) or device: /dev/video0",
    "uri": "uri: rtsp://host:554/stream (or http://host:port/stream.mjpg)",
    "pipeline": "pipeline: '... ! videoconvert ! video/x-raw,format=BGR ! appsink'",
    "path": "path: a video file (kind file) or a folder of images (kind folder)",
}
_PASSWORD_HINT = (
    "passwords are never written in the config: use password_env (the name of an environment "
    "variable) or password_file (a file readable only by the service user)"
)
_CAMERAS_MAPPING_HINT = (
    "a mapping keyed by camera name, e.g.\n      cameras:\n        top:\n          model: widget\n"
    "          source: {kind: rtsp, uri: 'rtsp://10.0.0.5/stream1'}"
)


def validate_file(path: Path) -> StationConfig:
    """Return the validated config, or raise ConfigError with every issue found."""
    name = str(path)
    if not path.is_file():
        raise ConfigError(
            [
                ConfigIssue(
                    name,
                    None,
                    "",
                    "config file not found" if not path.exists() else "not a file",
                    expected="the path of a station YAML file",
                )
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            [ConfigIssue(name, None, "", f"cannot read the file: {error}", expected="a readable UTF-8 YAML file")]
        ) from None
    root, data = parse_yaml(text, name)
    if data is None:
        raise ConfigError(
            [
                ConfigIssue(
                    name,
                    None,
                    "",
                    "the file is empty (or only comments)",
                    expected="a mapping with station, mqtt, models and cameras",
                )
            ]
        )
    lines = LineMap(name)
    issues = lines.index(root)
    base = path.resolve().parent
    config, model_issues = validate_models(data, base, lines)
    issues += model_issues
    if isinstance(data, dict):
        issues += SemanticChecks(data, base, lines).run()
    if issues:
        raise ConfigError(sorted(_unique(issues), key=lambda i: (i.line or 0, i.key_path)))
    assert config is not None  # validate_models gives no config only together with issues
    config._source_path = path.resolve()
    return config


def parse_yaml(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree and the plain data of a YAML text; refuses syntax errors (at the line where the
    construct opens, e.g. an unclosed quote) and alias bombs (before anything expands)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        size = _expanded_size(root)
        if size > MAX_YAML_NODES:
            raise ConfigError(
                [
                    ConfigIssue(
                        name,
                        None,
                        "",
                        f"YAML aliases would expand the document to {size:,} nodes",
                        expected=f"aliases are limited: at most {MAX_YAML_NODES:,} nodes once "
                        "expanded (write the settings out instead of nesting aliases)",
                    )
                ]
            )
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        opens = error.context_mark is not None and "end of stream" in str(error.problem)
        mark = error.context_mark if opens else (error.problem_mark or error.context_mark)
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise ConfigError(
            [
                ConfigIssue(
                    name,
                    mark.line + 1 if mark else None,
                    "",
                    f"not valid YAML: {problem}",
                    expected="valid YAML (check indentation, colons and quotes)",
                )
            ]
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError([ConfigIssue(name, None, "", f"not valid YAML: {error}", expected="valid YAML")]) from None
    return root, data


def _expanded_size(root: yaml.Node | None) -> int:
    """How many nodes the document has once aliases are expanded (counted without expanding: memoised)."""
    sizes: dict[int, int] = {}
    order, stack = [], [root] if root is not None else []
    while stack:  # post-order without recursion
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = -1
        order.append(node)
        if isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    for node in reversed(order):
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        sizes[id(node)] = min(1 + sum(max(sizes[id(c)], 1) for c in children), 1 << 62)
    return sizes[id(root)] if root is not None else 0


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
                    issues.append(
                        ConfigIssue(
                            self.file,
                            line,
                            format_path(path + (key,)),
                            f"duplicate key (first written on line {seen[key]})",
                            expected="each key once per section",
                        )
                    )
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

    def issue(
        self, path: Iterable[Any], problem: str, value: Any = None, expected: str | None = None, show_value: bool = True
    ) -> ConfigIssue:
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
    """('cameras', 'top', 'source', 'uri') -> 'cameras.top.source.uri'; list items as [i]."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _is_secret(path: KeyPath) -> bool:
    return any(isinstance(p, str) and p in ("password", "token") for p in path)


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


# -- pydantic errors -> issues --------------------------------------------------------------------------------
_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "path_type": "a path (a string)",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list ('- item' lines)",
    "tuple_type": "a list ('- item' lines)",
    "none_required": "nothing (null)",
}


def validate_models(data: Any, base: Path, lines: LineMap) -> tuple[StationConfig | None, list[ConfigIssue]]:
    """Validate against the models; every error becomes an issue at the key path and line the person wrote."""
    issues: list[ConfigIssue] = []
    if isinstance(data, dict) and isinstance(data.get("cameras"), list):
        issues.append(
            lines.issue(
                ("cameras",),
                "cameras is a list; cameras are now keyed by their name",
                data["cameras"],
                expected=_CAMERAS_MAPPING_HINT,
            )
        )
        data = {k: v for k, v in data.items() if k != "cameras"}
        data["cameras"] = {"_": None}  # keeps the other sections' errors; its own are dropped below
    try:
        return StationConfig.model_validate(data, context={"base": base}), issues
    except ValidationError as error:
        grouped: dict[tuple[KeyPath, bool], list[ErrorDetails]] = {}
        for err in error.errors(include_url=False):
            path, name_error = _data_path(data, err["loc"])
            if issues and path[:1] == ("cameras",):
                continue
            grouped.setdefault((path, name_error), []).append(err)
        for (path, name_error), errs in grouped.items():
            issues.append(_issue(data, path, name_error, errs, lines))
    return None, issues


def _data_path(data: Any, loc: tuple[int | str, ...]) -> tuple[KeyPath, bool]:
    """A pydantic location as a key path of the YAML data: union tags and branch names left out.
    The flag says the error is about a mapping key (a bad name), not a value."""
    path: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == "[key]":
            return tuple(path), True
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and last:
            path.append(part)  # a missing or unknown key
    return tuple(path), False


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _models_along(data: Any, path: KeyPath) -> type[BaseModel] | None:
    """Like _model_at, stepping over mapping keys (models.<name>, cameras.<name>)."""
    model: Any = StationConfig
    node: Any = data
    i = 0
    while i < len(path):
        part = path[i]
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        annotation = _unwrap(field.annotation)
        node = node.get(part) if isinstance(node, dict) else None
        if typing.get_origin(annotation) is dict:
            annotation = _unwrap(typing.get_args(annotation)[1])
            i += 1
            if i < len(path):
                node = node.get(path[i]) if isinstance(node, dict) else None
            else:
                return None
        if part == "source" or annotation is None or typing.get_origin(annotation) is typing.Union:
            kind = node.get("kind") if isinstance(node, dict) else None
            annotation = SOURCE_MODELS.get(kind) if isinstance(kind, str) else None  # a list as kind: no model
        model = annotation
        i += 1
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X (a discriminated union stays a Union)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _field(data: Any, path: KeyPath) -> FieldInfo | None:
    owner = _models_along(data, path[:-1]) if path else None
    if owner is None:
        return None
    return next((f for n, f in owner.model_fields.items() if (f.alias or n) == path[-1]), None)


def _bounds(field: FieldInfo | None, integer: bool) -> str | None:
    if field is None:
        return None
    low = high = None
    low_word = ">="
    for meta in field.metadata:
        for cls_meta in [meta] + list(getattr(meta, "metadata", [])):
            if getattr(cls_meta, "ge", None) is not None:
                low = cls_meta.ge
            if getattr(cls_meta, "gt", None) is not None:
                low, low_word = cls_meta.gt, ">"
            if getattr(cls_meta, "le", None) is not None:
                high = cls_meta.le
    noun = "an integer" if integer else "a number"
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}" if low_word == ">=" else f"{noun} > {low} and <= {high}"
    if low is not None:
        return f"{noun} {low_word} {low}"
    return f"{noun} <= {high}" if high is not None else None


def _expected(data: Any, path: KeyPath, err: ErrorDetails) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    field = _field(data, path)
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        value = err.get("input")
        integer = isinstance(value, int) and not isinstance(value, float)
        words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        noun = "an integer" if integer else "a number"
        from_ctx = " and ".join(f"{words[k]} {v}" for k, v in ctx.items() if k in words)
        return (
            _bounds(field, integer)
            if field is not None and typing.get_origin(_unwrap(field.annotation)) is not typing.Union
            else None
        ) or f"{noun} {from_ctx}"
    if kind == "string_pattern_mismatch":
        return field.description if field is not None and field.description else f"text matching {ctx.get('pattern')}"
    if kind in ("string_too_short", "path_empty"):
        return "a non-empty string"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"at least {n} entr{'ies' if n != 1 else 'y'}"
    return err["msg"]


def _issue(data: Any, path: KeyPath, name_error: bool, errs: list[ErrorDetails], lines: LineMap) -> ConfigIssue:
    err = errs[0]
    kind = err["type"]
    if name_error:
        key = path[-1]
        return lines.issue(
            path,
            "bad name",
            key,
            expected="a name of letters, digits, '_', '-', '.' (names become part of MQTT topics)",
        )
    if kind == "extra_forbidden":
        key = path[-1]
        owner = _models_along(data, path[:-1])
        known = sorted((f.alias or n) for n, f in owner.model_fields.items()) if owner else []
        if key == "password":
            return lines.issue(path, "unknown key 'password'", show_value=False, expected=_PASSWORD_HINT)
        if owner is not None and owner in SOURCE_MODELS.values():
            elsewhere = [k for k, m in SOURCE_MODELS.items() if key in m.model_fields]
            if elsewhere:
                own = sorted(set(owner.model_fields) - set(SourceBase.model_fields) - {"kind"})
                return lines.issue(
                    path,
                    f"'{key}' does not apply to kind '{_value_at(data, path[:-1])['kind']}'",
                    _value_at(data, path),
                    expected=f"for kind {_value_at(data, path[:-1])['kind']}: " + ", ".join(own),
                )
        guess = difflib.get_close_matches(str(key), known, n=1)
        did_you_mean = f" (did you mean '{guess[0]}'?)" if guess else ""
        return lines.issue(
            path, f"unknown key '{key}'{did_you_mean}", show_value=False, expected="one of " + ", ".join(known)
        )
    if kind in ("missing", "union_tag_not_found"):
        key = "kind" if kind == "union_tag_not_found" else path[-1]
        full = path + ("kind",) if kind == "union_tag_not_found" else path
        field = _field(data, full)
        hint: str | None = (
            REQUIRED_HINTS.get(key) or _SOURCE_HINTS.get(key) if "source" in full else REQUIRED_HINTS.get(key)
        )
        if hint is None and field is not None:
            hint = field.description
        kind_note = ""
        if "source" in full and key != "kind":
            kind_note = f" for kind '{_value_at(data, full[:-1]).get('kind')}'"
        return lines.issue(
            full,
            f"missing '{key}'{kind_note}" if kind_note else f"missing required key '{key}'",
            show_value=False,
            expected=hint or "a value",
        )
    if kind == "union_tag_invalid":
        return lines.issue(
            path + ("kind",),
            "wrong value",
            err["input"].get("kind"),
            expected="one of " + str(err["ctx"]["expected_tags"]).replace("'", ""),
        )
    expected = " or ".join(dict.fromkeys(_expected(data, path, e) for e in errs))
    problem = "wrong type" if all(e["type"] in _TYPE_WORDS for e in errs) else "wrong value"
    return lines.issue(path, problem, err.get("input"), expected=expected)


class SemanticChecks:
    """What the schema cannot say: references between sections, files on disk, secrets, per-kind keys.

    Each check looks only at values of the right type (the schema already reported the others), so one
    mistake is never reported twice under different names.
    """

    def __init__(self, data: dict[str, Any], base: Path, lines: LineMap):
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
        if isinstance(cameras, dict):
            self.check_cameras(cameras, models if isinstance(models, dict) else {})
        updates = self.data.get("updates")
        if isinstance(updates, dict):
            self.check_updates(updates)
        review = self.data.get("review")
        if isinstance(review, dict):
            self.check_review(review)
        return self.issues

    # -- helpers -------------------------------------------------------------------------------------------
    def add(
        self, path: KeyPath, problem: str, value: Any = None, expected: str | None = None, show_value: bool = True
    ) -> None:
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
            self.add(
                key,
                f"{what} is not readable by this user: {path}",
                value,
                expected=f"a {what} the service user can read",
            )

    # -- sections ------------------------------------------------------------------------------------------
    def check_mqtt(self, mqtt: dict[str, Any]) -> None:
        tls = mqtt.get("tls")
        if isinstance(tls, dict):
            for key in ("ca", "cert", "key"):
                self.check_file(("mqtt", "tls", key), tls.get(key), f"TLS {key} file")
            if ("cert" in tls) != ("key" in tls):
                missing = "key" if "cert" in tls else "cert"
                self.add(
                    ("mqtt", "tls", missing),
                    f"missing '{missing}'",
                    show_value=False,
                    expected="both cert and key for a client certificate, or neither",
                )
        env, file = mqtt.get("password_env"), mqtt.get("password_file")
        self.check_secret_source("mqtt", "password", env, file)
        if isinstance(file, str) and file:
            path = self.path_of(file)
            if path.is_file() and os.access(path, os.R_OK) and not path.read_text(errors="replace").strip():
                self.add(
                    ("mqtt", "password_file"),
                    f"password file is empty: {path}",
                    file,
                    expected="a file holding the password",
                )
        if (env is not None or file is not None) and "username" not in mqtt:
            self.add(
                ("mqtt", "username"),
                "a password is configured but no username",
                show_value=False,
                expected="mqtt.username next to password_env / password_file",
            )

    def check_updates(self, updates: dict[str, Any]) -> None:
        """The versions folders must be folders (it is created when missing); trusted keys must be ed25519 public
        keys."""
        folder = updates.get("dir")
        if isinstance(folder, str) and folder and self.path_of(folder).exists() and not self.path_of(folder).is_dir():
            self.add(
                ("updates", "dir"),
                f"not a folder: {self.path_of(folder)}",
                folder,
                expected="a folder the station may write model versions into (e.g. /var/lib/onen/models)",
            )
        folder = updates.get("calibration_dir")
        if isinstance(folder, str) and folder and self.path_of(folder).exists() and not self.path_of(folder).is_dir():
            self.add(
                ("updates", "calibration_dir"),
                f"not a folder: {self.path_of(folder)}",
                folder,
                expected="a folder the station may write calibration versions into (e.g. /var/lib/onen/calibrations)",
            )
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
            from onen.edge.updates import UpdateError, load_public_key

            try:
                load_public_key(self.path_of(key))
            except UpdateError as error:
                self.add(
                    ("updates", "trusted_keys", i),
                    f"not an ed25519 public key: {error}",
                    key,
                    expected="the .pub.pem file written by `onen keys generate`",
                )

    def check_bundle(self, key: KeyPath, value: str) -> None:
        path = self.path_of(value)
        if not path.exists():
            self.add(
                key,
                f"model bundle not found: {path}",
                value,
                expected="a bundle directory (model.onnx + manifest.json) or a .tar of one",
            )
        elif path.is_dir() and not (path / "manifest.json").is_file():
            self.add(
                key,
                f"not a model bundle (no manifest.json in {path})",
                value,
                expected="a bundle directory as written by `onen export`",
            )
        elif path.is_dir() and not (path / "model.onnx").is_file():
            self.add(
                key,
                f"not a complete model bundle (no model.onnx in {path})",
                value,
                expected="a bundle directory as written by `onen export` (model.onnx next to manifest.json)",
            )
        elif path.is_file() and not path.name.endswith(".tar"):
            self.add(key, f"not a model bundle: {path}", value, expected="a bundle directory or a .tar of one")
        elif path.is_file() and not _is_tar(path):
            self.add(
                key,
                f"not a tar archive: {path}",
                value,
                expected="a .tar of a bundle directory (as written by `onen export --tar`)",
            )

    def check_aoi(self, key: KeyPath, value: Any, source: dict[str, Any]) -> None:
        """The AOI must be an image, not all black, and of the camera's resolution when the config states one."""
        before = len(self.issues)
        self.check_file(key, value, "AOI mask file")
        if len(self.issues) > before or not isinstance(value, str) or not value:
            return
        import cv2
        import numpy as np

        path = self.path_of(value)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            self.add(
                key,
                f"AOI mask is not an image: {path}",
                value,
                expected="a PNG (or other image) mask: white = inspected, black = ignored",
            )
            return
        if not np.any(mask > 0):
            self.add(
                key,
                f"AOI mask is all black: nothing would be inspected ({path})",
                value,
                expected="a mask with the inspected area in white",
            )
        width, height = source.get("width"), source.get("height")
        if isinstance(width, int) and isinstance(height, int) and mask.shape[:2] != (height, width):
            self.add(
                key,
                f"AOI mask is {mask.shape[1]}x{mask.shape[0]} but the camera is configured for {width}x{height}",
                value,
                expected=f"an AOI mask of {width}x{height} pixels",
            )

    def model_files(self, name: Any) -> list[Path]:
        """The model.onnx files a camera on model `name` may run: the config's bundle, and the version a
        model update installed (it replaces the config's bundle across restarts)."""
        models = self.data.get("models")
        model = models.get(name) if isinstance(models, dict) else None
        files = []
        if isinstance(model, dict) and isinstance(model.get("bundle"), str) and model["bundle"]:
            files.append(self.path_of(model["bundle"]) / "model.onnx")
        updates = self.data.get("updates")
        if (
            isinstance(updates, dict)
            and isinstance(updates.get("dir"), str)
            and updates["dir"]
            and isinstance(name, str)
        ):
            from onen.edge.updates import ModelStore

            try:
                installed = ModelStore(self.path_of(updates["dir"])).current(name)
            except (OSError, ValueError):
                installed = None
            if installed is not None:
                files.append(Path(installed) / "model.onnx")
        return [f for f in files if f.is_file()]

    def check_calibration(self, key: KeyPath, value: Any, model_files: list[Path]) -> None:
        """The calibration must be valid YAML and made for the camera's model (sha256 of its model.onnx)."""
        before = len(self.issues)
        self.check_file(key, value, "calibration file")
        if len(self.issues) > before or not isinstance(value, str) or not value:
            return
        path = self.path_of(value)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            self.add(
                key,
                f"calibration file is not valid YAML ({where}: {error.problem})",
                value,
                expected="a calibration file as written by `onen calibrate`",
            )
            return
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            self.add(
                key,
                f"calibration file is not valid YAML ({path}: {error})",
                value,
                expected="a calibration file as written by `onen calibrate`",
            )
            return
        if not isinstance(data, dict):
            self.add(
                key,
                f"calibration file holds no mapping: {path}",
                value,
                expected="a calibration file as written by `onen calibrate`",
            )
            return
        made_for = data.get("bundle")
        sha = made_for.get("model_sha256") if isinstance(made_for, dict) else None
        if isinstance(sha, str) and model_files:
            from onen.edge.bundle import sha256_file

            actual = [sha256_file(f) for f in model_files]
            if sha not in actual:
                self.add(
                    key,
                    f"calibration made for another model: recalibrate (made for model.onnx sha256 "
                    f"{sha[:12]}...; the camera's bundle has {', '.join(a[:12] + '...' for a in actual)})",
                    value,
                    expected="a calibration made for this camera's bundle: run `onen calibrate` again",
                )

    def check_secret_source(self, section: str, secret: str, env: object, file: object) -> None:
        """A secret comes from one place: `<secret>_env` (a variable that is set) or `<secret>_file` (a file)."""
        if env is not None and file is not None:
            self.add(
                (section, f"{secret}_file"),
                f"both {secret}_env and {secret}_file are set",
                show_value=False,
                expected=f"one source of the {secret}",
            )
        if isinstance(env, str) and not os.environ.get(env):
            self.add(
                (section, f"{secret}_env"),
                f"environment variable {env} is not set (or empty)",
                env,
                expected=f"{env} set in the service's environment (e.g. the systemd EnvironmentFile)",
            )
        if isinstance(file, str) and file:
            self.check_file((section, f"{secret}_file"), file, f"{secret} file")

    def check_review(self, review: dict[str, Any]) -> None:
        """Off the loopback interface the review page needs a token, from the environment or a file."""
        from onen.edge.config_models import ReviewConfig

        listen = review.get("listen", ReviewConfig.model_fields["listen"].default)
        env, file = review.get("token_env"), review.get("token_file")
        self.check_secret_source("review", "token", env, file)
        if not isinstance(listen, str) or ":" not in listen or env is not None or file is not None:
            return
        try:
            loopback = ReviewConfig(listen=listen).loopback
        except ValidationError:
            return  # the models reported it
        if not loopback:
            self.add(
                ("review", "listen"),
                "the review page listens beyond this machine but has no token",
                listen,
                expected="token_env or token_file next to a non-loopback listen address (or 127.0.0.1:PORT)",
            )

    def check_cameras(self, cameras: dict[str, Any], models: dict[str, Any]) -> None:
        exclusive: dict[tuple[Any, ...], str] = {}  # a device or a watched folder serves one camera only
        for name, camera in cameras.items():
            if not isinstance(camera, dict):
                continue
            here = ("cameras", name)
            model = camera.get("model")
            if model is None and len(models) > 1:
                self.add(
                    here + ("model",),
                    "missing 'model' (several models are defined)",
                    show_value=False,
                    expected="one of " + ", ".join(map(str, models)),
                )
            elif isinstance(model, str) and models and model not in models:
                self.add(
                    here + ("model",),
                    "names a model that is not defined under models",
                    model,
                    expected="one of " + ", ".join(map(str, models)),
                )
            raw_source = camera.get("source")
            source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
            self.check_aoi(here + ("aoi",), camera.get("aoi"), source)
            model_name = model if model is not None else next(iter(models), None)
            self.check_calibration(here + ("calibration",), camera.get("calibration"), self.model_files(model_name))
            if source:
                self.check_source(here + ("source",), source)
                owned = self._exclusive_resource(source)
                if owned is not None and owned in exclusive:
                    key = "device" if owned[0] == "v4l2" else "path"
                    self.add(
                        here + ("source", key),
                        f"already used by cameras.{exclusive[owned]}",
                        source[key],
                        expected="one camera per device or watched folder",
                    )
                elif owned is not None:
                    exclusive[owned] = name
            if isinstance(camera.get("trigger"), dict):
                self.check_trigger(here + ("trigger",), camera["trigger"])

    def check_source(self, here: KeyPath, source: dict[str, Any]) -> None:
        kind = source.get("kind")
        if not isinstance(kind, str) or kind not in SOURCE_MODELS:
            return  # the models reported it
        uri = source.get("uri")
        if kind in URI_SCHEMES and isinstance(uri, str) and not uri.lower().startswith(URI_SCHEMES[kind]):
            self.add(
                here + ("uri",),
                f"not a {kind} URL",
                uri,
                expected="a URL starting with " + " or ".join(URI_SCHEMES[kind]),
            )
        for key in ("uri", "pipeline"):
            if isinstance(source.get(key), str):
                for var in env_references(source[key]):
                    if not os.environ.get(var):
                        self.add(
                            here + (key,),
                            f"environment variable {var} (used as ${{{var}}}) is not set",
                            show_value=False,
                            expected=f"{var} set in the service's environment",
                        )
        pipeline = source.get("pipeline")
        if kind == "gstreamer" and isinstance(pipeline, str) and "appsink" not in pipeline:
            self.add(
                here + ("pipeline",),
                "GStreamer pipeline has no appsink",
                pipeline,
                expected="a pipeline ending in '! appsink' (OpenCV reads frames from the appsink)",
            )
        path = source.get("path")
        if kind == "file" and isinstance(path, str):
            self.check_file(here + ("path",), path, "video file")
        if kind == "folder" and isinstance(path, str) and not self.path_of(path).is_dir():
            self.add(
                here + ("path",),
                f"image folder not found: {self.path_of(path)}",
                path,
                expected="an existing folder the camera writes images into",
            )
        if kind == "folder" and source.get("watch") is False and source.get("existing") is not True:
            self.add(
                here + ("watch",),
                "watch is false and existing is not true: no image would ever be read",
                False,
                expected="watch: true, or existing: true to read the images already there",
            )
        if ("width" in source) != ("height" in source):
            missing = "height" if "width" in source else "width"
            self.add(
                here + (missing,),
                f"missing '{missing}'",
                show_value=False,
                expected="both width and height, or neither",
            )
        low, high = source.get("backoff_initial_s"), source.get("backoff_max_s", 30.0)
        if _number(low) and _number(high) and high < low:
            self.add(
                here + ("backoff_max_s",),
                "backoff ceiling below its initial delay",
                high,
                expected=f"a number >= backoff_initial_s ({low})",
            )
        if kind in LIVE_SOURCE_KINDS and _number(source.get("black_level")) and source.get("reject_black") is False:
            self.add(
                here + ("black_level",),
                "black_level is set but reject_black is false",
                source["black_level"],
                expected="reject_black: true, or no black_level",
            )

    def _exclusive_resource(self, source: dict[str, Any]) -> tuple[Any, ...] | None:
        device = source.get("device")
        if source.get("kind") == "v4l2" and isinstance(device, (int, str)) and not isinstance(device, bool):
            text = str(device)
            return ("v4l2", f"/dev/video{text}" if text.isdigit() else text)
        if source.get("kind") == "folder" and isinstance(source.get("path"), str):
            return ("folder", str(self.path_of(source["path"]).resolve()))
        return None

    def check_trigger(self, here: KeyPath, trigger: dict[str, Any]) -> None:
        mode = trigger.get("mode", "continuous")
        if mode == "interval" and "interval_s" not in trigger:
            self.add(
                here + ("interval_s",),
                "mode 'interval' needs interval_s",
                show_value=False,
                expected="interval_s: seconds between inspections, e.g. 1.0",
            )
        if isinstance(mode, str) and mode != "interval" and "interval_s" in trigger:
            self.add(
                here + ("interval_s",),
                f"interval_s does not apply to mode '{mode}'",
                trigger["interval_s"],
                expected="mode: interval, or no interval_s",
            )


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen, out = set(), []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out
