"""A model trained on tiles as a bundle model for the whole frame (train.tiling).

Input uint8 [N, H, W, 3], the whole frame; the tiles run as ONE call of the inner model (a batch of N x rows x cols),
so an engine runs once per frame batch. Outputs are the bundle's three: the score is the tiles' maximum (a part is as
defective as its worst tile), the map is the tiles' maps stitched (overlaps averaged), and the class logits are those
of the tile with the highest score (which defect it is, is read where the defect is). The contract and the daemon do
not change; the manifest records the grid (`tiles`), which the edge does not need to run.
"""

from __future__ import annotations

import torch
from torch import nn

from onen.train.tiling import TileGrid, cut_batch, stitch_maps


class TiledModel(nn.Module):
    """Any model with the three bundle outputs (a StudentOutput or a tuple) at tile size -> the same at frame size."""

    coverage: torch.Tensor  # [1, 1, H, W] how many tiles cover each frame pixel (a buffer: moves with the model)

    def __init__(self, model: nn.Module, grid: TileGrid):
        super().__init__()
        self.model = model
        self.grid = grid
        self.register_buffer("coverage", torch.from_numpy(grid.coverage())[None, None], persistent=False)

    @property
    def input(self) -> nn.Module | None:
        """The inner model's input layer: its normalisation is the bundle's (train.export reads it)."""
        return getattr(self.model, "input", None)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grid = self.grid
        out = self.model(cut_batch(image, grid))
        if isinstance(out, (tuple, list)):
            score, anomaly_map, logits = out[:3]
        else:
            score, anomaly_map, logits = out.score, out.anomaly_map, out.class_logits
        tile_scores = score.reshape(-1, grid.count)
        worst = tile_scores.argmax(dim=1)  # [N] the tile whose class logits the frame gets
        logits = logits.reshape(-1, grid.count, logits.shape[-1])
        pick = worst.reshape(-1, 1, 1).expand(-1, 1, logits.shape[-1])
        class_logits = torch.gather(logits, 1, pick).squeeze(1)
        return tile_scores.amax(dim=1), stitch_maps(anomaly_map, grid, self.coverage), class_logits


def whole_frame(model: nn.Module, tile_grid: dict | None) -> nn.Module:
    """The model a run's bundle and evaluation run on the whole input: the model itself, or, for a run trained on
    tiles (its `tile_grid`, train.tiling.TileGrid as a dict), the TiledModel around it."""
    if not tile_grid:
        return model
    return TiledModel(model, TileGrid.from_dict(tile_grid)).eval()
