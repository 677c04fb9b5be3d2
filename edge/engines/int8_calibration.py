"""INT8 calibration data: images from a folder or a list file, pre-processed exactly like the edge does.

The batching is plain Python (tested here); `make_entropy_calibrator` wraps it in TensorRT's
`IInt8EntropyCalibrator2` (imported lazily, needs a GPU). Note: in TensorRT 10 this implicit INT8
calibration is deprecated in favour of explicit quantisation (Q/DQ nodes in the ONNX) but still works;
FP16 is the default and the recommended precision for this product.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onen.edge.errors import DataError
from onen.edge.images import prepare_batch, read_image_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_calibration_images(source: str | Path) -> list[Path]:
    """Images of a folder (sorted, recursive) or of a list file (one path per line, relative to the file)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{source}: no calibration images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return paths
    if not source.is_file():
        raise DataError(
            f"{source}: calibration images not found; expected a folder of images or a text file with one image path "
            "per line"
        )
    if source.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(
            f"{source}: is a single image; expected a folder of images or a text file with one image path per line"
        )
    paths = []
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry) if Path(entry).is_absolute() else source.parent / entry
        if not path.is_file():
            raise DataError(
                f"{source}: line {number}: image {entry!r} does not exist (relative paths are read from "
                f"{source.parent})"
            )
        paths.append(path)
    if not paths:
        raise DataError(f"{source}: the list names no images (one path per line expected)")
    return paths


def calibration_batches(paths: list[Path], batch_size: int, height: int, width: int) -> Iterator[np.ndarray]:
    """uint8 `[n, H, W, 3]` batches in list order; the last one holds the remainder (n < batch_size)."""
    if batch_size < 1:
        raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        frames = [read_image_rgb(path) for path in paths[start : start + batch_size]]
        yield prepare_batch(frames, height, width)


def pad_batch(batch: np.ndarray, batch_size: int) -> np.ndarray:
    """Fill a short last batch up to `batch_size` by repeating its own images (the engine's calibration
    profile has a fixed batch; repeating real images keeps the activation statistics honest)."""
    if len(batch) == batch_size:
        return batch
    if not 0 < len(batch) < batch_size:
        raise ValueError(f"cannot pad a batch of {len(batch)} to {batch_size}")
    repeats = np.resize(np.arange(len(batch)), batch_size)
    return batch[repeats]


def make_entropy_calibrator(paths: list[Path], batch_size: int, height: int, width: int, cache_file: Path) -> Any:
    """A `trt.IInt8EntropyCalibrator2` feeding `paths` in fixed-size batches, caching its scales in `cache_file`."""
    import pycuda.driver as cuda  # lazily: only a GPU build gets here
    import tensorrt as trt

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by TensorRT's Python trampolines
            self.batches = calibration_batches(paths, batch_size, height, width)
            self.count = 0
            self.host = cuda.pagelocked_empty((batch_size, height, width, 3), dtype=np.uint8)
            self.device = cuda.mem_alloc(self.host.nbytes)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if len(names) != 1:
                log.error("INT8 calibration: the bundle contract has one input, TensorRT asks for %s", names)
                return None
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.host[...] = pad_batch(batch, batch_size)
            cuda.memcpy_htod(self.device, self.host)
            self.count += len(batch)
            log.info("INT8 calibration: %d / %d images", self.count, len(paths))
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file.is_file() and cache_file.stat().st_size:
                log.info("INT8 calibration: reusing scales from %s", cache_file)
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:  # a buffer TensorRT owns
            cache_file.write_bytes(bytes(cache))
            log.info("INT8 calibration: scales saved to %s", cache_file)

        def free(self) -> None:
            """Free the device buffer while the CUDA context is current (not at some later GC)."""
            if self.device is not None:
                self.device.free()
                self.device = None

    return EntropyCalibrator()
