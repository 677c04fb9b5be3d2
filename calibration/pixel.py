"""Pixel threshold and minimum region area, chosen so that the good calibration images yield no regions.

1. Per good image, its "top value": the (1 - top_fraction) quantile of the map inside the AOI (the
   hottest 0.1 % of pixels by default), which ignores single hot pixels but not a real blob.
2. pixel_threshold = highest top value + margin * (that value - median good pixel value), so a part
   slightly hotter than any seen still stays below it.
3. At that threshold only specks of good images remain; min_region_area = largest such speck + 1 px.
Together, no good calibration image produces a region with the daemon's own `find_regions`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from edge.errors import DataError
from edge.regions import apply_aoi, find_regions


@dataclass
class PixelCalibration:
    pixel_threshold: float
    min_region_area: int            # px at model input resolution
    top_value_max: float            # hottest good image's top value
    median_good_pixel: float
    largest_good_speck: int         # px above the threshold in one good component (0 = none)
    good_images_with_regions: int   # after calibration (0 by construction)
    defect_images_with_regions: int | None = None
    defect_images: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _inside(anomaly_map: np.ndarray, aoi: np.ndarray | None) -> np.ndarray:
    values = anomaly_map[aoi] if aoi is not None else anomaly_map.ravel()
    if values.size == 0:
        raise DataError("the AOI covers no pixel of the model input; check the AOI mask")
    return values


def count_images_with_regions(maps: Iterable[np.ndarray], aoi: np.ndarray | None, pixel_threshold: float, min_area: int) -> int:
    """How many maps produce at least one region, exactly as the daemon would find them."""
    return sum(1 for m in maps if find_regions(apply_aoi(np.asarray(m, np.float32), aoi), pixel_threshold, min_area, with_polygon=False))


def fit_pixel_calibration(
    good_maps: np.ndarray,
    aoi: np.ndarray | None = None,
    defect_maps: np.ndarray | None = None,
    top_fraction: float = 0.001,
    margin: float = 0.1,
) -> PixelCalibration:
    """good_maps: [N, H, W] anomaly maps at model input size; aoi: bool [H, W] or None."""
    good_maps = np.asarray(good_maps)
    if good_maps.ndim != 3 or good_maps.shape[0] == 0:
        raise DataError(f"pixel calibration needs good anomaly maps [N, H, W], got shape {good_maps.shape}")
    if aoi is not None and aoi.shape != good_maps.shape[1:]:
        raise DataError(f"AOI {aoi.shape} does not match the anomaly maps {good_maps.shape[1:]}")
    quantile = 1.0 - top_fraction
    tops = np.array([np.quantile(_inside(m.astype(np.float32), aoi), quantile) for m in good_maps])
    medians = np.array([np.median(_inside(m.astype(np.float32), aoi)) for m in good_maps])
    top_max, median = float(tops.max()), float(np.median(medians))
    threshold = top_max + margin * max(top_max - median, 1e-6)

    largest = 0
    for m in good_maps:
        regions = find_regions(apply_aoi(m.astype(np.float32), aoi), threshold, 1, with_polygon=False)
        largest = max([largest] + [r.area for r in regions])
    min_area = largest + 1
    good_with = count_images_with_regions(good_maps, aoi, threshold, min_area)
    result = PixelCalibration(float(threshold), int(min_area), top_max, median, int(largest), int(good_with))
    if defect_maps is not None and len(defect_maps):
        result.defect_images = int(len(defect_maps))
        result.defect_images_with_regions = count_images_with_regions(defect_maps, aoi, threshold, min_area)
    return result
