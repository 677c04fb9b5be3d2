"""GRD-Net as a bundle model: uint8 NHWC -> (score [N], anomaly_map [N,1,H,W], class_logits [N,C]).

The graph is E1 -> bottleneck -> decoder -> U-Net (E2 and the discriminator are training only). The map is the
sigmoid of the U-Net's logits; the score is the maximum of the map average-pooled with the paper's 21 px kernel
(at 256 px; scaled with the input, odd), DRAEM's smoothed maximum. GRD-Net has no class head, so class_logits
are derived from the score: [log(1-s), log(s/(C-1)) for each defect class], whose softmax is p(good) = 1 - s and
s shared evenly by the defect classes; with C == 1, [log(1-s)].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from onen.train.models.grdnet_generator import GRDNET_NORMALISATION, GRDNetGenerator
from onen.train.models.input_layer import ImageInput
from onen.train.models.unet import UNet

PAPER_POOL_KERNEL = 21  # Fig. 8: average pooling 21 x 21 ...
PAPER_POOL_SIDE = 256  # ... on images of this side (DRAEM's input size; the paper does not state it)
SCORE_EPS = 1e-6


def score_pool_kernel(height: int, width: int) -> int:
    """The paper's 21 px at 256 px scaled by sqrt(H*W)/256, rounded to the nearest odd size >= 1."""
    size = PAPER_POOL_KERNEL * math.sqrt(height * width) / PAPER_POOL_SIDE
    kernel = max(1, int(round(size)))
    return kernel if kernel % 2 else kernel + 1


class GRDNetExport(nn.Module):
    def __init__(self, generator: GRDNetGenerator, unet: UNet, num_classes: int = 1):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.input = ImageInput(GRDNET_NORMALISATION)  # export_model reads its normalisation for the manifest
        self.encoder = generator.encoder
        self.decoder = generator.decoder
        self.unet = unet
        self.num_classes = num_classes
        self.kernel = score_pool_kernel(*generator.cfg.size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input(image)
        reconstruction = self.decoder(self.encoder(x))
        anomaly_map = torch.sigmoid(self.unet(torch.cat([x, reconstruction], dim=1)))
        pooled = F.avg_pool2d(anomaly_map, self.kernel, stride=1, padding=self.kernel // 2, count_include_pad=False)
        score = pooled.amax(dim=(1, 2, 3))
        s = score.clamp(SCORE_EPS, 1.0 - SCORE_EPS)[:, None]
        good = torch.log(1.0 - s)
        if self.num_classes == 1:
            return score, anomaly_map, good
        defect = (torch.log(s) - math.log(self.num_classes - 1)).expand(-1, self.num_classes - 1)
        return score, anomaly_map, torch.cat([good, defect], dim=1)
