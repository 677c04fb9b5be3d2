"""The station config: one YAML file -> `StationConfig` dataclasses, or a `ConfigError` listing every mistake.

Validation happens before any camera opens (see `edge.config_checks`): the JSON Schema shipped in
`edge/schemas/station-config.schema.json` catches unknown keys, wrong types and ranges; semantic checks
catch what a schema cannot (files that do not exist, a camera naming a model that is not defined,
an unset password variable...). Every issue names the file, the line, the key path, the bad value and
what was expected. Relative paths resolve against the config file's folder. Passwords never appear in
`repr`/`str` of the config nor in error messages.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from edge.errors import OnenError

SOURCE_KINDS = ("v4l2", "rtsp", "http", "gstreamer", "file", "folder")
LIVE_SOURCE_KINDS = ("v4l2", "rtsp", "http", "gstreamer")
TRIGGER_MODES = ("continuous", "mqtt", "interval")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
HEATMAP_MODES = ("always", "on_defect", "never")
IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff")


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake in a config file, with everything a person needs to find and fix it."""

    file: str
    line: int | None
    key_path: str          # e.g. "cameras[1].source.uri"; "" for the whole document
    problem: str           # what is wrong
    value: str | None = None     # the bad value as written (redacted for secrets), None if absent
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


@dataclass
class TlsConfig:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False       # skip hostname verification (test benches only)


@dataclass
class MqttConfig:
    host: str
    port: int = 1883
    client_id: str = ""          # filled with "onen-<station>" when not given
    prefix: str = "onen"
    qos: int = 1
    keepalive_s: int = 30
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)   # resolved from password_env / password_file
    stats_interval_s: float = 10.0
    password_source: str | None = None   # "env:NAME" or "file:/path", for messages (never the password)


@dataclass
class ModelConfig:
    name: str
    bundle: Path
    backend: str = "auto"
    parallel_calls: int | None = None      # ONNX Runtime on CPU: engine calls at once (None = auto: 2 with >= 2 cores)
    threads_per_call: int | None = None    # ONNX Runtime on CPU: threads per call (None = auto: cores / parallel_calls)


@dataclass(repr=False)
class SourceConfig:
    kind: str
    uri: str | None = None              # rtsp / http
    device: int | str | None = None     # v4l2: index or /dev/videoN
    pipeline: str | None = None         # gstreamer: a pipeline string ending in appsink
    path: Path | None = None            # file / folder
    loop: bool = False                  # file: start again at the end
    realtime: bool = True               # file: pace at the file's fps (newest wins); False: every frame, back-pressure
    width: int | None = None            # v4l2: requested capture size
    height: int | None = None
    fps: float | None = None            # v4l2: requested rate; file: pacing rate instead of the file's own
    fourcc: str | None = None           # v4l2: pixel format, e.g. MJPG for high resolutions over USB 2
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0         # no fresh frame for this long = stalled -> reconnect
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reject_black: bool = True
    black_level: int = 10               # a frame whose pixels are all <= this is "black" (not really captured)
    reject_repeated: bool | None = None  # None: yes for live sources, no for file/folder
    patterns: tuple[str, ...] = IMAGE_PATTERNS   # folder: which files are images
    existing: bool = False              # folder: also process files already there at start
    watch: bool = True                  # folder: keep watching for new files (False: finish after existing)
    settle_s: float = 0.3               # folder: a file's size must be stable this long before it is read
    poll_s: float = 0.1                 # folder: how often to look for new files

    @property
    def live(self) -> bool:
        return self.kind in LIVE_SOURCE_KINDS

    @property
    def rejects_repeated(self) -> bool:
        return self.live if self.reject_repeated is None else self.reject_repeated

    def describe(self) -> str:
        """Where the frames come from, for logs and events (no credentials from URIs)."""
        target = self.uri or self.pipeline or (str(self.path) if self.path else None) or str(self.device)
        return f"{self.kind}:{strip_credentials(target)}"

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={strip_credentials(value) if isinstance(value, str) else value!r}"
                         if f.name in ("uri", "pipeline") and value else f"{f.name}={value!r}")
        return f"SourceConfig({', '.join(parts)})"


@dataclass
class TriggerConfig:
    mode: str = "continuous"
    interval_s: float | None = None
    queue_size: int = 2


@dataclass
class PublishConfig:
    heatmap: str = "on_defect"
    jpeg_quality: int = 85


@dataclass
class CameraConfig:
    name: str
    source: SourceConfig
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    model: str = ""
    aoi: Path | None = None
    calibration: Path | None = None
    publish: PublishConfig = field(default_factory=PublishConfig)


@dataclass
class SpoolConfig:
    path: Path
    max_mb: float = 512


@dataclass
class ArchiveConfig:
    path: Path
    max_mb: float = 1024
    enabled: bool = True


@dataclass
class MetricsConfig:
    prometheus_port: int | None = None


@dataclass
class UpdatesConfig:
    """Model updates over MQTT: versions live under `dir`; with trusted_keys, only bundles signed by one of
    them are installed (ed25519 public keys, PEM)."""

    dir: Path
    trusted_keys: list[Path] = field(default_factory=list)
    calibration_dir: Path | None = None      # pushed calibrations (edge.calibration_store); None: <dir>/calibrations

    def __post_init__(self):
        if self.calibration_dir is None:
            self.calibration_dir = Path(self.dir) / "calibrations"


@dataclass
class StationConfig:
    station: str
    mqtt: MqttConfig
    models: dict[str, ModelConfig]
    cameras: list[CameraConfig]
    spool: SpoolConfig
    archive: ArchiveConfig
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source_path: Path = Path("station.yaml")
    updates: UpdatesConfig | None = None     # None: the station refuses model installs

    def camera(self, name: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(name)


_URI_CREDENTIALS = re.compile(r"://[^/@\s]+@")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def strip_credentials(text: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://***@host/... so a URI (or a pipeline holding one) can be logged."""
    return _URI_CREDENTIALS.sub("://***@", text)


def env_references(text: str) -> list[str]:
    """Names of ${VAR} references in a URI or pipeline (how camera passwords stay out of the file)."""
    return _ENV_REFERENCE.findall(text)


def expand_env(text: str) -> str:
    return _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), text)


def load_config(path: str | Path) -> StationConfig:
    """Read, validate and resolve a station config; raises ConfigError listing every mistake."""
    from edge import config_checks

    path = Path(path)
    raw = config_checks.validate_file(path)     # raises ConfigError
    return _build(raw, path.resolve())


def _build(raw: dict, source_path: Path) -> StationConfig:
    base = source_path.parent

    def resolve(value: str | None) -> Path | None:
        return None if value is None else resolve_path(value, base)

    station = raw["station"]
    mqtt_raw = dict(raw["mqtt"])
    tls_raw = mqtt_raw.pop("tls", None)
    password_env = mqtt_raw.pop("password_env", None)
    password_file = mqtt_raw.pop("password_file", None)
    password, password_source = None, None
    if password_env:
        password, password_source = os.environ[password_env], f"env:{password_env}"
    elif password_file:
        file = resolve(password_file)
        password, password_source = file.read_text(encoding="utf-8").strip(), f"file:{file}"
    tls = None
    if tls_raw is not None:
        tls = TlsConfig(ca=resolve(tls_raw.get("ca")), cert=resolve(tls_raw.get("cert")),
                        key=resolve(tls_raw.get("key")), insecure=tls_raw.get("insecure", False))
    mqtt_raw.setdefault("client_id", f"onen-{station}")
    mqtt = MqttConfig(**mqtt_raw, tls=tls, password=password, password_source=password_source)

    models = {
        name: ModelConfig(name=name, bundle=resolve(m["bundle"]), backend=m.get("backend", "auto"),
                          parallel_calls=m.get("parallel_calls"), threads_per_call=m.get("threads_per_call"))
        for name, m in raw["models"].items()
    }
    only_model = next(iter(models)) if len(models) == 1 else ""
    cameras = []
    for cam in raw["cameras"]:
        source_raw = dict(cam["source"])
        for key in ("uri", "pipeline"):
            if key in source_raw:
                source_raw[key] = expand_env(source_raw[key])
        if "path" in source_raw:
            source_raw["path"] = resolve(source_raw["path"])
        if "patterns" in source_raw:
            source_raw["patterns"] = tuple(source_raw["patterns"])
        cameras.append(CameraConfig(
            name=cam["name"],
            source=SourceConfig(**source_raw),
            trigger=TriggerConfig(**cam.get("trigger", {})),
            model=cam.get("model", only_model),
            aoi=resolve(cam.get("aoi")),
            calibration=resolve(cam.get("calibration")),
            publish=PublishConfig(**cam.get("publish", {})),
        ))
    spool_raw = raw.get("spool", {})
    archive_raw = raw.get("archive", {})
    updates_raw = raw.get("updates")
    updates = None
    if updates_raw is not None:
        updates = UpdatesConfig(dir=resolve(updates_raw["dir"]),
                                trusted_keys=[resolve(k) for k in updates_raw.get("trusted_keys", [])],
                                calibration_dir=resolve(updates_raw.get("calibration_dir")))
    return StationConfig(
        station=station,
        mqtt=mqtt,
        models=models,
        cameras=cameras,
        spool=SpoolConfig(path=resolve(spool_raw.get("path", "spool")), max_mb=spool_raw.get("max_mb", 512)),
        archive=ArchiveConfig(path=resolve(archive_raw.get("path", "archive")),
                              max_mb=archive_raw.get("max_mb", 1024), enabled=archive_raw.get("enabled", True)),
        metrics=MetricsConfig(**raw.get("metrics", {})),
        source_path=source_path,
        updates=updates,
    )


def resolve_path(value: str, base: Path) -> Path:
    """A config path: `~` expanded, relative ones taken from the config file's folder."""
    path = Path(os.path.expandvars(str(value))).expanduser()
    return path if path.is_absolute() else (base / path)
