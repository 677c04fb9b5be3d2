"""The calibration report: report.json plus PNGs an integrator can show to quality people.

score_hist.png  good vs defective score histograms with the chosen (and F1-optimal) threshold
rates.png       expected false-reject and escape rates with their confidence intervals
overlays.png    the good images closest to rejection and the defects closest to escaping, with heat maps

The pictures need matplotlib (the calibration extra); a base install writes report.json alone and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from onen.calibration.runner import Example
from onen.edge.extras import missing_module_message
from onen.edge.regions import find_regions

try:
    from matplotlib.figure import Figure
except ImportError:  # a base (station) install: report.json without the pictures
    Figure = None  # type: ignore[assignment,misc]

PICTURES = ("score_hist.png", "rates.png", "overlays.png")


def pictures_skipped() -> str | None:
    """Why the report has no pictures here (None where matplotlib is installed)."""
    if Figure is not None:
        return None
    return f"report pictures ({', '.join(PICTURES)}) not drawn: {missing_module_message('matplotlib')}"


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot_histograms(
    good: np.ndarray, defect: np.ndarray | None, threshold: float, f1_threshold: float | None, path: Path
) -> Path | None:
    if Figure is None:
        return None
    figure = Figure(figsize=(7, 4), dpi=110)
    axes = figure.add_subplot()
    values = np.concatenate([good, defect]) if defect is not None and defect.size else good
    span = float(values.max() - values.min()) or 1.0
    bins = np.linspace(values.min() - 0.02 * span, values.max() + 0.02 * span, 50)
    axes.hist(good, bins=bins.tolist(), alpha=0.6, color="tab:green", label=f"good (n={good.size})")
    if defect is not None and defect.size:
        axes.hist(defect, bins=bins.tolist(), alpha=0.6, color="tab:red", label=f"defective (n={defect.size})")
    axes.axvline(threshold, color="black", linewidth=2, label=f"threshold {threshold:.4g} (FRR bound)")
    if f1_threshold is not None:
        axes.axvline(f1_threshold, color="tab:blue", linestyle="--", label=f"F1-optimal {f1_threshold:.4g}")
    axes.set_xlabel("raw model score (reject when above the threshold)")
    axes.set_ylabel("images")
    axes.set_yscale("log")
    axes.legend(fontsize=8)
    axes.set_title("Calibration scores")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_rates(report: dict[str, Any], path: Path) -> Path | None:
    """Bars = rate on the calibration images, whiskers = confidence interval; the FRR bound as a marker."""
    if Figure is None:
        return None
    figure = Figure(figsize=(7, 4), dpi=110)
    axes = figure.add_subplot()
    points = [("chosen", report["at_threshold"])]
    if report.get("f1_alternative"):
        points.append(("F1-optimal", report["f1_alternative"]))
    labels, rates, lows, highs, colours = [], [], [], [], []
    for name, point in points:
        for kind, colour in (("false_reject", "tab:orange"), ("escape", "tab:red")):
            estimate = point.get(kind)
            if estimate is None:
                continue
            labels.append(f"{name}\n{kind.replace('_', '-')}")
            rates.append(estimate["rate"])
            lows.append(estimate["rate"] - estimate["low"])
            highs.append(estimate["high"] - estimate["rate"])
            colours.append(colour)
    x = np.arange(len(labels))
    axes.bar(x, rates, color=colours, alpha=0.7)
    axes.errorbar(x, rates, yerr=[lows, highs], fmt="none", ecolor="black", capsize=6)
    bound = report["image_threshold"]["frr_upper_bound"]
    axes.scatter(
        [0],
        [bound],
        marker="v",
        color="black",
        zorder=3,
        label=f"FRR upper bound {bound:.3%} ({report['image_threshold']['confidence']:.0%} conf.)",
    )
    axes.axhline(
        report["image_threshold"]["target_frr"],
        color="grey",
        linestyle=":",
        label=f"target FRR {report['image_threshold']['target_frr']:.3%}",
    )
    axes.set_xticks(x, labels, fontsize=8)
    axes.set_ylabel("rate")
    axes.legend(fontsize=8)
    axes.set_title(f"Expected rates with {report['image_threshold']['confidence']:.0%} confidence intervals")
    figure.tight_layout()
    figure.savefig(path)
    return path


def overlay(example: Example, pixel_threshold: float, min_area: int) -> np.ndarray:
    """RGB image with the heat map blended in and the daemon's regions boxed."""
    heat = np.clip(example.anomaly_map, 0.0, 1.0)
    coloured = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    alpha = np.clip(heat * 1.5, 0.0, 0.7)[:, :, None]  # cold pixels keep the part visible
    blended: np.ndarray = ((1 - alpha) * example.image + alpha * coloured).astype(np.uint8)
    for region in find_regions(example.anomaly_map, pixel_threshold, min_area, with_polygon=False):
        x, y, w, h = region.bbox
        cv2.rectangle(blended, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), 1)
    return blended


def plot_overlays(
    groups: list[tuple[str, list[Example]]], threshold: float, pixel_threshold: float, min_area: int, path: Path
) -> Path | None:
    groups = [(title, examples) for title, examples in groups if examples]
    if not groups or Figure is None:
        return None
    columns = max(len(examples) for _, examples in groups)
    figure = Figure(figsize=(2.6 * columns, 2.9 * len(groups)), dpi=100)
    for row, (title, examples) in enumerate(groups):
        for column, example in enumerate(examples):
            axes = figure.add_subplot(len(groups), columns, row * columns + column + 1)
            axes.imshow(overlay(example, pixel_threshold, min_area))
            verdict = "REJECT" if example.score > threshold else "pass"
            axes.set_title(
                f"{title}\n{Path(example.name.split('#')[0]).name[:24]} {example.score:.3g} {verdict}", fontsize=7
            )
            axes.axis("off")
    figure.tight_layout()
    figure.savefig(path)
    return path
