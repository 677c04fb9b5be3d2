"""Defective frames and their overlays on disk, for later review, within a size cap.

Layout: <archive>/<camera>/<YYYY-MM-DD>/<time>_<seq>_{frame.png,overlay.jpg,result.json}. The frame is
PNG (lossless: what the model saw, reusable for retraining), the overlay JPEG. When the cap is hit the
oldest files go first, so the archive always holds the most recent defects.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)


class Archive:
    def __init__(self, path: str | Path, max_mb: float = 1024, enabled: bool = True):
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.enabled = enabled
        self.removed = 0
        self._lock = threading.Lock()
        self._files: list[tuple[float, int, Path]] | None = None  # (mtime, size, path), oldest first
        self._bytes = 0
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def _scan(self) -> None:
        files = []
        for file in self.path.rglob("*"):
            if file.is_file():
                stat = file.stat()
                files.append((stat.st_mtime, stat.st_size, file))
        files.sort()
        self._files = files
        self._bytes = sum(size for _, size, _ in files)

    def save(
        self, camera: str, seq: int, frame_rgb: np.ndarray, overlay_jpeg: bytes | None, result: dict[str, Any]
    ) -> Path | None:
        """Write one defect; returns its folder. Never raises on a full disk: logs and skips."""
        if not self.enabled:
            return None
        stamp = time.strftime("%H%M%S", time.gmtime(result.get("captured_at_epoch", time.time())))
        day = time.strftime("%Y-%m-%d", time.gmtime(result.get("captured_at_epoch", time.time())))
        folder = self.path / _safe(camera) / day
        stem = f"{stamp}_{seq:08d}"
        written: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok, png = cv2.imencode(".png", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
            if ok:
                written.append(_write(folder / f"{stem}_frame.png", png.tobytes()))
            if overlay_jpeg:
                written.append(_write(folder / f"{stem}_overlay.jpg", overlay_jpeg))
            written.append(_write(folder / f"{stem}_result.json", json.dumps(result, indent=1).encode()))
        except OSError as error:
            log.error("archive %s: cannot write defect %s/%s: %s", self.path, camera, seq, error)
            return None
        with self._lock:
            if self._files is None:
                self._scan()
            else:
                for file in written:
                    size = file.stat().st_size
                    self._files.append((time.time(), size, file))
                    self._bytes += size
            self._enforce_cap_locked()
        return folder

    def _enforce_cap_locked(self) -> None:
        while self._files and self._bytes > self.max_bytes:
            _, size, file = self._files.pop(0)
            try:
                file.unlink()
                self.removed += 1
            except FileNotFoundError:
                pass
            self._bytes -= size
            parent = file.parent
            if parent != self.path and not any(parent.iterdir()):
                parent.rmdir()

    @property
    def size_bytes(self) -> int:
        return self._bytes


def _write(path: Path, data: bytes) -> Path:
    temporary = path.with_suffix(path.suffix + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "camera"
