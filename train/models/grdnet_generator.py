"""GRD-Net's generator: residual encoder E1 -> convolutional bottleneck z -> decoder -> encoder E2 on the output.

Seed 002 (Ferrari et al. 2023): a residual auto-encoder (encoder-decoder-encoder, as GANomaly) rebuilds the clean
part from one with synthetic defects. Residual blocks follow its Fig. 5 (conv-LeakyReLU twice, plus the input or
a conv-LeakyReLU projection of it); the bottleneck stays convolutional (its best variant, 32x8x8 at 128 px), here
H/16 x W/16 for any input that is a multiple of 16. Images are float [N,3,H,W] in [0,1], the decoder's sigmoid
range, so the input, the reconstruction and the U-Net that reads both share one scale.
"""

from __future__ import annotations

import torch
from torch import nn

from onen.train.config import GRDNetConfig
from onen.train.models.input_layer import ImageInput, InputNormalisation

LEAKY_SLOPE = 0.2
# pixels / 255: the networks see [0,1], the range of the decoder's sigmoid
GRDNET_NORMALISATION = InputNormalisation(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W,3] RGB -> float [N,3,H,W] in [0,1], through the bundle's input layer (one normalisation)."""
    return _UNIT_INPUT(images)


_UNIT_INPUT = ImageInput(GRDNET_NORMALISATION)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(LEAKY_SLOPE))


class ResidualBlock(nn.Module):
    """F(x) + x, or F(x) + G(x) when the size or width changes (the paper's Fig. 5)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, stride), _conv(cout, cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResidualEncoder(nn.Module):
    """Image [N,3,H,W] -> features [N, 8*base, H/16, W/16]: a stem and four stages of two residual blocks."""

    def __init__(self, cfg: GRDNetConfig):
        super().__init__()
        widths = cfg.stage_widths
        layers: list[nn.Module] = [_conv(3, widths[0])]
        cin = widths[0]
        for width in widths:
            layers += [ResidualBlock(cin, width, stride=2), ResidualBlock(width, width)]
            cin = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LatentEncoder(nn.Module):
    """Residual encoder + a linear 3x3 conv to the bottleneck z [N, latent, H/16, W/16] (E1 and E2)."""

    def __init__(self, cfg: GRDNetConfig):
        super().__init__()
        self.features = ResidualEncoder(cfg)
        self.to_latent = nn.Conv2d(self.features.out_channels, cfg.latent_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(x))


class Decoder(nn.Module):
    """z -> image in [0,1]: the encoder mirrored (nearest x2 upsampling before each stage, a last conv at full
    size in place of the stem), sigmoid output."""

    def __init__(self, cfg: GRDNetConfig):
        super().__init__()
        widths = cfg.stage_widths[::-1]  # 8w, 4w, 2w, w
        layers: list[nn.Module] = [_conv(cfg.latent_channels, widths[0])]
        for cin, width in zip(widths[:-1], widths[1:], strict=True):
            layers += [_upsample(), ResidualBlock(cin, width), ResidualBlock(width, width)]
        layers += [_upsample(), _conv(widths[-1], widths[-1]), nn.Conv2d(widths[-1], 3, 3, 1, 1), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


def _upsample() -> nn.Module:
    return nn.Upsample(scale_factor=2, mode="nearest")


class GRDNetGenerator(nn.Module):
    """x (with defects) -> (x_hat, z, z_hat): reconstruction, its bottleneck, and E2's encoding of x_hat."""

    def __init__(self, cfg: GRDNetConfig | None = None):
        super().__init__()
        self.cfg = cfg or GRDNetConfig()
        self.cfg.check()
        self.encoder = LatentEncoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.encoder2 = LatentEncoder(self.cfg)  # training only (the encoder loss); not exported

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E1 -> decoder: what the exported graph runs."""
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)
