"""`onen demo`: the whole product on a fresh machine in about a minute, with real parts only.

1. a small model trained on generated parts (train.recipes.small_bundle, which trains on one torch thread
   so the model does not depend on the machine or OMP_NUM_THREADS), cached in
   ~/.cache/onen-inspect/demo-bundle and reused while it verifies and its recipe key matches; with
   `--family grdnet` a small GRD-Net instead, trained by `onen train --config train/recipe_files/grdnet.yaml`
   (supervision none: good parts and synthetic defects; 64 px, 12 epochs, lr 1e-3) and exported by `onen export`,
   cached in
   ~/.cache/onen-inspect/demo-bundle-grdnet;
2. frames of generated parts (some with spots or scratches) written as a video with OpenCV;
3. a camera calibrated on generated good parts (`onen calibrate`'s code), else the bundle defaults;
4. mosquitto on a free loopback port, a station YAML in a temp dir, the daemon on that video;
5. a subscriber printing each result as it arrives and a summary; then everything stops cleanly.

The model and the generated parts come from the `[train]` extra (torch); the daemon part is pure edge.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from onen.edge import images

DEFAULT_CACHE = Path("~/.cache/onen-inspect/demo-bundle").expanduser()
DEFAULT_GRDNET_CACHE = Path("~/.cache/onen-inspect/demo-bundle-grdnet").expanduser()
SEED = 0
# the small GRD-Net: 96 generated 64 px parts (its good training ones), batch 8, 12 epochs; lr 10x the paper's, or
# it learns next to nothing in 12 epochs (validation image AUROC 0.52 at 1e-4, 0.84 at 1e-3 here)
GRDNET_EPOCHS = 12
GRDNET_FLAGS = ("--size", "64", "--batch-size", "8", "--lr", "1e-3")

CAMERA = "demo-cam"
STATION = "demo"
SCALE = 4  # generated parts are 64x64; the "camera" films them at 256x256


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end demo: small model, generated video, local broker, daemon, live results",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--frames", type=int, default=48, help="frames in the generated video (default 48)")
    parser.add_argument(
        "--fps",
        type=float,
        default=12.0,
        help="pace the video like a live camera at this rate (default 12; 0: every frame as fast as the engine goes)",
    )
    parser.add_argument(
        "--family",
        choices=("onen", "grdnet"),
        default="onen",
        help="the model: onen (small OneN student, default) or grdnet (small GRD-Net from good parts only)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the demo model is kept (default {DEFAULT_CACHE}, with --family grdnet {DEFAULT_GRDNET_CACHE})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the video, config, spool and archive here (default: a temp dir, removed)",
    )
    parser.add_argument("--no-calibrate", action="store_true", help="use the bundle's default thresholds")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated parts")
    parser.set_defaults(handler=run)


# ---- steps ----------------------------------------------------------------------------------------
def demo_key() -> str | None:
    """The small recipe's key (its code, seed, torch and thread count); None without the [train] extra."""
    try:
        from onen.train.recipes import small_bundle_key
    except ImportError:
        return None
    return small_bundle_key(SEED)


_GRDNET_SOURCES = (
    "grdnet_training.py",
    "grdnet_step.py",
    "losses_grdnet.py",
    "ssim.py",
    "config.py",
    "tiny_data.py",
    "export.py",
    "recipe_files/grdnet.yaml",
    "models/grdnet_generator.py",
    "models/grdnet_discriminator.py",
    "models/grdnet_export.py",
    "models/unet.py",
)


def grdnet_demo_key() -> str | None:
    """The small GRD-Net's key (its settings, torch and the code that trains it); None without the [train] extra."""
    import hashlib

    try:
        import torch

        import onen.train as train
    except ImportError:
        return None
    digest = hashlib.sha256(f"{SEED}:{GRDNET_EPOCHS}:{GRDNET_FLAGS}:{torch.__version__}".encode())
    here = Path(train.__file__).resolve().parent
    for name in _GRDNET_SOURCES:
        if (here / name).is_file():
            digest.update((here / name).read_bytes())
    digest.update(Path(images.__file__).read_bytes())  # the resize it is trained and served with
    return digest.hexdigest()[:16]


def train_grdnet_bundle(cache_dir: Path) -> Path:
    """A small GRD-Net through the real commands: generated parts, `onen train --config grdnet.yaml`, `onen export`
    (one torch thread, like the small OneN recipe)."""
    import torch

    from onen.edge.cli import main as onen
    from onen.edge.errors import OnenError
    from onen.train.config_file import shipped_recipes
    from onen.train.tiny_data import write_tiny_dataset

    data = write_tiny_dataset(cache_dir / "data", seed=SEED, count=96, size=64)
    run, bundle = cache_dir / "run", cache_dir / "bundle"
    recipe = shipped_recipes()["grdnet"]
    train = ["train", "--config", str(recipe), "--data", str(data), "--out", str(run), "--seed", str(SEED)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if onen([*train, *GRDNET_FLAGS, "--epochs", str(GRDNET_EPOCHS)]) != 0:
            raise OnenError(f"onen demo: training the small GRD-Net in {run} failed")
    finally:
        torch.set_num_threads(threads)
    if onen(["export", "--run", str(run), "--out", str(bundle), "--name", "small-demo-grdnet"]) != 0:
        raise OnenError(f"onen demo: exporting the small GRD-Net of {run} failed")
    return bundle


def demo_bundle(cache_dir: Path, family: str = "onen") -> Path:
    """The cached demo bundle of `family` when it verifies, else a freshly trained one (needs torch)."""
    from onen.edge.bundle import load_bundle
    from onen.edge.errors import OnenError

    marker = cache_dir / "demo.json"
    key = grdnet_demo_key() if family == "grdnet" else demo_key()
    if marker.is_file():
        try:
            cached = json.loads(marker.read_text())
            path = Path(cached["bundle"])
            if cached.get("key") != key:
                raise ValueError(f"made by recipe {cached.get('key')}, the demo now trains {key}")
            load_bundle(path)
            print(f"model: reusing {path}")
            return path
        except (OnenError, KeyError, ValueError, OSError) as error:
            print(f"model: cached bundle unusable ({error}); training a new one")
    try:
        from onen.train.recipes import small_bundle
    except ImportError as error:
        raise OnenError(
            f"onen demo needs to train a small model once, which needs the [train] extra (torch): {error}; "
            f"install it with `pip install 'onen-inspect[train]'`"
        ) from error
    what = "a small GRD-Net" if family == "grdnet" else "a small model"
    print(f"model: training {what} on generated parts (once; about a minute on a CPU)...")
    started = time.monotonic()
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True)
    if family == "grdnet":
        path = train_grdnet_bundle(cache_dir).resolve()
    else:
        path = Path(small_bundle(cache_dir, seed=SEED)).resolve()
    load_bundle(path)
    marker.write_text(json.dumps({"bundle": str(path), "key": key}) + "\n")
    print(f"model: {path} ready in {time.monotonic() - started:.0f} s")
    return path


def generated_parts(seed: int, count: int, defect_fraction: float = 0.5):
    """Procedural parts (textured, with an AOI border) and which ones carry a defect."""
    from onen.train.tiny_data import make_tiny_set

    return make_tiny_set(seed=seed, count=count, size=64, defect_fraction=defect_fraction)


def _film(image_rgb):
    import cv2

    return cv2.resize(image_rgb, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)


def write_video(path: Path, parts, fps: float) -> list[str]:
    """An MJPG .avi of the parts at camera resolution; returns the true class of every frame."""
    import cv2

    height, width = parts.images.shape[1] * SCALE, parts.images.shape[2] * SCALE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps or 10.0, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the MJPG codec")
    for image in parts.images:
        writer.write(cv2.cvtColor(_film(image), cv2.COLOR_RGB2BGR))
    writer.release()
    return [parts.class_names[c] for c in parts.classes]


def write_aoi(path: Path, parts) -> Path:
    import cv2

    cv2.imwrite(str(path), _film(parts.aoi.astype("uint8") * 255))
    return path


def calibrate(bundle: Path, workdir: Path, aoi: Path, seed: int) -> Path | None:
    """Calibrate the demo camera on generated good parts; None (bundle defaults) when it cannot."""
    import cv2

    from onen.edge.errors import OnenError

    try:
        from onen.calibration.camera import CalibrationRequest, calibrate_camera
    except ImportError as error:
        print(f"calibration: not available here ({error}); using the bundle's default thresholds")
        return None
    good = workdir / "calibration-good"
    good.mkdir(parents=True, exist_ok=True)
    parts = generated_parts(seed + 1000, 128)
    good_images = parts.images[parts.labels == 0]  # the good half only
    for index, image in enumerate(good_images):
        cv2.imwrite(str(good / f"{index:03d}.png"), cv2.cvtColor(_film(image), cv2.COLOR_RGB2BGR))
    request = CalibrationRequest(
        bundle=bundle,
        camera=CAMERA,
        good=good,
        out=workdir / "calibration" / f"{CAMERA}.yaml",
        aoi=aoi,
        target_frr=0.05,
        confidence=0.95,
        backend="onnxruntime",
    )
    try:
        outcome = calibrate_camera(request)
    except (OnenError, ValueError) as error:
        print(f"calibration: failed ({error}); using the bundle's default thresholds")
        return None
    cal = outcome.calibration
    print(
        f"calibration: {len(good_images)} good parts -> image threshold {cal.image_threshold:.4f} on the raw score "
        "(published scores put it at 0.5), "
        f"pixel threshold {cal.pixel_threshold:.3f}, min region {cal.min_region_area} px, localisation "
        f"{cal.localisation}"
    )
    return outcome.yaml_path


def write_station(
    workdir: Path, port: int, bundle: Path, video: Path, aoi: Path, calibration: Path | None, fps: float
) -> Path:
    import yaml

    camera = {
        "model": "demo",
        "source": {"kind": "file", "path": str(video), "realtime": bool(fps)} | ({"fps": fps} if fps else {}),
        "trigger": {"mode": "continuous", "queue_size": 4},
        "aoi": str(aoi),
        "publish": {"heatmap": "on_defect"},
    }
    if calibration is not None:
        camera["calibration"] = str(calibration)
    station = {
        "station": STATION,
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": f"onen-demo-{port}", "stats_interval_s": 2},
        "models": {"demo": {"bundle": str(bundle), "backend": "onnxruntime"}},
        "cameras": {CAMERA: camera},
        "spool": {"path": str(workdir / "spool"), "max_mb": 64},
        "archive": {"path": str(workdir / "archive"), "max_mb": 64},
    }
    path = workdir / "station.yaml"
    path.write_text("# written by onen demo\n" + yaml.safe_dump(station, sort_keys=False))
    return path


class ResultPrinter:
    """Subscribes to the station's results and prints one line per result as it arrives."""

    def __init__(self, host: str, port: int, truth: list[str]):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.truth = truth
        self.results: list[dict] = []
        self.availability: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"onen-demo-viewer-{port}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *a: client.subscribe(
            [(f"onen/{STATION}/+/result", 1), (f"onen/{STATION}/availability", 1)]
        )
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/availability"):
            self.availability.append(message.payload.decode())
            return
        result = json.loads(message.payload)
        with self._lock:
            self.results.append(result)
        truth = self.truth[result["seq"]] if result["seq"] < len(self.truth) else "?"
        regions = result["regions"]
        biggest = f" largest {regions[0]['bbox']}" if regions else ""
        probability = result["class"]["probability"]
        print(
            f"  seq {result['seq']:3d}  {result['verdict']:6s} score {result['score']:.3f}  "
            f"class {result['class']['name']:8s}{'' if probability is None else f' p={probability:.2f}'}  "
            f"regions {len(regions)}{biggest}  latency {result['latency_ms']['total']:6.1f} ms  (truth: {truth})",
            flush=True,
        )

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len({r["seq"] for r in self.results}) >= count:
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def summary(
    results: list[dict], truth: list[str], stats: dict, wall_s: float, classes: bool = True, dropped: int = 0
) -> list[str]:
    """The demo's last lines; `classes` False: the model learnt no defect classes (GRD-Net, supervision none);
    `dropped`: frames the paced camera dropped because the engine was slower than its fps (a live line does too)."""
    unique = {r["seq"]: r for r in results}
    verdicts = [r["verdict"] for r in unique.values()]
    right = sum((r["verdict"] == "defect") == (truth[s] != "good") for s, r in unique.items() if s < len(truth))
    defects = [(s, r) for s, r in unique.items() if s < len(truth) and truth[s] != "good" and r["verdict"] == "defect"]
    class_right = sum(r["class"]["name"] == truth[s] for s, r in defects)
    latency = stats.get("total", {})
    lines = [
        f"summary: {len(unique)} results ({verdicts.count('ok')} ok, {verdicts.count('defect')} defect); "
        f"verdict matches the generated truth on {right}/{len(unique)}; "
        + (
            f"defect class right on {class_right}/{len(defects)} detected defects"
            if classes
            else f"{len(defects)} defects detected (the model learnt no defect classes)"
        )
        + (f"; {dropped} frames dropped by the camera (the engine was slower than its fps)" if dropped else ""),
        "latency p50 (ms): " + ", ".join(f"{stage} {values['p50']:.1f}" for stage, values in stats.items()),
        f"throughput: {len(unique) / wall_s:.1f} frames/s over {wall_s:.1f} s (p99 total "
        f"{latency.get('p99', float('nan')):.1f} ms)",
    ]
    return lines


# ---- the command ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from onen.edge.bundle import load_bundle
    from onen.edge.config import load_config
    from onen.edge.daemon import Daemon, DaemonOptions
    from onen.edge.errors import OnenError
    from onen.edge.local_broker import MosquittoBroker

    logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own story
    if args.frames < 1:
        raise OnenError(f"--frames must be at least 1, got {args.frames}")
    cache = args.cache_dir or (DEFAULT_GRDNET_CACHE if args.family == "grdnet" else DEFAULT_CACHE)
    bundle = demo_bundle(cache.expanduser(), args.family)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onen-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        parts = generated_parts(args.seed, args.frames)
        video = workdir / "parts.avi"
        truth = write_video(video, parts, args.fps)
        aoi = write_aoi(workdir / "aoi.png", parts)
        print(
            f"video: {len(truth)} frames of generated parts ({sum(t != 'good' for t in truth)} with a defect)"
            + (f" -> {video}" if args.workdir else "")
        )
        calibration = None if args.no_calibrate else calibrate(bundle, workdir, aoi, args.seed)
        with MosquittoBroker() as broker:
            print(f"broker: mosquitto on {broker.host}:{broker.port} (pid {broker.pid})")
            config = load_config(write_station(workdir, broker.port, bundle, video, aoi, calibration, args.fps))
            printer = ResultPrinter(broker.host, broker.port, truth)
            daemon = Daemon(config, DaemonOptions(exit_when_finished=True))
            daemon.start()
            print(f"daemon: station '{STATION}', camera '{CAMERA}', results on onen/{STATION}/{CAMERA}/result")
            started = time.monotonic()
            runner = threading.Thread(target=daemon.run, name="onen-demo-daemon")
            runner.start()
            try:
                while runner.is_alive():
                    runner.join(0.2)
            except KeyboardInterrupt:
                daemon.request_stop()
                runner.join()
            wall = time.monotonic() - started
            inspected = sum(p.inspected for p in daemon.pipelines.values())
            complete = printer.wait_for(inspected, timeout=10)
            printer.close()
            classes = load_bundle(bundle).manifest.classes_supervised
            dropped = sum(p.camera.dropped for p in daemon.pipelines.values())
            for line in summary(printer.results, truth, daemon.stats.percentiles(), wall, classes, dropped):
                print(line)
            kept = (
                f"archive of defects: {config.archive.path}"
                if args.workdir
                else "archive and video removed with the temp dir (pass --workdir to keep them)"
            )
            print(f"availability: {' -> '.join(printer.availability)}; {kept}")
            if not complete:
                print(
                    f"warning: {inspected} frames inspected but only {len({r['seq'] for r in printer.results})} "
                    "results arrived"
                )
                return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
