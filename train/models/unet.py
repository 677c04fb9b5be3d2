"""A U-Net that segments defects from image + reconstruction (GRD-Net's discriminative network, as DRAEM's).

Input: the channel concatenation of the image and the generator's reconstruction ([N,6,H,W] in [0,1]); output:
one-channel map logits [N,1,H,W]. Blocks are DRAEM's (conv-BN-ReLU twice, max-pool down, bilinear up); the
paper keeps DRAEM's discriminative network unchanged, so only its width is ours.
"""

from __future__ import annotations

import torch
from torch import nn

from onen.train.config import UNetConfig


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
