"""Tiling for parts much larger than the model input: a frame cut into a grid of tiles, tile maps stitched back.

anomalib's Tiler is the anchor: tiles of a fixed size taken every `stride` pixels (stride <= tile size), and where
tiles overlap the stitched map is the mean of the tiles that cover a pixel. Unlike anomalib the frame is never padded
or re-interpolated here: the grid is chosen so the tiles cover the frame exactly (`TileGrid.for_frame` refuses a
frame the tiles do not fit), because the frame size is the bundle's input size, which the edge resizes to.

The torch ops are reshape/permute (no overlap) or a fixed set of slices and pads (overlap), all with static sizes,
so the dynamo exporter gives a plain graph with a dynamic batch only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onen.edge.errors import OnenError
from onen.train.geometry import MIN_SIDE, PIXEL_BUDGET

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
TILES_OFF = "off"  # TrainConfig.tiles and `onen train --tiles` default
DEFAULT_OVERLAP = 0  # TrainConfig.tile_overlap and `onen train --tile-overlap` default (px)
TILES_AUTO = "auto"
MAX_AUTO_PIXELS = 1024 * 1024  # `--tiles auto` never asks for a larger frame (all its tiles are one engine call)
_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class TileGrid:
    """rows x cols tiles of tile_height x tile_width (the model input), neighbours overlapping by overlap_y/x px.

    The whole frame (the bundle's input) is tile + (count - 1) * stride along each axis, stride = tile - overlap.
    Tiles are numbered row by row (index = row * cols + col), the order of a batch of tiles."""

    rows: int
    cols: int
    tile_height: int
    tile_width: int
    overlap_y: int = 0
    overlap_x: int = 0

    def __post_init__(self) -> None:
        for key in ("rows", "cols", "tile_height", "tile_width"):
            if int(getattr(self, key)) < 1:
                raise OnenError(f"tile grid: {key} must be >= 1, got {getattr(self, key)}")
        for key, tile in (("overlap_y", self.tile_height), ("overlap_x", self.tile_width)):
            overlap = int(getattr(self, key))
            if not 0 <= overlap < tile:
                raise OnenError(
                    f"tile grid: {key} must be >= 0 and smaller than the tile ({tile} px), got {overlap}: "
                    "neighbouring tiles would not advance"
                )

    @classmethod
    def for_frame(cls, frame_height: int, frame_width: int, rows: int, cols: int, overlap: int = 0) -> TileGrid:
        """The grid of rows x cols tiles, neighbours overlapping by `overlap` px, that covers the frame exactly."""
        if rows < 1 or cols < 1:
            raise OnenError(f"--tiles {rows}x{cols}: rows and columns must be >= 1")
        if overlap < 0:
            raise OnenError(f"--tile-overlap must be >= 0 px, got {overlap}")
        sizes = []
        for axis, frame, count in (("height", frame_height, rows), ("width", frame_width, cols)):
            covered = frame + (count - 1) * overlap
            if covered % count:
                raise OnenError(
                    f"--tiles {rows}x{cols} with --tile-overlap {overlap}: the frame {axis} {frame} px is not "
                    f"{count} tiles overlapping by {overlap} px ({frame} + {count - 1} x {overlap} = {covered} is not "
                    f"a multiple of {count}); choose a frame size or overlap that divides"
                )
            sizes.append(covered // count)
        if overlap and overlap >= min(sizes):
            raise OnenError(f"--tile-overlap {overlap} px must be smaller than the tiles ({sizes[0]}x{sizes[1]} px)")
        return cls(rows, cols, sizes[0], sizes[1], overlap if rows > 1 else 0, overlap if cols > 1 else 0)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def stride_y(self) -> int:
        return self.tile_height - self.overlap_y

    @property
    def stride_x(self) -> int:
        return self.tile_width - self.overlap_x

    @property
    def frame_height(self) -> int:
        return self.tile_height + (self.rows - 1) * self.stride_y

    @property
    def frame_width(self) -> int:
        return self.tile_width + (self.cols - 1) * self.stride_x

    @property
    def overlaps(self) -> bool:
        return bool(self.overlap_y or self.overlap_x)

    def origins(self) -> list[tuple[int, int]]:
        """(top, left) of every tile in the frame, in tile order."""
        return [(r * self.stride_y, c * self.stride_x) for r in range(self.rows) for c in range(self.cols)]

    def coverage(self) -> np.ndarray:
        """float32 [H, W]: how many tiles cover each frame pixel (what a stitched map is divided by)."""
        counts = np.zeros((self.frame_height, self.frame_width), np.float32)
        for top, left in self.origins():
            counts[top : top + self.tile_height, left : left + self.tile_width] += 1
        return counts

    def describe(self) -> str:
        overlap = f", overlap {self.overlap_y}x{self.overlap_x} px" if self.overlaps else ""
        return (
            f"{self.rows}x{self.cols} tiles of {self.tile_height}x{self.tile_width} px over a "
            f"{self.frame_height}x{self.frame_width} frame{overlap}"
        )

    def as_manifest(self) -> dict[str, Any]:
        """The manifest's `tiles` entry: the grid, and how the bundle combines the tiles."""
        return {**asdict(self), "stitch": "mean", "score": "max"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "tiles") -> TileGrid:
        keys = ("rows", "cols", "tile_height", "tile_width", "overlap_y", "overlap_x")
        try:
            return cls(**{k: int(data[k]) for k in keys if k in data})
        except (TypeError, ValueError) as error:
            raise OnenError(f"{source}: not a tile grid ({', '.join(keys)}): {error}") from error


def parse_tiles(text: str | None) -> tuple[int, int] | str | None:
    """`--tiles`: 'off' (or None) -> None, 'auto' -> 'auto', 'RxC' (e.g. '2x5') -> (rows, cols)."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if value in ("", TILES_OFF):
        return None
    if value == TILES_AUTO:
        return TILES_AUTO
    match = _GRID.match(value)
    if not match:
        raise OnenError(f"--tiles must be ROWSxCOLS (e.g. 2x5), 'auto' or 'off', got '{text}'")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1:
        raise OnenError(f"--tiles {text}: rows and columns must be >= 1")
    if rows * cols == 1:
        raise OnenError(f"--tiles {text} is one tile, i.e. no tiling: leave --tiles off")
    return rows, cols


def auto_grid(
    height: int, width: int, max_tile_pixels: int, multiple: int = 16, overlap: int = 0, exact: bool = False
) -> TileGrid | None:
    """`--tiles auto`: None when a height x width input fits `max_tile_pixels` (the compute budget of one model
    input), else the grid with the fewest tiles whose tiles (multiples of `multiple` px, at most the budget each, no
    side under the model's MIN_SIDE) cover at least that frame; among grids of as many tiles the squarest tiles win.
    The frame is then the grid's (a little larger than asked when the sizes do not divide), or, with `exact`, only
    grids that cover exactly that frame are taken (a size the user gave stays as given)."""
    if height * width <= max_tile_pixels:
        return None
    up = lambda value: -(-value // multiple) * multiple  # noqa: E731
    best: tuple[int, float, TileGrid] | None = None
    for rows in range(1, height // multiple + 1):
        for cols in range(1, width // multiple + 1):
            if rows * cols == 1 or (best is not None and rows * cols > best[0]):
                continue
            tile_h = up(-(-(height + (rows - 1) * overlap) // rows))
            tile_w = up(-(-(width + (cols - 1) * overlap) // cols))
            if tile_h * tile_w > max_tile_pixels or overlap >= min(tile_h, tile_w) or min(tile_h, tile_w) < MIN_SIDE:
                continue
            grid = TileGrid(rows, cols, tile_h, tile_w, overlap if rows > 1 else 0, overlap if cols > 1 else 0)
            if exact and (grid.frame_height, grid.frame_width) != (height, width):
                continue
            candidate = (rows * cols, abs(float(np.log(tile_h / tile_w))), grid)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    if best is None:
        overlapping = f", overlapping by {overlap} px" if overlap else ""
        how = " exactly; give --tiles RxC or another --size" if exact else ""
        raise OnenError(
            f"--tiles auto: no grid of tiles within {max_tile_pixels} px each (sides multiples of {multiple} px"
            f"{overlapping}) covers the {height}x{width} input{how}"
        )
    return best[2]


def check_tiles(request: str, supervision: str, overlap: int) -> None:
    """Refuse a `--tiles` / `--tile-overlap` pair that cannot train, before any data is read."""
    parsed = parse_tiles(request)
    if overlap < 0:
        raise OnenError(f"--tile-overlap must be >= 0 px, got {overlap}")
    if parsed not in (None, TILES_AUTO) and supervision == "weak":
        raise OnenError(
            f"--tiles {request} needs pixel masks: a weak (image) label cannot say which tile holds the defect; "
            "use --supervision full or none with tiles, or leave --tiles off"
        )


def resolve_tiles(
    request: str, geometry: dict[str, Any], supervision: str, patch: int, overlap: int = 0
) -> tuple[TileGrid | None, dict[str, Any]]:
    """The run's tile grid from `--tiles` and its resolved geometry (train.geometry), and the geometry to train at
    (the whole frame: `auto` may enlarge it to the resolution the part needs, which is why it tiles).

    `auto` tiles when the input the part needs is larger than the geometry's PIXEL_BUDGET: with `--size auto`, the
    resolution its defects (or, without masks, the native size) ask for, when the budget capped it; with a given size,
    that size. Weak supervision never tiles (a tile's label needs pixel masks, train.data.tiles)."""
    check_tiles(request, supervision, overlap)
    parsed = parse_tiles(request)
    if parsed is None:
        return None, geometry
    height, width = int(geometry["height"]), int(geometry["width"])
    if isinstance(parsed, tuple):
        rows, cols = parsed
        grid = TileGrid.for_frame(height, width, rows, cols, overlap)
        if grid.tile_height % patch or grid.tile_width % patch:
            raise OnenError(
                f"--tiles {request} cuts the {height}x{width} input into {grid.tile_height}x{grid.tile_width} px "
                f"tiles, which must be multiples of the patch size {patch}; choose --size or --tiles so they are"
            )
        return grid, geometry
    if supervision == "weak":
        log.info("--tiles auto: no tiles under --supervision weak (a tile's label needs pixel masks)")
        return None, geometry
    reason = dict(geometry.get("reason") or {})
    exact = geometry.get("chosen_by") != "auto"
    if not exact:
        if reason.get("decided_by") != "budget":
            return None, geometry  # the part's resolution fits one input
        native_h = float(reason["median_native_hw"][0])
        aspect = float(reason["aspect_ratio"])
        wanted = min(native_h, float(reason.get("height_for_defects") or native_h))
        wanted = min(wanted, (MAX_AUTO_PIXELS / aspect) ** 0.5)
        height = max(patch, int(round(wanted / patch)) * patch)
        width = max(patch, int(round(wanted * aspect / patch)) * patch)
    chosen = auto_grid(height, width, PIXEL_BUDGET, patch, overlap, exact=exact)
    if chosen is None:
        return None, geometry
    grid = chosen
    reason["tiles"] = (
        f"--tiles auto: {grid.describe()} (each tile within the budget of {PIXEL_BUDGET} input pixels, the frame "
        f"within {MAX_AUTO_PIXELS})"
    )
    if not exact:
        reason["summary"] = f"{reason.get('summary', '')}; then tiled: {reason['tiles']}"
    log.info("%s", reason["tiles"])
    return grid, {**geometry, "height": grid.frame_height, "width": grid.frame_width, "reason": reason}


# ------------------------------------------------------------------------------------------ numpy (data sets)
def cut_frame(frame: np.ndarray, grid: TileGrid) -> np.ndarray:
    """A frame [H, W] or [H, W, C] (numpy) -> its tiles [count, h, w(, C)], copies in tile order."""
    if tuple(frame.shape[:2]) != (grid.frame_height, grid.frame_width):
        raise OnenError(
            f"a {frame.shape[0]}x{frame.shape[1]} frame does not fit the tile grid ({grid.describe()}); resize it to "
            f"{grid.frame_height}x{grid.frame_width} first"
        )
    h, w = grid.tile_height, grid.tile_width
    return np.stack([frame[top : top + h, left : left + w] for top, left in grid.origins()])


def tile_of(frame: np.ndarray, grid: TileGrid, index: int) -> np.ndarray:
    """Tile `index` of a frame (a view, no copy)."""
    top, left = grid.origins()[index]
    return frame[top : top + grid.tile_height, left : left + grid.tile_width]


# ------------------------------------------------------------------------------------------ torch (graph)
def cut_batch(images: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """torch [N, H, W, C] -> [N * count, h, w, C], each frame's tiles consecutive in tile order."""
    import torch

    h, w, channels = grid.tile_height, grid.tile_width, images.shape[-1]
    if not grid.overlaps:
        split = images.reshape(-1, grid.rows, h, grid.cols, w, channels)
        return split.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, channels)
    tiles = [images[:, top : top + h, left : left + w] for top, left in grid.origins()]
    return torch.stack(tiles, dim=1).reshape(-1, h, w, channels)


def stitch_maps(maps: torch.Tensor, grid: TileGrid, coverage: torch.Tensor | None = None) -> torch.Tensor:
    """torch [N * count, 1, h, w] tile maps -> [N, 1, H, W]; where tiles overlap, the mean of those covering a
    pixel. `coverage` (grid.coverage() as a [1, 1, H, W] tensor) can be passed once instead of built per call."""
    import torch
    import torch.nn.functional as F

    h, w, height, width = grid.tile_height, grid.tile_width, grid.frame_height, grid.frame_width
    tiles = maps.reshape(-1, grid.rows, grid.cols, 1, h, w)
    if not grid.overlaps:
        return tiles.permute(0, 3, 1, 4, 2, 5).reshape(-1, 1, height, width)
    if coverage is None:
        coverage = torch.from_numpy(grid.coverage()).to(maps.device, maps.dtype)[None, None]
    rows = []
    for row in range(grid.rows):  # each row's tiles placed along the width: a strip [N, 1, h, W]
        placed = [
            F.pad(tiles[:, row, col], (col * grid.stride_x, width - col * grid.stride_x - w, 0, 0))
            for col in range(grid.cols)
        ]
        strip = torch.stack(placed).sum(dim=0) if len(placed) > 1 else placed[0]
        rows.append(F.pad(strip, (0, 0, row * grid.stride_y, height - row * grid.stride_y - h)))
    total = torch.stack(rows).sum(dim=0) if len(rows) > 1 else rows[0]
    return total / coverage
