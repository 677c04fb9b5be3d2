"""Evaluation metrics: image and pixel AUROC, AUPRO up to FPR 0.3, F1, accuracy, class accuracy, confusion.

Conventions: a higher score / map value means more anomalous; an image is called defective when its
score >= threshold. AUROC and the ROC curve come from scikit-learn; AUPRO (the per-region overlap of
MVTec AD) is computed here, with thresholds placed at quantiles of the good pixels so the FPR range
that matters (0..0.3) is sampled finely whatever the map's value range.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

PRO_MAX_FPR = 0.3
PRO_STEPS = 600
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]  # numpy < 2 has only trapz
RECALL_POINTS = (0.9, 0.95, 0.99)


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the image-level ROC; None when only one kind (good or defective) is present."""
    labels = np.asarray(labels).astype(int)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def image_roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the image-level ROC."""
    return roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    """AUROC over pixels (optionally only where `valid`, e.g. inside the AOI); None without defect pixels.

    Exact (ties count half), as the Mann-Whitney statistic: for each defect pixel, the share of good
    pixels below it. Sorting once makes it fast on tens of millions of pixels, where sklearn is slow.
    """
    truth, values = _pixels(masks, maps, valid)
    positives, negatives = values[truth], np.sort(values[~truth])
    if positives.size == 0 or negatives.size == 0:
        return None
    below = np.searchsorted(negatives, positives, side="left").astype(np.float64)
    below_or_equal = np.searchsorted(negatives, positives, side="right").astype(np.float64)
    return float(((below + below_or_equal) / 2).sum() / (positives.size * negatives.size))


def pixel_roc(
    masks: np.ndarray, maps: np.ndarray, valid: np.ndarray | None = None, points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the pixel ROC at `points` thresholds spread over the values' quantiles (for plots)."""
    truth, values = _pixels(masks, maps, valid)
    positives, negatives = np.sort(values[truth]), np.sort(values[~truth])
    if positives.size == 0 or negatives.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    grid = np.linspace(0, 1, points)
    thresholds = np.unique(np.concatenate([np.quantile(positives, grid), np.quantile(negatives, grid)]))
    fpr = 1 - np.searchsorted(negatives, thresholds, side="left") / negatives.size
    tpr = 1 - np.searchsorted(positives, thresholds, side="left") / positives.size
    order = np.lexsort((tpr, fpr))
    return np.concatenate([[0.0], fpr[order], [1.0]]), np.concatenate([[0.0], tpr[order], [1.0]])


def _pixels(masks: np.ndarray, maps: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks, bool)
    maps = np.asarray(maps, np.float32)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must have the same shape")
    if valid is None:
        return masks.ravel(), maps.ravel()
    valid = np.broadcast_to(np.asarray(valid, bool), masks.shape)
    return masks[valid], maps[valid]


def aupro(
    masks: np.ndarray,
    maps: np.ndarray,
    valid: np.ndarray | None = None,
    max_fpr: float = PRO_MAX_FPR,
    steps: int = PRO_STEPS,
) -> float | None:
    """Area under the per-region-overlap curve for FPR in [0, max_fpr], divided by max_fpr (1.0 is perfect).

    Regions are the 8-connected components of each ground-truth mask; PRO at a threshold is the mean, over
    all regions, of the fraction of the region's pixels above it; FPR is over all defect-free valid pixels.
    """
    masks = np.asarray(masks, bool)
    maps = np.asarray(maps, np.float32)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    valid = np.ones_like(masks) if valid is None else np.broadcast_to(np.asarray(valid, bool), masks.shape)
    negatives = np.sort(maps[valid & ~masks])
    regions: list[np.ndarray] = []
    for mask, heat, inside in zip(masks, maps, valid, strict=True):
        count, labels = cv2.connectedComponents((mask & inside).astype(np.uint8), connectivity=8)
        regions += [np.sort(heat[labels == label]) for label in range(1, count)]
    if not regions or negatives.size == 0:
        return None
    # Thresholds at the negatives' quantiles, so FPR runs evenly from 0 to just past max_fpr. FPR stays the
    # same for every threshold in (next lower good value, q], while PRO grows as the threshold falls, so each
    # level is taken at both ends: the exact staircase, whatever the maps' value range.
    targets = np.linspace(0.0, min(1.0, max_fpr * 1.02), steps)
    upper = np.unique(np.quantile(negatives, 1.0 - targets, method="higher"))
    first = np.searchsorted(negatives, upper, side="left")
    lower = np.where(first > 0, np.nextafter(negatives[np.maximum(first - 1, 0)].astype(np.float64), np.inf), -np.inf)
    thresholds = np.concatenate([[np.nextafter(np.float64(negatives[-1]), np.inf)], upper, lower])
    fpr = 1.0 - np.searchsorted(negatives, thresholds, side="left") / negatives.size
    pro = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    order = np.lexsort((pro, fpr))
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= max_fpr
    if fpr[keep].size == 0 or fpr[keep][-1] < max_fpr:  # close the curve exactly at max_fpr
        end = np.interp(max_fpr, fpr, pro)
        fpr_k, pro_k = np.append(fpr[keep], max_fpr), np.append(pro[keep], end)
    else:
        fpr_k, pro_k = fpr[keep], pro[keep]
    return float(_trapezoid(pro_k, fpr_k) / max_fpr)


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, float | None]:
    """(best F1 over thresholds, the threshold reaching it); (None, None) without defective images."""
    labels = np.asarray(labels).astype(int)
    if labels.size == 0 or not labels.any():
        return None, None
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float | None:
    """F1 of the defect class when score >= threshold is called defective."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return None
    predicted = np.asarray(scores) >= threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float | None:
    labels = np.asarray(labels).astype(bool)
    if labels.size == 0:
        return None
    return float(((np.asarray(scores) >= threshold) == labels).mean())


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Recall on defects and false-rejection rate on good parts at a threshold."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    recall = float(predicted[labels].mean()) if labels.any() else None
    false_reject = float(predicted[~labels].mean()) if (~labels).any() else None
    return {"recall": recall, "false_reject_rate": false_reject}


def class_accuracy(true_classes: np.ndarray, class_logits: np.ndarray) -> float | None:
    """Share of defective images (true class index >= 1) whose highest defect-class logit is the true class.

    Only the defect classes compete (logits 1..C-1): this measures "which defect", while the image
    score decides "defective or not". None with fewer than two defect classes (C <= 2: the one defect class always
    wins, so 1.0 would say nothing) or without such images.
    """
    true_classes = np.asarray(true_classes).astype(int)
    logits = np.asarray(class_logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 3:
        return None
    known = (true_classes >= 1) & (true_classes < logits.shape[1])
    if not known.any():
        return None
    predicted = 1 + np.argmax(logits[known, 1:], axis=1)
    return float((predicted == true_classes[known]).mean())


def predicted_classes(scores: np.ndarray, class_logits: np.ndarray, threshold: float) -> np.ndarray:
    """What the station reports: 0 (good) below the threshold, else the most likely defect class (1 without a head)."""
    scores = np.asarray(scores)
    logits = np.asarray(class_logits)
    defect = scores >= threshold
    if logits.ndim != 2 or logits.shape[1] < 2:
        return defect.astype(int)
    return np.where(defect, 1 + np.argmax(logits[:, 1:], axis=1), 0)


def confusion_matrix(true_classes: np.ndarray, predicted: np.ndarray, n_true: int, n_predicted: int) -> list[list[int]]:
    """matrix[true][predicted] counts; rows may include classes the model does not know (n_true > n_predicted)."""
    matrix = np.zeros((n_true, n_predicted), dtype=int)
    for t, p in zip(np.asarray(true_classes).astype(int), np.asarray(predicted).astype(int), strict=True):
        if 0 <= t < n_true and 0 <= p < n_predicted:
            matrix[t, p] += 1
    return matrix.tolist()


def threshold_for_recall(labels: np.ndarray, scores: np.ndarray, recall: float) -> float | None:
    """The highest threshold that still calls at least `recall` of the defective images defective."""
    defect_scores = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels).astype(bool)])
    if defect_scores.size == 0:
        return None
    missed = int(np.floor((1.0 - recall) * defect_scores.size + 1e-9))  # how many may fall below
    return float(defect_scores[missed])


def group_rates(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, dict]:
    """Per group of images (e.g. benchmark kinds 'good_outside'): how many, mean score, share called defective
    at `threshold` and at the thresholds that reach fixed recalls on the defects (to compare models fairly)."""
    groups = np.asarray(groups).astype(str)
    scores = np.asarray(scores, dtype=np.float64)
    at_recall = {r: threshold_for_recall(labels, scores, r) for r in RECALL_POINTS}
    result = {}
    for name in sorted(set(groups.tolist())):
        chosen = scores[groups == name]
        result[name] = {
            "images": int(chosen.size),
            "mean_score": float(chosen.mean()),
            "called_defective": float((chosen >= threshold).mean()),
            "called_defective_at_recall": {
                str(r): (float((chosen >= t).mean()) if t is not None else None) for r, t in at_recall.items()
            },
        }
    return result
