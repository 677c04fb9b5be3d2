"""A U-Net that segments defects from image + reconstruction (GRD-Net's discriminative network, as DRAEM's).

Input: the channel concatenation of the image and the generator's reconstruction ([N,6,H,W] in [0,1]); output:
one-channel map logits [N,1,H,W]. Blocks are DRAEM's (conv-BN-ReLU twice, max-pool down, bilinear up); the
paper keeps DRAEM's discriminative network unchanged, so only its width is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    in_channels: int = 6  # image + reconstruction
    base_width: int = 16
    depth: int = 4  # down-sampling steps; H and W must be multiples of 2**depth
    max_width_factor: int = 4  # widths are base * 2**level, capped at base * this (DRAEM: 8, at base 64)

    def check(self, height: int, width: int) -> None:
        step = 2**self.depth
        if self.depth < 1 or self.base_width < 1:
            raise ValueError(f"U-Net depth and base_width must be >= 1, got {self.depth}, {self.base_width}")
        if height % step or width % step:
            raise ValueError(f"U-Net input {height}x{width} must be a multiple of {step} (2**depth) on both sides")

    def widths(self) -> list[int]:
        return [self.base_width * min(2**level, self.max_width_factor) for level in range(self.depth + 1)]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """[N,in,H,W] -> map logits [N,1,H,W]."""

    def __init__(self, cfg: UNetConfig | None = None):
        super().__init__()
        self.cfg = cfg or UNetConfig()
        widths = self.cfg.widths()
        self.down = nn.ModuleList([_double_conv(self.cfg.in_channels, widths[0])])
        self.down.extend(_double_conv(widths[i - 1], widths[i]) for i in range(1, len(widths)))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.merge = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.merge:
            x = block(torch.cat([self.up(x), skips.pop()], dim=1))
        return self.head(x)
