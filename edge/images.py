"""Reading images and resizing them to the model input, the one way both training and the edge do it.

The bundle's `model.onnx` takes uint8 RGB `[N, H, W, 3]` and normalises inside the graph, so the only
pre-processing outside the graph is this: decode, force 3-channel RGB, resize with OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from onen.edge.errors import DataError

# How an image reaches the model input, recorded in every run and bundle: scaled per axis to exactly HxW ("stretch"),
# a frame 4x the input or more halved by exact 2x2 averages first ("halving"; resize_to_input says why).
# A bundle trained another way is refused.
RESIZE = "stretch-halving"
RESIZE_MODES = (RESIZE,)
# INTER_AREA for shrinking (no aliasing of fine scratches), INTER_LINEAR for enlarging.
_SHRINK = cv2.INTER_AREA
_ENLARGE = cv2.INTER_LINEAR
GREY_CHECK_ROWS = 8  # rows of a frame that must be grey for grey_plane: a colour camera fails on the first


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file of any depth/channels into uint8 RGB HxWx3; a clear error names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"{path}: cannot decode as an image (corrupt or unsupported format)")
    return to_rgb_uint8(image, source=str(path), assume_bgr=True)


def read_mask(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask as bool HxW (pixel > 127 is set). With `expected_hw`, a size mismatch is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: mask file does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        raise DataError(f"{path}: cannot decode as a mask image")
    if expected_hw is not None and tuple(mask.shape[:2]) != tuple(expected_hw):
        raise DataError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{expected_hw[1]}x{expected_hw[0]}; a mask must have the size of its image"
        )
    return mask > 127


def to_rgb_uint8(image: np.ndarray, source: str = "frame", assume_bgr: bool = True) -> np.ndarray:
    """Bring a decoded image (gray, BGR, BGRA, 16-bit) to uint8 RGB HxWx3."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{source}: unsupported pixel type {image.dtype}; expected 8 or 16-bit")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"{source}: unsupported image shape {image.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if assume_bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if assume_bgr else image


def resize_to_input(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWxC (or HxW) image to the model input size, as training and the edge both do.

    A frame at least 4x the input on both sides is first halved with exact 2x2 averages, for as long as the half
    stays at least twice the input; INTER_AREA then does the rest. OpenCV's INTER_AREA is slow at non-integer
    ratios in proportion to the source size, and a camera frame is often 10-20x the input. The result is still an
    area average (no aliasing of thin cracks), and an image under 4x the input is resized exactly as before."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if image.shape[0] * image.shape[1] <= height * width:
        return cv2.resize(image, (width, height), interpolation=_ENLARGE)
    h, w = image.shape[:2]
    while h % 2 == 0 and w % 2 == 0 and h >= 4 * height and w >= 4 * width:
        h, w = h // 2, w // 2
        image = cv2.resize(image, (w, h), interpolation=_SHRINK)
    return cv2.resize(image, (width, height), interpolation=_SHRINK)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a bool mask with nearest neighbour so it stays binary."""
    resized = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


def grey_plane(frame_rgb: np.ndarray) -> np.ndarray | None:
    """The one plane of a grey RGB frame (R = G = B on GREY_CHECK_ROWS evenly spaced rows), else None.

    Resizing (and rectifying) works per channel, so that plane resized and replicated is exactly the RGB frame
    resized, at a third of the work: what a `color: mono` camera's frames take (prepare_batch)."""
    sample = frame_rgb[:: max(1, frame_rgb.shape[0] // GREY_CHECK_ROWS)]
    if not (np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 1], sample[..., 2])):
        return None
    return cv2.extractChannel(frame_rgb, 0)


def prepare_batch(frames: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Stack RGB frames (or grey planes, see grey_plane) into the bundle's uint8 `[N, H, W, 3]` input (one
    frame: the resized image itself, no further copy)."""
    resized = [as_rgb(resize_to_input(f, height, width)) for f in frames]
    if len(resized) == 1:
        return np.ascontiguousarray(resized[0][None], dtype=np.uint8)
    return np.stack(resized).astype(np.uint8, copy=False)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB image as it is, a grey plane (HxW) replicated to RGB."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
