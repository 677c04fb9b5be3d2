"""An image folder as a camera: what triggered line-scan / area cameras drop onto disk.

Each new image is read once, and only once it is completely written (its size and mtime unchanged for
`settle_s`), in the order the files were written. Files already there at start are skipped unless
`existing: true`; with `watch: false` the source ends after those."""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path

from onen.edge.cameras.sources import END_OF_SOURCE, RawFrame, SourceLost, SourceUnavailable
from onen.edge.config_models import FolderSource as FolderSourceConfig
from onen.edge.errors import DataError
from onen.edge.images import read_image_rgb

IDLE = "idle"  # read() result: nothing ready yet (the camera loop just asks again)


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float


class FolderSource:
    def __init__(self, cfg: FolderSourceConfig, camera: str) -> None:
        self.cfg, self.camera = cfg, camera
        self.folder = Path(cfg.path)
        self.index = 0
        self.fps: float | None = None
        self._seen: set[str] = set()  # kept across reconnects: a file is never read twice
        self._opened = False
        self._pending: dict[str, _Pending] = {}
        self._last_scan = 0.0

    def describe(self) -> str:
        return self.cfg.describe()

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceUnavailable(f"image folder {self.folder} does not exist")
        if not self._opened:
            self._seen = set() if self.cfg.existing else set(self._list())
            self._opened = True
        self._last_scan = 0.0

    def close(self) -> None:
        self._pending.clear()

    def _list(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.is_file() and any(
                        fnmatch.fnmatch(entry.name.lower(), p.lower()) for p in self.cfg.patterns
                    ):
                        found[entry.name] = entry.stat()
        except FileNotFoundError:
            raise SourceLost(f"image folder {self.folder} disappeared") from None
        return found

    def _scan(self, now: float) -> None:
        listing = self._list()
        self._seen &= set(listing)  # a deleted file's name may come back as a new image
        for name, stat in listing.items():
            if name in self._seen:
                continue
            known = self._pending.get(name)
            if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._pending[name] = _Pending(stat.st_size, stat.st_mtime_ns, now)
        for name in list(self._pending):
            if name not in listing:
                del self._pending[name]
        self._last_scan = now

    def _ready(self, now: float) -> str | None:
        ready = [
            (p.mtime_ns, name)
            for name, p in self._pending.items()
            if p.size > 0 and now - p.stable_since >= self.cfg.settle_s
        ]
        return min(ready)[1] if ready else None

    def read(self) -> RawFrame | str | None:
        """A RawFrame (RGB; image None when the file cannot be decoded), IDLE, or END_OF_SOURCE."""
        now = time.monotonic()
        if now - self._last_scan >= self.cfg.poll_s or not self._pending:
            self._scan(now)
        name = self._ready(now)
        if name is None:
            if not self.cfg.watch and not self._pending:
                return END_OF_SOURCE
            time.sleep(min(self.cfg.poll_s, max(self.cfg.settle_s, 0.01)))
            return IDLE
        written_at = self._pending.pop(name).mtime_ns / 1e9
        self._seen.add(name)
        path = self.folder / name
        try:
            image = read_image_rgb(path)
        except DataError:
            image = None  # counted as a rejected frame ("unreadable")
        frame = RawFrame(image=image, index=self.index, rgb=True, name=name, written_at=written_at)
        self.index += 1
        return frame
