"""Two metrics the trainer needs during training (validation AUROC), via scikit-learn.

The full evaluation report (PRO, plots, confusion matrix) is train.evaluate; this stays tiny so a
training loop can call it every epoch.
"""

from __future__ import annotations

import numpy as np


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray, max_pixels: int = 2_000_000, seed: int = 0) -> float | None:
    """AUROC over pixels (subsampled evenly past max_pixels to stay fast)."""
    from sklearn.metrics import roc_auc_score

    values = np.asarray(maps, dtype=np.float32).reshape(-1)
    truth = np.asarray(masks).reshape(-1).astype(bool)
    if truth.all() or not truth.any():
        return None
    if values.size > max_pixels:
        pick = np.random.default_rng(seed).choice(values.size, max_pixels, replace=False)
        values, truth = values[pick], truth[pick]
    return float(roc_auc_score(truth, values))
