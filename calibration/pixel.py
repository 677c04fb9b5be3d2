"""Pixel threshold and minimum region area, chosen so that the good calibration images yield no regions.

1. Per good image, its "top value": the (1 - top_fraction) quantile of the map inside the AOI (the
   hottest 0.1 % of pixels by default), which ignores single hot pixels but not a real blob.
2. pixel_threshold = highest top value + margin * (that value - median good pixel value), so a part
   slightly hotter than any seen still stays below it.
3. At that threshold only specks of good images remain; min_region_area = largest such speck + 1 px.
Together, no good calibration image produces a region with the daemon's own `find_regions`.

A threshold at or above the map's maximum (seen on good and defect maps) would never report a region, so it
is never used. When step 2 lands there (or finds no region on any defect image), the threshold falls back to
the k-th highest good top value, k the rank of the image threshold's false-reject promise (so at most the
promised share of good parts shows a region), with min_region_area just above the top-fraction's pixel
count. When that fails too, the model does not localise on this camera: localisation = "off", stated in
the calibration file and in every result, and no region is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onen.edge.errors import DataError
from onen.edge.regions import apply_aoi, find_regions


@dataclass
class PixelCalibration:
    pixel_threshold: float
    min_region_area: int  # px at model input resolution
    top_value_max: float  # hottest good image's top value
    median_good_pixel: float
    largest_good_speck: int  # px above the threshold in one good component (0 = none)
    good_images_with_regions: int  # after calibration (0 by construction)
    defect_images_with_regions: int | None = None
    defect_images: int | None = None
    localisation: str = "regions"  # "regions" | "off" (the model cannot localise at the promised FRR)
    map_max: float = 1.0  # highest anomaly-map value seen on good and defect images
    reason: str = ""  # why localisation is off, or which fallback was used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inside(anomaly_map: np.ndarray, aoi: np.ndarray | None) -> np.ndarray:
    values = anomaly_map[aoi] if aoi is not None else anomaly_map.ravel()
    if values.size == 0:
        raise DataError("the AOI covers no pixel of the model input; check the AOI mask")
    return values


def count_images_with_regions(
    maps: Iterable[np.ndarray], aoi: np.ndarray | None, pixel_threshold: float, min_area: int
) -> int:
    """How many maps produce at least one region, exactly as the daemon would find them."""
    return sum(
        1
        for m in maps
        if find_regions(apply_aoi(np.asarray(m, np.float32), aoi), pixel_threshold, min_area, with_polygon=False)
    )


def count_defects_found(
    maps: list[np.ndarray],
    masks: list[np.ndarray | None],
    aoi: np.ndarray | None,
    pixel_threshold: float,
    min_area: int,
) -> int:
    """Defect images with a region; where a ground-truth mask is given, the region must lie inside the mask."""
    found = 0
    for anomaly_map, mask in zip(maps, masks, strict=True):
        where = aoi if mask is None else (mask if aoi is None else mask & aoi)
        found += bool(find_regions(apply_aoi(anomaly_map, where), pixel_threshold, min_area, with_polygon=False))
    return found


class GoodMapStatistics:
    """Accumulates good maps one at a time, keeping only the few that can matter for the min area.

    The threshold is >= the highest top value seen, so a map whose peak is below the running highest top
    value can never have a pixel above the final threshold: it is summarised and dropped. Memory stays
    small with thousands of calibration images.
    """

    def __init__(self, aoi: np.ndarray | None = None, top_fraction: float = 0.001):
        self.aoi = aoi
        self.quantile = 1.0 - top_fraction
        self.tops: list[float] = []
        self.medians: list[float] = []
        self.top_max = -np.inf
        self.peak_max = -np.inf
        self.pixels = 0
        self.hot: list[tuple[float, np.ndarray]] = []  # (peak, map) with peak > top_max

    def add(self, anomaly_map: np.ndarray) -> None:
        anomaly_map = np.asarray(anomaly_map, np.float32)
        if self.aoi is not None and self.aoi.shape != anomaly_map.shape:
            raise DataError(f"AOI {self.aoi.shape} does not match the anomaly maps {anomaly_map.shape}")
        inside = _inside(anomaly_map, self.aoi)
        top = float(np.quantile(inside, self.quantile))
        self.tops.append(top)
        self.medians.append(float(np.median(inside)))
        peak = float(inside.max())
        self.peak_max = max(self.peak_max, peak)
        self.pixels = inside.size
        if top > self.top_max:
            self.top_max = top
            self.hot = [(p, m) for p, m in self.hot if p > top]
        if peak > self.top_max:
            self.hot.append((peak, apply_aoi(anomaly_map, self.aoi).copy()))

    def fit(
        self,
        margin: float = 0.1,
        defect_maps: Iterable[np.ndarray] | None = None,
        good_rank: int = 1,
        defect_masks: list[np.ndarray | None] | None = None,
    ) -> PixelCalibration:
        """good_rank: k of the image threshold (the k-th highest good score); bounds the fallback.
        defect_masks: per defect map its ground-truth mask at map size (or None), when the images have masks."""
        if not self.tops:
            raise DataError("pixel calibration needs at least one good anomaly map")
        defect_maps = [np.asarray(m, np.float32) for m in defect_maps] if defect_maps is not None else []
        top_max, median = float(self.top_max), float(np.median(self.medians))
        self._masks: list[np.ndarray | None] = (
            list(defect_masks) if defect_masks is not None else [None] * len(defect_maps)
        )
        if len(self._masks) != len(defect_maps):
            raise DataError(f"{len(self._masks)} defect masks for {len(defect_maps)} defect maps")
        map_max = max([self.peak_max] + [float(_inside(m, self.aoi).max()) for m in defect_maps])
        threshold = top_max + margin * max(top_max - median, 1e-6)
        largest = 0
        for peak, anomaly_map in self.hot:
            if peak > threshold:
                largest = max([largest] + [r.area for r in find_regions(anomaly_map, threshold, 1, with_polygon=False)])
        min_area = largest + 1
        good_with = count_images_with_regions((m for _, m in self.hot), None, threshold, min_area)
        result = PixelCalibration(
            float(threshold), int(min_area), top_max, median, int(largest), int(good_with), map_max=map_max
        )
        if not self._finds_defects(result, defect_maps):
            # Fallback: the good top value at the image threshold's rank; at most k - 1 good images lie above it.
            tops = np.sort(np.asarray(self.tops))[::-1]
            fallback = float(tops[min(max(good_rank, 1), tops.size) - 1])
            result.pixel_threshold = fallback
            result.min_region_area = int(np.ceil((1.0 - self.quantile) * self.pixels)) + 1
            result.good_images_with_regions = int(np.sum(tops > fallback))
            result.reason = (
                f"no-false-region threshold {threshold:.4g} finds no defect region below the map maximum "
                f"{map_max:.4g}; used the good top value at rank {good_rank}"
            )
            if not self._finds_defects(result, defect_maps):
                result.localisation = "off"
                result.pixel_threshold = float(map_max)
                result.good_images_with_regions = 0
                result.reason = (
                    "the model does not localise on these images: a pixel threshold that keeps good parts within "
                    "the promised "
                    f"false-reject rate ({fallback:.4g}) is not below the anomaly map's maximum ({map_max:.4g}) or "
                    "finds no region "
                    "on any defect image; results carry no regions (localisation: off)"
                )
        if defect_maps:
            result.defect_images = len(defect_maps)
            result.defect_images_with_regions = (
                0
                if result.localisation == "off"
                else count_defects_found(
                    defect_maps, self._masks, self.aoi, result.pixel_threshold, result.min_region_area
                )
            )
        return result

    def _finds_defects(self, result: PixelCalibration, defect_maps: list[np.ndarray]) -> bool:
        """Reachable (below the map's maximum) and, with defect maps, a region on at least one of them."""
        if result.pixel_threshold >= result.map_max:
            return False
        return (
            not defect_maps
            or count_defects_found(defect_maps, self._masks, self.aoi, result.pixel_threshold, result.min_region_area)
            > 0
        )


def fit_pixel_calibration(
    good_maps: Iterable[np.ndarray],
    aoi: np.ndarray | None = None,
    defect_maps: Iterable[np.ndarray] | None = None,
    top_fraction: float = 0.001,
    margin: float = 0.1,
    good_rank: int = 1,
    defect_masks: list[np.ndarray | None] | None = None,
) -> PixelCalibration:
    """good_maps: [N, H, W] (or an iterable of [H, W]) anomaly maps at model input size; aoi: bool [H, W] or None."""
    statistics = GoodMapStatistics(aoi, top_fraction)
    for anomaly_map in good_maps:
        statistics.add(anomaly_map)
    return statistics.fit(margin, defect_maps, good_rank, defect_masks)
