"""The station config as typed models: the one place where every key, type, range and default is written.

`StationConfig.model_validate(raw, context={"base": folder})` checks a parsed YAML document and resolves
relative paths against the config file's folder. The shipped JSON Schema is generated from these models
(`python -m onen.edge.config_schema`); `edge.config_checks` turns validation errors into line-numbered issues and
adds the checks a schema cannot express (files on disk, references between sections, secrets).
Passwords are private attributes: never in `repr`, `str`, the schema or a dump.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

LIVE_SOURCE_KINDS = ("v4l2", "rtsp", "http", "gstreamer")
IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

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


def resolve_path(value: str, base: Path) -> Path:
    """A config path: `~` expanded, relative ones taken from the config file's folder."""
    path = Path(os.path.expandvars(str(value))).expanduser()
    return path if path.is_absolute() else (base / path)


def _config_path(value: Any, info: ValidationInfo) -> Any:
    """A non-empty string in the YAML becomes a Path resolved against the config file's folder."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("path_type", "a path (a string)")
    if not value:
        raise PydanticCustomError("path_empty", "a non-empty path")
    base = (info.context or {}).get("base", Path.cwd())
    return resolve_path(value, Path(base))


ConfigPath = Annotated[Path, BeforeValidator(_config_path), Field(json_schema_extra={"type": "string", "minLength": 1})]
Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
Number = Annotated[float, Field(strict=True)]
Seconds = Annotated[float, Field(strict=True, gt=0, le=600)]


class Section(BaseModel):
    """Every section refuses unknown keys and is checked strictly (no 'true' -> 1, no '8' -> 8)."""

    model_config = ConfigDict(extra="forbid")


# -- mqtt ----------------------------------------------------------------------------------------------------
class TlsConfig(Section):
    ca: ConfigPath | None = None
    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    insecure: StrictBool = Field(False, description="skip hostname verification (test benches only)")


class MqttConfig(Section):
    host: StrictStr = Field(min_length=1, description="the broker's host name or address")
    port: StrictInt = Field(1883, ge=1, le=65535)
    client_id: StrictStr | None = Field(None, min_length=1, max_length=128, description="default: onen-<station>")
    prefix: StrictStr = Field(
        "onen",
        pattern=r"^[^/+#\s]+(/[^/+#\s]+)*$",
        description="a topic prefix without wildcards ('+', '#'), spaces, or leading/trailing '/'",
    )
    qos: Literal[0, 1, 2] = 1
    keepalive_s: StrictInt = Field(30, ge=5, le=65535)
    stats_interval_s: Number = Field(10.0, gt=0)
    tls: TlsConfig | None = None
    username: StrictStr | None = Field(None, min_length=1)
    password_env: StrictStr | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the NAME of an environment variable holding the password (letters, digits, '_')",
    )
    password_file: ConfigPath | None = Field(
        None, description="a file holding the password, readable only by the service user"
    )
    _password: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _password_in_code(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> MqttConfig:
        """Code (tests, tools) may hand over a password directly; a config file never can (no context)."""
        password = None
        if info.context is None and isinstance(data, dict) and "password" in data:
            data = dict(data)
            password = data.pop("password")
        model: MqttConfig = handler(data)
        if password is not None:
            model._password = password
        return model

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def password_source(self) -> str | None:
        """'env:NAME' or 'file:/path', for messages (never the password)."""
        if self.password_env:
            return f"env:{self.password_env}"
        return f"file:{self.password_file}" if self.password_file else None

    def model_post_init(self, context: Any) -> None:
        self._password = self._password or read_secret(self.password_env, self.password_file)


def read_secret(env: str | None, file: Path | None) -> str | None:
    """A secret from an environment variable or a file (missing ones are reported by the config checks)."""
    if env:
        return os.environ.get(env) or None
    if file is not None and file.is_file():
        try:
            return file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None
    return None


# -- models --------------------------------------------------------------------------------------------------
BackendKind = Literal["auto", "onnxruntime", "tensorrt", "openvino"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)


class ModelConfig(Section):
    bundle: ConfigPath = Field(description="the path of a model bundle directory (or .tar)")
    backend: BackendKind = Field(
        "auto",
        description="auto: TensorRT where it runs, else ONNX Runtime, or OpenVINO where the [openvino] extra is "
        "installed and it runs the bundle's reference images measurably faster on this CPU (timed once, cached "
        "in the bundle's engines folder, announced as a backend_selected event); openvino: OpenVINO on the CPU "
        "(bf16 where the CPU has it, checked against the bundle's references); needs the [openvino] extra",
    )
    parallel_calls: StrictInt | None = Field(
        None,
        ge=1,
        le=16,
        description="ONNX Runtime or OpenVINO on CPU: engine calls running at once on different frames "
        "(default 2 on 2+ cores; 1 = one call on all cores, lowest latency per triggered frame)",
    )
    threads_per_call: StrictInt | None = Field(
        None,
        ge=1,
        le=256,
        description="ONNX Runtime or OpenVINO on CPU: threads of one engine call (default: cores / parallel_calls)",
    )
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name


# -- camera sources: one model per kind, chosen by `kind` ----------------------------------------------------
class SourceBase(Section):
    open_timeout_s: Seconds = 10.0
    read_timeout_s: Seconds = Field(5.0, description="no fresh frame for this long = stalled -> reconnect")
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Number = Field(30.0, gt=0, le=3600)
    reject_black: StrictBool = True
    black_level: StrictInt = Field(
        10, ge=0, le=254, description="a frame whose pixels are all <= this is 'black' (not really captured)"
    )
    reject_repeated: StrictBool | None = Field(None, description="default: yes for live sources, no for file/folder")
    color: Literal["rgb", "mono"] = Field(
        "rgb",
        description="mono: a monochrome camera; its frames are resized in one channel (the same pixels, a third of "
        "the work) and a frame that is not grey is resized in colour and counted",
    )
    if TYPE_CHECKING:
        kind: str  # each kind's model declares it as a Literal (the union's discriminator)

    @property
    def live(self) -> bool:
        return self.kind in LIVE_SOURCE_KINDS

    @property
    def rejects_repeated(self) -> bool:
        return self.live if self.reject_repeated is None else self.reject_repeated

    def describe(self) -> str:
        """Where the frames come from, for logs and events (no credentials from URIs)."""
        target = next(str(getattr(self, key)) for key in ("uri", "pipeline", "path", "device") if hasattr(self, key))
        return f"{self.kind}:{strip_credentials(target)}"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield key, (strip_credentials(value) if key in ("uri", "pipeline") and isinstance(value, str) else value)


def _expanded(value: Any) -> Any:
    return expand_env(value) if isinstance(value, str) else value


class V4l2Source(SourceBase):
    kind: Literal["v4l2"]
    device: Annotated[StrictInt, Field(ge=0)] | Annotated[StrictStr, Field(min_length=1)] = Field(
        description="a device index (0) or path (/dev/video0)"
    )
    width: StrictInt | None = Field(None, ge=1, le=32768, description="requested capture size")
    height: StrictInt | None = Field(None, ge=1, le=32768)
    fps: Number | None = Field(None, gt=0, le=1000, description="requested rate")
    fourcc: StrictStr | None = Field(None, pattern=r"^.{4}$", description="a four-character code such as MJPG or YUYV")


class RtspSource(SourceBase):
    kind: Literal["rtsp"]
    uri: StrictStr = Field(min_length=1, description="rtsp://host:554/stream; ${VAR} is replaced from the environment")

    _expand = field_validator("uri", mode="after")(staticmethod(_expanded))


class HttpSource(SourceBase):
    kind: Literal["http"]
    uri: StrictStr = Field(
        min_length=1, description="http://host:port/stream.mjpg; ${VAR} is replaced from the environment"
    )

    _expand = field_validator("uri", mode="after")(staticmethod(_expanded))


class GstreamerSource(SourceBase):
    kind: Literal["gstreamer"]
    pipeline: StrictStr = Field(min_length=1, description="a pipeline string ending in appsink")

    _expand = field_validator("pipeline", mode="after")(staticmethod(_expanded))


class FileSource(SourceBase):
    kind: Literal["file"]
    path: ConfigPath = Field(description="a video file")
    loop: StrictBool = Field(False, description="start again at the end")
    realtime: StrictBool = Field(
        True, description="pace at the file's fps (newest wins); false: every frame, back-pressure"
    )
    fps: Number | None = Field(None, gt=0, le=1000, description="pacing rate instead of the file's own")


class FolderSource(SourceBase):
    kind: Literal["folder"]
    path: ConfigPath = Field(description="a folder of images")
    patterns: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = Field(
        IMAGE_PATTERNS, min_length=1, description="which files are images"
    )
    existing: StrictBool = Field(False, description="also process files already there at start")
    watch: StrictBool = Field(True, description="keep watching for new files (false: finish after existing)")
    settle_s: Number = Field(0.3, ge=0, le=600, description="a file's size must be stable this long before it is read")
    poll_s: Number = Field(0.1, gt=0, le=60, description="how often to look for new files")

    @field_validator("patterns", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


SourceConfig: TypeAlias = V4l2Source | RtspSource | HttpSource | GstreamerSource | FileSource | FolderSource
AnySource = Annotated[SourceConfig, Field(discriminator="kind")]
SOURCE_MODELS: dict[str, type[SourceBase]] = {
    get_args(m.model_fields["kind"].annotation)[0]: m
    for m in (V4l2Source, RtspSource, HttpSource, GstreamerSource, FileSource, FolderSource)
}
SOURCE_KINDS = tuple(SOURCE_MODELS)
_SOURCE_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(AnySource)


# -- cameras -------------------------------------------------------------------------------------------------
class TriggerConfig(Section):
    mode: Literal["continuous", "mqtt", "interval"] = "continuous"
    interval_s: Number | None = Field(None, gt=0, description="mode interval: seconds between inspections")
    queue_size: StrictInt = Field(2, ge=1, le=10000)


class PublishConfig(Section):
    heatmap: Literal["always", "on_defect", "never"] = "on_defect"
    jpeg_quality: StrictInt = Field(85, ge=1, le=100)


class CameraConfig(Section):
    source: AnySource
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    model: StrictStr = Field("", min_length=1, description="a name under models (may be left out when there is one)")
    aoi: ConfigPath | None = Field(None, description="AOI mask image (white = inspected), of the camera's resolution")
    calibration: ConfigPath | None = None
    publish: PublishConfig = Field(default_factory=PublishConfig)
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @classmethod
    def named(cls, name: str, **fields: Any) -> CameraConfig:
        """A camera built in code (the station file names cameras by their key)."""
        camera = cls(**fields)
        camera._name = name
        return camera


def source_config(**fields: Any) -> SourceConfig:
    """A camera source built in code: the model of its `kind`, validated like one from a file."""
    return _SOURCE_ADAPTER.validate_python(fields)


# -- station-side storage ------------------------------------------------------------------------------------
class SpoolConfig(Section):
    path: ConfigPath = Field("spool", validate_default=True)
    max_mb: Number = Field(512, gt=0)


class ArchiveConfig(Section):
    path: ConfigPath = Field("archive", validate_default=True)
    max_mb: Number = Field(1024, gt=0)
    enabled: StrictBool = True


class MetricsConfig(Section):
    prometheus_port: StrictInt | None = Field(None, ge=1, le=65535)


class UpdatesConfig(Section):
    """Model updates pushed to the running station (`onen push`): where versions are kept, whose signatures are
    trusted (ed25519 public keys, PEM). Without this section the station refuses model installs."""

    dir: ConfigPath = Field(description="the folder where pushed model versions are kept, e.g. /var/lib/onen/models")
    trusted_keys: list[ConfigPath] = Field(default_factory=list)
    calibration_dir: ConfigPath | None = Field(
        None, description="where pushed calibrations are kept (default: <dir>/calibrations)"
    )

    @model_validator(mode="after")
    def _default_calibration_dir(self) -> UpdatesConfig:
        if self.calibration_dir is None:
            self.calibration_dir = self.dir / "calibrations"
        return self


class ReviewConfig(Section):
    """The review web page: where it listens, who may use it, how many verdicts it keeps."""

    listen: StrictStr = Field(
        "127.0.0.1:8765",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$",
        description="host:port to listen on, e.g. 127.0.0.1:8765 ([::1]:8765 for IPv6)",
    )
    token_env: StrictStr | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the NAME of an environment variable holding the access token",
    )
    token_file: ConfigPath | None = Field(None, description="a file holding the access token")
    history: StrictInt = Field(500, ge=1, le=1_000_000, description="verdicts kept for the page")
    _token: str | None = PrivateAttr(None)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def model_post_init(self, context: Any) -> None:
        self._token = read_secret(self.token_env, self.token_file)


_NAMES_ONLY: JsonDict = {"additionalProperties": False}  # keys that do not match the name pattern are refused


# -- the station ---------------------------------------------------------------------------------------------
class StationConfig(Section):
    """One YAML file per inspection station: MQTT broker, models, cameras, spool, archive, metrics, updates,
    review. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", title="onen station config")

    station: Name = Field(
        description="a station id of letters, digits, '_', '-', '.' (it becomes part of MQTT "
        "topics; no '/', '+', '#' or spaces)"
    )
    mqtt: MqttConfig
    models: dict[Name, ModelConfig] = Field(
        min_length=1, description="name -> {bundle: path/to/bundle}", json_schema_extra=_NAMES_ONLY
    )
    camera_map: dict[Name, CameraConfig] = Field(
        alias="cameras",
        min_length=1,
        description="camera name -> {source: ..., model: ...}",
        json_schema_extra=_NAMES_ONLY,
    )
    spool: SpoolConfig = Field(default_factory=dict, validate_default=True)  # validated: paths follow the file
    archive: ArchiveConfig = Field(default_factory=dict, validate_default=True)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    updates: UpdatesConfig | None = None
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    _source_path: Path = PrivateAttr(Path("station.yaml"))

    @field_validator("spool", "archive", mode="before")
    @classmethod
    def _section_defaults(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _fill_names(self) -> StationConfig:
        for name, model in self.models.items():
            model._name = name
        only_model = next(iter(self.models)) if len(self.models) == 1 else ""
        for name, camera in self.camera_map.items():
            camera._name = name
            if not camera.model:
                camera.model = only_model
        if self.mqtt.client_id is None:
            self.mqtt.client_id = f"onen-{self.station}"
        return self

    @property
    def cameras(self) -> list[CameraConfig]:
        """The cameras in the order the file lists them (each knows its `name`)."""
        return list(self.camera_map.values())

    def camera(self, name: str) -> CameraConfig:
        return self.camera_map[name]

    @property
    def source_path(self) -> Path:
        return self._source_path
