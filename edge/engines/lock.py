"""A file lock so two processes (daemon + `onen build-engine`, or two daemons) never build one engine at once.

`fcntl.flock` locks are released by the kernel when the holder dies, so a crashed build never leaves
a stale lock behind. The holder's pid is written into the file for the message of whoever waits.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from onen.edge.errors import OnenError


class EngineLockTimeout(OnenError):
    """Another process kept building the same engine for longer than we were willing to wait."""


class FileLock:
    """Exclusive lock on `path` (created if needed); waits up to `timeout_s`, polling every `poll_s`."""

    def __init__(
        self, path: Path, timeout_s: float = 1800.0, poll_s: float = 0.5, on_wait: Callable[[str], None] | None = None
    ):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as busy:
                holder = self._holder(fd)
                if not announced and self.on_wait is not None:
                    self.on_wait(f"{self.path}: held by pid {holder}; waiting up to {self.timeout_s:.0f} s")
                    announced = True
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise EngineLockTimeout(
                        f"{self.path}: still locked by pid {holder} after {self.timeout_s:.0f} s; another engine "
                        "build is running (or hung)"
                    ) from busy
                time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode().strip() or "unknown"
        except OSError:
            return "unknown"

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
