"""What a running station does when the maintenance team sends it a new calibration, model or rollback.

Topics (DESIGN.md `{prefix}/{station}/cmd/#`):
- `cmd/{camera}/calibration`: a calibration YAML (+ AOI) from `onen push-calibration` (kept as a new version
  in edge.calibration_store), or a rollback to the camera's previous calibration;
- `cmd/model/install`: a bundle (.tar bytes, or a path on the station) from `onen push`;
- `cmd/model/rollback`: back to the model served before the last install.
Commands run one at a time on their own thread, so MQTT's network loop (which also carries the
acknowledgements of results) never waits for a model to load and two updates never interleave.
Everything is checked before anything changes: a calibration by the bundle sha256 it was made for, a
model by its sha256s, its signature (when the station trusts keys) and the parity of the freshly
loaded engine with the bundle's reference outputs. Only then the cameras swap, between frames (see
CameraPipeline.swap): no frame is lost or inspected half with the old and half with the new. Every
command is answered on the events topic (`calibration_updated` / `calibration_rejected`,
`model_swapped` / `model_update_rejected`) with the reason; a refused update changes nothing.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from onen.edge.bundle import MODEL, Bundle, load_bundle
from onen.edge.calibration_file import from_bundle_defaults, load_calibration, read_calibration_message
from onen.edge.calibration_store import CalibrationStore, calibration_store_of
from onen.edge.calibration_view import CalibrationError, CameraCalibration
from onen.edge.command_message import request_id_of
from onen.edge.errors import OnenError
from onen.edge.postprocess import PostProcessor
from onen.edge.rectify import Rectification
from onen.edge.updates import (
    ModelStore,
    UpdateError,
    drop_unsigned_engines,
    load_public_key,
    parse_install_message,
    parse_rollback_message,
    unpack_into,
    verify_bundle_signature,
)

if TYPE_CHECKING:
    from onen.edge.config import CameraConfig
    from onen.edge.daemon import Daemon

log = logging.getLogger(__name__)

RECALIBRATE = "bundle defaults (the camera's calibration file was made for another model: recalibrate)"


# --- calibrations when the model changes ------------------------------------------------------------------
def _made_for_sha(path: Path) -> str | None:
    try:
        data = yaml.safe_load(Path(path).read_text())
        return str(data["bundle"]["model_sha256"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def _geometry(path: Path | None, current: CameraCalibration | None) -> tuple[Path | None, Rectification | None]:
    """AOI and rectification belong to the camera, not to a model: keep them when the thresholds cannot be."""
    if current is not None:
        return current.aoi, current.rectification
    if path is None:
        return None, None
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        aoi = data.get("aoi")
        aoi = None if not aoi else (Path(aoi) if Path(aoi).is_absolute() else Path(path).parent / aoi)
        rect = Rectification.from_dict(data["rectification"]) if data.get("rectification") else None
        return aoi, rect
    except (OSError, yaml.YAMLError, OnenError, AttributeError, TypeError):
        return None, None


def with_config_aoi(calibration: CameraCalibration, camera_cfg: CameraConfig) -> CameraCalibration:
    """The station config's AOI for the camera wins over the one a calibration file names."""
    if camera_cfg.aoi is not None:
        calibration.aoi = Path(camera_cfg.aoi)
        calibration.load_aoi()
    return calibration


def calibration_for(
    camera_cfg: CameraConfig,
    bundle: Bundle,
    current: CameraCalibration | None = None,
    tolerate_stale: bool = False,
    store: CalibrationStore | None = None,
) -> tuple[CameraCalibration, str]:
    """The camera's calibration for `bundle`, and where it came from.

    The store's version last current for this bundle's model, else the file the config names when made for
    this model (the station config's AOI wins over either's AOI). A file made for another model is an error at
    a normal start; after a model install (`tolerate_stale`) the camera runs on the new bundle's default
    thresholds with its AOI and rectification, and the event says to recalibrate."""
    version = store.for_model(camera_cfg.name, bundle.onnx_sha256) if store is not None else None
    if store is not None and version is not None:
        return with_config_aoi(store.load(version, bundle), camera_cfg), str(version)
    path = camera_cfg.calibration
    if path is not None:
        try:
            return with_config_aoi(load_calibration(path, bundle), camera_cfg), str(path)
        except CalibrationError:
            made_for = _made_for_sha(path)
            if not tolerate_stale or made_for is None or made_for == bundle.onnx_sha256:
                raise
    elif current is None or not tolerate_stale:
        return from_bundle_defaults(bundle, camera=camera_cfg.name, aoi=camera_cfg.aoi), "bundle defaults"
    aoi, rectification = _geometry(path, current)
    calibration = from_bundle_defaults(
        bundle, camera=camera_cfg.name, aoi=camera_cfg.aoi or aoi, rectification=rectification
    )
    return calibration, (RECALIBRATE if path is not None else "bundle defaults")


# --- the command worker -------------------------------------------------------------------------------------
class StationCommands:
    """Subscribes to the station's command topics and handles them in order on one worker thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.store = ModelStore(daemon.config.updates.dir) if daemon.config.updates is not None else None
        self.calibrations = calibration_store_of(daemon.config)
        self.swaps: list[dict[str, Any]] = []  # figures of every model swap (for benchmarks and tests)
        self._queue: queue.Queue[tuple[Callable[..., bool], tuple[Any, ...]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="onen-station-commands", daemon=True)

    @property
    def event(self) -> Callable[[str, dict[str, Any]], None]:
        return self.daemon.event

    def start(self) -> None:
        publisher = self.daemon.publisher
        assert publisher is not None, "the daemon starts its commands once its publisher exists"
        topics = publisher.topics
        for camera in self.daemon.pipelines:

            def on_calibration(topic: str, payload: bytes, props: Any, c: str = camera) -> None:
                self._queue.put((self.apply_calibration, (c, payload)))

            publisher.subscribe(topics.calibration(camera), on_calibration)
        publisher.subscribe(
            topics.model_install, lambda topic, payload, props: self._queue.put((self.install_model, (payload,)))
        )
        publisher.subscribe(
            topics.model_rollback, lambda topic, payload, props: self._queue.put((self.rollback_model, (payload,)))
        )
        if self.store is not None:
            for path in self.store.clean_interrupted():
                log.warning("removed %s, left by an interrupted model install", path)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Let a command being applied finish (a half-swapped station is worse than a late stop)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handler, args = item
            try:
                handler(*args)
            except Exception as error:  # whatever a message holds, it gets an answer and the worker lives on
                self._answer_unexpected(handler, args, error)

    def _answer_unexpected(self, handler: Callable[..., bool], args: tuple[Any, ...], error: Exception) -> None:
        """The answer to a command its handler did not foresee (one log line, no traceback: the message is the
        sender's fault far more often than the station's)."""
        reason = f"the station could not read this command ({type(error).__name__}: {str(error)[:300]})"
        log.error("station command %s refused: %s", handler.__name__, reason)
        if handler == self.apply_calibration:
            self.event("calibration_rejected", {"camera": args[0], "reason": reason})
        else:
            action = "install" if handler == self.install_model else "rollback"
            self.event(
                "model_update_rejected", {"action": action, "request_id": request_id_of(args[0]), "reason": reason}
            )

    # ---- calibration -------------------------------------------------------------------------------
    def _seed(self, camera: str) -> None:
        """The engineer's file becomes the store's first version (read, never written), so a rollback can
        come back to it; a seed that cannot be read is logged and the command goes on without it."""
        path = self.daemon.config.camera(camera).calibration
        try:
            if self.calibrations.seed(camera, path) is not None:
                log.info(
                    "camera %s: calibration store %s seeded with %s", camera, self.calibrations.folder(camera), path
                )
        except (OnenError, OSError, ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as error:
            log.warning(
                "camera %s: %s not kept in the calibration store (%s: %s)", camera, path, type(error).__name__, error
            )

    def apply_calibration(self, camera: str, payload: bytes) -> bool:
        """A pushed calibration becomes a new version in the store (or a rollback moves to the previous one);
        the engineer's file the config names is only read, as the first version."""
        started = time.monotonic()
        pipeline = self.daemon.pipelines[camera]
        camera_cfg = self.daemon.config.camera(camera)
        serving = pipeline.serving
        bundle = serving.engine.backend.bundle
        try:
            message = read_calibration_message(payload, camera)
            self._seed(camera)
            if message is None:
                version = self.calibrations.rollback(camera, bundle.onnx_sha256)
            else:
                version = self.calibrations.add(camera, message[0], message[1], bundle)
                self.calibrations.make_current(camera, version, "push")
            calibration = with_config_aoi(self.calibrations.load(version, bundle), camera_cfg)
        except OnenError as error:
            self.event("calibration_rejected", {"camera": camera, "reason": str(error)})
            return False
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError, yaml.YAMLError) as error:
            self.event(
                "calibration_rejected",
                {"camera": camera, "reason": f"malformed calibration message ({type(error).__name__}: {error})"},
            )
            return False
        except OSError as error:
            self.event(
                "calibration_rejected",
                {
                    "camera": camera,
                    "reason": f"cannot write the calibration store {self.calibrations.root}: {error} "
                    "(the station's service user must be allowed to write there)",
                },
            )
            return False
        old = serving.post.calibration
        pipeline.swap(postprocessor=PostProcessor(bundle.manifest, calibration))
        detail = {
            "camera": camera,
            "action": "rollback" if message is None else "push",
            "version": version.name,
            "file": str(version / "calibration.yaml"),
            "apply_ms": round((time.monotonic() - started) * 1000, 1),
            "image_threshold": calibration.image_threshold,
            "pixel_threshold": calibration.pixel_threshold,
            "min_region_area": calibration.min_region_area,
            "previous_image_threshold": getattr(old, "image_threshold", None),
            "aoi": str(calibration.aoi) if calibration.aoi else None,
            "model_sha256": bundle.onnx_sha256,
        }
        self.event("calibration_updated", detail)
        return True

    # ---- models ------------------------------------------------------------------------------------
    def _model_name(self, requested: str | None) -> str:
        used = sorted({c.model for c in self.daemon.config.cameras})
        if requested is None:
            if len(used) != 1:
                raise UpdateError(
                    f"the station serves several models ({', '.join(used)}); name one (onen push --model NAME)"
                )
            return used[0]
        if requested not in self.daemon.config.models:
            raise UpdateError(
                f"the station has no model {requested!r} (models: {', '.join(self.daemon.config.models)})"
            )
        if requested not in used:
            raise UpdateError(f"no camera of the station uses model {requested!r}")
        return requested

    def _reject(self, kind_detail: dict[str, Any], reason: str) -> bool:
        log.warning("model update refused: %s", reason)
        self.event("model_update_rejected", {**kind_detail, "reason": reason})
        return False

    def install_model(self, payload: bytes) -> bool:
        started = time.monotonic()
        detail: dict[str, Any] = {"action": "install", "request_id": None}
        staging: Path | None = None
        version: Path | None = None
        store = self.store
        try:
            request = parse_install_message(payload)  # the one decode of a payload that may hold a bundle
            detail["request_id"] = request.request_id or None
            detail["model"] = name = self._model_name(request.model)
            updates = self.daemon.config.updates
            if store is None or updates is None:
                raise UpdateError(
                    "this station takes no model updates: its config has no 'updates' section (updates: {dir: ..., "
                    "trusted_keys: [...]})"
                )
            trusted = [load_public_key(p) for p in updates.trusted_keys]
            store.clean_interrupted()
            staging = store.staging(name)
            root = unpack_into(staging, request.tar_bytes, request.path, trusted=trusted)  # checked before written
            bundle = load_bundle(root)  # every file's sha256
            if trusted:
                detail["signed_by"] = verify_bundle_signature(bundle, trusted)
                if drop_unsigned_engines(root):
                    detail["engines_dropped"] = "engines/ is not covered by the signature; the station builds its own"
            if bundle.onnx_sha256 == self.daemon.engines[name].backend.bundle.onnx_sha256:
                raise UpdateError(f"model {name!r} already serves this {MODEL} (sha256 {bundle.onnx_sha256[:12]}...)")
            version = store.add(name, root, bundle)
            bundle = Bundle(path=version, manifest=bundle.manifest)
            return self._swap(
                name,
                bundle,
                detail,
                started,
                promote=lambda serving_path: store.promote(name, version, serving_path),
            )
        except (OnenError, OSError, ValueError) as error:
            if store is not None and version is not None:
                store.discard(version)
            if detail["request_id"] is None:  # unreadable message: still answer its sender if we can
                detail["request_id"] = request_id_of(payload)
            return self._reject(detail, f"{error}")
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def rollback_model(self, payload: bytes) -> bool:
        started = time.monotonic()
        detail: dict[str, Any] = {"action": "rollback", "request_id": request_id_of(payload)}
        try:
            requested, _ = parse_rollback_message(payload)
            detail["model"] = name = self._model_name(requested)
            store = self.store
            if store is None:
                raise UpdateError("this station takes no model updates: its config has no 'updates' section")
            previous = store.previous(name)
            if previous is None:
                raise UpdateError(f"model {name!r}: no previous version to roll back to")
            bundle = load_bundle(previous)
            return self._swap(
                name, bundle, detail, started, promote=lambda serving_path: store.rollback(name), source=previous
            )
        except (OnenError, OSError, ValueError) as error:
            return self._reject(detail, f"{error}")

    def _swap(
        self,
        name: str,
        bundle: Bundle,
        detail: dict[str, Any],
        started: float,
        promote: Callable[[Path], None],
        source: Path | None = None,
    ) -> bool:
        """Load and check the new engine, prepare every camera's calibration, then swap between frames."""
        daemon = self.daemon
        old_engine = daemon.engines[name]
        old_info = daemon.model_infos[name]
        model_cfg = daemon.config.models[name]
        opened = daemon.slots.open(name, bundle, model_cfg)
        backend, info = opened.backend, opened.info
        detail["parity"] = opened.parity
        try:
            pipelines = {cam: p for cam, p in daemon.pipelines.items() if daemon.config.camera(cam).model == name}
            calibrations, sources = {}, {}
            for camera, pipeline in pipelines.items():
                self._seed(camera)
                current = pipeline.post.calibration  # a CameraCalibration (the daemon's and every command's)
                calibrations[camera], sources[camera] = calibration_for(
                    daemon.config.camera(camera),
                    bundle,
                    current if isinstance(current, CameraCalibration) else None,
                    tolerate_stale=True,
                    store=self.calibrations,
                )
            promote(daemon.bundle_sources[name])
            for camera, calibration_source in sources.items():
                if Path(calibration_source).parent == self.calibrations.folder(camera):  # a version of the store
                    self.calibrations.make_current(camera, Path(calibration_source), f"model {detail['action']}")
        except BaseException:
            backend.close()
            raise
        engine = daemon.new_engine(name, backend)
        swap_started = time.monotonic()
        daemon.engines[name], daemon.model_infos[name] = engine, info
        daemon.bundle_sources[name] = source or bundle.path
        for camera, pipeline in pipelines.items():
            pipeline.swap(
                engine=engine, postprocessor=PostProcessor(bundle.manifest, calibrations[camera]), model_info=info
            )
        swap_ms = (time.monotonic() - swap_started) * 1000
        figures = {"prepare_ms": round((swap_started - started) * 1000, 1), "swap_ms": round(swap_ms, 3)}
        detail.update(
            {
                "old": {"name": old_info.name, "version": old_info.version, "sha256": old_info.sha256},
                "new": {
                    "name": info.name,
                    "version": info.version,
                    "sha256": info.sha256,
                    "path": str(bundle.path),
                    "backend": info.backend,
                },
                "cameras": {camera: {"calibration": sources[camera]} for camera in pipelines},
                **figures,
            }
        )
        stale = [camera for camera, source in sources.items() if source == RECALIBRATE]
        if stale:
            detail["recalibrate"] = stale
        self.event("model_swapped", detail)
        drained = old_engine.close_when_idle(timeout_s=30.0)
        self.swaps.append({**figures, "old_engine_drained": drained, "model": name, "action": detail["action"]})
        log.info(
            "model %s: %s %s -> %s %s (%s)",
            name,
            old_info.version,
            old_info.sha256[:12],
            info.version,
            info.sha256[:12],
            detail["action"],
        )
        return True
