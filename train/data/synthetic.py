"""DRAEM-style synthetic defects: Perlin-shaped masks filled with foreign texture or an intensity change.

They give training with good images only (supervision "none") real pixel masks. A defect is placed only
inside the area of interest, because a mark outside the AOI is not a defect. Its area is drawn from
`area_range` (a fraction of the AOI area), so the size of what the model learns is controllable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from onen.train.data.perlin import fractal_perlin
from onen.train.data.textures import random_texture

MIN_DEFECT_PIXELS = 6
MIN_VISIBLE_CHANGE = 12.0  # mean grey-level change inside the mask below which the fill is redone


def _bump(shape: tuple[int, int], centre: tuple[int, int], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def perlin_defect_mask(
    shape: tuple[int, int], aoi: np.ndarray, rng: np.random.Generator, area_fraction: float, kind: str = "blob"
) -> np.ndarray:
    """A mask of about `area_fraction` of the AOI's pixels, all inside the AOI, around one random AOI point.

    kind "blob": thresholded Perlin noise (pits, stains, dents); "crack": the zero crossings of fractal
    Perlin noise, thin winding lines (cracks, scratches).
    """
    inside = np.flatnonzero(aoi)
    if inside.size < MIN_DEFECT_PIXELS:
        raise ValueError(f"AOI has {inside.size} pixels; at least {MIN_DEFECT_PIXELS} are needed to place a defect")
    target = int(np.clip(round(area_fraction * inside.size), MIN_DEFECT_PIXELS, inside.size))
    centre = np.unravel_index(inside[int(rng.integers(0, inside.size))], shape)
    if kind == "crack":
        res = int(2 ** rng.integers(0, 3))  # coarse lattice: long winding lines, not a net
        noise = fractal_perlin(shape, (res, res), rng, octaves=3)
        sigma = np.sqrt(target) * rng.uniform(1.5, 3.0)
        score = _bump(shape, centre, sigma) * (1.0 - np.clip(np.abs(noise) * 8.0, 0, 1))
    else:
        res = int(2 ** rng.integers(1, 5))
        noise = fractal_perlin(shape, (res, res), rng, octaves=3)
        sigma = np.sqrt(target) * rng.uniform(0.6, 1.2)
        score = _bump(shape, centre, sigma) + rng.uniform(0.3, 0.8) * noise
    score = np.where(aoi, score, -np.inf).ravel()
    chosen = np.argpartition(-score, target - 1)[:target]
    mask = np.zeros(shape[0] * shape[1], bool)
    mask[chosen] = True
    return mask.reshape(shape)


def _is_gray(image: np.ndarray) -> bool:
    """A grey camera image stored as RGB (all channels equal, checked on a sparse grid for speed)."""
    sample = image[::7, ::7].astype(np.int16)
    return bool(
        np.abs(sample[..., 0] - sample[..., 1]).max() <= 2 and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2
    )


@dataclass
class SyntheticDefects:
    """Makes synthetic defects; `make` is deterministic given its rng (or the seed when no rng is given)."""

    seed: int = 0
    area_range: tuple[float, float] = (0.002, 0.06)  # fraction of the AOI area
    beta_range: tuple[float, float] = (0.5, 1.0)  # opacity of the foreign texture
    texture_probability: float = 0.6  # otherwise an intensity change (dent, burn, bright spot)
    crack_probability: float = 0.35  # thin winding shape instead of a blob
    sources: list[np.ndarray] | None = None  # other images whose patches may be pasted

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        low, high = self.area_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {self.area_range}")

    def make(
        self, image: np.ndarray, aoi: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (defective copy of the uint8 RGB image, bool mask of the defect); the mask is never empty."""
        rng = self.rng if rng is None else rng
        h, w = image.shape[:2]
        aoi = np.ones((h, w), bool) if aoi is None else aoi.astype(bool)
        if aoi.shape != (h, w):
            raise ValueError(f"AOI {aoi.shape} does not match image {(h, w)}")
        area = float(np.exp(rng.uniform(np.log(self.area_range[0]), np.log(self.area_range[1]))))
        kind = "crack" if rng.random() < self.crack_probability else "blob"
        mask = perlin_defect_mask((h, w), aoi, rng, area, kind)
        base = image.astype(np.float32)
        for attempt in range(4):
            use_texture = attempt > 0 or rng.random() < self.texture_probability
            fill = self._texture_fill(h, w, rng, image) if use_texture else self._intensity_fill(base, rng)
            beta = rng.uniform(*self.beta_range) if use_texture else 1.0
            out = base.copy()
            out[mask] = (1 - beta) * base[mask] + beta * fill[mask]
            if np.abs(out[mask] - base[mask]).mean() >= MIN_VISIBLE_CHANGE:
                break
        return np.clip(out, 0, 255).round().astype(np.uint8), mask

    def _texture_fill(self, h: int, w: int, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        sources = list(self.sources or []) + [image]
        texture = random_texture(h, w, rng, sources)
        if _is_gray(image):
            # a coloured patch on a grey camera image would teach "colour = defect", which real defects never are
            texture = np.repeat(texture.mean(axis=2, keepdims=True), 3, axis=2)
        return texture

    def _intensity_fill(self, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gain = rng.uniform(0.25, 0.7) if rng.random() < 0.6 else rng.uniform(1.4, 2.2)
        shade = cv2.GaussianBlur(base, (0, 0), 1.0)
        return shade * gain + rng.uniform(-20, 20)
