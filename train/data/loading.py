"""Load one sample at model input size (image, mask, AOI), without torch.

Shared by the torch data set (training) and by evaluation, which must also run with only the edge
runtime installed (evaluating an exported bundle through ONNX Runtime).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from onen.edge.errors import DataError
from onen.edge.images import resize_mask, resize_to_input
from onen.train.data.sample import Sample
from onen.train.data.validation import load_sample_arrays, read_aoi


def shared_aoi_at(path: Path | None, height: int, width: int) -> np.ndarray | None:
    """A data set's one AOI mask (any size) resized to the model input; None when there is none."""
    return resize_mask(read_aoi(Path(path)), height, width) if path is not None else None


def resize_defect_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize (as edge.images.resize_mask), but a defect too thin to survive it (a 1-2 px
    crack shrunk 3x) keeps every output pixel it touches, so a labelled defect never vanishes."""
    resized = resize_mask(mask, height, width)
    if mask.any() and not resized.any():
        resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0
    return resized


def load_resized(
    sample: Sample, height: int, width: int, shared_aoi: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image uint8 [H,W,3], mask bool [H,W] or None, AOI bool [H,W] (the sample's own, the shared one, or all)."""
    try:
        image, mask, own_aoi = load_sample_arrays(sample)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001  (OpenCV errors: name the file rather than crash anonymously)
        raise DataError(f"{sample.image}: cannot load: {error}") from error
    image = resize_to_input(image, height, width)
    mask = resize_defect_mask(mask, height, width) if mask is not None else None
    if own_aoi is not None:
        aoi = resize_mask(own_aoi, height, width)
    elif shared_aoi is not None:
        aoi = shared_aoi
    else:
        aoi = np.ones((height, width), bool)
    return image, mask, aoi
