"""Helpers of the review tests: a real `onen review` process on a free loopback port, and station videos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from onen.edge.bundle import load_bundle
from onen.edge.local_broker import free_port, port_accepts

from . import REPO
from .daemon import reference_frames


def good_then_defect(bundle_dir: Path, good: int, defect: int) -> list[np.ndarray]:
    """`good` frames the bundle scores below its threshold, then `defect` frames above it."""
    frames, scores = reference_frames(bundle_dir)
    threshold = load_bundle(bundle_dir).manifest.thresholds.image
    good_frames = [f for f, s in zip(frames, scores, strict=True) if s < threshold]
    defect_frames = [f for f, s in zip(frames, scores, strict=True) if s > threshold]
    assert good_frames and defect_frames, "the bundle's references hold good and defective images"
    return [good_frames[i % len(good_frames)] for i in range(good)] + [
        defect_frames[i % len(defect_frames)] for i in range(defect)
    ]


class ReviewProcess:
    """`onen review --config ... --listen 127.0.0.1:<free port>` as a child process, stopped by its PID."""

    def __init__(self, config: Path, *extra: str, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log_path = log_path or config.parent / f"review-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onen.edge.cli",
                "review",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"onen review did not start: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.1)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, path: str):
        status, body, _ = self.get(path)
        assert status == 200, f"{path}: HTTP {status}: {body[:200]!r}"
        return json.loads(body)

    def post_json(self, path: str, data: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(data).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_state(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.json("/api/state")
            if predicate(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def __enter__(self) -> ReviewProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
