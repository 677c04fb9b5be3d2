"""A procedural texture bank: foreign surfaces for synthetic defects and materials for the benchmark.

Every function returns float32 HxWx3 in 0..255 and draws all randomness from the given rng, so a seed
fixes the result.
"""

from __future__ import annotations

import cv2
import numpy as np

from onen.train.data.perlin import fractal_perlin


def random_color(rng: np.random.Generator, low: int = 0, high: int = 255) -> np.ndarray:
    return rng.uniform(low, high, 3).astype(np.float32)


def _two_tone(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)[..., None]
    return (1 - t) * a + t * b


def noise_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Fractal noise between two random colours (rust, dirt, stains)."""
    res = int(rng.integers(2, 9))
    field = fractal_perlin((h, w), (res, res), rng, octaves=int(rng.integers(3, 6)))
    return _two_tone(field * 1.4 + 0.5, random_color(rng), random_color(rng))


def stripes_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Parallel stripes at a random angle and pitch, slightly wavy (machining marks, fabric)."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3, 24)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = fractal_perlin((h, w), (2, 2), rng, octaves=2) * period * 1.5
    phase = (xx * np.cos(angle) + yy * np.sin(angle) + warp) * 2 * np.pi / period
    return _two_tone(0.5 + 0.5 * np.sin(phase), random_color(rng), random_color(rng))


def blotch_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Blotches of two or three colours with soft edges (paint, contamination)."""
    colours = [random_color(rng) for _ in range(int(rng.integers(2, 4)))]
    base: np.ndarray = np.empty((h, w, 3), np.float32)
    base[:] = colours[0]
    for colour in colours[1:]:
        field = fractal_perlin((h, w), (int(rng.integers(2, 7)),) * 2, rng, octaves=3)
        region = cv2.GaussianBlur((field > rng.uniform(-0.1, 0.15)).astype(np.float32), (0, 0), 1.5)
        base = base * (1 - region[..., None]) + colour * region[..., None]
    return base


def image_patch_texture(h: int, w: int, rng: np.random.Generator, source: np.ndarray) -> np.ndarray:
    """A rotated, recoloured crop of another image (a foreign surface with real-looking detail)."""
    rotated = np.ascontiguousarray(np.rot90(source, int(rng.integers(1, 4))))
    if rng.random() < 0.5:
        rotated = rotated[:, ::-1]
    sh, sw = rotated.shape[:2]
    ch, cw = max(8, sh // int(rng.integers(2, 5))), max(8, sw // int(rng.integers(2, 5)))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    patch = cv2.resize(rotated[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    gain = rng.uniform(0.5, 1.6, 3).astype(np.float32)
    return np.clip(patch * gain + rng.uniform(-40, 40), 0, 255)


TEXTURES = {"noise": noise_texture, "stripes": stripes_texture, "blotches": blotch_texture}


def random_texture(h: int, w: int, rng: np.random.Generator, sources: list[np.ndarray] | None = None) -> np.ndarray:
    """One texture from the bank; with source images, a patch of one of them is among the choices."""
    kinds = list(TEXTURES) + (["patch"] if sources else [])
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == "patch" and sources:
        return image_patch_texture(h, w, rng, sources[int(rng.integers(0, len(sources)))])
    return TEXTURES[kind](h, w, rng)
