"""What good parts look like at every position, carried inside the OneN student (PaDiM-style Gaussians).

Why: under supervision "none" the student learns defects from synthetic look-alikes only, and real defects that
look like none of them score like good parts; how far a patch's features lie from what good parts show at that
position needs no defect at all.

How: after training, a Gaussian is fitted at every position of the stride-4 stem features (averaged to stride 8)
and of the last tokens (on their leading principal components), on good training images. Each distance map and the
student's own score logit are normalised on held-out good images, so they add up in one unit (the weights:
train.models.onen_vit.GOOD_OWN_WEIGHT). Buffers and batched matmuls only: one forward pass, plain ONNX ops.
Measurements behind the choices: docs/experiments.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RIDGE = 0.01  # covariance += RIDGE * mean variance * I: a few hundred images per position, up to 96 channels


class PositionGaussian(nn.Module):
    """One Gaussian per position of a [N, C, h, w] feature map; distance() is the Mahalanobis distance map.

    pool: features are averaged over pool x pool cells first (a coarser grid: fewer, better-fed Gaussians).
    components: features are first projected on their leading principal components (one basis for all
    positions), so each Gaussian has components x components parameters instead of C x C.
    """

    basis: torch.Tensor  # buffers
    mean: torch.Tensor
    precision: torch.Tensor

    def __init__(self, channels: int, height: int, width: int, pool: int = 1, components: int | None = None):
        super().__init__()
        if height % pool or width % pool:
            raise ValueError(f"a {height}x{width} feature map cannot be pooled by {pool}")
        self.pool = pool
        self.shape = (channels, height, width)
        self.components = min(components or channels, channels)
        positions = (height // pool) * (width // pool)
        self.register_buffer("basis", torch.eye(channels)[: self.components].clone())  # [k, C]
        self.register_buffer("mean", torch.zeros(positions, 1, self.components))
        self.register_buffer("precision", torch.zeros(positions, self.components, self.components))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """features [N, C, h, w] of good images (N >= 2)."""
        n = features.shape[0]
        if n < 2 or tuple(features.shape[1:]) != self.shape:
            raise ValueError(f"fitting needs >= 2 feature maps of shape {self.shape}, got {tuple(features.shape)}")
        pooled = self._pooled(features.double())
        if self.components < self.shape[0]:
            flat = pooled.permute(0, 2, 3, 1).reshape(-1, self.shape[0])
            _, _, right = torch.linalg.svd(flat - flat.mean(dim=0), full_matrices=False)
            self.basis.copy_(right[: self.components].float())
        x = self._by_position(pooled, self.basis.double())  # [P, N, k]
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        covariance = centred.transpose(1, 2) @ centred / (n - 1)  # [P, k, k]
        ridge = RIDGE * covariance.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
        covariance = covariance + ridge[:, None, None] * torch.eye(self.components, dtype=covariance.dtype)
        self.mean.copy_(mean.float())
        self.precision.copy_(torch.linalg.inv(covariance).float())

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> Mahalanobis distance to the good parts' Gaussian at each (pooled) position, [N, h/pool,
        w/pool]."""
        pooled = self._pooled(features)
        n, _, h, w = pooled.shape
        x = self._by_position(pooled, self.basis) - self.mean  # [P, N, k]
        squared = ((x @ self.precision) * x).sum(dim=2)  # [P, N]
        return torch.sqrt(torch.clamp(squared, min=0.0) + 1e-12).transpose(0, 1).reshape(n, h, w)

    def _pooled(self, features: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(features, self.pool) if self.pool > 1 else features

    def _by_position(self, features: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        n, c = features.shape[:2]
        x = features.reshape(n, c, -1).permute(2, 0, 1)  # [P, N, C]
        return x if self.components == c else x @ basis.T


class Normaliser(nn.Module):
    """(value - median) / spread of a signal's image-level maximum on held-out good images, one per signal."""

    location: torch.Tensor  # buffers
    spread: torch.Tensor

    def __init__(self, signals: int):
        super().__init__()
        self.register_buffer("location", torch.zeros(signals))
        self.register_buffer("spread", torch.ones(signals))

    @torch.no_grad()
    def fit(self, index: int, good_values: torch.Tensor) -> None:
        """good_values [N]: the signal's image-level value on good images; spread = interquartile range."""
        values = good_values.double().flatten()
        low, median, high = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype))
        spread = float(high - low) if len(values) > 1 else 0.0
        self.location[index] = float(median)
        self.spread[index] = max(spread, 1e-3 * max(abs(float(median)), 1.0))

    def __call__(self, index: int, value: torch.Tensor) -> torch.Tensor:
        return (value - self.location[index]) / self.spread[index]


class GoodFeatureModel(nn.Module):
    """The student's model of good parts: Gaussians on the stem features and the tokens, and the normalisers.

    `fitted` is a buffer, so a checkpoint says whether the model may be used; an unfitted one is skipped."""

    STEM, TOKENS, SCORE, MAP = range(4)  # normaliser signals
    fitted: torch.Tensor  # buffer
    # fewer, better-fed Gaussians and a cheaper distance than stride 4 and all token channels (docs/experiments.md)
    STEM_POOL = 2
    TOKEN_COMPONENTS = 32

    def __init__(self, stem_channels: int, fine_hw: tuple[int, int], token_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.stem = PositionGaussian(stem_channels, *fine_hw, pool=self.STEM_POOL)
        self.tokens = PositionGaussian(token_dim, *grid, components=self.TOKEN_COMPONENTS)
        self.normaliser = Normaliser(4)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.is_fitted = False
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "is_fitted", bool(module.fitted)))

    def mark_fitted(self) -> None:
        self.fitted.fill_(True)
        self.is_fitted = True

    def distances(self, stem_features: torch.Tensor, tokens_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised distance maps: stem [N, H/8, W/8] and tokens [N, h, w] (0 ~ a typical good part's peak)."""
        return (
            self.normaliser(self.STEM, self.stem.distance(stem_features)),
            self.normaliser(self.TOKENS, self.tokens.distance(tokens_map)),
        )
