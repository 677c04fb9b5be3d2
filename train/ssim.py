"""Structural similarity (Wang et al. 2004) for images in [0,1], differentiable, for GRD-Net's contextual loss.

The reference's settings: an 11x11 Gaussian window with sigma 1.5, K1 0.01, K2 0.03, data range 1, statistics
over 'valid' windows only (no padding, so borders are not compared with zeros), averaged per channel. C1 and C2
keep the denominator positive, so flat images give SSIM 1 (or a finite value), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
DATA_RANGE = 1.0


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    """The normalised 2-D Gaussian window [size, size]."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-window SSIM [N,C,H-10,W-10] of x and y [N,C,H,W] (same shape, values in [0,1])."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two [N,C,H,W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, got {tuple(x.shape[-2:])}")
    channels = x.shape[1]
    window = gaussian_window().to(x)[None, None].expand(channels, 1, WINDOW, WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image [N]."""
    return ssim_map(x, y).flatten(1).mean(dim=1)


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over the batch (a scalar)."""
    return 1.0 - ssim(x, y).mean()
