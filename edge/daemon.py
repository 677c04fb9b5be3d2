"""The station daemon: config -> bundles -> backends -> cameras -> pipelines -> MQTT.

Everything that can fail at start (bundle hashes, backend, parity with the bundle's reference outputs,
calibration files, AOIs, camera sources) fails before the first camera opens, with a clear error.
Once running, nothing on the line stops it: a dead camera reconnects, a bad frame is counted, a broker
outage fills the spool. SIGTERM/SIGINT: stop the cameras, finish the frames in flight, flush the spool,
publish "offline", exit 0. Under systemd it sends READY=1, then WATCHDOG=1 only while the pipeline is
healthy (every camera and pipeline thread beating, no engine call stuck), so systemd restarts a hung
station.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onen.edge.archive import Archive
from onen.edge.bundle import load_bundle
from onen.edge.calibration_store import calibration_store_of
from onen.edge.errors import OnenError
from onen.edge.inference import DEFAULT_MODE, SharedEngine
from onen.edge.model_slots import ModelSlots
from onen.edge.pipeline import CameraPipeline, SideWorker
from onen.edge.postprocess import PostProcessor
from onen.edge.publisher import Publisher
from onen.edge.result import ModelInfo
from onen.edge.spool import Spool, spool_file
from onen.edge.station_commands import RECALIBRATE, StationCommands, calibration_for
from onen.edge.station_state import station_state
from onen.edge.stats import RollingStats
from onen.edge.systemd_notify import SystemdNotifier

if TYPE_CHECKING:
    from onen.edge.backends.base import Backend
    from onen.edge.bundle import Bundle
    from onen.edge.calibration_view import CameraCalibration
    from onen.edge.cameras.camera import Camera
    from onen.edge.config import CameraConfig, ModelConfig, StationConfig
    from onen.edge.metrics import MetricsServer

log = logging.getLogger(__name__)

STATE_EVENTS = ("model_swapped", "calibration_updated")  # they change the retained state (edge.station_state)
CAMERA_STATUS_EVENTS = {
    "camera_connected": "connected",
    "camera_lost": "lost",
    "camera_reconnecting": "reconnecting",
    "camera_finished": "finished",
}


@dataclass
class DaemonOptions:
    exit_when_finished: bool = False  # stop once every camera source has ended (files, tests, benchmarks)
    engine_mode: str = DEFAULT_MODE
    spool_synchronous: str = "FULL"
    flush_timeout_s: float = 10.0
    engine_stuck_s: float = 30.0  # one engine call longer than this = hung engine
    pipeline_stale_s: float = 15.0  # a pipeline loop not beating for this long = stuck
    parity_check: bool = True
    metrics_address: str = "0.0.0.0"  # where the Prometheus endpoint listens (a scraper is on another host)


class Daemon:
    def __init__(self, config: StationConfig, options: DaemonOptions | None = None) -> None:
        self.config = config
        self.options = options or DaemonOptions()
        self.run_id = uuid.uuid4().hex[:12]
        self.stats = RollingStats()
        self.notifier = SystemdNotifier()
        self.engines: dict[str, SharedEngine] = {}
        self.model_infos: dict[str, ModelInfo] = {}
        self.bundle_sources: dict[str, Path] = {}  # where each served bundle was loaded from (config or model store)
        self.commands: StationCommands | None = None
        self.slots = ModelSlots(self._open_backend)
        self.cameras: dict[str, Camera] = {}
        self.pipelines: dict[str, CameraPipeline] = {}
        self.publisher: Publisher | None = None
        self.side_worker: SideWorker | None = None
        self.metrics_server: MetricsServer | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._ready_sent = False
        self._last_status = ""
        self._early_events: list[tuple[str, dict[str, Any]]] = []

    # ---- start --------------------------------------------------------------------------------
    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        """Camera/backend events go to the events topic; camera state changes also to its status topic."""
        log.info("event %s %s", kind, detail)
        self.stats.count(f"events.{kind}")
        if self.publisher is None:  # e.g. a backend fallback while models load: sent once MQTT exists
            self._early_events.append((kind, detail))
            return
        self._publish_event(self.publisher, kind, detail)

    def _publish_event(self, publisher: Publisher, kind: str, detail: dict[str, Any]) -> None:
        try:
            publisher.publish_event(kind, detail)
            camera = detail.get("camera")
            if camera and kind in CAMERA_STATUS_EVENTS:
                publisher.publish_camera_status(camera, CAMERA_STATUS_EVENTS[kind], {"detail": detail})
            if kind in STATE_EVENTS:
                publisher.publish_state(station_state(self))
        except Exception:
            log.exception("could not publish event %s", kind)

    # --- the small public interface the station commands use --------------------------------------------
    def event(self, kind: str, detail: dict[str, Any]) -> None:
        """Announce an event on the station's events topic (and the log)."""
        self._event(kind, detail)

    def state_dir(self) -> Path:
        """Where the station keeps what it writes itself (next to the spool)."""
        return self._spool_path().parent

    def _spool_path(self) -> Path:
        return spool_file(self.config)

    def _open_backend(self, bundle: Bundle, model_cfg: ModelConfig) -> Backend:
        from onen.edge.backends.factory import create_backend
        from onen.edge.backends.onnxruntime_backend import CpuLayout

        layout = CpuLayout.choose(model_cfg.parallel_calls, model_cfg.threads_per_call)
        return create_backend(bundle, model_cfg.backend, on_event=self._event, cpu_layout=layout)

    def new_engine(self, name: str, backend: Backend) -> SharedEngine:
        """The engine every camera of model `name` shares (at start and after a model swap): it may batch one
        frame of each of those cameras into one call."""
        cameras_on_model = sum(1 for c in self.config.cameras if c.model == name)
        return SharedEngine(backend, self.options.engine_mode, max_batch=max(1, cameras_on_model))

    def _bundle_source(self, name: str, model_cfg: ModelConfig) -> Path:
        """The bundle the config names, unless a model update installed another one (kept across restarts)."""
        updates = self.config.updates
        if updates is None:
            return Path(model_cfg.bundle)
        from onen.edge.updates import ModelStore

        installed = ModelStore(updates.dir).current(name)
        if installed is None:
            return Path(model_cfg.bundle)
        if not installed.exists():
            log.error(
                "model %s: the installed version %s is missing; serving the config's bundle %s",
                name,
                installed,
                model_cfg.bundle,
            )
            self._event(
                "model_store_ignored", {"model": name, "missing": str(installed), "serving": str(model_cfg.bundle)}
            )
            return Path(model_cfg.bundle)
        if updates.trusted_keys and installed != Path(model_cfg.bundle):
            from onen.edge.updates import load_public_key, verify_bundle_signature

            try:  # the store is on disk between restarts: check it is still what a trusted key signed
                verify_bundle_signature(installed, [load_public_key(k) for k in updates.trusted_keys])
            except OnenError as error:
                log.error(
                    "model %s: the installed version %s fails its signature check (%s); serving the config's bundle %s",
                    name,
                    installed,
                    error,
                    model_cfg.bundle,
                )
                self._event(
                    "model_store_ignored",
                    {
                        "model": name,
                        "installed": str(installed),
                        "reason": str(error),
                        "serving": str(model_cfg.bundle),
                    },
                )
                return Path(model_cfg.bundle)
        log.info(
            "model %s: serving the installed version %s (not the config's %s; `onen push --rollback` goes back)",
            name,
            installed,
            model_cfg.bundle,
        )
        return installed

    def _open_models(self) -> None:
        needed = {camera.model for camera in self.config.cameras}
        for name, model_cfg in self.config.models.items():
            if name not in needed:
                continue
            source = self._bundle_source(name, model_cfg)
            opened = self.slots.open(name, load_bundle(source), model_cfg, check_parity=self.options.parity_check)
            self.engines[name] = self.new_engine(name, opened.backend)
            self.model_infos[name] = opened.info
            self.bundle_sources[name] = source

    def _calibration(self, camera_cfg: CameraConfig, bundle: Bundle) -> CameraCalibration:
        """The camera's calibration file (checked against the bundle); after a model update installed another
        model, a file made for the old one gives way to the new bundle's defaults (with an event)."""
        source_path = self.bundle_sources.get(camera_cfg.model)
        installed = source_path is not None and source_path != Path(self.config.models[camera_cfg.model].bundle)
        calibration, source = calibration_for(
            camera_cfg, bundle, tolerate_stale=installed, store=calibration_store_of(self.config)
        )
        if source == RECALIBRATE:
            self._event(
                "calibration_stale",
                {
                    "camera": camera_cfg.name,
                    "file": str(camera_cfg.calibration),
                    "using": source,
                    "model_sha256": bundle.onnx_sha256,
                },
            )
        return calibration

    def start(self) -> None:
        """Open everything (failing early and clearly), then start cameras and pipelines."""
        import cv2

        from onen.edge.cameras import open_camera

        # The daemon already runs its work on parallel threads (cameras, pipelines, engine calls); OpenCV's own
        # thread pool inside every resize/decode only adds contention for the same cores.
        cv2.setNumThreads(1)
        cfg = self.config
        self._open_models()
        postprocessors: dict[str, PostProcessor] = {}
        for camera_cfg in cfg.cameras:
            bundle = self.engines[camera_cfg.model].backend.bundle
            postprocessors[camera_cfg.name] = PostProcessor(bundle.manifest, self._calibration(camera_cfg, bundle))
        spool = Spool(self._spool_path(), cfg.spool.max_mb, self.options.spool_synchronous)
        self.publisher = Publisher(cfg.mqtt, cfg.station, spool, cpu=self.stats.cpu)
        for kind, detail in self._early_events:  # already logged and counted when they happened
            self._publish_event(self.publisher, kind, detail)
        spool.on_drop = lambda count, oldest: self._event(
            "spool_overflow",
            {"dropped": count, "oldest_id": oldest, "dropped_total": spool.dropped, "max_mb": cfg.spool.max_mb},
        )
        archive = Archive(cfg.archive.path, cfg.archive.max_mb, cfg.archive.enabled) if cfg.archive.enabled else None
        self.side_worker = SideWorker(self.publisher, archive, self.stats)
        for camera_cfg in cfg.cameras:
            camera = open_camera(camera_cfg, on_event=self._event)
            self.cameras[camera_cfg.name] = camera
            self.pipelines[camera_cfg.name] = CameraPipeline(
                camera_cfg=camera_cfg,
                camera=camera,
                engine=self.engines[camera_cfg.model],
                postprocessor=postprocessors[camera_cfg.name],
                model_info=self.model_infos[camera_cfg.model],
                station=cfg.station,
                run_id=self.run_id,
                publisher=self.publisher,
                stats=self.stats,
                side_worker=self.side_worker,
                on_event=self._event,
                fresh_frame_timeout_s=max(1.0, float(camera_cfg.source.read_timeout_s)),
            )
        if spool.depth:
            log.info("spool %s holds %d result(s) from before; they go out first", spool.path, spool.depth)
        self.publisher.start()
        for name, pipeline in self.pipelines.items():
            if pipeline.mode == "mqtt":

                def on_trigger(topic: str, payload: bytes, props: Any, p: CameraPipeline = pipeline) -> None:
                    p.trigger(payload, props)

                self.publisher.subscribe(self.publisher.topics.trigger(name), on_trigger)
        self.commands = StationCommands(self)
        self.commands.start()
        self._start_metrics()
        for name in self.pipelines:
            self.publisher.publish_camera_status(name, "starting")
            self.cameras[name].start()
            self.pipelines[name].start()
        self.publisher.publish_state(station_state(self))
        self._event(
            "daemon_started",
            {
                "run_id": self.run_id,
                "cameras": list(self.pipelines),
                "engines": {n: e.describe() for n, e in self.engines.items()},
            },
        )

    def _start_metrics(self) -> None:
        port = self.config.metrics.prometheus_port
        if port:
            from onen.edge.metrics import start_metrics_server

            self.metrics_server = start_metrics_server(int(port), self, self.options.metrics_address)

    # ---- health and stats -----------------------------------------------------------------------
    def health(self) -> tuple[bool, list[str]]:
        """Healthy = every camera thread and pipeline loop beating recently and no engine call stuck."""
        now = time.monotonic()
        problems = []
        for name, camera in self.cameras.items():
            pipeline = self.pipelines[name]
            if pipeline.finished or camera.status in ("finished", "stopped"):
                continue
            source = camera.cfg.source
            camera_limit = (
                float(source.backoff_max_s) + float(source.open_timeout_s) + float(source.read_timeout_s) + 10.0
            )
            if now - camera.heartbeat > camera_limit:
                problems.append(f"camera {name} thread silent for {now - camera.heartbeat:.0f} s")
            if (
                not pipeline.alive
                or now - pipeline.heartbeat > self.options.pipeline_stale_s + self.options.engine_stuck_s
            ):
                problems.append(f"pipeline {name} stuck for {now - pipeline.heartbeat:.0f} s")
        for name, engine in self.engines.items():
            if engine.stuck(self.options.engine_stuck_s):
                problems.append(f"engine {name} call running > {self.options.engine_stuck_s:.0f} s")
        if self.publisher is not None and now - self.publisher.sender_heartbeat > self.options.pipeline_stale_s:
            problems.append("publisher sender stuck")
        return not problems, problems

    def stats_message(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        cameras = {
            name: {
                "status": camera.status,
                "dropped": camera.dropped,
                "queue_depth": camera.queue_depth,
                "inspected": self.pipelines[name].inspected,
                "failed": self.pipelines[name].failed,
                "rejected": getattr(camera, "rejected", {}),
            }
            for name, camera in self.cameras.items()
        }
        healthy, problems = self.health()
        return {
            "station": self.config.station,
            "run_id": self.run_id,
            "at": time.time(),
            "uptime_s": snapshot["uptime_s"],
            "fps": snapshot["fps"],
            "latency_ms": snapshot["latency_ms"],
            "cpu_ms_per_frame": snapshot["cpu_ms_per_frame"],
            "dropped_frames": sum(c["dropped"] for c in cameras.values()),
            "queue_depth": sum(c["queue_depth"] for c in cameras.values()),
            "spool_depth": self.publisher.spool.depth if self.publisher else 0,
            "spool_dropped": self.publisher.spool.dropped if self.publisher else 0,
            "engine": {name: engine.describe() for name, engine in self.engines.items()},
            "cameras": cameras,
            "counters": snapshot["counters"],
            "healthy": healthy,
            "problems": problems,
            "mqtt": self.publisher.link.describe() if self.publisher else None,
        }

    # ---- run / stop -------------------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def all_finished(self) -> bool:
        return bool(self.pipelines) and all(p.finished or not p.alive for p in self.pipelines.values())

    def run(self) -> int:
        """Supervise until asked to stop (or, with exit_when_finished, until every source ended)."""
        stats_every = self.config.mqtt.stats_interval_s
        watchdog_every = self.notifier.watchdog_interval_s or 5.0
        next_stats = time.monotonic() + stats_every
        next_watchdog = time.monotonic()
        publisher = self.publisher
        assert publisher is not None, "start() first"
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_watchdog:
                    next_watchdog = now + watchdog_every
                    self._report_health()
                if now >= next_stats:
                    next_stats = now + stats_every
                    publisher.publish_stats(self.stats_message())
                if self.options.exit_when_finished and self.all_finished():
                    log.info("every camera source has ended; stopping")
                    break
                self._stop.wait(min(0.2, watchdog_every))
        finally:
            self.shutdown()
        return 0

    def _report_health(self) -> None:
        healthy, problems = self.health()
        if healthy:
            # A broker outage is not a reason to withhold the ping (results wait in the spool), but it is said.
            status = f"inspecting {len(self.pipelines)} camera(s); " + (
                self.publisher.link.summary() if self.publisher else "no broker"
            )
            if not self._ready_sent:
                self._ready_sent = True
                self.notifier.ready(status)
            elif status != self._last_status:
                self.notifier.status(status)
            self._last_status = status
            self.notifier.watchdog()
        else:
            log.error("pipeline unhealthy, withholding the systemd watchdog ping: %s", "; ".join(problems))
            self.notifier.status("unhealthy: " + "; ".join(problems))

    def shutdown(self) -> bool:
        """Stop cameras, finish in-flight frames, flush the spool, publish offline. True if all results went out."""
        if self._stopped:
            return True
        self._stopped = True
        self.notifier.stopping()
        self._event("daemon_stopping", {"run_id": self.run_id})
        if self.commands is not None:
            self.commands.stop()
        for pipeline in self.pipelines.values():
            pipeline.request_stop()
        for camera in self.cameras.values():
            camera.stop()
        for name, pipeline in self.pipelines.items():
            if not pipeline.join(timeout=30):
                log.error("pipeline %s did not finish its frame in 30 s", name)
        if self.side_worker is not None:
            self.side_worker.stop()
        flushed = True
        if self.publisher is not None:
            for name, camera in self.cameras.items():
                self.publisher.publish_camera_status(name, camera.status)
            self.publisher.publish_stats(self.stats_message())
            flushed = self.publisher.stop(self.options.flush_timeout_s)
            if not flushed:
                log.warning(
                    "%d result(s) stay in the spool %s; they go out at the next start",
                    self.publisher.spool.depth,
                    self._spool_path(),
                )
        for engine in self.engines.values():
            engine.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        return flushed


def run_station(config: StationConfig, options: DaemonOptions | None = None) -> int:
    """`onen run`: start, supervise until SIGTERM/SIGINT, stop cleanly, exit 0."""
    daemon = Daemon(config, options)
    daemon.install_signal_handlers()
    daemon.start()
    return daemon.run()
