"""Evaluation figures: ROC and score histograms with matplotlib (Agg: no display needed), image sheets with
OpenCV (a grid of many small matplotlib axes takes seconds per figure)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onen.train import repeatability  # noqa: E402


def roc_plot(
    path: Path,
    image_curve: tuple[np.ndarray, np.ndarray] | None,
    image_auc: float | None,
    pixel_curve: tuple[np.ndarray, np.ndarray] | None = None,
    pixel_auc: float | None = None,
    operating_point: tuple[float, float] | None = None,
) -> Path:
    """Image ROC (and pixel ROC when masks exist), with the chosen operating point marked."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    if image_curve is not None:
        axis.plot(
            image_curve[0], image_curve[1], label=f"image AUROC {image_auc:.3f}" if image_auc is not None else "image"
        )
    if pixel_curve is not None:
        axis.plot(
            pixel_curve[0], pixel_curve[1], label=f"pixel AUROC {pixel_auc:.3f}" if pixel_auc is not None else "pixel"
        )
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
    axis.hist(scores[~labels], bins=bins.tolist(), alpha=0.6, color="tab:green", label=f"good ({int((~labels).sum())})")
    axis.hist(scores[labels], bins=bins.tolist(), alpha=0.6, color="tab:red", label=f"defective ({int(labels.sum())})")
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axis.set(xlabel="image score", ylabel="images", title="Scores: good vs defective")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def repeatability_plot(
    path: Path, scores: np.ndarray, noisy_scores: dict[float, np.ndarray], labels: np.ndarray, threshold: float
) -> Path:
    """Each image's score clean (x) against under sensor noise (y), one panel per noise level; the points in the
    two off-diagonal quadrants of the threshold cross are the verdicts that flipped."""
    labels = np.asarray(labels).astype(bool)
    figure, axes = plt.subplots(1, len(noisy_scores), figsize=(4.5 * len(noisy_scores), 4.5), dpi=100, squeeze=False)
    for axis, (sigma, noisy) in zip(axes[0], noisy_scores.items(), strict=True):
        flipped = repeatability.summarise(scores, noisy, threshold)["verdicts_flipped"]
        for mask, color, name in ((~labels, "tab:green", "good"), (labels, "tab:red", "defective")):
            axis.scatter(scores[mask], noisy[mask], s=9, alpha=0.6, color=color, label=name)
        low = float(min(np.min(scores), np.min(noisy), threshold))
        high = float(max(np.max(scores), np.max(noisy), threshold))
        axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
        axis.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
        axis.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
        axis.set(
            xlabel="score, image as captured",
            ylabel=f"score, plus noise sigma {sigma:g} grey levels",
            title=f"sigma {sigma:g}: {flipped} of {len(noisy)} verdicts flipped",
        )
        axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _panel(image_rgb: np.ndarray, caption: str, side: int) -> np.ndarray:
    """An RGB panel scaled to `side` px high (nearest: defects stay crisp) with a caption strip on top."""
    scale = side / image_rgb.shape[0]
    panel = cv2.resize(image_rgb, (max(1, round(image_rgb.shape[1] * scale)), side), interpolation=cv2.INTER_NEAREST)
    strip = np.full((18, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(
        strip, caption[: max(8, panel.shape[1] // 7)], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.concatenate([strip, panel], axis=0)


def heat_overlay(
    image_rgb: np.ndarray, heat: np.ndarray, aoi: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """The image with its anomaly map (0..1, jet colours) blended on top and the AOI outlined in white."""
    colours = cv2.cvtColor(
        cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    out = cv2.addWeighted(image_rgb, 1 - alpha, colours, alpha, 0)
    if aoi is not None and not aoi.all():
        contours, _ = cv2.findContours(aoi.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def overlay_grid(path: Path, rows: list[dict], title: str, side: int = 192) -> Path:
    """One row per image: image | heat-map overlay (AOI outlined) | ground truth, as one PNG (OpenCV: fast).
    rows: dicts with image (RGB uint8), map (float HxW 0..1), mask (bool HxW or None), aoi (bool HxW), caption."""
    lines = []
    for row in rows:
        image = row["image"]
        truth = row.get("mask")
        truth_rgb = np.repeat(
            ((truth if truth is not None else np.zeros(image.shape[:2], bool)) * 255).astype(np.uint8)[..., None], 3, 2
        )
        panels = [
            _panel(image, row["caption"], side),
            _panel(heat_overlay(image, row["map"], row.get("aoi")), "anomaly map", side),
            _panel(truth_rgb, "ground truth" if truth is not None else "ground truth: no mask", side),
        ]
        gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
        lines.append(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
    header = np.full((24, lines[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, *lines], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def history_plot(path: Path, rows: list[dict], best_epoch: int | None = None) -> Path:
    """Training curves from history.csv's rows (as Ultralytics' results.png): loss and its parts, validation image
    and pixel AUROC with the best checkpoint's epoch marked, and the learning rate."""
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)

    def curve(axis, key: str, **style) -> None:
        points = [(epoch, row.get(key)) for epoch, row in zip(epochs, rows, strict=True) if row.get(key) is not None]
        if points:
            axis.plot(*zip(*points, strict=True), marker=".", label=key, **style)

    curve(axes[0], "loss", color="black", linewidth=2)
    for key in sorted({key for row in rows for key in row if key.startswith("loss_")}):
        curve(axes[0], key, linewidth=1)
    axes[0].set(xlabel="epoch", title="training loss (mean per epoch)")
    curve(axes[1], "val_image_auroc")
    curve(axes[1], "val_pixel_auroc")
    if best_epoch is not None:
        axes[1].axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    axes[1].set(xlabel="epoch", title="validation", ylim=(0, 1.01))
    curve(axes[2], "lr", color="tab:purple")
    axes[2].set(xlabel="epoch", title="learning rate")
    for axis in axes:
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
