"""Small numpy Perlin noise: smooth random fields that give synthetic defects natural, irregular shapes."""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise on an HxW grid with res[0] x res[1] lattice cells; values roughly in [-0.7, 0.7]."""
    height, width = shape
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grad_y, grad_x = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    y = np.linspace(0, ry, height, endpoint=False, dtype=np.float32)
    x = np.linspace(0, rx, width, endpoint=False, dtype=np.float32)
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        # rows first, then columns: two cheap gathers instead of one HxWx2 fancy index
        gy = grad_y[y0 + dy][:, x0 + dx]
        gx = grad_x[y0 + dy][:, x0 + dx]
        return gy * (fy - dy) + gx * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    return (top * (1 - uy) + bottom * uy).astype(np.float32)


def fractal_perlin(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator, octaves: int = 4, persistence: float = 0.5
) -> np.ndarray:
    """Sum of octaves of Perlin noise (each twice as fine, `persistence` times as strong)."""
    noise = np.zeros(shape, np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        scale = 2**octave
        noise += amplitude * perlin_2d(shape, (res[0] * scale, res[1] * scale), rng)
        total += amplitude
        amplitude *= persistence
    return noise / total
