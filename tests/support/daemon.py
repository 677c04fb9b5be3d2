"""Helpers shared by the daemon tests: real videos, real station files, a real MQTT subscriber."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from onen.edge.bundle import load_bundle
from onen.edge.images import read_image_rgb

SCALE = 2


def reference_frames(bundle_dir: Path) -> tuple[list[np.ndarray], list[float]]:
    """The bundle's reference images (good and defective) at camera size, with their expected raw scores."""
    bundle = load_bundle(bundle_dir)
    frames, scores = [], []
    for ref in bundle.manifest.reference:
        image = read_image_rgb(bundle.path / ref.file)
        frames.append(cv2.resize(image, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST))
        scores.append(ref.score)
    return frames, scores


def write_video(path: Path, frames: list[np.ndarray], count: int, fps: float = 25.0) -> Path:
    """An MJPG .avi cycling through `frames` (RGB) `count` times in total."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for index in range(count):
        writer.write(cv2.cvtColor(frames[index % len(frames)], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_station(
    folder: Path,
    port: int,
    bundle: Path,
    cameras: list[dict],
    station: str = "t1",
    backend: str = "onnxruntime",
    **extra,
) -> Path:
    """A station YAML; `cameras` is a list of camera dicts each with its "name" (written keyed by name)."""
    cameras = {cam["name"]: {k: v for k, v in cam.items() if k != "name"} for cam in cameras}
    config = {
        "station": station,
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "client_id": f"onen-{station}-{port}",
            "stats_interval_s": extra.pop("stats_interval_s", 1),
        },
        "models": {"m": {"bundle": str(bundle), "backend": backend}},
        "cameras": cameras,
        "spool": {"path": str(folder / "spool")},
        "archive": {"path": str(folder / "archive"), "max_mb": 16},
        **extra,
    }
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def file_camera(name: str, video: Path, realtime: bool = False, **more) -> dict:
    trigger = more.pop("trigger", {"mode": "continuous", "queue_size": 2})
    source = {"kind": "file", "path": str(video), "realtime": realtime, **more}
    return {"name": name, "model": "m", "source": source, "trigger": trigger, "publish": {"heatmap": "on_defect"}}


class Collector:
    """A real MQTT subscriber keeping every message (topic, payload, retain) in arrival order."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: str | list[str] = "onen/#",
        client_id: str | None = None,
        user: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        ca: Path | None = None,
    ):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topics = [topics] if isinstance(topics, str) else topics
        client_id = client_id or f"collector-{time.monotonic_ns()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if user:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), f"{client_id} could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, suffix: str) -> list[tuple[bytes, bool]]:
        with self._lock:
            return [(p, r) for t, p, r in self.messages if t.endswith(suffix)]

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def results(self) -> list[dict]:
        return [json.loads(p) for p, _ in self.on("/result")]

    def events(self) -> list[dict]:
        return [json.loads(p) for p, _ in self.on("/events")]

    def wait(self, predicate, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def unique_in_order(results: list[dict]) -> list[int]:
    """Seqs in arrival order with QoS-1 redeliveries removed (dedupe by run_id + camera + seq)."""
    seen, order = set(), []
    for r in results:
        key = (r["run_id"], r["camera"], r["seq"])
        if key not in seen:
            seen.add(key)
            order.append(r["seq"])
    return order


def start_daemon(config_path: Path, wait_connected_s: float = 0.0, **options):
    """A Daemon of the station YAML, started, with its run loop on a thread. wait_connected_s > 0: return
    only once it is connected and subscribed to its command topics (a command sent before that is lost,
    as it would be on a real broker); 0 for tests where the broker is down at start."""
    from onen.edge.config import load_config
    from onen.edge.daemon import Daemon, DaemonOptions

    daemon = Daemon(load_config(config_path), DaemonOptions(**options))
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    if wait_connected_s:
        assert daemon.publisher.wait_connected(wait_connected_s), (
            f"the station did not connect to its broker within {wait_connected_s} s"
        )
    return daemon, thread


def calibrate_on_good_folder(bundle_dir: Path, good: Path, out: Path, target_frr: float = 0.1) -> Path:
    """`onen calibrate` of camera `line` on a folder of good images, as an integrator runs it."""
    from onen.edge.cli import main as onen

    command = ["calibrate", "--bundle", str(bundle_dir), "--camera", "line", "--good", str(good)]
    assert onen([*command, "--target-frr", str(target_frr), "--out", str(out)]) == 0
    assert out.is_file()
    return out


def results_of_a_video(tmp_path: Path, bundle_dir: Path, frames: list[np.ndarray], calibration: Path) -> list[dict]:
    """The daemon (`onen run`'s Daemon) on an MJPG video of `frames` with camera `line` and `calibration`,
    through a real mosquitto, until the video ends: every result, each checked against the result schema, one
    per frame in frame order."""
    from onen.edge.local_broker import MosquittoBroker
    from onen.edge.result import validate_result

    video = write_video(tmp_path / "line.avi", frames, count=len(frames))
    with MosquittoBroker() as broker:
        camera = file_camera("line", video) | {"calibration": str(calibration)}
        config = write_station(tmp_path, broker.port, bundle_dir, [camera])
        collector = Collector(broker.host, broker.port)
        _, thread = start_daemon(config, exit_when_finished=True)
        thread.join(120)
        assert not thread.is_alive(), "the daemon did not stop at the end of the video"
        assert collector.wait(lambda c: len(c.results()) >= len(frames))
        results = collector.results()
        collector.close()
    assert unique_in_order(results) == list(range(len(frames)))
    for result in results:
        validate_result(result)
    return results
