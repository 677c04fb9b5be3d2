"""The station config: one YAML file -> `StationConfig` (typed models), or a `ConfigError` listing every mistake.

The models in `edge.config_models` are the one source of every key, type, range and default (the shipped
JSON Schema is generated from them). Validation happens before any camera opens (see `edge.config_checks`):
the models catch unknown keys, wrong types and ranges; semantic checks catch what a schema cannot (files
that do not exist or are not what they claim, a camera naming a model that is not defined, an unset
password variable...). Every issue names the file, the line, the key path, the bad value and
what was expected. Relative paths resolve against the config file's folder. Passwords never appear in
`repr`/`str` of the config nor in error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onen.edge.config_models import (  # the config tree, re-exported: the public API of this module
    IMAGE_PATTERNS,
    LIVE_SOURCE_KINDS,
    SOURCE_KINDS,
    AnySource,
    ArchiveConfig,
    CameraConfig,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    PublishConfig,
    ReviewConfig,
    SourceConfig,
    SpoolConfig,
    StationConfig,
    TlsConfig,
    TriggerConfig,
    UpdatesConfig,
    env_references,
    expand_env,
    resolve_path,
    source_config,
    strip_credentials,
)
from onen.edge.errors import OnenError

__all__ = [
    "IMAGE_PATTERNS",
    "LIVE_SOURCE_KINDS",
    "SOURCE_KINDS",
    "AnySource",
    "ArchiveConfig",
    "CameraConfig",
    "MetricsConfig",
    "ModelConfig",
    "MqttConfig",
    "PublishConfig",
    "ReviewConfig",
    "SourceConfig",
    "SpoolConfig",
    "StationConfig",
    "TlsConfig",
    "TriggerConfig",
    "UpdatesConfig",
    "env_references",
    "expand_env",
    "resolve_path",
    "source_config",
    "strip_credentials",
    "ConfigIssue",
    "ConfigError",
    "load_config",
]


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake in a config file, with everything a person needs to find and fix it."""

    file: str
    line: int | None
    key_path: str  # e.g. "cameras.top.source.uri"; "" for the whole document
    problem: str  # what is wrong
    value: str | None = None  # the bad value as written (redacted for secrets), None if absent
    expected: str | None = None  # what would be right

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.key_path or '(top level)'}: {self.problem}"
        if self.value is not None:
            text += f" (got {self.value})"
        if self.expected:
            text += f"; expected {self.expected}"
        return text


class ConfigError(OnenError):
    """The config has one or more mistakes; `issues` lists all of them, `str()` is a readable report."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        files = sorted({i.file for i in self.issues})
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in {', '.join(files)}:"
        return "\n".join([head] + [f"  - {issue}" for issue in self.issues])


def load_config(path: str | Path) -> StationConfig:
    """Read, validate and resolve a station config; raises ConfigError listing every mistake."""
    from onen.edge import config_checks

    path = Path(path)
    return config_checks.validate_file(path)  # raises ConfigError
