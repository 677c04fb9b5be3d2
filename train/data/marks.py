"""Defect-like marks (scratch, spot, crack) drawn onto an image, each returning its exact pixel mask.

The benchmark uses the same marks inside the AOI (a defect) and outside it (not a defect), so a model
can only tell them apart by where they are, which is what AOI guidance must teach it.
"""

from __future__ import annotations

import cv2
import numpy as np

from onen.train.data.perlin import perlin_2d

MARK_KINDS = ("scratch", "spot", "crack")
_ALPHA_IN_MASK = 0.25  # pixels where the mark covers at least this much are in its mask


def _blend(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return image * (1 - a) + colour * a


def _scratch(h: int, w: int, centre: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A thin slightly curved line: a quadratic Bezier with a random bend."""
    length = scale * rng.uniform(0.25, 0.6)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    p0, p2 = centre - direction * length / 2, centre + direction * length / 2
    p1 = centre + normal * length * rng.uniform(-0.15, 0.15)
    t = np.linspace(0, 1, 40)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    canvas = np.zeros((h * 4, w * 4), np.uint8)  # 4x supersampling for sub-pixel thin lines
    thickness = int(rng.integers(2, 7))
    cv2.polylines(canvas, [np.round(points * 4).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _spot(h: int, w: int, centre: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob with a soft rim (pit, stain, burn)."""
    radius = scale * rng.uniform(0.04, 0.1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ry, rx = radius * rng.uniform(0.6, 1.4), radius * rng.uniform(0.6, 1.4)
    distance = np.sqrt(((yy - centre[1]) / ry) ** 2 + ((xx - centre[0]) / rx) ** 2)
    wobble = perlin_2d((h, w), (max(2, h // 12), max(2, w // 12)), rng) * 0.8
    return np.clip((1.15 - distance + wobble) * 3.0, 0, 1)


def _crack(h: int, w: int, centre: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A jagged random walk with a branch or two (a crack that follows the grain now and then)."""
    canvas = np.zeros((h * 4, w * 4), np.uint8)
    length = scale * rng.uniform(0.25, 0.5)
    heading = rng.uniform(0, 2 * np.pi)
    branches = [
        (centre.astype(float), heading, length),
        (centre.astype(float), heading + np.pi, length * rng.uniform(0.3, 0.8)),
    ]
    while branches:
        point, heading, remaining = branches.pop()
        points = [point.copy()]
        while remaining > 0:
            step = rng.uniform(1.5, 4.0)
            heading += rng.normal(0, 0.45)
            point = point + step * np.array([np.cos(heading), np.sin(heading)])
            points.append(point.copy())
            remaining -= step
            if rng.random() < 0.03 and len(branches) < 4:
                branches.append((point.copy(), heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), remaining * 0.5))
        thickness = int(rng.integers(3, 7))
        cv2.polylines(canvas, [np.round(np.array(points) * 4).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


_SHAPES = {"scratch": _scratch, "spot": _spot, "crack": _crack}


def mark_alpha(
    kind: str, shape: tuple[int, int], centre: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Coverage 0..1 of a mark of `kind` around `centre` (x, y); `scale` is the size of the part."""
    return _SHAPES[kind](shape[0], shape[1], np.asarray(centre, float), scale, rng)


def draw_mark(
    image: np.ndarray, kind: str, alpha: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint a mark (float32 image in 0..255); returns (image, bool mask of the mark)."""
    local = image[alpha > 0.5].mean(axis=0) if (alpha > 0.5).any() else image.reshape(-1, 3).mean(axis=0)
    if kind == "scratch":
        # scratches on a surface catch the light (bright) or expose darker material
        colour = (
            np.clip(local * rng.uniform(1.5, 2.2) + 30, 0, 255)
            if rng.random() < 0.6
            else local * rng.uniform(0.2, 0.45)
        )
        strength = rng.uniform(0.75, 1.0)
    elif kind == "spot":
        colour = (
            np.array([rng.uniform(40, 110), rng.uniform(25, 70), rng.uniform(10, 40)], np.float32)
            if rng.random() < 0.5
            else local * rng.uniform(0.15, 0.4)
        )
        strength = rng.uniform(0.7, 0.95)
    else:
        colour = local * rng.uniform(0.05, 0.3)
        strength = rng.uniform(0.85, 1.0)
    if np.abs(colour - local).mean() < 45:
        # on a dark surface a dark mark vanishes: make it a light one (dust, chalk, bare metal)
        colour = np.clip(local + rng.uniform(70, 130), 0, 255)
    return _blend(image, alpha * strength, colour.astype(np.float32)), alpha >= _ALPHA_IN_MASK
