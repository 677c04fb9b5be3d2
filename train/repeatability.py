"""Repeatability: the same part imaged again differs by sensor noise; does the verdict stay?

A quality engineer qualifies a gauge by measuring the same part twice (gauge R&R). `onen eval` does the
model's share of it: every evaluated image is scored again with seeded Gaussian noise of a few grey
levels added (one draw per pixel, shared by the three channels, as a monochrome or Bayer sensor's
luminance noise), and the report says how far the scores moved and how many verdicts flipped at the
threshold in use. A model that flips verdicts under noise smaller than its camera's will reject and pass
the same part at random on the line, whatever its AUROC says.
"""

from __future__ import annotations

import numpy as np

NOISE_SIGMAS = (1.0, 2.0)  # grey levels of 255: about a machine-vision sensor's own shot noise at mid-grey
# share of verdicts flipped at the largest sigma from which `onen eval` points to the repeatable recipe (between
# what default runs and the recipe's runs flip: README, "Repeatable verdicts")
HINT_FLIP_RATE = 0.03


def add_sensor_noise(batch: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N,H,W,3] plus N(0, sigma) grey levels per pixel (the same in every channel), rounded and clipped."""
    noise = rng.normal(0.0, sigma, batch.shape[:3] + (1,)).astype(np.float32)
    return np.clip(np.rint(batch.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def noise_rng(sigma: float, start: int) -> np.random.Generator:
    """One seeded stream per noise level and batch, so a report is the same on every run and backend."""
    return np.random.default_rng([int(round(sigma * 1000)), int(start)])


def summarise(clean: np.ndarray, noisy: np.ndarray, threshold: float) -> dict:
    """How far scores moved and how many verdicts (score >= threshold) flipped between clean and noisy."""
    clean, noisy = np.asarray(clean, np.float64), np.asarray(noisy, np.float64)
    change = np.abs(noisy - clean)
    flipped = (clean >= threshold) != (noisy >= threshold)
    return {
        "median_abs_score_change": float(np.median(change)),
        "p95_abs_score_change": float(np.percentile(change, 95)),
        "max_abs_score_change": float(change.max()),
        "share_scored_higher": float(np.mean(noisy > clean)),
        "verdicts_flipped": int(flipped.sum()),
        "flip_rate": float(flipped.mean()),
        "flipped_to_reject": int((flipped & (noisy >= threshold)).sum()),
        "flipped_to_pass": int((flipped & (noisy < threshold)).sum()),
    }


def verdict_line(report: dict) -> str | None:
    """One line for `onen eval` to print: verdicts flipped at each noise level, and where they flip often, the fix."""
    keys = [f"sigma_{sigma:g}" for sigma in NOISE_SIGMAS]
    if any(key not in report for key in keys):
        return None
    flips = " / ".join(str(report[key]["verdicts_flipped"]) for key in keys)
    sigmas = " / ".join(f"{sigma:g}" for sigma in NOISE_SIGMAS)
    line = f"repeatability: {flips} verdicts flipped under {sigmas} grey levels of sensor noise"
    worst = float(report[keys[-1]]["flip_rate"])
    if worst >= HINT_FLIP_RATE:
        line += (
            f" ({worst:.1%}); if the camera's noise is that large, train with --config "
            "train/recipe_files/repeatable.yaml (README: Repeatable verdicts)"
        )
    return line
