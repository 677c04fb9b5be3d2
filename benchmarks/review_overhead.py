"""Daemon frames/s with two review pages open vs none (same run, alternating), page load and update latency.

Each repeat runs `onen run --exit-when-finished` as its own process over the same video (file camera,
realtime=False: every frame, back-pressure; heat maps and archive on defect), once with no viewer and once
with `onen review` serving two Chromium pages of the live view (Playwright, the system Chromium).
Throughput is results / time between the first and the last result at a subscriber. Update latency is
result arrival at the subscriber -> the tile showing that seq in the page (wall clocks of one machine;
tiles skip seqs under load, latest wins, so only shown seqs count). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from onen.benchmarks.daemon import add_camera_size

CHROMIUM = "/usr/bin/chromium"
WATCH_SEQ = """([camera]) => {
  window.__shown = [];
  const observer = new MutationObserver(() => {
    const dd = document.querySelectorAll(`.tile[data-camera="${camera}"] dd`)[2];
    if (dd) window.__shown.push([Number(dd.textContent), Date.now()]);
  });
  observer.observe(document.getElementById("main"), {subtree: true, childList: true, characterData: true});
}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        type=Path,
        help="bundle to run (default: the untrained benchmark student of --size, "
        "as in `onen bench daemon`: a station-sized model, not the 64 px demo that runs at 800 frames/s)",
    )
    parser.add_argument(
        "--size", type=int, default=224, help="input size of the default benchmark student (default 224)"
    )
    add_camera_size(parser)
    parser.add_argument("--frames", type=int, default=400, help="frames in the video (default 400)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating none/two-pages repeats (default 3)")


class SseReader:
    """An /api/stream client on a thread that reads and discards events (a page that renders nothing)."""

    def __init__(self, port: int):
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.request("GET", "/api/stream")
        self.response = self.connection.getresponse()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while self.response.readline():
                pass
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.connection.sock and self.connection.sock.close()


def run_daemon(config: Path, broker, frames: int, env: dict) -> tuple[float, dict[int, float]]:
    """frames/s at a subscriber, and each seq's arrival time (epoch s)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    arrivals: dict[int, float] = {}
    ticks: list[float] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-review-{time.monotonic_ns()}")

    def on_message(c, u, message):
        ticks.append(time.perf_counter())
        arrivals[json.loads(message.payload)["seq"]] = time.time()

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.subscribe("onen/bench/+/result", qos=1)
    client.loop_start()
    subscribed.wait(5)
    subprocess.run(
        [sys.executable, "-m", "onen.edge.cli", "run", "--config", str(config), "--exit-when-finished"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )
    deadline = time.monotonic() + 10
    while len(ticks) < frames and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    fps = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 else 0.0
    return fps, arrivals


def main(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    from onen.benchmarks.daemon import bench_bundle, write_station, write_video
    from onen.edge.local_broker import MosquittoBroker, free_port, port_accepts

    bundle = args.bundle or bench_bundle(args.size)
    env = {
        **os.environ,
        "PYTHONPATH": f"{Path(__file__).resolve().parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    figures: dict[str, list[float]] = {"none": [], "two_pages": [], "two_streams": [], "update_ms": [], "load_ms": []}
    with (
        tempfile.TemporaryDirectory(prefix="onen-review-bench-") as tmp,
        MosquittoBroker() as broker,
        sync_playwright() as pw,
    ):
        folder = Path(tmp)
        video = write_video(folder / "v.avi", args.frames, args.camera_size)
        config = write_station(folder, broker.port, bundle, video, 1, review=True)
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        for repeat in range(args.repeats):
            fps, _ = run_daemon(config, broker, args.frames, env)
            figures["none"].append(fps)
            port = free_port()
            review = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onen.edge.cli",
                    "review",
                    "--config",
                    str(config),
                    "--listen",
                    f"127.0.0.1:{port}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while not port_accepts("127.0.0.1", port):
                    time.sleep(0.1)
                pages = []
                for _ in range(2):
                    page = browser.new_page()
                    started = time.perf_counter()
                    page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
                    page.wait_for_selector("#conn:text('live')")
                    figures["load_ms"].append(1000 * (time.perf_counter() - started))
                    page.evaluate(WATCH_SEQ, ["cam0"])
                    pages.append(page)
                fps, arrivals = run_daemon(config, broker, args.frames, env)
                figures["two_pages"].append(fps)
                for page in pages:
                    for seq, shown_ms in page.evaluate("window.__shown"):
                        if seq in arrivals:
                            figures["update_ms"].append(shown_ms - 1000 * arrivals[seq])
                    page.close()
                streams = [SseReader(port) for _ in range(2)]  # the server's share alone: no rendering
                figures["two_streams"].append(run_daemon(config, broker, args.frames, env)[0])
                for reader in streams:
                    reader.close()
            finally:
                review.terminate()
                review.wait(10)
            print(
                f"repeat {repeat + 1}: none {figures['none'][-1]:.1f} fps, two pages {figures['two_pages'][-1]:.1f} "
                "fps, "
                f"two streams without a browser {figures['two_streams'][-1]:.1f} fps",
                flush=True,
            )
        browser.close()

    def p95(values):
        return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)] if values else float("nan")

    none, two = statistics.median(figures["none"]), statistics.median(figures["two_pages"])
    fps_streams = statistics.median(figures["two_streams"])
    report = {
        "fps_none": round(none, 2),
        "fps_two_pages": round(two, 2),
        "ratio": round(two / none, 4) if none else None,
        "fps_two_streams": round(fps_streams, 2),
        "ratio_streams": round(fps_streams / none, 4) if none else None,
        "update_ms_median": round(statistics.median(figures["update_ms"]), 1) if figures["update_ms"] else None,
        "update_ms_p95": round(p95(figures["update_ms"]), 1) if figures["update_ms"] else None,
        "update_samples": len(figures["update_ms"]),
        "page_load_ms_median": round(statistics.median(figures["load_ms"]), 1),
        "page_load_ms_p95": round(p95(figures["load_ms"]), 1),
    }
    print(f"daemon fps: none {none:.1f}, two review pages {two:.1f} (ratio {report['ratio']}; target within 5 %)")
    print(
        f"daemon fps with two event streams but no browser on this machine: {fps_streams:.1f} (ratio "
        f"{report['ratio_streams']})"
    )
    print(
        f"update latency (result at subscriber -> tile shows it): median {report['update_ms_median']} ms, "
        f"p95 {report['update_ms_p95']} ms over {report['update_samples']} shown results"
    )
    print(
        f"page load (goto -> live stream open): median {report['page_load_ms_median']} ms, p95 "
        f"{report['page_load_ms_p95']} ms"
    )
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
