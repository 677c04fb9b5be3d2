"""The desired state of a fleet: one YAML file -> `FleetConfig`, or a `ConfigError` listing every mistake.

```yaml
broker: {host: central.plant, port: 8883, prefix: onen, tls: {ca: ca.pem}, username: onen-fleet,
         password_env: ONEN_FLEET_PASSWORD}       # the central broker, keys as a station's `mqtt` section
signing_key: keys/onen-signing.pem                # bundles are signed with it before they leave
groups:
  line-a: {bundle: bundles/widget-v3, version: "3", calibrations: {top: calib/a/top.yaml}}
stations:
  press-1: {group: line-a}
rollout: {canary: [press-1], wave_size: 5, soak_s: 300, min_results: 50}
```
Keys, types, ranges and defaults are written once, in the models below; errors name the file, the line, the
key path, the bad value and what was expected, as `edge.config` does for a station YAML.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, StrictInt, StrictStr, ValidationError

from onen.edge.config import ConfigError, ConfigIssue
from onen.edge.config_checks import LineMap, parse_yaml
from onen.edge.config_models import ConfigPath, MqttConfig, Name, Section, resolve_path


class GroupConfig(Section):
    """What every station of a group should serve."""

    bundle: ConfigPath = Field(description="the model bundle (folder or .tar) the group's stations serve")
    version: StrictStr | None = Field(None, description="the bundle's manifest version, as a check of the path")
    model: Name | None = Field(None, description="which model of the stations it replaces (default: their only one)")
    calibrations: dict[Name, ConfigPath] = Field(
        default_factory=dict, description="camera -> calibration file made for this bundle (onen calibrate)"
    )


class StationEntry(Section):
    group: Name


class RolloutConfig(Section):
    """Staged rollout: the canary stations alone, then waves; each wave gated on answers and a soak."""

    canary: list[Name] = Field(
        default_factory=list, description="stations updated first, alone (default: the file's first station)"
    )
    wave_size: StrictInt = Field(5, ge=1, description="stations per wave after the canary")
    answer_timeout_s: float = Field(120.0, gt=0, le=3600, strict=True, description="wait for each station's answer")
    soak_s: float = Field(60.0, ge=0, le=86400, strict=True, description="watch each wave this long before the next")
    min_results: StrictInt = Field(
        20, ge=0, description="results per station on the new model before a wave passes (0: none needed)"
    )
    defect_allowance: float = Field(
        0.0, ge=0, le=1, strict=True, description="the line's defect rate, allowed on top of the calibration's FRR"
    )
    max_reject_rate: float | None = Field(
        None, gt=0, le=1, strict=True, description="reject-rate bound for cameras whose calibration states none"
    )


class FleetConfig(Section):
    broker: MqttConfig
    signing_key: ConfigPath | None = Field(None, description="ed25519 private key (onen keys generate)")
    groups: dict[Name, GroupConfig] = Field(min_length=1)
    stations: dict[Name, StationEntry] = Field(min_length=1)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    def canary(self) -> list[str]:
        return list(self.rollout.canary) or [next(iter(self.stations))]


def load_fleet(path: str | Path) -> FleetConfig:
    """Read and check a fleet file; raises ConfigError listing every mistake (file:line: key: problem)."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise ConfigError([ConfigIssue(name, None, "", "fleet file not found", expected="a fleet YAML file")])
    root, data = parse_yaml(path.read_text(encoding="utf-8"), name)
    lines = LineMap(name)
    issues = lines.index(root)
    if not isinstance(data, dict):
        issues.append(lines.issue((), "not a mapping", expected="broker, groups, stations (and rollout)"))
        raise ConfigError(issues)
    config = None
    try:
        config = FleetConfig.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as error:
        errors = error.errors(include_url=False)
        issues += [_issue(err, data, lines) for err in errors if not _misspelt(err, errors)]
    issues += _references(data, lines)
    issues += _files(data, path.resolve().parent, lines)
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: (i.line or 0, i.key_path)))
    assert config is not None
    return config


def _misspelt(err: Any, errors: list[Any]) -> bool:
    """A missing key whose misspelling is there too: the unknown key's message says it all."""
    if err["type"] != "missing":
        return False
    loc = tuple(err["loc"])
    return any(
        other["type"] == "extra_forbidden"
        and tuple(other["loc"][:-1]) == loc[:-1]
        and difflib.get_close_matches(str(other["loc"][-1]), [str(loc[-1])], n=1)
        for other in errors
    )


def _issue(err: Any, data: dict[str, Any], lines: LineMap) -> ConfigIssue:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        known = sorted(owner.model_fields) if owner is not None else []
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        return lines.issue(
            loc, f"unknown key '{loc[-1]}'{hint}", show_value=False, expected="one of " + ", ".join(known)
        )
    if err["type"] == "missing":
        return lines.issue(loc, f"missing key '{loc[-1]}'", show_value=False, expected=_description(loc))
    value = _value_at(data, loc)
    return lines.issue(loc, err["msg"], value, expected=_description(loc))


def _model_at(loc: tuple[Any, ...]) -> type[Section] | None:
    """The section model at a location (stepping over the names of groups and stations)."""
    model: type[Section] | None = FleetConfig
    steps: dict[str, type[Section]] = {"groups": GroupConfig, "stations": StationEntry}
    i = 0
    while model is not None and i < len(loc):
        if model is FleetConfig and loc[i] in steps:
            model, i = steps[loc[i]], i + 2
            continue
        field = model.model_fields.get(str(loc[i]))
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None
        i += 1
    return model


def _description(loc: tuple[Any, ...]) -> str | None:
    owner = _model_at(loc[:-1]) if loc else None
    field = owner.model_fields.get(str(loc[-1])) if owner is not None else None
    return field.description if field is not None else None


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _references(data: dict[str, Any], lines: LineMap) -> list[ConfigIssue]:
    """A station's group and the canary's stations must exist."""
    issues = []
    groups = _mapping(data.get("groups"))
    stations = _mapping(data.get("stations"))
    for station, entry in stations.items():
        group = entry.get("group") if isinstance(entry, dict) else None
        if isinstance(group, str) and group not in groups:
            issues.append(
                lines.issue(
                    ("stations", station, "group"), "no such group", group, expected="one of " + ", ".join(groups)
                )
            )
    canary = _mapping(data.get("rollout")).get("canary")
    canary = canary if isinstance(canary, list) else []
    for i, station in enumerate(canary):
        if isinstance(station, str) and station not in stations:
            issues.append(
                lines.issue(
                    ("rollout", "canary", i), "not a station of this file", station, expected=", ".join(stations)
                )
            )
    return issues


def _files(data: dict[str, Any], base: Path, lines: LineMap) -> list[ConfigIssue]:
    """The files the fleet names exist, and a group's `version` is its bundle's (checked on the raw data, so
    they are reported in the same round as the other mistakes)."""
    issues = []
    key = data.get("signing_key")
    if isinstance(key, str) and key and not resolve_path(key, base).is_file():
        issues.append(lines.issue(("signing_key",), "file not found", key))
    for name, group in _mapping(data.get("groups")).items():
        if not isinstance(group, dict):
            continue
        bundle = resolve_path(group["bundle"], base) if isinstance(group.get("bundle"), str) else None
        manifest = bundle / "manifest.json" if bundle is not None else None
        if bundle is None or manifest is None:
            pass
        elif not bundle.exists():
            issues.append(lines.issue(("groups", name, "bundle"), "bundle not found", group["bundle"]))
        elif bundle.is_dir() and not manifest.is_file():
            issues.append(lines.issue(("groups", name, "bundle"), "no manifest.json in this folder", group["bundle"]))
        elif bundle.is_dir() and isinstance(group.get("version"), str):
            version = str(json.loads(manifest.read_text()).get("version"))
            if version != group["version"]:
                issues.append(
                    lines.issue(
                        ("groups", name, "version"),
                        f"the bundle's manifest says version {version!r}",
                        group["version"],
                        expected=f"the version of {bundle}",
                    )
                )
        for camera, file in _mapping(group.get("calibrations")).items():
            if isinstance(file, str) and file and not resolve_path(file, base).is_file():
                issues.append(lines.issue(("groups", name, "calibrations", camera), "file not found", file))
    return issues
