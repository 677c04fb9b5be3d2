"""AOI authoring: where on the camera image a defect counts, as a PNG mask at camera resolution.

Two ways: polygons typed in (YAML/JSON, e.g. from an image editor's coordinates), or the part found on
a reference image by thresholding (Otsu or fixed), keeping the largest component, filling its holes,
then eroding (keep away from the part's edge, where the background bleeds in) or dilating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from onen.edge.errors import DataError
from onen.edge.sizes import parse_pixel_size


@dataclass
class PolygonSpec:
    polygons: list[np.ndarray]  # each [K, 2] float (x, y) camera pixels
    exclude: list[np.ndarray] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) when the file states it


def _points(value: Any, where: str) -> np.ndarray:
    ok = (
        isinstance(value, list)
        and len(value) >= 3
        and all(
            isinstance(p, (list, tuple))
            and len(p) == 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
            for p in value
        )
    )
    if not ok:
        raise DataError(f"{where}: expected a polygon of at least 3 [x, y] points, got {str(value)[:120]}")
    return np.asarray(value, np.float64)


def _polygon_list(value: Any, where: str) -> list[np.ndarray]:
    if (
        isinstance(value, list)
        and value
        and isinstance(value[0], list)
        and value[0]
        and isinstance(value[0][0], (int, float))
    ):
        return [_points(value, where)]  # a single polygon
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a polygon (list of [x, y]) or a list of polygons, got {str(value)[:120]}")
    return [_points(p, f"{where}[{i}]") for i, p in enumerate(value)]


def _size(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, str):
        return parse_pixel_size(value, f"{where}:", "[width, height] or 'WxH'", "1280x960")
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: expected [width, height] or 'WxH' in pixels, got {value!r}") from error
    if width <= 0 or height <= 0:
        raise DataError(f"{where}: width and height must be positive, got {width}x{height}")
    return width, height


def load_polygons(path: str | Path) -> PolygonSpec:
    """Read polygons: a list of points, a list of polygons, or {polygons|polygon, exclude, size}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: polygon file does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot parse ({error})") from error
    if isinstance(data, list):
        return PolygonSpec(_polygon_list(data, str(path)))
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a list of [x, y] points or a mapping with 'polygons', got {type(data).__name__}"
        )
    unknown = set(data) - {"polygons", "polygon", "exclude", "size"}
    if unknown:
        raise DataError(
            f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected polygons (or polygon), "
            "exclude, size"
        )
    key = "polygons" if "polygons" in data else "polygon" if "polygon" in data else None
    if key is None:
        raise DataError(f"{path}: missing key 'polygons' (a list of polygons, each a list of [x, y] points)")
    spec = PolygonSpec(_polygon_list(data[key], f"{path}: key '{key}'"))
    if data.get("exclude"):
        spec.exclude = _polygon_list(data["exclude"], f"{path}: key 'exclude'")
    if "size" in data:
        spec.size = _size(data["size"], f"{path}: key 'size'")
    return spec


def mask_from_polygons(spec: PolygonSpec, size: tuple[int, int], source: str = "polygons") -> np.ndarray:
    """bool HxW mask: inside any polygon and outside every 'exclude' polygon."""
    width, height = size
    for kind, polygons in (("polygons", spec.polygons), ("exclude", spec.exclude)):
        for index, polygon in enumerate(polygons):
            outside = (polygon[:, 0] < 0) | (polygon[:, 0] > width) | (polygon[:, 1] < 0) | (polygon[:, 1] > height)
            if outside.any():
                point = polygon[np.flatnonzero(outside)[0]].tolist()
                raise DataError(
                    f"{source}: {kind}[{index}] point {point} lies outside the {width}x{height} image; wrong --size "
                    "or coordinates?"
                )
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in spec.polygons], 1)
    if spec.exclude:
        cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in spec.exclude], 0)
    if not mask.any():
        raise DataError(f"{source}: the polygons cover no pixel")
    return mask.astype(bool)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def mask_from_reference(
    image_rgb: np.ndarray,
    threshold: float | str = "otsu",
    invert: bool = False,
    erode: int = 0,
    dilate: int = 0,
    blur: int = 5,
    source: str = "reference image",
) -> np.ndarray:
    """The part on a reference image: threshold (bright part on dark background unless `invert`),
    largest component, holes filled, then erode/dilate by the given radii in px."""
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    if blur > 1:
        gray = cv2.GaussianBlur(gray, (blur | 1, blur | 1), 0)
    mode = cv2.THRESH_BINARY_INV if invert else cv2.THRESH_BINARY
    if threshold == "otsu":
        _, binary = cv2.threshold(gray, 0, 1, mode | cv2.THRESH_OTSU)
    else:
        value = float(threshold)
        if not 0 <= value <= 255:
            raise DataError(f"--threshold {threshold!r}: expected 0..255 (grey level) or 'otsu'")
        _, binary = cv2.threshold(gray, value, 1, mode)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        raise DataError(f"{source}: nothing above the threshold; try another --threshold or --invert")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    part = (labels == largest).astype(np.uint8)
    # Fill holes: everything the background flood from outside cannot reach belongs to the part.
    padded = cv2.copyMakeBorder(part, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8), (0, 0), 1)
    part = (part | (1 - flood[1:-1, 1:-1])).astype(np.uint8)
    return refine(part.astype(bool), erode, dilate, source)


def refine(mask: np.ndarray, erode: int = 0, dilate: int = 0, source: str = "AOI") -> np.ndarray:
    """Erode, then dilate, by radii in px (elliptical kernel, so corners shrink evenly)."""
    part: np.ndarray = mask.astype(np.uint8)
    if erode:
        part = cv2.erode(part, _disk(erode))
    if dilate:
        part = cv2.dilate(part, _disk(dilate))
    if not part.any():
        raise DataError(f"{source}: the AOI vanished after --erode {erode}; use a smaller erosion")
    return part.astype(bool)


def write_mask(mask: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise DataError(f"{path}: cannot write the mask (is the extension .png?)")
    return path


def preview(mask: np.ndarray, background_rgb: np.ndarray | None = None) -> np.ndarray:
    """RGB preview: outside the AOI darkened and tinted red, its outline in yellow."""
    if background_rgb is None:
        background_rgb = np.full(mask.shape + (3,), 128, np.uint8)
    if background_rgb.shape[:2] != mask.shape:
        raise DataError(
            f"preview image is {background_rgb.shape[1]}x{background_rgb.shape[0]} but the AOI is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )
    out = background_rgb.astype(np.float32)
    out[~mask] = out[~mask] * 0.35 + np.array([160, 0, 0], np.float32) * 0.3
    out = np.clip(out, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 230, 0), max(1, round(max(mask.shape) / 400)))
    return out


def preview_path(mask_path: str | Path) -> Path:
    mask_path = Path(mask_path)
    return mask_path.with_name(mask_path.stem + ".preview.png")


def write_preview(mask: np.ndarray, mask_path: str | Path, background_rgb: np.ndarray | None = None) -> Path:
    path = preview_path(mask_path)
    cv2.imwrite(str(path), cv2.cvtColor(preview(mask, background_rgb), cv2.COLOR_RGB2BGR))
    return path


def order_corners(points: np.ndarray) -> np.ndarray:
    """4 points -> top-left, top-right, bottom-right, bottom-left (clockwise on the image from the one
    nearest the image origin), the order edge.rectify expects."""
    points = np.asarray(points, np.float64).reshape(4, 2)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])  # y down: increasing = clockwise
    clockwise = points[np.argsort(angles)]
    start = int(np.argmin(clockwise.sum(axis=1)))
    return np.roll(clockwise, -start, axis=0)


def find_part_corners(mask: np.ndarray, source: str = "reference image") -> np.ndarray:
    """The four corners of the part's outline (largest contour simplified to a quadrilateral)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise DataError(f"{source}: no part found")
    contour = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(contour, True)
    for fraction in (0.01, 0.02, 0.03, 0.05, 0.08):
        approx = cv2.approxPolyDP(contour, fraction * perimeter, True)
        # The quadrilateral must really be the outline (a disc also simplifies to 4 points, at 64 % of its area).
        if (
            len(approx) == 4
            and cv2.isContourConvex(approx)
            and abs(cv2.contourArea(approx) / cv2.contourArea(contour) - 1) < 0.06
        ):
            return order_corners(approx.reshape(4, 2))
    raise DataError(
        f"{source}: the part's outline is not a quadrilateral; give the four corners with --rectify x1,y1,...,x4,y4 "
        "(top-left, top-right, bottom-right, bottom-left)"
    )
