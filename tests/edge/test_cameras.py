"""Cameras with real parts: video files written by OpenCV, image folders filled while watched, and an
HTTP MJPEG stream served by a real ffmpeg on 127.0.0.1 that the tests kill, stall (SIGSTOP) and restart.

Every frame of the test videos carries its index as a binary bar code, so order, repeats and staleness
are checked on the pixels the camera delivered, not on counters."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from onen.edge.cameras import CameraError, open_camera, opencv_has_gstreamer
from onen.edge.config import CameraConfig, TriggerConfig, source_config

W, H = 160, 120
BITS = 10  # bar code of the frame index: 10 blocks of 16 px


def frame_image(index: int) -> np.ndarray:
    """BGR test frame: a red patch (to check RGB order) and the index as a bar code."""
    image = np.full((H, W, 3), 70, np.uint8)
    image[0:30, 0:30] = (0, 0, 255)  # red in BGR
    image[40:70, 40:120] = (index * 37) % 200 + 30  # texture that changes with the index
    for bit in range(BITS):
        if (index >> bit) & 1:
            image[90:120, bit * 16 : (bit + 1) * 16] = 255
    return image


def code_of(rgb: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS) if rgb[105, bit * 16 + 8].mean() > 160)


def write_video(
    path: Path, count: int, fps: float = 25.0, black: set[int] = frozenset(), repeat_of: dict[int, int] | None = None
) -> Path:
    """MJPG .avi: frame i shows code i; `black` frames are all zero; repeat_of[i] = j repeats frame j."""
    repeat_of = repeat_of or {}
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(count):
        if i in black:
            writer.write(np.zeros((H, W, 3), np.uint8))
        else:
            writer.write(frame_image(repeat_of.get(i, i)))
    writer.release()
    return path


def camera_config(name="cam", trigger="continuous", queue_size=2, **source) -> CameraConfig:
    return CameraConfig.named(
        name, source=source_config(**source), trigger=TriggerConfig(mode=trigger, queue_size=queue_size), model="m"
    )


class Events:
    """Collects on_event calls (thread-safe) and waits for a kind."""

    def __init__(self):
        self.items: list[tuple[float, str, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, detail: dict) -> None:
        with self._cond:
            self.items.append((time.monotonic(), kind, detail))
            self._cond.notify_all()

    def of(self, kind: str, since: float = 0.0) -> list[dict]:
        with self._cond:
            return [d for t, k, d in self.items if k == kind and t >= since]

    def wait_for(self, kind: str, since: float = 0.0, timeout: float = 10.0, count: int = 1) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.of(kind, since)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {count}x {kind} within {timeout} s; events: {[(k, d) for _, k, d in self.items]}"
                    )
                self._cond.wait(remaining)
            return self.of(kind, since)


def read_all(camera, limit: int = 10_000, timeout: float = 5.0) -> list:
    frames = []
    while len(frames) < limit:
        frame = camera.read(timeout)
        if frame is None:
            break
        frames.append(frame)
    return frames


# ---------------------------------------------------------------------------------------------- files
def test_file_every_frame_in_order_without_realtime(tmp_path):
    video = write_video(tmp_path / "v.avi", 60)
    events = Events()
    camera = open_camera(camera_config(kind="file", path=video, realtime=False), events).start()
    try:
        frames = read_all(camera)
        assert [code_of(f.image) for f in frames] == list(range(60))
        assert [f.seq for f in frames] == list(range(60))
        assert [f.source_index for f in frames] == list(range(60))
        first = frames[0].image
        assert first.dtype == np.uint8 and first.shape == (H, W, 3)
        assert first[15, 15, 0] > 200 and first[15, 15, 2] < 60  # red patch arrives as RGB
        assert camera.finished and camera.status == "finished" and camera.dropped == 0
        assert events.of("camera_finished")[0]["delivered"] == 60
        assert camera.read(0.1) is None  # at once, not after a timeout
    finally:
        camera.stop()


def test_file_loops(tmp_path):
    video = write_video(tmp_path / "v.avi", 30)
    camera = open_camera(camera_config(kind="file", path=video, realtime=False, loop=True)).start()
    try:
        frames = read_all(camera, limit=75)
        assert [code_of(f.image) for f in frames] == [i % 30 for i in range(75)]
        assert not camera.finished and camera.status == "connected"
    finally:
        camera.stop()
    assert camera.status == "stopped" and not camera.alive


def test_file_realtime_pacing_follows_the_file_fps(tmp_path):
    fps, count = 20.0, 24
    video = write_video(tmp_path / "v.avi", count, fps=fps)
    camera = open_camera(camera_config(kind="file", path=video, realtime=True, queue_size=count)).start()
    try:
        started = time.monotonic()
        frames = read_all(camera)
        elapsed = time.monotonic() - started
    finally:
        camera.stop()
    assert [code_of(f.image) for f in frames] == list(range(count))  # consumer keeps up: nothing dropped
    # Pacing can only make delivery slower than decoding (a few ms here): the schedule is a lower bound.
    assert elapsed >= 0.9 * (count - 1) / fps
    gaps = np.diff([f.captured_at for f in frames])
    assert np.median(gaps) >= 0.8 / fps


def test_newest_frame_wins_when_the_consumer_is_slow(tmp_path):
    video = write_video(tmp_path / "v.avi", 40, fps=100.0)
    camera = open_camera(camera_config(kind="file", path=video, realtime=True, queue_size=2)).start()
    try:
        deadline = time.monotonic() + 30  # the consumer reads nothing until the whole file has been paced
        while (
            camera.delivered < 40 and time.monotonic() < deadline
        ):  # out (0.4 s at 100 fps; longer on a loaded machine)
            time.sleep(0.05)
        frames = read_all(camera, timeout=1.0)
    finally:
        camera.stop()
    codes = [code_of(f.image) for f in frames]
    assert codes == [38, 39]  # the two newest; the rest counted as dropped
    assert camera.dropped == 38


def test_black_frames_are_rejected_and_reported(tmp_path):
    video = write_video(tmp_path / "v.avi", 30, black={10, 11, 12, 13, 14})
    events = Events()
    camera = open_camera(camera_config(kind="file", path=video, realtime=False), events).start()
    try:
        frames = read_all(camera)
    finally:
        camera.stop()
    assert [code_of(f.image) for f in frames] == [i for i in range(30) if not 10 <= i <= 14]
    assert camera.rejected == {"black": 5}
    reports = events.of("frame_rejected")
    assert len(reports) == 1  # rate-limited: one event, then counted
    assert reports[0]["reason"] == "black" and reports[0]["total"] == 1
    assert reports[0]["file"] == "v.avi" and reports[0]["frame_index"] == 10  # which frame of which file
    kept = [f for f in frames if code_of(f.image) == 20][0]
    assert kept.source() == {"kind": "file", "file": "v.avi", "frame_index": 20}


def test_repeated_frames_are_rejected_when_asked(tmp_path):
    video = write_video(tmp_path / "v.avi", 30, repeat_of={i: 19 for i in range(20, 25)})
    events = Events()
    camera = open_camera(camera_config(kind="file", path=video, realtime=False, reject_repeated=True), events).start()
    try:
        frames = read_all(camera)
    finally:
        camera.stop()
    codes = [code_of(f.image) for f in frames]
    assert codes == list(range(20)) + list(range(25, 30))
    assert camera.rejected == {"repeated": 5}
    assert events.of("frame_rejected")[0]["reason"] == "repeated"
    # A recorded file is not a stale stream: by default its identical frames are all delivered.
    camera = open_camera(camera_config(kind="file", path=video, realtime=False)).start()
    try:
        assert len(read_all(camera)) == 30
    finally:
        camera.stop()


def test_frozen_source_is_treated_as_stalled_and_never_redelivered(tmp_path):
    video = write_video(tmp_path / "frozen.avi", 40, fps=50.0, repeat_of={i: 0 for i in range(40)})
    events = Events()
    camera = open_camera(
        camera_config(
            kind="file",
            path=video,
            loop=True,
            reject_repeated=True,
            read_timeout_s=0.4,
            backoff_initial_s=0.05,
            backoff_max_s=0.1,
        ),
        events,
    ).start()
    try:
        first = camera.read(3.0)
        lost = events.wait_for("camera_lost", count=2, timeout=5)  # stalled, reconnected, stalled
        assert camera.read(0.3) is None  # the frozen image never comes back
    finally:
        camera.stop()
    assert first is not None and code_of(first.image) == 0
    assert all(item["reason"].startswith("stalled") for item in lost)
    assert camera.rejected["repeated"] >= 20 and camera.delivered == 1
    assert len(events.of("camera_connected")) >= 2


def test_fresh_frame_is_read_after_the_call(tmp_path):
    video = write_video(tmp_path / "v.avi", 50, fps=50.0)
    camera = open_camera(camera_config(kind="file", path=video, trigger="mqtt", loop=True)).start()
    try:
        seen = []
        for _ in range(3):
            called = time.monotonic()
            frame = camera.fresh_frame(timeout=3.0)
            assert frame is not None and frame.read_started >= called
            seen.append(frame.seq)
        assert seen == sorted(set(seen))
        assert camera.read(0.05) is None  # mqtt trigger: nothing queued for continuous reading
    finally:
        camera.stop()


def test_gstreamer_without_gstreamer_support_is_a_clear_error():
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    config = camera_config(kind="gstreamer", pipeline="videotestsrc ! videoconvert ! appsink")
    with pytest.raises(CameraError, match="GStreamer"):
        open_camera(config)


def test_missing_v4l2_device_retries_with_growing_backoff():
    events = Events()
    camera = open_camera(
        camera_config(kind="v4l2", device="/dev/video97", backoff_initial_s=0.05, backoff_max_s=0.4), events
    ).start()
    try:
        attempts = events.wait_for("camera_reconnecting", count=4, timeout=10)
        assert camera.status == "reconnecting"
    finally:
        camera.stop()
    delays = [a["delay_s"] for a in attempts[:4]]
    assert delays[1] > delays[0] and delays[2] > delays[1]  # x2 per attempt beats +-20% jitter
    assert max(a["delay_s"] for a in attempts) <= 0.4
    assert camera.status == "stopped"


# --------------------------------------------------------------------------------------------- folders
def _write_png(path: Path, index: int) -> None:
    ok, data = cv2.imencode(".png", frame_image(index))
    assert ok
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data.tobytes())
    tmp.rename(path)


def test_folder_delivers_each_new_file_once_after_it_is_complete(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    _write_png(folder / "old-0.png", 900)
    _write_png(folder / "old-1.png", 901)
    events = Events()
    camera = open_camera(
        camera_config(kind="folder", path=folder, settle_s=0.3, poll_s=0.05, queue_size=4), events
    ).start()
    try:
        events.wait_for("camera_connected")
        _write_png(folder / "a.png", 1)
        time.sleep(0.05)
        _write_png(folder / "b.png", 2)
        # c.png is written slowly, in two halves 0.2 s apart: it must not be read half-written.
        ok, data = cv2.imencode(".png", frame_image(3))
        half = len(data) // 2
        with open(folder / "c.png", "wb") as handle:
            handle.write(data[:half].tobytes())
            handle.flush()
            time.sleep(0.2)
            handle.write(data[half:].tobytes())
        (folder / "d.png").write_bytes(b"not a png at all")  # a corrupt image: counted, not delivered
        frames = []
        deadline = time.monotonic() + 8
        while len(frames) < 3 and time.monotonic() < deadline:
            frame = camera.read(0.5)
            if frame is not None:
                frames.append(frame)
        assert camera.read(0.8) is None  # nothing more: each file once
    finally:
        camera.stop()
    assert [f.source_name for f in frames] == ["a.png", "b.png", "c.png"]
    assert [f.source() for f in frames] == [{"kind": "folder", "file": n} for n in ("a.png", "b.png", "c.png")]
    assert [code_of(f.image) for f in frames] == [1, 2, 3]
    assert camera.rejected == {"unreadable": 1}
    assert events.of("frame_rejected")[0]["file"] == "d.png"


def test_folder_existing_files_without_watching_finishes(tmp_path):
    for i in range(5):
        _write_png(tmp_path / f"{i:03d}.png", i)
        os.utime(tmp_path / f"{i:03d}.png", (1_000_000 + i, 1_000_000 + i))
    camera = open_camera(
        camera_config(kind="folder", path=tmp_path, existing=True, watch=False, settle_s=0.0, queue_size=2)
    ).start()
    try:
        frames = read_all(camera, timeout=5)
    finally:
        camera.stop()
    assert [code_of(f.image) for f in frames] == [0, 1, 2, 3, 4]  # back-pressure: nothing dropped
    assert [f.written_at for f in frames] == [1_000_000 + i for i in range(5)]  # when the file was written
    assert camera.finished and camera.status == "finished"


# ------------------------------------------------------------------------------- HTTP stream by ffmpeg
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    """Is something listening on the port? Read from /proc, because a probe connection would be taken
    as ffmpeg's one client (-listen 1)."""
    wanted = f":{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(line.split()[1].endswith(wanted) and line.split()[3] == "0A" for line in table.readlines()[1:])


class FfmpegStream:
    """`ffmpeg -re -stream_loop -1 -i video -f mpjpeg -listen 1 http://127.0.0.1:PORT/stream.mjpg`, by PID."""

    def __init__(self, video: Path, port: int):
        self.video, self.port, self.process = video, port, None
        self.url = f"http://127.0.0.1:{port}/stream.mjpg"

    def start(self, attempts: int = 3) -> FfmpegStream:
        """Start and wait until it listens. A camera that keeps reconnecting can take ffmpeg's one client
        (-listen 1) and drop it before this loop saw the port listening (a loaded machine): ffmpeg then
        exits, and it is started again, up to `attempts` times."""
        for _ in range(attempts):
            self.process = subprocess.Popen(
                [
                    FFMPEG,
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                    str(self.video),
                    "-c",
                    "copy",
                    "-f",
                    "mpjpeg",
                    "-listen",
                    "1",
                    self.url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30  # a start-up wait, not a speed target: a loaded machine is slow here
            while not _listening(self.port) and self.process.poll() is None:
                assert time.monotonic() < deadline, "ffmpeg did not listen within 30 s"
                time.sleep(0.02)
            if self.process.poll() is None:
                return self
        raise AssertionError(f"ffmpeg exited at start {attempts} times (port {self.port})")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@pytest.fixture
def stream_video(tmp_path) -> Path:
    return write_video(tmp_path / "stream.avi", 200, fps=25.0)


@pytest.fixture
def streams():
    started: list[FfmpegStream] = []
    yield started
    for stream in started:
        stream.stop()


def http_camera(url: str, events: Events):
    return open_camera(
        camera_config(
            kind="http",
            uri=url,
            open_timeout_s=1.5,
            read_timeout_s=1.0,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
            queue_size=8,
        ),
        events,
    )


def collect(camera, seconds: float) -> list:
    """Frames read for `seconds`, each with the monotonic time it was received."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = camera.read(0.1)
        if frame is not None:
            got.append((time.monotonic(), frame))
    return got


def assert_no_repeats(received: list) -> None:
    codes = [code_of(frame.image) for _, frame in received]
    assert all(a != b for a, b in zip(codes, codes[1:], strict=False)), f"repeated frame delivered: {codes}"


@pytest.mark.slow
@needs_ffmpeg
def test_http_stream_killed_then_restarted_reconnects_with_backoff(stream_video, streams):
    port = free_port()
    streams.append(FfmpegStream(stream_video, port).start())
    events = Events()
    camera = http_camera(streams[0].url, events).start()
    try:
        events.wait_for("camera_connected", timeout=10)
        before = collect(camera, 0.8)
        assert len(before) >= 5
        assert_no_repeats(before)
        killed = time.monotonic()
        streams[0].signal(signal.SIGKILL)
        streams[0].process.wait(5)
        lost = events.wait_for("camera_lost", since=killed, timeout=5)
        assert camera.status == "reconnecting"
        attempts = events.wait_for("camera_reconnecting", since=killed, count=3, timeout=10)
        delays = [a["delay_s"] for a in attempts]
        assert delays[1] > delays[0] and delays[2] > delays[1] and max(delays) <= 1.0
        in_flight = collect(camera, 0.05)  # queued before the loss: real, older frames
        assert all(frame.captured_at < time.time() - 0.05 for _, frame in in_flight)
        assert collect(camera, 0.4) == []  # nothing while nobody serves
        restarted = time.monotonic()
        streams.append(FfmpegStream(stream_video, port).start())  # the same port
        events.wait_for("camera_connected", since=restarted, timeout=10)
        after = collect(camera, 1.0)
        assert len(after) >= 5 and camera.status == "connected"
        assert all(frame.captured_at > time.time() - 5 for _, frame in after)
        assert_no_repeats(after)
        assert lost[0]["reason"] and camera.reconnects >= 1
    finally:
        camera.stop()


@pytest.mark.slow
@needs_ffmpeg
def test_http_stream_stalled_delivers_no_stale_frame_then_resumes(stream_video, streams):
    port = free_port()
    streams.append(FfmpegStream(stream_video, port).start())
    events = Events()
    camera = http_camera(streams[0].url, events).start()
    try:
        events.wait_for("camera_connected", timeout=10)
        before = collect(camera, 0.5)
        # A short stall (under the read timeout): nothing is invented meanwhile, the same connection resumes.
        streams[0].signal(signal.SIGSTOP)
        stopped, stopped_at = time.monotonic(), time.time()
        during = collect(camera, 0.6)
        streams[0].signal(signal.SIGCONT)
        resumed_at = time.time()
        after = collect(camera, 1.0)
        # Frames already on the wire at SIGSTOP may still be decoded just after it; nothing read later is real.
        stale = [f for _, f in during if f.captured_at > stopped_at + 0.2]
        assert stale == [], [(code_of(f.image), f.captured_at - stopped_at) for f in stale]
        assert len(after) >= 5 and all(f.captured_at >= resumed_at for _, f in after)
        assert_no_repeats(before + during + after)
        codes = [code_of(f.image) for _, f in before + during + after]
        assert len(codes) == len(set(codes))  # each stream frame at most once
        assert not events.of("camera_lost", since=stopped)
        # A long stall (over the read timeout): lost, no frame captured while stalled, then back.
        streams[0].signal(signal.SIGSTOP)
        stopped, stopped_at = time.monotonic(), time.time()
        lost = events.wait_for("camera_lost", since=stopped, timeout=5)
        during = collect(camera, 1.0)
        assert [f for _, f in during if f.captured_at > stopped_at + 0.2] == []
        assert "timed out" in lost[0]["reason"] and camera.status == "reconnecting"
        streams[0].signal(signal.SIGCONT)
        continued = time.monotonic()
        try:  # ffmpeg -listen 1 serves one client; ours hung up: it exits
            streams[0].process.wait(3)
            streams.append(FfmpegStream(stream_video, port).start())
        except subprocess.TimeoutExpired:
            pass
        events.wait_for("camera_connected", since=continued, timeout=10)
        after = collect(camera, 1.0)
        assert len(after) >= 5
        assert_no_repeats(after)
        assert camera.status == "connected" and "repeated" not in camera.rejected
    finally:
        camera.stop()
