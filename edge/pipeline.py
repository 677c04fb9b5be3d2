"""One camera's loop: wait for a trigger, take a frame, ONE engine call, post-process, publish.

In continuous mode up to `max_in_flight` frames are in flight (by default one more than the calls the
engine runs at once): while the engine runs frame N (and N+1 when it runs two calls at once), the
camera thread's loop post-processes N-1 and pre-processes the next, so the engine never waits for
Python. Results still go out in frame order, and a frame counts as inspected only once its result is
on disk (the spool), so a kill -9 loses nothing counted; the thread waits for a result's commit only
when it hands over the next one (or runs idle), so the fsync overlaps with the next frame's work.

Triggers: `continuous` (the camera's newest frame, dropped frames counted by the camera), `mqtt`
(a message on {prefix}/{station}/cmd/{camera}/trigger grabs a frame captured *after* the message
and publishes with the trigger's correlation id), `interval` (a fresh frame every interval_s).
A frame that fails (corrupt image, a backend error) is counted and reported as an event; it never
ends the loop. Heavy side work (overlay JPEG, defect archive) runs on a separate worker so it does not
slow the line down.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from onen.edge.archive import Archive
from onen.edge.backends.base import ModelOutputs
from onen.edge.cameras.frame import Frame
from onen.edge.images import as_rgb, grey_plane
from onen.edge.inference import SharedEngine
from onen.edge.overlay import encode_jpeg, inspection_label, render_overlay
from onen.edge.postprocess import Inspection, PostProcessor
from onen.edge.preprocess import PreProcessor
from onen.edge.result import ModelInfo, build_result, encode
from onen.edge.stats import RollingStats

if TYPE_CHECKING:
    from onen.edge.cameras.camera import Camera
    from onen.edge.config import CameraConfig
    from onen.edge.publisher import Publisher

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
STORE_WAIT_S = 2.0  # longest a frame waits for its result to be on disk before the line goes on


@dataclass(frozen=True)
class Serving:
    """What a camera inspects with: engine, post-processing (calibration) and the model fields of its results.

    Swapped as one object between frames (a new calibration or model): each frame takes the serving of
    the moment its engine call is queued and finishes with it, so a frame in flight never mixes the old
    calibration or model with the new one."""

    engine: SharedEngine
    post: PostProcessor
    model_info: ModelInfo
    pre: PreProcessor = field(init=False)

    def __post_init__(self) -> None:
        # rectify + resize with the same bundle and calibration the post-processing reads the outputs with
        object.__setattr__(self, "pre", PreProcessor(self.post.manifest, self.post.calibration))


@dataclass
class InFlight:
    """A frame whose engine call was queued and whose result is not published yet."""

    frame: Frame
    correlation_id: str | None
    prepared: np.ndarray
    future: Future[tuple[ModelOutputs, float]]
    preprocess_ms: float
    serving: Serving | None = None
    preprocess_cpu_ns: int = 0  # this thread's CPU clock: frame checks, rectify, resize, batch


@dataclass
class Trigger:
    correlation_id: str | None
    received: float


def parse_trigger(payload: bytes, properties: Any = None) -> Trigger:
    """A trigger's correlation id: MQTT 5 correlation data, a JSON {"correlation_id": ...} or the text itself."""
    data = getattr(properties, "CorrelationData", None) if properties is not None else None
    if data:
        return Trigger(data.decode(errors="replace") if isinstance(data, bytes) else str(data), time.time())
    text = payload.decode(errors="replace").strip() if payload else ""
    correlation = None
    if text.startswith("{"):
        try:
            message = json.loads(text)
            value = message.get("correlation_id") if isinstance(message, dict) else None
            correlation = None if value is None else str(value)
        except json.JSONDecodeError:
            correlation = text
    elif text:
        correlation = text
    return Trigger(correlation, time.time())


# overlay and archive work for one result: camera, frame (RGB), inspection, result, publish the overlay?,
# archive it?, JPEG quality
SideJob = tuple[str, np.ndarray, Inspection, dict[str, Any], bool, bool, int]


class SideWorker:
    """Overlay encoding and archiving off the inspection path; a full queue drops (counted), never blocks."""

    def __init__(self, publisher: Publisher, archive: Archive | None, stats: RollingStats, size: int = 16) -> None:
        self.publisher = publisher
        self.archive = archive
        self.stats = stats
        self._queue: queue.Queue[SideJob | None] = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._run, name="onen-side-work", daemon=True)
        self._thread.start()

    def submit(self, job: SideJob) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats.count("side_work_dropped")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            camera, frame_rgb, inspection, result, publish_overlay, archive_it, quality = job
            try:
                jpeg = encode_jpeg(
                    render_overlay(
                        frame_rgb,
                        inspection.anomaly_map,
                        inspection.regions,
                        label=inspection_label(inspection),
                        defect=inspection.is_defect,
                    ),
                    quality,
                )
                if publish_overlay:
                    self.publisher.publish_overlay(camera, jpeg)
                if archive_it and self.archive is not None:
                    self.archive.save(camera, result["seq"], frame_rgb, jpeg, result)
            except Exception:
                log.exception("overlay/archive of %s seq %s failed", camera, result.get("seq"))

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class CameraPipeline:
    """A thread per camera. `heartbeat` is the monotonic time of its last loop (for the watchdog)."""

    def __init__(
        self,
        *,
        camera_cfg: CameraConfig,
        camera: Camera,
        engine: SharedEngine,
        postprocessor: PostProcessor,
        model_info: ModelInfo,
        station: str,
        run_id: str,
        publisher: Publisher,
        stats: RollingStats,
        side_worker: SideWorker | None = None,
        on_event: EventCallback | None = None,
        fresh_frame_timeout_s: float = 5.0,
        max_in_flight: int | None = None,
    ) -> None:
        self.cfg = camera_cfg
        self.name = camera_cfg.name
        self.camera = camera
        self.serving = Serving(engine, postprocessor, model_info)
        self._serving_lock = threading.Lock()
        self.station = station
        self.run_id = run_id
        self.publisher = publisher
        self.stats = stats
        self.side_worker = side_worker
        self.on_event = on_event or (lambda kind, detail: None)
        self.fresh_frame_timeout_s = fresh_frame_timeout_s
        self.max_in_flight = max_in_flight  # continuous: None = the engine's workers + 1
        self.mode = camera_cfg.trigger.mode
        self.triggers: queue.Queue[Trigger] = queue.Queue(maxsize=max(1, camera_cfg.trigger.queue_size))
        self.heartbeat = time.monotonic()
        self.inspected = 0
        self.failed = 0
        self.finished = False
        self._last_error_event = 0.0
        self._mono = camera_cfg.source.color == "mono"
        self._colour_reported = False
        self._unstored: collections.deque[threading.Event] = collections.deque()  # handed over, maybe not on disk
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"onen-pipeline-{self.name}", daemon=True)

    # ---- what the camera inspects with ------------------------------------------------------------
    @property
    def engine(self) -> SharedEngine:
        return self.serving.engine

    @property
    def post(self) -> PostProcessor:
        return self.serving.post

    @property
    def model_info(self) -> ModelInfo:
        return self.serving.model_info

    def swap(
        self,
        *,
        engine: SharedEngine | None = None,
        postprocessor: PostProcessor | None = None,
        model_info: ModelInfo | None = None,
    ) -> Serving:
        """Between frames: the next frame uses the new parts, frames in flight finish with the old ones.
        Returns the serving it replaced. Once every pipeline swapped, an old engine only loses users
        (`SharedEngine.in_use`), so it can be closed when that reaches 0."""
        with self._serving_lock:
            old = self.serving
            self.serving = Serving(engine or old.engine, postprocessor or old.post, model_info or old.model_info)
        return old

    # ---- control ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Stop taking new frames; the frame in flight is finished and published."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def trigger(self, payload: bytes, properties: Any = None) -> None:
        """Called from the MQTT thread: queue the request; a full queue refuses it with an event."""
        request = parse_trigger(payload, properties)
        try:
            self.triggers.put_nowait(request)
        except queue.Full:
            self.stats.count(f"triggers_refused.{self.name}")
            self.on_event(
                "trigger_refused",
                {"camera": self.name, "correlation_id": request.correlation_id, "reason": "trigger queue full"},
            )

    # ---- loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = float(self.cfg.trigger.interval_s or 1.0)
        next_due = time.monotonic()
        pending: collections.deque[InFlight] = collections.deque()
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            correlation = None
            try:
                if self.mode == "mqtt":
                    try:
                        request = self.triggers.get(timeout=0.25)
                    except queue.Empty:
                        continue
                    correlation = request.correlation_id
                    frame = self.camera.fresh_frame(timeout=self.fresh_frame_timeout_s)
                    if frame is None:
                        self.stats.count(f"triggers_failed.{self.name}")
                        self.on_event(
                            "trigger_failed",
                            {
                                "camera": self.name,
                                "correlation_id": correlation,
                                "reason": f"no fresh frame within {self.fresh_frame_timeout_s:.1f} s",
                                "camera_status": self.camera.status,
                            },
                        )
                        continue
                elif self.mode == "interval":
                    wait = next_due - time.monotonic()
                    if wait > 0:
                        self._stop.wait(min(wait, 0.25))
                        continue
                    next_due = max(next_due + interval, time.monotonic())
                    frame = self.camera.fresh_frame(timeout=min(self.fresh_frame_timeout_s, interval))
                    if frame is None:
                        continue
                else:
                    # with a frame in the engine, only take a next one that is already there
                    frame = self.camera.read(timeout=0 if pending else 0.25)
                    if frame is None:
                        if pending:
                            self._finish(pending.popleft())
                        else:
                            self._acknowledge(keep=0)  # nothing in flight: count what is on disk now
                            if self.camera.finished:
                                self.finished = True
                                return
                        continue
            except Exception as error:  # a camera object that throws must not end inspection
                self._failed("camera_error", error)
                self._stop.wait(0.5)
                continue
            flight = self._begin(frame, correlation)
            if flight is not None:
                pending.append(flight)
            while len(pending) >= self._in_flight_limit():
                self._finish(pending.popleft())
        while pending:  # stop requested: finish the frames in flight
            self._finish(pending.popleft())
        self._acknowledge(keep=0)
        self.heartbeat = time.monotonic()

    def _in_flight_limit(self) -> int:
        if self.mode != "continuous":
            return 1  # a triggered frame is published before the next trigger is taken
        return max(1, self.max_in_flight or self.serving.engine.workers + 1)

    def inspect(self, frame: Frame, correlation_id: str | None = None) -> dict[str, Any] | None:
        """Inspect one frame and hand the result to the publisher; None when the frame failed."""
        flight = self._begin(frame, correlation_id)
        result = None if flight is None else self._finish(flight)
        self._acknowledge(keep=0)
        return result

    def _begin(self, frame: Frame, correlation_id: str | None) -> InFlight | None:
        """Pre-process and queue the frame on the engine (ONE call per frame)."""
        started = time.perf_counter()
        cpu_started = time.thread_time_ns()
        with self._serving_lock:  # a swap happens wholly before or after this frame takes its serving
            serving = self.serving
            serving.engine.hold()
        try:
            image = frame.image
            if (
                not isinstance(image, np.ndarray)
                or image.dtype != np.uint8
                or image.ndim != 3
                or image.shape[2] != 3
                or image.size == 0
            ):
                raise ValueError(
                    f"frame {frame.seq} is not an RGB uint8 HxWx3 image (got {getattr(image, 'dtype', type(image))} "
                    f"{getattr(image, 'shape', '')})"
                )
            if self._mono:
                plane = grey_plane(image)
                if plane is None:
                    self._colour_frame(frame)
                else:
                    image = plane
            prepared = serving.pre.prepare(image)
            batch = serving.pre.to_batch([prepared])
            preprocess_ms = (time.perf_counter() - started) * 1000
            cpu_prepared = time.thread_time_ns()
            future = serving.engine.submit(batch)
        except Exception as error:
            serving.engine.release()
            self._failed("frame_error", error, getattr(frame, "seq", None))
            return None
        self.stats.cpu.add("engine_handoff", time.thread_time_ns() - cpu_prepared)
        return InFlight(frame, correlation_id, prepared, future, preprocess_ms, serving, cpu_prepared - cpu_started)

    def _finish(self, flight: InFlight) -> dict[str, Any] | None:
        frame = flight.frame
        serving = flight.serving or self.serving
        cpu = self.stats.cpu
        try:
            cpu_waited = time.thread_time_ns()
            try:
                outputs, infer_ms = flight.future.result()
            finally:
                if flight.serving is not None:
                    flight.serving.engine.release()
            started = time.perf_counter()
            cpu_started = time.thread_time_ns()
            cpu.add("engine_handoff", cpu_started - cpu_waited)
            inspection = serving.post(outputs, 0, flight.prepared.shape[:2])
            cpu_post = time.thread_time_ns()
            result = build_result(
                station=self.station,
                camera=self.name,
                seq=frame.seq,
                run_id=self.run_id,
                captured_at=frame.captured_at,
                model=serving.model_info,
                inspection=inspection,
                latency_ms={},
                source=frame.source(),
                correlation_id=flight.correlation_id,
            )
            latency = {
                "capture": float(frame.capture_ms),
                "preprocess": flight.preprocess_ms,
                "infer": infer_ms,
                "postprocess": (time.perf_counter() - started) * 1000,
            }
            # total: from the moment the frame was captured until its result is handed to the spool
            latency["total"] = max((time.time() - frame.captured_at) * 1000, sum(latency.values()))
            result["latency_ms"] = {k: round(v, 3) for k, v in latency.items()}
            payload = encode(result)
            cpu_encoded = time.thread_time_ns()
            stored = self.publisher.publish_result(self.name, payload)
        except Exception as error:
            self._failed("frame_error", error, getattr(frame, "seq", None))
            return None
        self.stats.record(self.name, latency)
        self.stats.count(f"verdict.{inspection.verdict}")
        self._side_work(flight.prepared, inspection, result)
        self._unstored.append(stored)
        # continuous: the previous frame's commit is done by now, this one's goes on while the next is prepared;
        # a triggered frame is done before the next trigger is taken
        self._acknowledge(keep=1 if self.mode == "continuous" else 0)
        cpu.add("capture", frame.capture_cpu_ns)
        cpu.add("checks", frame.checks_cpu_ns)
        cpu.add("preprocess", flight.preprocess_cpu_ns)
        cpu.add("postprocess", cpu_post - cpu_started)
        cpu.add("result_encoding", cpu_encoded - cpu_post)
        cpu.add("handoff", time.thread_time_ns() - cpu_encoded)  # to the spool queue, stats, side work
        return result

    def _acknowledge(self, keep: int) -> None:
        """Count frames done once their results are on disk (they survive a kill -9 from then on), oldest
        first, leaving the newest `keep` to their commit. While the spool refuses writes the results wait in
        the publisher's memory, in order, and the line goes on."""
        while len(self._unstored) > keep:
            stored = self._unstored.popleft()
            if self.publisher.spool_ok and not stored.wait(STORE_WAIT_S):
                self.stats.count(f"results_not_yet_on_disk.{self.name}")
            self.inspected += 1

    def _colour_frame(self, frame: Frame) -> None:
        """A `color: mono` camera delivered a frame that is not grey: it is resized in colour (right, only slower);
        counted, and said once per pipeline, since a colour camera configured as mono is a setup mistake."""
        self.stats.count(f"colour_frames.{self.name}")
        if not self._colour_reported:
            self._colour_reported = True
            self.on_event(
                "colour_frame",
                {
                    "camera": self.name,
                    "seq": frame.seq,
                    "reason": f"cameras.{self.name}.source.color is mono but frame {frame.seq} is not grey "
                    "(R, G and B differ); such frames are inspected in colour, at three times the resize work",
                },
            )

    def _side_work(self, frame: np.ndarray, inspection: Inspection, result: dict[str, Any]) -> None:
        if self.side_worker is None:
            return
        heatmap = self.cfg.publish.heatmap
        publish_overlay = heatmap == "always" or (heatmap == "on_defect" and inspection.is_defect)
        archive_it = inspection.is_defect and self.side_worker.archive is not None
        if publish_overlay or archive_it:
            frame_rgb = as_rgb(frame)  # a mono camera's plane, or the RGB frame
            self.side_worker.submit(
                (self.name, frame_rgb, inspection, result, publish_overlay, archive_it, self.cfg.publish.jpeg_quality)
            )

    def _failed(self, kind: str, error: Exception, seq: int | None = None) -> None:
        self.failed += 1
        self.stats.count(f"{kind}s.{self.name}")
        now = time.monotonic()
        if now - self._last_error_event >= 5.0:  # one event per 5 s per camera, not one per bad frame
            self._last_error_event = now
            log.warning("camera %s: %s (seq %s): %s", self.name, kind, seq, error)
            self.on_event(
                kind,
                {
                    "camera": self.name,
                    "seq": seq,
                    "error": f"{type(error).__name__}: {error}",
                    "failed_total": self.failed,
                },
            )
