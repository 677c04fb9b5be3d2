"""GRD-Net's discriminator: the generator's residual encoder with a patch real/fake head.

`features` (the encoder's last map) feed the generator's adversarial feature-matching loss (GANomaly's L_adv);
`forward` gives one real/fake logit per H/16 x W/16 patch for the discriminator's own BCE. Training only.
"""

from __future__ import annotations

import torch
from torch import nn

from onen.train.models.grdnet_generator import GRDNetConfig, ResidualEncoder


class GRDNetDiscriminator(nn.Module):
    """Image [N,3,H,W] in [0,1] -> (patch logits [N,1,H/16,W/16], features [N,8*base,H/16,W/16])."""

    def __init__(self, cfg: GRDNetConfig | None = None):
        super().__init__()
        self.cfg = cfg or GRDNetConfig()
        self.cfg.check()
        self.encoder = ResidualEncoder(self.cfg)
        self.head = nn.Conv2d(self.encoder.out_channels, 1, 3, 1, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.head(features), features
