"""One thread per camera: open the source, read frames, keep only really captured ones, deliver them.

Lost or stalled sources reconnect with exponential backoff (with jitter, capped by `backoff_max_s`);
the backoff resets only after a good frame, so a source that connects and dies at once is not hammered.
A frame that was not really captured (read failure, black, a repeat of the previous frame) is never
delivered; each rejection is counted and reported as a rate-limited "frame_rejected" event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onen.edge.cameras.backoff import Backoff
from onen.edge.cameras.checks import FrameChecks
from onen.edge.cameras.frame import Frame, FrameQueue
from onen.edge.cameras.sources import (
    END_OF_SOURCE,
    RawFrame,
    SourceLost,
    SourceUnavailable,
    make_source,
    require_backend,
)
from onen.edge.config import CameraConfig
from onen.edge.errors import DataError
from onen.edge.images import to_rgb_uint8

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
REJECT_EVENT_INTERVAL_S = 5.0  # at most one frame_rejected event per reason per interval (with counts)


class Camera:
    """See INTERFACES.md: start/stop, read (continuous trigger), fresh_frame (mqtt/interval triggers)."""

    def __init__(self, cfg: CameraConfig, on_event: EventSink | None = None) -> None:
        require_backend(cfg.source, cfg.name)
        self.cfg = cfg
        self.name = cfg.name
        self._on_event = on_event or (lambda kind, detail: None)
        self._source = make_source(cfg.source, cfg.name)
        self._queue = FrameQueue(cfg.trigger.queue_size)
        self._checks = FrameChecks(cfg.source.reject_black, cfg.source.black_level, cfg.source.rejects_repeated)
        self._stop = threading.Event()
        self._latest_cond = threading.Condition()
        self._latest: Frame | None = None
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._source_done = False
        self._reject_counts: dict[str, int] = {}
        self._reject_reported: dict[str, tuple[float, int]] = {}  # reason -> (last event time, count then)
        self.status = "starting"
        self.dropped = 0
        self.delivered = 0
        self.reconnects = 0
        self.heartbeat = time.monotonic()
        source = cfg.source
        self._blocking = cfg.trigger.mode == "continuous" and (
            source.kind == "folder" or (source.kind == "file" and not source.realtime)
        )
        self._paced = source.kind == "file" and (source.realtime or cfg.trigger.mode != "continuous")
        self._source_file = Path(source.path).name if source.kind == "file" else None

    # -- public API ------------------------------------------------------------------------------------
    def start(self) -> Camera:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.status != "finished":
            self.status = "stopped"
        self._queue.close()
        with self._latest_cond:
            self._latest_cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next queued frame (continuous trigger); None on timeout or when the source has finished."""
        return self._queue.get(timeout)

    def fresh_frame(self, timeout: float | None = None) -> Frame | None:
        """A frame whose read began after this call (never one grabbed before the trigger); None on timeout."""
        called = time.monotonic()
        deadline = None if timeout is None else called + timeout
        with self._latest_cond:
            while True:
                frame = self._latest
                if frame is not None and frame.read_started >= called:
                    return frame
                if self._stop.is_set() or self._source_done:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._latest_cond.wait(remaining)

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    @property
    def finished(self) -> bool:
        """A non-looping file or an unwatched folder has been read to the end and every frame handed out."""
        return self._source_done and self._queue.depth == 0

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected frames by reason ("black", "repeated", "unreadable")."""
        return dict(self._reject_counts)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------------------
    def _emit(self, kind: str, **detail: Any) -> None:
        detail = {"camera": self.name, "source": self._source.describe(), **detail}
        try:
            self._on_event(kind, detail)
        except Exception:  # a broken sink must not kill the camera
            log.exception("camera %s: event handler failed for %s", self.name, kind)

    def _wait(self, seconds: float) -> bool:
        """Sleep in short steps (heartbeat keeps moving); True if stop was requested."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            remaining = deadline - self.heartbeat
            if remaining <= 0:
                return False
            self._stop.wait(min(remaining, 0.25))
        return True

    def _run(self) -> None:
        src = self.cfg.source
        backoff = Backoff(src.backoff_initial_s, src.backoff_max_s)
        ever_connected = False
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                try:
                    self._source.open()
                except (SourceUnavailable, SourceLost) as error:
                    if self._retry_later(backoff, str(error)):
                        break
                    continue
                except Exception as error:  # e.g. cv2.error from a driver: retried, and shown
                    log.exception("camera %s: opening failed", self.name)
                    if self._retry_later(backoff, f"opening failed: {error!r}"):
                        break
                    continue
                self.status = "connected"
                if ever_connected:
                    self.reconnects += 1
                ever_connected = True
                self._emit("camera_connected", attempt=backoff.attempt)
                log.info("camera %s: connected to %s", self.name, self._source.describe())
                try:
                    outcome = self._pump(backoff)
                except SourceLost as error:
                    outcome = str(error)
                except Exception as error:  # never let one bad frame end the camera thread
                    log.exception("camera %s: reading failed", self.name)
                    outcome = f"reading failed: {error!r}"
                finally:
                    self._source.close()
                if outcome in ("finished", "stopped"):
                    break
                self.status = "reconnecting"
                self._emit("camera_lost", reason=outcome)
                log.warning("camera %s: lost (%s)", self.name, outcome)
                if self._retry_later(backoff, outcome):
                    break
        finally:
            if self.status != "finished":
                self.status = "stopped"
            self._queue.close()
            with self._latest_cond:
                self._latest_cond.notify_all()

    def _retry_later(self, backoff: Backoff, reason: str) -> bool:
        delay = backoff.next_delay()
        self.status = "reconnecting"
        self._emit("camera_reconnecting", attempt=backoff.attempt, delay_s=round(delay, 3), reason=reason)
        log.info("camera %s: %s; retrying in %.2f s", self.name, reason, delay)
        return self._wait(delay)

    def _pump(self, backoff: Backoff) -> str:
        """Read and deliver frames until the source ends ("finished"), stop ("stopped") or a failure (reason)."""
        src = self.cfg.source
        checks = self._checks  # kept across reconnects: a frozen source's image stays rejected
        last_good = time.monotonic()
        paced_start, paced_count = time.monotonic(), 0
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if self._paced and self._source.fps:
                due = paced_start + paced_count / self._source.fps
                if due > self.heartbeat and self._wait(due - self.heartbeat):
                    return "stopped"
                paced_count += 1
            started_mono, started = time.monotonic(), time.time()
            cpu_started = time.thread_time_ns()
            raw = self._source.read()
            if isinstance(raw, str):  # IDLE: nothing ready yet
                continue
            if raw is END_OF_SOURCE:
                self._source_done = True
                self.status = "finished"
                self._queue.close()
                self._emit("camera_finished", delivered=self.delivered)
                return "finished"
            capture_ms = (time.monotonic() - started_mono) * 1000.0
            if raw.image is None:
                self._reject("unreadable", file=raw.name)
                continue
            cpu_read = time.thread_time_ns()
            reason = checks.reason_to_reject(raw.image)
            cpu_checked = time.thread_time_ns()
            if reason is not None:
                self._reject(reason, **self._where(raw))
                stalled_for = time.monotonic() - last_good
                if reason == "repeated" and stalled_for > src.read_timeout_s:
                    return f"stalled: only repeated frames for {stalled_for:.1f} s"
                continue
            last_good = time.monotonic()
            backoff.reset()
            try:
                image = raw.image if raw.rgb else to_rgb_uint8(raw.image, source=self.name, assume_bgr=True)
            except DataError:
                self._reject("unsupported", **self._where(raw), dtype=str(raw.image.dtype), shape=list(raw.image.shape))
                continue
            capture_cpu_ns = cpu_read - cpu_started + time.thread_time_ns() - cpu_checked
            frame = Frame(
                camera=self.name,
                seq=self._seq,
                image=image,
                captured_at=started + capture_ms / 1000.0,
                capture_ms=capture_ms,
                source_index=raw.index,
                source_name=raw.name,
                read_started=started_mono,
                written_at=raw.written_at,
                source_kind=src.kind,
                source_file=self._source_file,
                connection=self.reconnects,
                capture_cpu_ns=capture_cpu_ns,
                checks_cpu_ns=cpu_checked - cpu_read,
            )
            self._seq += 1
            if not self._deliver(frame):
                return "stopped"
        return "stopped"

    def _deliver(self, frame: Frame) -> bool:
        with self._latest_cond:
            self._latest = frame
            self._latest_cond.notify_all()
        if self.cfg.trigger.mode != "continuous":
            self.delivered += 1
            return True
        if self._blocking:
            if not self._queue.put_wait(frame, self._stop, on_wait=self._beat):
                return False
        else:
            self.dropped += self._queue.put_newest(frame)
        self.delivered += 1
        return True

    def _where(self, raw: RawFrame) -> dict[str, Any]:
        """Where a rejected frame came from, in the words of the result's `source` field."""
        if raw.name is not None:
            return {"file": raw.name}
        if self._source_file is not None:
            return {"file": self._source_file, "frame_index": raw.index}
        return {"frame_counter": raw.index, "connection": self.reconnects}

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _reject(self, reason: str, **detail: Any) -> None:
        """Count a rejected frame; report the first at once, then at most one event per interval per reason."""
        total = self._reject_counts.get(reason, 0) + 1
        self._reject_counts[reason] = total
        now = time.monotonic()
        last_time, last_total = self._reject_reported.get(reason, (None, 0))
        if last_time is None or now - last_time >= REJECT_EVENT_INTERVAL_S:
            self._reject_reported[reason] = (now, total)
            self._emit("frame_rejected", reason=reason, count=total - last_total, total=total, **detail)


def open_camera(cfg: CameraConfig, on_event: EventSink | None = None) -> Camera:
    """A camera for its config (not started). Raises CameraError when it can never work here."""
    return Camera(cfg, on_event)
