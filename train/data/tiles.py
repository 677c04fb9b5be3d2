"""The tile view of a data set: every image resized once to the whole frame, cut into the grid's tiles (train.tiling).

Items are tiles, with the InspectionDataset's keys (image, mask, has_mask, aoi, label, class_index, synthetic, path),
so every trainer reads them unchanged. Masks and AOIs are cut alike. A tile's label comes from its part of the mask:
defective (the image's class) when it holds defect pixels, good otherwise. That needs pixel masks: a defective image
labelled without one (weak labels, or an empty mask) cannot say which of its tiles holds the defect, and calling all
of them defective would teach the model that good texture is a defect. Such images are left out (and counted); a
data set whose defective images all lack masks is refused (train with --supervision full or none, or without tiles).
Synthetic defects (supervision none) are drawn per tile, inside the tile's part of the AOI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from onen.edge.errors import OnenError
from onen.edge.images import read_mask
from onen.train.data.dataset import InspectionDataset
from onen.train.data.loading import resize_defect_mask
from onen.train.data.sample import GOOD, Sample
from onen.train.tiling import TileGrid, tile_of

log = logging.getLogger(__name__)


class TiledDataset(InspectionDataset):
    """InspectionDataset whose items are the tiles of its images (see the module docstring); `height`/`width` are
    the whole frame's, `grid` gives the tile size. Other arguments as InspectionDataset's."""

    def __init__(
        self, samples: list[Sample], class_names: list[str], grid: TileGrid, aoi: Path | None = None, **kwargs
    ):
        super().__init__(samples, class_names, grid.frame_height, grid.frame_width, aoi=aoi, **kwargs)
        self.grid = grid
        self.tiles: list[tuple[int, int, int, str]] = []  # (sample index, tile index, label, class name)
        self.left_out: list[Path] = []  # defective images without a pixel mask
        self._last: tuple[int, tuple[np.ndarray, np.ndarray | None, np.ndarray]] | None = None
        for sample_index, sample in enumerate(self.samples):
            labels = self._tile_labels(sample)
            if labels is None:
                self.left_out.append(sample.image)
                continue
            self.tiles.extend((sample_index, tile, label, name) for tile, (label, name) in enumerate(labels))
        defective = sum(1 for s in self.samples if s.label == 1)
        if self.left_out and len(self.left_out) == defective:
            raise OnenError(
                f"tiling needs pixel masks of the defective images, and none of the {defective} here has one (e.g. "
                f"{self.left_out[0]}): an image label cannot say which tile holds the defect. Train with pixel "
                "masks (--supervision full), from good images (--supervision none), or without --tiles"
            )
        if self.left_out:
            log.warning(
                "tiling: %d of %d defective images have no (non-empty) pixel mask and are left out of the tiles "
                "(which tile holds the defect is unknown), e.g. %s",
                len(self.left_out),
                defective,
                self.left_out[0],
            )

    def _tile_labels(self, sample: Sample) -> list[tuple[int, str]] | None:
        """(label, class name) per tile; None for a defective image without a usable mask."""
        if sample.label == 0:
            return [(0, GOOD)] * self.grid.count
        if sample.mask is None:
            return None
        mask = resize_defect_mask(read_mask(sample.mask), self.height, self.width)
        if not mask.any():
            return None
        return [
            (1, sample.class_name) if tile_of(mask, self.grid, tile).any() else (0, GOOD)
            for tile in range(self.grid.count)
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def item_labels(self, index: int) -> tuple[Sample, int, str, str]:
        sample_index, tile, label, class_name = self.tiles[index]
        sample = self.samples[sample_index]
        return sample, label, class_name, f"{sample.image}#tile{tile}"

    def load_resized(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The tile's image uint8 [h,w,3], mask bool [h,w] or None and AOI bool [h,w] (its image's, cached whole)."""
        sample_index, tile = self.tiles[index][:2]
        if self._last is not None and self._last[0] == sample_index:  # the next tile of the image just read
            image, mask, aoi = self._last[1]
        else:
            image, mask, aoi = super().load_resized(sample_index)
            if self.cache is None:  # uncached (one pass in order, e.g. the good-feature fit): decode once per image
                self._last = (sample_index, (image, mask, aoi))
        cut = lambda array: tile_of(array, self.grid, tile).copy()  # noqa: E731  (a copy: the cached frame stays)
        return cut(image), cut(mask) if mask is not None else None, cut(aoi)

    def counts(self) -> dict[str, int]:
        """Tiles by label and the images left out, for the run's log and summary."""
        defect = sum(1 for t in self.tiles if t[2] == 1)
        return {
            "tiles": len(self.tiles),
            "defect_tiles": defect,
            "good_tiles": len(self.tiles) - defect,
            "images_left_out": len(self.left_out),
        }
