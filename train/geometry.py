"""The model input's geometry: `--size N` (square), `HxW`, or `auto`, chosen from the training data.

`auto` follows the part: the aspect ratio is the median of the training images', and the height is the
smallest at which the thin end of the labelled defects (the DEFECT_QUANTILE-thinnest, measured on the masks
as the diameter of the largest disc inside each defect) keeps MIN_PIXELS_ACROSS pixels across at the model
input. Without masks the defects' size is unknown, so the floor is the native resolution. Never above the
median native size (upscaling adds no detail) nor PIXEL_BUDGET (the compute budget that keeps training and
the student's latency within the station targets); every choice says which of these decided it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from onen.edge.errors import OnenError
from onen.edge.images import RESIZE
from onen.edge.sizes import parse_pixel_size

if TYPE_CHECKING:
    from onen.train.data.sample import Sample

AUTO = "auto"
DEFAULT_SIZE = AUTO  # TrainConfig.size and `onen train --size`
MIN_PIXELS_ACROSS = 3.0  # a defect this thin still spans a few input pixels (and a stride-4 feature)
DEFECT_QUANTILE = 0.05  # the thinnest 5 % of labelled defects may fall below it: one annotation speck decides nothing
PIXEL_BUDGET = 128 * 128  # largest input area auto picks (at the data's aspect); chosen on both sets' validation
# splits against 256 * 256 (docs/experiments.md): larger inputs cost 4x and did no better there
MIN_SIDE = 64  # below this the student's stride-16 grid has fewer than 4 tokens per side
MAX_MASKS = 400  # masks read to measure defect thickness (an even sample over the defective images)


@dataclass(frozen=True)
class Geometry:
    """The resolved model input and why it is what it is (stored in the run and the bundle's manifest)."""

    height: int
    width: int
    resize: str = RESIZE  # edge.images.resize_to_input: every image is resized to exactly HxW
    chosen_by: str = "given"  # "given" (--size N / HxW) or "auto"
    reason: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        text = f"model input {self.height}x{self.width} (HxW, {self.resize})"
        if self.chosen_by == "given":
            return text + ", as given by --size"
        return f"{text}, chosen by --size auto: {self.reason['summary']}"


def parse_size(text: str | int, patch: int) -> str | tuple[int, int]:
    """`auto`, `N` (square) or `HxW` (height first, as the model's tensors are) -> "auto" or (height, width)."""
    value = str(text).strip().lower()
    if value == AUTO:
        return AUTO
    height, width = parse_pixel_size(text, "--size", "HEIGHTxWIDTH", "128, 512x192 or auto", square=True)
    for name, side in (("height", height), ("width", width)):
        if side < MIN_SIDE or side % patch:
            raise OnenError(
                f"--size {text!r}: the {name} must be a multiple of the patch size {patch} and >= {MIN_SIDE}"
            )
    return height, width


def resolve_geometry(request: str | int, samples: list[Sample], patch: int) -> Geometry:
    """The Geometry of a run from its --size and its training samples."""
    parsed = parse_size(request, patch)
    if isinstance(parsed, tuple):
        return Geometry(*parsed)
    return choose_auto(samples, patch)


def choose_auto(samples: list[Sample], patch: int) -> Geometry:
    if not samples:
        raise OnenError("--size auto needs training images to measure; found none")
    sizes = np.array([_image_hw(s) for s in samples], dtype=np.float64)
    aspect = float(np.median(sizes[:, 1] / sizes[:, 0]))  # width / height
    native = float(np.median(sizes[:, 0]))
    budget = math.sqrt(PIXEL_BUDGET / aspect)
    needed, thickness = _height_for_defects(samples, aspect)
    limits = {"native": native, "budget": budget}
    if needed is not None:
        limits["defects"] = needed
    decided_by = min(limits, key=lambda k: limits[k])
    height = _to_patch(limits[decided_by], patch)
    width = _to_patch(limits[decided_by] * aspect, patch)
    wanted = f"{needed:.0f} px high" if needed is not None else "the native size (no pixel masks: defect size unknown)"
    summary = {
        "defects": f"{MIN_PIXELS_ACROSS:g} px across the {DEFECT_QUANTILE:.0%}-thinnest labelled defect "
        f"({thickness} px thick natively)",
        "native": f"the median native height, {native:.0f} px (the defects would want {wanted})",
        "budget": f"the compute budget of {PIXEL_BUDGET} input pixels (the defects would want {wanted})",
    }[decided_by]
    reason = {
        "summary": f"aspect {aspect:.2f} (median width/height of {len(sizes)} training images); "
        f"height set by {summary}",
        "decided_by": decided_by,
        "aspect_ratio": round(aspect, 4),
        "median_native_hw": [float(np.median(sizes[:, 0])), float(np.median(sizes[:, 1]))],
        "height_for_defects": None if needed is None else round(needed, 1),
        "defect_thickness_px": None if thickness is None else round(thickness, 2),
        "min_pixels_across": MIN_PIXELS_ACROSS,
        "defect_quantile": DEFECT_QUANTILE,
        "pixel_budget": PIXEL_BUDGET,
    }
    return Geometry(height, width, chosen_by=AUTO, reason=reason)


def _to_patch(side: float, patch: int) -> int:
    return max(MIN_SIDE, math.floor(side / patch + 0.5) * patch)  # half up: 200 px -> 208, not 192


def _image_hw(sample: Sample) -> tuple[int, int]:
    """Height and width from the file header (no full decode)."""
    from PIL import Image

    try:
        with Image.open(sample.image) as image:
            width, height = image.size
    except OSError as error:
        raise OnenError(f"{sample.image}: cannot read the image size: {error}") from error
    return height, width


def _height_for_defects(samples: list[Sample], aspect: float) -> tuple[float | None, float | None]:
    """Model height at which the DEFECT_QUANTILE-thinnest defect keeps MIN_PIXELS_ACROSS px, and that thickness.

    A defect's thickness is twice the largest distance to its edge (so a long thin crack counts as thin); with the
    image stretched to (H, aspect*H), its scale is the smaller of the two axes' (the crack may run either way)."""
    import cv2

    from onen.edge.images import read_mask

    with_masks = [s for s in samples if s.label != 0 and s.mask is not None]
    if not with_masks:
        return None, None
    step = max(1, len(with_masks) // MAX_MASKS)
    heights, thicknesses = [], []
    for sample in with_masks[::step]:
        mask = read_mask(sample.mask).astype(np.uint8)  # type: ignore[arg-type]
        count, labels = cv2.connectedComponents(mask)
        if count < 2:
            continue
        distance = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        deepest = np.zeros(count, np.float32)
        np.maximum.at(deepest, labels.ravel().astype(np.intp), distance.ravel())
        h, w = mask.shape
        per_native_px = min(1.0 / h, aspect / w)  # model px per native px is H * this
        for thickness in 2.0 * deepest[1:]:
            thicknesses.append(float(thickness))
            heights.append(MIN_PIXELS_ACROSS / (max(float(thickness), 1.0) * per_native_px))
    if not heights:
        return None, None
    return float(np.quantile(heights, 1 - DEFECT_QUANTILE)), float(np.quantile(thicknesses, DEFECT_QUANTILE))
