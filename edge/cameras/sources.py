"""Frame sources behind a camera: OpenCV captures (V4L2, RTSP/HTTP via FFMPEG, GStreamer, video files)
and a watched image folder (edge.cameras.folder). A source opens, reads raw frames, and closes; the
camera thread around it handles reconnection, checks, pacing and delivery."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np

from onen.edge.config import SourceConfig
from onen.edge.config_models import FileSource as FileSourceConfig
from onen.edge.errors import OnenError

# Industrial IP cameras over UDP lose packets and hand out smeared frames; TCP is the safe default.
# An integrator can still override it with the variable OpenCV reads.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


class CameraError(OnenError):
    """A camera that can never work as configured (e.g. OpenCV built without the needed backend)."""


class SourceUnavailable(Exception):
    """Opening failed (device absent, stream not served yet): retried with backoff."""


class SourceLost(Exception):
    """A connected source stopped giving frames (read error or timeout): reconnect with backoff."""


@dataclass
class RawFrame:
    image: np.ndarray | None  # as decoded: BGR from OpenCV captures, RGB from folders (see `rgb`); None: undecodable
    index: int  # frame number since open (files: in the file)
    rgb: bool = False
    name: str | None = None
    written_at: float | None = None  # folder: the file's mtime (epoch s)


END_OF_SOURCE = None  # read() returns this when a non-looping file/folder has nothing more


class FrameSource(Protocol):
    """What the camera thread needs of a source (CaptureSource, edge.cameras.folder.FolderSource)."""

    fps: float | None  # pacing rate of a file; None for live sources and folders

    def open(self) -> None: ...

    def read(self) -> RawFrame | str | None:
        """A raw frame, folder.IDLE (nothing ready yet) or END_OF_SOURCE."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


@lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    """True when the installed OpenCV was built with GStreamer (opencv-python-headless from PyPI is not)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def require_backend(cfg: SourceConfig, camera: str) -> None:
    """Fail at startup, not in a reconnect loop, when this OpenCV cannot serve the source at all."""
    if cfg.kind == "gstreamer" and not opencv_has_gstreamer():
        raise CameraError(
            f"camera {camera}: source kind 'gstreamer' needs an OpenCV built with GStreamer, and the installed "
            f"OpenCV {cv2.__version__} was built without it (opencv-python-headless from PyPI is). On a Jetson use "
            "JetPack's OpenCV (apt install python3-opencv; pip uninstall opencv-python-headless), elsewhere build "
            "OpenCV with -DWITH_GSTREAMER=ON; or use a v4l2/rtsp/http source instead."
        )


class CaptureSource:
    """An OpenCV VideoCapture: v4l2, rtsp, http, gstreamer, file."""

    def __init__(self, cfg: SourceConfig, camera: str) -> None:
        self.cfg, self.camera = cfg, camera
        self.cap: cv2.VideoCapture | None = None
        self.index = 0
        self.fps: float | None = None  # the file's own rate (pacing); None for live sources

    @property
    def is_file(self) -> bool:
        return self.cfg.kind == "file"

    def open(self) -> None:
        cfg = self.cfg
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(cfg.read_timeout_s * 1000),
        ]
        if cfg.kind == "v4l2":
            device = cfg.device
            if isinstance(device, str) and device.isdigit():
                device = int(device)
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
            if cap.isOpened():
                if cfg.fourcc:
                    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
                if cfg.width and cfg.height:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
                if cfg.fps:
                    cap.set(cv2.CAP_PROP_FPS, cfg.fps)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one from the driver's queue
        elif cfg.kind in ("rtsp", "http"):
            cap = cv2.VideoCapture(cfg.uri, cv2.CAP_FFMPEG, timeouts)
        elif cfg.kind == "gstreamer":
            cap = cv2.VideoCapture(cfg.pipeline, cv2.CAP_GSTREAMER)
        elif cfg.kind == "file":
            cap = cv2.VideoCapture(str(cfg.path), cv2.CAP_FFMPEG)
        else:
            raise CameraError(f"camera {self.camera}: source kind {cfg.kind!r} is not an OpenCV capture")
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailable(f"cannot open {self.describe()}")
        self.cap, self.index = cap, 0
        if isinstance(cfg, FileSourceConfig):
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = cfg.fps or (file_fps if file_fps and file_fps > 0 else 25.0)

    def read(self) -> RawFrame | None:
        """The next raw frame; None at the end of a non-looping file; SourceLost when a stream fails."""
        assert self.cap is not None, "open() first"
        ok, image = self.cap.read()
        if ok and image is not None and image.size:
            frame = RawFrame(image=image, index=self.index)
            self.index += 1
            return frame
        if self.is_file:
            if isinstance(self.cfg, FileSourceConfig) and self.cfg.loop and self.index > 0:
                self.close()
                self.open()  # reopening is the one rewind every container supports
                return self.read()
            return END_OF_SOURCE
        raise SourceLost(
            f"read failed or timed out (no frame within {self.cfg.read_timeout_s:g} s)"
            if self.cfg.kind in ("rtsp", "http")
            else "read failed"
        )

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def describe(self) -> str:
        return self.cfg.describe()


def make_source(cfg: SourceConfig, camera: str) -> FrameSource:
    """The source object for a camera's config."""
    if cfg.kind == "folder":
        from onen.edge.cameras.folder import FolderSource

        return FolderSource(cfg, camera)
    return CaptureSource(cfg, camera)


__all__ = [
    "CameraError",
    "SourceUnavailable",
    "SourceLost",
    "RawFrame",
    "END_OF_SOURCE",
    "CaptureSource",
    "FrameSource",
    "make_source",
    "opencv_has_gstreamer",
    "require_backend",
]
