"""The bundle's input convention inside the graph: uint8 RGB NHWC in, normalised float NCHW out.

Every model family starts with this layer, so the exported ONNX takes raw pixels and nobody can feed
it with another normalisation than the one it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class InputNormalisation:
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, RGB
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 255.0

    def as_manifest(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale, "in_graph": True}


class ImageInput(nn.Module):
    mean: torch.Tensor  # buffers
    inv_std: torch.Tensor

    def __init__(self, normalisation: InputNormalisation | None = None):
        super().__init__()
        normalisation = normalisation or InputNormalisation()
        self.normalisation = normalisation
        self.register_buffer(
            "mean", torch.tensor(normalisation.mean).view(1, 3, 1, 1) * normalisation.scale, persistent=False
        )
        self.register_buffer(
            "inv_std", 1.0 / (torch.tensor(normalisation.std).view(1, 3, 1, 1) * normalisation.scale), persistent=False
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        return (x - self.mean) * self.inv_std
