"""Run a bundle over a camera's images (a folder, or the frames of a video file) the way the daemon does.

Per frame: calibration.prepare (rectification) -> resize to the model input -> backend -> anomaly map
masked with the AOI at model input size. Same functions as the daemon, so the thresholds fitted on
these outputs mean the same thing on the line.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from onen.edge.backends.base import Backend
from onen.edge.bundle import Bundle
from onen.edge.calibration_view import CameraCalibration
from onen.edge.errors import DataError, OnenError
from onen.edge.images import prepare_batch, read_image_rgb, to_rgb_uint8
from onen.edge.regions import apply_aoi


class QuietProgress:
    """tqdm's iterable, context and update() interface, showing nothing: progress where tqdm is not installed."""

    def __init__(self, iterable: Iterable[Any] = (), **_options: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable)

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def update(self, _count: int = 1) -> None:
        return None


def progress(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar where the calibration extra installed tqdm; on a base (station) install a quiet stand-in."""
    try:
        from tqdm import tqdm
    except ImportError:
        return QuietProgress(iterable or ())
    return tqdm(iterable, **options)


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg", ".ts"}


def open_backend(bundle: Bundle, kind: str = "auto") -> Backend:
    """The daemon's backend factory when present (TensorRT on a GPU station), else ONNX Runtime."""
    try:
        from onen.edge.backends.factory import create_backend
    except ImportError:
        from onen.edge.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle)
    return create_backend(bundle, kind)


def _is_mask(path: Path, stems_with_photo: set[tuple[Path, str]]) -> bool:
    """Masks stored beside images (magnetic-tile style same-name .png, or *_mask.png) are not camera images."""
    return path.stem.lower().endswith("_mask") or (
        path.suffix.lower() == ".png" and (path.parent, path.stem) in stems_with_photo
    )


def _walk(folder: Path) -> Iterator[Path]:
    """Files under folder, following symlinked folders (calibration sets are often assembled from links),
    each real folder once, hidden entries skipped."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(root) / f for f in files if not f.startswith("."))


def mask_beside(image: Path) -> Path | None:
    """The ground-truth mask stored beside a defect image (<stem>.png beside a non-PNG, or <stem>_mask.png)."""
    image = Path(image)
    candidates = [image.with_suffix(".png")] if image.suffix.lower() != ".png" else []
    candidates.append(image.with_name(f"{image.stem}_mask.png"))
    return next((c for c in candidates if c.is_file()), None)


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursively, sorted, hidden files and masks beside images skipped)."""
    folder = Path(folder)
    candidates = sorted(p for p in _walk(folder) if p.suffix.lower() in IMAGE_EXTENSIONS)
    photos = {(p.parent, p.stem) for p in candidates if p.suffix.lower() != ".png"}
    files = [p for p in candidates if not _is_mask(p, photos)]
    if not files:
        raise DataError(f"{folder}: no images found (expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


@dataclass
class FrameSource:
    """A folder of images or a video file; yields (name, RGB frame)."""

    path: Path
    every: int = 1  # video: take every n-th frame (consecutive frames are nearly the same part)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.exists():
            raise DataError(f"{self.path}: does not exist (expected a folder of images or a video file)")
        if self.every < 1:
            raise DataError(f"--every must be >= 1, got {self.every}")
        self.is_video = self.path.is_file()
        if self.is_video and self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(
                f"{self.path}: not a folder and not a video file (expected one of "
                f"{', '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        self.files = [] if self.is_video else list_images(self.path)

    def __len__(self) -> int:
        if not self.is_video:
            return len(self.files)
        capture = cv2.VideoCapture(str(self.path))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        capture.release()
        return (frames + self.every - 1) // self.every

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if not self.is_video:
            for file in self.files:
                yield str(file), read_image_rgb(file)
            return
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot open this video (corrupt file or codec not available)")
        index = delivered = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % self.every == 0:
                    delivered += 1
                    yield f"{self.path}#frame={index}", to_rgb_uint8(frame, source=f"{self.path} frame {index}")
                index += 1
        finally:
            capture.release()
        if delivered == 0:
            raise DataError(f"{self.path}: no frame could be decoded from this video")


@dataclass
class Example:
    name: str
    score: float
    image: np.ndarray  # uint8 [H, W, 3] as the model saw it
    anomaly_map: np.ndarray  # float32 [H, W], AOI applied


@dataclass
class RunResult:
    names: list[str]
    scores: np.ndarray  # float64 [N] raw scores
    maps: np.ndarray | None  # float16 [N, H, W], AOI applied (None when not kept)
    predicted_class: np.ndarray  # int [N], argmax of class_logits
    highest: list[Example] = field(default_factory=list)  # highest scores first
    lowest: list[Example] = field(default_factory=list)  # lowest scores first

    def __len__(self) -> int:
        return len(self.names)


def run_source(
    backend: Backend,
    calibration: CameraCalibration,
    source: FrameSource,
    label: str = "images",
    batch_size: int = 8,
    keep_examples: int = 4,
    keep_maps: bool = True,
    on_map: Callable[[np.ndarray], None] | None = None,
) -> RunResult:
    """Scores of every frame; maps kept (float16) when keep_maps, else only handed to on_map (float32)."""
    height, width = backend.input_height, backend.input_width
    aoi = calibration.aoi_for_input(height, width)
    names: list[str] = []
    scores: list[float] = []
    maps: list[np.ndarray] = []
    classes: list[int] = []
    highest: list[tuple[float, int, Example]] = []  # min-heaps of (key, counter, Example)
    lowest: list[tuple[float, int, Example]] = []

    def keep(heap: list[tuple[float, int, Example]], key: float, example_factory: Callable[[], Example]) -> None:
        if len(heap) < keep_examples:
            heapq.heappush(heap, (key, len(names), example_factory()))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, len(names), example_factory()))

    def flush(batch_names: list[str], frames: list[np.ndarray]) -> None:
        batch = prepare_batch(frames, height, width)
        outputs = backend.infer(batch)
        for i, name in enumerate(batch_names):
            score = float(outputs.score[i])
            anomaly_map = apply_aoi(outputs.anomaly_map[i, 0].astype(np.float32), aoi)
            if keep_examples:
                # called at once by keep(), inside this iteration: copies the frame only when it is kept
                make = lambda: Example(name, score, batch[i].copy(), anomaly_map)  # noqa: E731, B023
                keep(highest, score, make)
                keep(lowest, -score, make)
            names.append(name)
            scores.append(score)
            if on_map is not None:
                on_map(anomaly_map)
            if keep_maps:
                maps.append(anomaly_map.astype(np.float16))
            classes.append(int(np.argmax(outputs.class_logits[i])))

    pending_names: list[str] = []
    pending: list[np.ndarray] = []
    with progress(total=len(source) or None, desc=f"{label}", unit="img") as bar:
        for name, frame in source:
            pending_names.append(name)
            try:
                pending.append(calibration.prepare(frame))
            except DataError:
                raise
            except OnenError as error:
                raise DataError(f"{name}: {error}") from error
            if len(pending) == batch_size:
                flush(pending_names, pending)
                bar.update(len(pending))
                pending_names, pending = [], []
        if pending:
            flush(pending_names, pending)
            bar.update(len(pending))
    if not names:
        raise DataError(f"{source.path}: no images to calibrate on")
    return RunResult(
        names=names,
        scores=np.asarray(scores, np.float64),
        maps=np.stack(maps) if keep_maps else None,
        predicted_class=np.asarray(classes, np.int64),
        highest=[e for _, _, e in sorted(highest, key=lambda t: -t[0])],
        lowest=[e for _, _, e in sorted(lowest, key=lambda t: -t[0])],
    )
