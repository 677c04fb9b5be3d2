"""A captured frame and the bounded queue between a camera thread and the pipeline."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One frame that was really captured (never a stale or black one), in RGB uint8 HxWx3."""

    camera: str
    seq: int  # per camera, counts delivered frames from 0
    image: np.ndarray  # RGB uint8 HxWx3
    captured_at: float  # epoch seconds when the frame arrived from the source
    capture_ms: float  # time spent reading/decoding it
    source_index: int  # frame number in the file / stream connection, or file count for folders
    source_name: str | None = None  # folder: the image's file name
    written_at: float | None = None  # folder: the file's mtime (epoch s), when the camera wrote it
    read_started: float = field(default=0.0, repr=False)  # time.monotonic() when its read began
    source_kind: str = ""  # the camera's source.kind
    source_file: str | None = None  # file: the video file's name
    connection: int = 0  # live sources: reconnects before this frame
    # CPU time (the camera thread's clock, ns) spent reading + decoding + converting it, and checking it
    capture_cpu_ns: int = field(default=0, repr=False)
    checks_cpu_ns: int = field(default=0, repr=False)

    def source(self) -> dict[str, Any]:
        """The result's `source` field: enough to find this frame's image again."""
        if self.source_kind == "folder":
            return {"kind": "folder", "file": self.source_name or ""}
        if self.source_kind == "file":
            return {"kind": "file", "file": self.source_file or "", "frame_index": int(self.source_index)}
        return {"kind": self.source_kind, "frame_counter": int(self.source_index), "connection": int(self.connection)}


class FrameQueue:
    """Bounded FIFO. Live cameras use `put_newest` (drop the oldest, newest wins, drops counted);
    files without realtime pacing and folders use `put_wait` (back-pressure: nothing dropped)."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self._items: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put_newest(self, frame: Frame) -> int:
        """Add a frame, dropping the oldest ones beyond the bound; returns how many were dropped."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self.size:
                self._items.popleft()
                dropped += 1
            self._items.append(frame)
            self._cond.notify_all()
            return dropped

    def put_wait(self, frame: Frame, stop: threading.Event, on_wait: Callable[[], None] | None = None) -> bool:
        """Add a frame, waiting while the queue is full; False if `stop` was set first."""
        with self._cond:
            while len(self._items) >= self.size:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
                if on_wait is not None:
                    on_wait()
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None) -> Frame | None:
        """The oldest queued frame; None after `timeout`, or at once when closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames will come (a file or folder is done, or the camera stopped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._items)
