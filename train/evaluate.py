"""Evaluate any model that gives the bundle's three outputs on a list of samples; write report.json + PNGs.

`predict` is a plain function (uint8 [N,H,W,3] -> score, anomaly_map, class_logits as numpy), so the
same code evaluates a torch model after training and an exported bundle through ONNX Runtime, and it
needs no torch itself. Pixel metrics use the images whose mask is known (good images: empty) and only
the pixels inside the AOI, because outside it a mark is not a defect.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from onen.edge.bundle import THRESHOLD_SOURCES, Thresholds
from onen.edge.errors import OnenError
from onen.train import metrics, plots, repeatability
from onen.train.data.loading import load_resized, shared_aoi_at
from onen.train.data.sample import GOOD, Sample

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
REPORT = "report.json"
SCORES = "scores.csv"
OPTIMISTIC = "test_best_f1"  # a threshold chosen on the evaluated images themselves
log = logging.getLogger(__name__)


class EvaluationError(OnenError):
    """The model's outputs do not follow the contract, or there is nothing to evaluate."""


def _check_outputs(outputs, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        score, anomaly_map, logits = (np.asarray(o, dtype=np.float32) for o in outputs)
    except (TypeError, ValueError) as error:
        raise EvaluationError(
            f"predict must return (score [N], anomaly_map [N,1,H,W], class_logits [N,C]): {error}"
        ) from error
    score = score.reshape(-1)
    if anomaly_map.ndim == 4 and anomaly_map.shape[1] == 1:
        anomaly_map = anomaly_map[:, 0]
    if (
        score.shape[0] != n
        or anomaly_map.ndim != 3
        or anomaly_map.shape[0] != n
        or logits.ndim != 2
        or logits.shape[0] != n
    ):
        raise EvaluationError(
            f"predict returned score {score.shape}, anomaly_map {anomaly_map.shape}, class_logits {logits.shape} "
            f"for a batch of {n}; expected [N], [N,1,H,W], [N,C]"
        )
    if anomaly_map.shape[1:] != (height, width):  # a model may give a coarser map: compare at input size
        anomaly_map = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in anomaly_map])
    return score, anomaly_map, logits


def _batches(samples: list[Sample], batch_size: int):
    for start in range(0, len(samples), batch_size):
        yield start, samples[start : start + batch_size]


def _worst(labels: np.ndarray, scores: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    """Defects with the lowest scores (misses) and good images with the highest (false alarms)."""
    defects = np.flatnonzero(labels == 1)
    goods = np.flatnonzero(labels == 0)
    return (
        defects[np.argsort(scores[defects], kind="stable")][:count].tolist(),
        goods[np.argsort(-scores[goods], kind="stable")][:count].tolist(),
    )


def evaluate(
    predict: Predict,
    samples: list[Sample],
    class_names: list[str],
    height: int,
    width: int,
    out_dir: str | Path,
    aoi: Path | None = None,
    batch_size: int = 16,
    threshold: float | None = None,
    threshold_source: str | None = None,
    worst: int = 6,
    progress: bool = True,
    extra: dict | None = None,
    groups: dict[str, str] | None = None,
    classes_supervised: bool = True,
) -> dict:
    """Run `predict` over the samples and write report.json, scores.csv, roc.png, score_hist.png, repeatability.png
    (train.repeatability: every image scored again under sensor-like noise) and the overlays of the worst-scored
    images (worst_defects.png, worst_good.png). `threshold` is the image
    threshold on the raw score and `threshold_source` where it came from (edge.bundle.THRESHOLD_SOURCES: the run's
    validation, a calibration, a stated default, the user); without a threshold the best-F1 one on these very images
    is used, reported as "test_best_f1" and `threshold_optimistic` (it has seen the answers).
    `groups` (image path -> group name, e.g. the AOI benchmark's kinds) adds per-group rejection rates.
    `classes_supervised` False (trained without class labels: `--supervision none`, GRD-Net): no class accuracy
    and a good-vs-defect confusion matrix, since its class logits never learnt the class names."""
    if not samples:
        raise EvaluationError("no samples to evaluate (empty split?)")
    if threshold is not None and (threshold_source not in THRESHOLD_SOURCES or threshold_source == OPTIMISTIC):
        raise EvaluationError(
            f"a given threshold needs its source, one of "
            f"{', '.join(s for s in THRESHOLD_SOURCES if s != OPTIMISTIC)}; got {threshold_source!r}"
        )
    if not class_names or class_names[0] != GOOD:
        raise EvaluationError(f"class_names must start with 'good', got {class_names}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_names = list(class_names) + sorted({s.class_name for s in samples} - set(class_names))
    shared_aoi = shared_aoi_at(aoi, height, width)
    n = len(samples)
    scores = np.zeros(n, np.float32)
    noisy_scores = {sigma: np.zeros(n, np.float32) for sigma in repeatability.NOISE_SIGMAS}
    logits_all: list[np.ndarray] = []
    labels = np.array([s.label for s in samples], int)
    truths = np.array([truth_names.index(s.class_name) for s in samples], int)
    pixel_masks, pixel_maps, pixel_valid = [], [], []
    with_mask_defects = 0
    started = time.perf_counter()
    infer_seconds = 0.0
    with ThreadPoolExecutor(max_workers=2) as pool:
        bar = tqdm(total=n, desc="evaluating", unit="img", disable=not progress)
        for start, chunk in _batches(samples, batch_size):
            loaded = list(pool.map(lambda s: load_resized(s, height, width, shared_aoi), chunk))
            batch = np.stack([image for image, _, _ in loaded]).astype(np.uint8, copy=False)
            tick = time.perf_counter()
            score, anomaly_map, logits = _check_outputs(predict(batch), len(chunk), height, width)
            infer_seconds += time.perf_counter() - tick
            scores[start : start + len(chunk)] = score
            for sigma in repeatability.NOISE_SIGMAS:
                noisy = repeatability.add_sensor_noise(batch, sigma, repeatability.noise_rng(sigma, start))
                noisy_scores[sigma][start : start + len(chunk)] = _check_outputs(
                    predict(noisy), len(chunk), height, width
                )[0]
            logits_all.append(logits)
            for (_, mask, region), heat, sample in zip(loaded, anomaly_map, chunk, strict=True):
                if sample.label == 1 and (mask is None or not mask.any()):
                    continue  # a defect without a (non-empty) mask tells nothing about pixels
                if sample.label == 1:
                    with_mask_defects += 1
                pixel_masks.append(mask if mask is not None else np.zeros((height, width), bool))
                pixel_maps.append(heat)
                pixel_valid.append(region)
            bar.update(len(chunk))
        bar.close()
    elapsed = time.perf_counter() - started
    class_logits = np.concatenate(logits_all)

    pixel_auroc = aupro = None
    pixel_curve = None
    if with_mask_defects:
        masks_arr, maps_arr, valid_arr = np.stack(pixel_masks), np.stack(pixel_maps), np.stack(pixel_valid)
        pixel_auroc = metrics.pixel_auroc(masks_arr, maps_arr, valid_arr)
        aupro = metrics.aupro(masks_arr, maps_arr, valid_arr)
        pixel_curve = metrics.pixel_roc(masks_arr, maps_arr, valid_arr)
        del masks_arr, maps_arr, valid_arr

    image_auroc = metrics.image_auroc(labels, scores)
    f1_best, threshold_best = metrics.best_f1(labels, scores)
    if threshold is not None:
        used, source = float(threshold), str(threshold_source)
    elif threshold_best is not None:
        used, source = threshold_best, OPTIMISTIC
    else:
        used, source = Thresholds().image, "default"
        log.warning(
            "no defective image among the %d evaluated: no best-F1 threshold; the stated fallback %s is used "
            "(threshold_source 'default')",
            n,
            used,
        )
    # without class labels the station reports "defect", not a class name (edge: classes_supervised false)
    predicted = metrics.predicted_classes(scores, class_logits if classes_supervised else class_logits[:, :1], used)
    rates = metrics.rates_at(labels, scores, used)
    per_class_recall = {
        name: float((scores[truths == i] >= used).mean())
        for i, name in enumerate(truth_names)
        if i > 0 and (truths == i).any()
    }
    report = {
        "image_auroc": image_auroc,
        "pixel_auroc": pixel_auroc,
        "aupro": aupro,
        "aupro_max_fpr": metrics.PRO_MAX_FPR,
        "f1": metrics.f1_at(labels, scores, used),
        "f1_best": f1_best,
        "threshold": used,
        "threshold_source": source,
        "threshold_optimistic": source == OPTIMISTIC,
        "threshold_best_f1": threshold_best,
        "accuracy": metrics.accuracy_at(labels, scores, used),
        "recall": rates["recall"],
        "false_reject_rate": rates["false_reject_rate"],
        "class_accuracy": metrics.class_accuracy(np.where(truths < len(class_names), truths, -1), class_logits)
        if classes_supervised
        else None,
        "per_class_recall": per_class_recall,
        "confusion_matrix": _confusion(
            truths, truth_names, predicted, class_names, classes_supervised and class_logits.shape[1] >= 2
        ),
        "counts": {
            "images": n,
            "good": int((labels == 0).sum()),
            "defective": int((labels == 1).sum()),
            "defects_with_mask": with_mask_defects,
            "pixel_images": len(pixel_masks) if with_mask_defects else 0,
        },
        "repeatability": {
            "noise": "Gaussian, grey levels of 255, one draw per pixel shared by the channels, seeded",
            "threshold": used,
            **{
                f"sigma_{sigma:g}": repeatability.summarise(scores, noisy, used)
                for sigma, noisy in noisy_scores.items()
            },
        },
        "pixel_region": "aoi" if (shared_aoi is not None or any(s.aoi for s in samples)) else "image",
        "class_names": list(class_names),
        "input": {"height": height, "width": width},
        "timing": {
            "total_s": round(elapsed, 3),
            "images_per_s": round(n / elapsed, 2) if elapsed else None,
            "model_ms_per_image": round(1000 * infer_seconds / n, 3),
        },
        **(extra or {}),
    }
    if groups:
        names = np.array([groups.get(str(s.image), s.class_name) for s in samples])
        report["groups"] = metrics.group_rates(names, labels, scores, used)
    report["plots"] = _write_plots(
        out_dir,
        predict,
        samples,
        labels,
        scores,
        noisy_scores,
        used,
        image_auroc,
        pixel_curve,
        pixel_auroc,
        rates,
        height,
        width,
        shared_aoi,
        worst,
    )
    _write_scores(out_dir / SCORES, samples, scores, predicted, report["confusion_matrix"]["predicted"])
    (out_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _confusion(truths, truth_names, predicted, class_names, has_head: bool) -> dict:
    """Rows: true classes (incl. ones the model does not know); columns: what the station would report."""
    if not has_head:  # no classification head: good vs defect
        names = [GOOD, "defect"]
        return {
            "true": names,
            "predicted": names,
            "matrix": metrics.confusion_matrix((truths > 0).astype(int), predicted, 2, 2),
        }
    return {
        "true": list(truth_names),
        "predicted": list(class_names),
        "matrix": metrics.confusion_matrix(truths, predicted, len(truth_names), len(class_names)),
    }


def _write_plots(
    out_dir,
    predict,
    samples,
    labels,
    scores,
    noisy_scores,
    threshold,
    image_auc,
    pixel_curve,
    pixel_auc,
    rates,
    height,
    width,
    shared_aoi,
    worst,
) -> dict[str, str]:
    written = {}
    image_curve = None
    if image_auc is not None:
        fpr, tpr, _ = metrics.image_roc(labels, scores)
        image_curve = (fpr, tpr)
    point = (
        (rates["false_reject_rate"], rates["recall"])
        if None not in (rates["false_reject_rate"], rates["recall"])
        else None
    )
    written["roc"] = str(plots.roc_plot(out_dir / "roc.png", image_curve, image_auc, pixel_curve, pixel_auc, point))
    written["score_hist"] = str(plots.score_histogram(out_dir / "score_hist.png", scores, labels, threshold))
    written["repeatability"] = str(
        plots.repeatability_plot(out_dir / "repeatability.png", scores, noisy_scores, labels, threshold)
    )
    missed, alarms = _worst(labels, scores, worst)
    for name, chosen, title in (
        ("worst_defects", missed, "Defects with the lowest scores"),
        ("worst_good", alarms, "Good images with the highest scores"),
    ):
        if not chosen:
            continue
        loaded = [load_resized(samples[i], height, width, shared_aoi) for i in chosen]
        _, maps, _ = _check_outputs(predict(np.stack([image for image, _, _ in loaded])), len(chosen), height, width)
        rows = [
            {
                "image": image,
                "map": heat,
                "aoi": region,
                "mask": mask if mask is not None or samples[i].label == 1 else np.zeros(image.shape[:2], bool),
                "caption": f"{samples[i].image.name} [{samples[i].class_name}] score {scores[i]:.3f}",
            }
            for i, (image, mask, region), heat in zip(chosen, loaded, maps, strict=True)
        ]
        written[name] = str(plots.overlay_grid(out_dir / f"{name}.png", rows, title))
    return written


def _write_scores(
    path: Path, samples: list[Sample], scores: np.ndarray, predicted: np.ndarray, predicted_names: list[str]
) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "class", "score", "predicted"])
        for sample, score, guess in zip(samples, scores, predicted, strict=True):
            writer.writerow(
                [str(sample.image), sample.label, sample.class_name, f"{float(score):.6f}", predicted_names[int(guess)]]
            )
