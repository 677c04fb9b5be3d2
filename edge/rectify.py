"""Optional perspective rectification: four corners of the part in the camera image -> an upright rectangle.

A camera that looks at the part at an angle sees it as a trapezoid; the model was trained on parts seen
square-on. Calibration and the daemon both call `Rectification.apply` (through
`CameraCalibration.prepare`), so the model sees exactly the same pixels in both places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from onen.edge.errors import DataError

CORNER_ORDER = "top-left, top-right, bottom-right, bottom-left"


@dataclass(frozen=True)
class Rectification:
    """Corners (camera pixels, in CORNER_ORDER as the part should appear upright) and the output size.

    width/height 0 means "from the corners": the mean lengths of opposite edges, so the part keeps its
    pixel density and aspect ratio.
    """

    corners: tuple[tuple[float, float], ...]
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        corners = tuple((float(x), float(y)) for x, y in self.corners)
        object.__setattr__(self, "corners", corners)
        _check_quadrilateral(np.asarray(corners, np.float64))
        if self.width < 0 or self.height < 0:
            raise DataError(f"rectification size must be positive, got {self.width}x{self.height}")
        if not self.width or not self.height:
            width, height = _size_from_corners(np.asarray(corners, np.float64))
            object.__setattr__(self, "width", self.width or width)
            object.__setattr__(self, "height", self.height or height)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the rectified image."""
        return self.width, self.height

    def matrix(self) -> np.ndarray:
        """3x3 homography camera pixels -> rectified pixels."""
        source = np.asarray(self.corners, np.float32)
        w, h = self.width, self.height
        target = np.asarray([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        return cv2.getPerspectiveTransform(source, target)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Warp a camera frame (HxW or HxWxC) to the upright rectangle (bilinear)."""
        return cv2.warpPerspective(
            image, self.matrix(), self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """Warp a bool mask (e.g. the AOI at camera resolution) the same way; nearest neighbour keeps it binary."""
        warped = cv2.warpPerspective(
            mask.astype(np.uint8), self.matrix(), self.size, flags=cv2.INTER_NEAREST, borderValue=0
        )
        return warped.astype(bool)

    def to_dict(self) -> dict[str, Any]:
        return {"corners": [[x, y] for x, y in self.corners], "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, data: Any, source: str = "rectification") -> Rectification:
        if not isinstance(data, dict) or "corners" not in data:
            raise DataError(
                f"{source}: expected a mapping with 'corners' (4 [x, y] points, {CORNER_ORDER}) and optional "
                "width/height"
            )
        return cls(
            corners=_parse_points(data["corners"], f"{source}.corners"),
            width=_int(data.get("width", 0), f"{source}.width"),
            height=_int(data.get("height", 0), f"{source}.height"),
        )

    @classmethod
    def parse(cls, text: str, size: tuple[int, int] | None = None) -> Rectification:
        """From the CLI form "x1,y1,x2,y2,x3,y3,x4,y4" (corners in CORNER_ORDER)."""
        try:
            values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
        except ValueError as error:
            raise DataError(f"--rectify {text!r}: expected 8 numbers x1,y1,...,x4,y4 ({CORNER_ORDER})") from error
        if len(values) != 8:
            raise DataError(
                f"--rectify {text!r}: expected 8 numbers x1,y1,...,x4,y4 ({CORNER_ORDER}), got {len(values)}"
            )
        corners = tuple((values[i], values[i + 1]) for i in range(0, 8, 2))
        width, height = size or (0, 0)
        return cls(corners=corners, width=width, height=height)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
        raise DataError(f"{key}: expected a whole number of pixels >= 0, got {value!r}")
    return int(value)


def _parse_points(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(
            isinstance(p, (list, tuple))
            and len(p) == 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
            for p in value
        )
    )
    if not ok:
        raise DataError(f"{key}: expected 4 [x, y] points ({CORNER_ORDER}), got {value!r}")
    return tuple((float(x), float(y)) for x, y in value)


def _check_quadrilateral(points: np.ndarray) -> None:
    """Refuse corners that cannot be an upright part: wrong count, crossed edges, wrong order, collapsed."""
    if points.shape != (4, 2) or not np.all(np.isfinite(points)):
        raise DataError(f"rectification needs 4 corner points ({CORNER_ORDER}), got {points.tolist()}")
    turns = []
    for i in range(4):
        a, b, c = points[i], points[(i + 1) % 4], points[(i + 2) % 4]
        turns.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    crosses = np.asarray(turns)
    if not np.all(crosses > 0):
        raise DataError(
            f"rectification corners {points.tolist()} are not a convex quadrilateral in the order {CORNER_ORDER} "
            "(clockwise on the image); check the order and that no three points are on one line"
        )
    if cv2.contourArea(points.astype(np.float32)) < 16:
        raise DataError(f"rectification corners {points.tolist()} enclose less than 16 px")


def _size_from_corners(points: np.ndarray) -> tuple[int, int]:
    tl, tr, br, bl = points
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    # Corners are the centres of the part's corner pixels: an edge of length L spans L + 1 pixels.
    return max(2, int(round(width)) + 1), max(2, int(round(height)) + 1)
