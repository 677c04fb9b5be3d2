"""Evaluation figures (matplotlib, Agg backend: no display needed on a server or in CI)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def roc_plot(path: Path, image_curve: tuple[np.ndarray, np.ndarray] | None, image_auc: float | None,
             pixel_curve: tuple[np.ndarray, np.ndarray] | None = None, pixel_auc: float | None = None,
             operating_point: tuple[float, float] | None = None) -> Path:
    """Image ROC (and pixel ROC when masks exist), with the chosen operating point marked."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    if image_curve is not None:
        axis.plot(image_curve[0], image_curve[1], label=f"image AUROC {image_auc:.3f}" if image_auc is not None else "image")
    if pixel_curve is not None:
        axis.plot(pixel_curve[0], pixel_curve[1], label=f"pixel AUROC {pixel_auc:.3f}" if pixel_auc is not None else "pixel")
    if operating_point is not None:
        axis.plot([operating_point[0]], [operating_point[1]], "o", color="black", label="threshold")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def score_histogram(path: Path, scores: np.ndarray, labels: np.ndarray, threshold: float) -> Path:
    """Score histograms of good and defective images with the decision threshold."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    low, high = float(min(scores.min(), threshold)), float(max(scores.max(), threshold))
    bins = np.linspace(low, high + 1e-9, 41)
    axis.hist(scores[~labels], bins=bins, alpha=0.6, color="tab:green", label=f"good ({int((~labels).sum())})")
    axis.hist(scores[labels], bins=bins, alpha=0.6, color="tab:red", label=f"defective ({int(labels.sum())})")
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axis.set(xlabel="image score", ylabel="images", title="Scores: good vs defective")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def overlay_grid(path: Path, rows: list[dict], title: str) -> Path:
    """One row per image: image | heat-map overlay (AOI outline) | ground truth. rows: dicts with
    image (RGB uint8), map (float HxW 0..1), mask (bool HxW or None), aoi (bool HxW), caption."""
    figure, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), dpi=80, squeeze=False)
    for axis_row, row in zip(axes, rows):
        axis_row[0].imshow(row["image"])
        axis_row[0].set_title(row["caption"], fontsize=8)
        axis_row[1].imshow(row["image"])
        axis_row[1].imshow(np.clip(row["map"], 0, 1), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if row.get("aoi") is not None and not row["aoi"].all():
            axis_row[1].contour(row["aoi"].astype(float), levels=[0.5], colors="white", linewidths=0.8)
        axis_row[1].set_title("anomaly map", fontsize=8)
        truth = row["mask"] if row.get("mask") is not None else np.zeros(row["image"].shape[:2], bool)
        axis_row[2].imshow(truth, cmap="gray", vmin=0, vmax=1)
        axis_row[2].set_title("ground truth" if row.get("mask") is not None else "ground truth (no mask)", fontsize=8)
        for axis in axis_row:
            axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path)
    plt.close(figure)
    return path
