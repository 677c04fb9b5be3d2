"""Turning an anomaly map into regions: AOI masking, pixel threshold, connected components."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass
class Region:
    bbox: list[int]  # x, y, w, h in the coordinates of the map it was found in
    area: int  # px
    peak: float  # highest map value inside
    polygon: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, sx: float, sy: float) -> Region:
        """The same region in another resolution (e.g. model input -> camera frame)."""
        x, y, w, h = self.bbox
        polygon = [[round(px * sx), round(py * sy)] for px, py in self.polygon] if self.polygon else None
        return Region(
            [round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))],
            round(self.area * sx * sy),
            self.peak,
            polygon,
        )


def apply_aoi(anomaly_map: np.ndarray, aoi: np.ndarray | None) -> np.ndarray:
    """Zero the map outside the area of interest (a bool mask of the map's size)."""
    if aoi is None:
        return anomaly_map
    if aoi.shape != anomaly_map.shape:
        raise ValueError(f"AOI mask {aoi.shape} does not match anomaly map {anomaly_map.shape}")
    return np.where(aoi, anomaly_map, 0.0).astype(anomaly_map.dtype, copy=False)


def find_regions(
    anomaly_map: np.ndarray,
    pixel_threshold: float,
    min_area: int = 1,
    with_polygon: bool = True,
    polygon_epsilon: float = 1.5,
) -> list[Region]:
    """Connected components of `map > threshold` with at least `min_area` px, largest peak first."""
    if anomaly_map.size == 0 or float(anomaly_map.max()) <= pixel_threshold:
        return []  # the usual good part: nothing above the threshold, no labelling needed
    binary = (anomaly_map > pixel_threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    regions: list[Region] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        component = labels[y : y + h, x : x + w] == label
        peak = float(anomaly_map[y : y + h, x : x + w][component].max())
        polygon = None
        if with_polygon:
            contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if contours:
                approx = cv2.approxPolyDP(max(contours, key=cv2.contourArea), polygon_epsilon, True)
                polygon = [[int(px) + x, int(py) + y] for px, py in approx.reshape(-1, 2)]
        regions.append(Region([x, y, w, h], area, peak, polygon))
    regions.sort(key=lambda r: r.peak, reverse=True)
    return regions
