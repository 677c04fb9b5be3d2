"""Metrics on hand-made cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from onen.train import metrics


def test_image_auroc_perfect_reversed_tied_and_undefined():
    labels = np.array([0, 0, 0, 1, 1])
    assert metrics.image_auroc(labels, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert metrics.image_auroc(labels, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0
    assert metrics.image_auroc(labels, [0.5] * 5) == 0.5
    assert metrics.image_auroc(np.zeros(4), [0.1, 0.2, 0.3, 0.4]) is None
    # one defect scored between the goods: 5 of 6 pairs ordered right
    assert metrics.image_auroc(labels, [0.1, 0.3, 0.5, 0.2, 0.9]) == pytest.approx(4 / 6)


def test_pixel_auroc_exact_with_ties_and_aoi():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    perfect = masks.astype(np.float32)
    assert metrics.pixel_auroc(masks, perfect) == 1.0
    assert metrics.pixel_auroc(masks, 1 - perfect) == 0.0
    rng = np.random.default_rng(0)
    noisy_masks = rng.random((4, 16, 16)) < 0.1
    values = (rng.random(noisy_masks.shape) + 0.3 * noisy_masks).round(1).astype(np.float32)  # many ties
    assert metrics.pixel_auroc(noisy_masks, values) == pytest.approx(
        roc_auc_score(noisy_masks.ravel(), values.ravel()), abs=1e-12
    )
    # a bright good pixel outside the AOI does not count
    hot_outside = perfect.copy()
    hot_outside[1, 7, 7] = 5.0
    aoi = np.ones((8, 8), bool)
    aoi[7, 7] = False
    assert metrics.pixel_auroc(masks, hot_outside) < 1.0
    assert metrics.pixel_auroc(masks, hot_outside, valid=aoi) == 1.0
    assert metrics.pixel_auroc(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))) is None


def test_aupro_perfect_reversed_random_and_hand_built():
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 10:12, 10:20] = True
    assert metrics.aupro(masks, masks.astype(np.float32)) == 1.0
    assert metrics.aupro(masks, 1 - masks.astype(np.float32)) == 0.0
    rng = np.random.default_rng(0)
    big = np.zeros((60, 48, 48), bool)
    big[:20, 10:30, 10:30] = True
    # a map that knows nothing: PRO == FPR, so the normalised area to 0.3 is 0.15
    assert metrics.aupro(big, rng.random(big.shape).astype(np.float32)) == pytest.approx(0.15, abs=0.01)

    # Two regions of 4 px: A scored 0.9, B scored 0.6; 9 of the 92 good pixels scored 0.7, the rest 0.
    # A alone is found at FPR 0 (PRO 0.5); B needs the threshold under 0.7, at FPR 9/92 (PRO 1 after).
    truth = np.zeros((10, 10), bool)
    truth[0, 0:4] = truth[5, 0:4] = True
    heat = np.zeros((10, 10), np.float32)
    heat[0, 0:4], heat[5, 0:4] = 0.9, 0.6
    good = np.argwhere(~truth)[:9]
    heat[good[:, 0], good[:, 1]] = 0.7
    expected = (0.5 * 9 / 92 + 1.0 * (0.3 - 9 / 92)) / 0.3
    assert metrics.aupro(truth, heat) == pytest.approx(expected, abs=1e-9)
    assert metrics.aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))) is None


def test_f1_accuracy_and_rates():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.5])
    f1, threshold = metrics.best_f1(labels, scores)
    # threshold 0.5: tp 2, fp 1 (0.6) -> 0.8; 0.7: tp 1, fn 1 -> 2/3; 0.6: 0.5
    assert (f1, threshold) == (pytest.approx(0.8), pytest.approx(0.5))
    # at 0.55: tp=1 (0.7), fp=1 (0.6), fn=1 (0.5) -> F1 = 2/(2+1+1) = 0.5; accuracy 4/6
    assert metrics.f1_at(labels, scores, 0.55) == pytest.approx(0.5)
    assert metrics.accuracy_at(labels, scores, 0.55) == pytest.approx(4 / 6)
    assert metrics.rates_at(labels, scores, 0.55) == {"recall": 0.5, "false_reject_rate": 0.25}
    assert metrics.best_f1(np.zeros(3), [0.1, 0.2, 0.3]) == (None, None)


def test_class_accuracy_and_confusion():
    logits = np.array([[5, 0, 1], [0, 3, 1], [0, 1, 3], [9, 2, 1]], float)
    truths = np.array([0, 1, 1, 2])
    # defect images (only logits 1..2 compete): [3,1] -> 1 right; [1,3] -> 2 wrong; [2,1] -> 1 wrong
    assert metrics.class_accuracy(truths, logits) == pytest.approx(1 / 3)
    assert metrics.class_accuracy(truths, logits[:, :1]) is None
    assert metrics.class_accuracy(np.array([0, 1, 1]), logits[:3, :2]) is None  # one defect class: nothing to tell
    predicted = metrics.predicted_classes(np.array([0.1, 0.9, 0.8, 0.2]), logits, threshold=0.5)
    assert predicted.tolist() == [0, 1, 2, 0]
    assert metrics.confusion_matrix(truths, predicted, 3, 3) == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


def test_recall_thresholds_and_group_rates():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.1, 0.85, 0.3])
    assert metrics.threshold_for_recall(labels, scores, 1.0) == 0.2
    assert metrics.threshold_for_recall(labels, scores, 0.75) == 0.7  # one of four may be missed
    groups = np.array(["dent", "dent", "dent", "dent", "good_outside", "good_plain", "good_outside", "good_plain"])
    rates = metrics.group_rates(groups, labels, scores, threshold=0.5)
    assert rates["good_outside"]["called_defective"] == 1.0 and rates["good_plain"]["called_defective"] == 0.0
    assert rates["dent"]["called_defective"] == 0.75 and rates["good_outside"]["images"] == 2
    # at recall 0.9 (of 4 defects none may be missed -> threshold 0.2) the plain goods' 0.3 is rejected too
    assert rates["good_plain"]["called_defective_at_recall"]["0.9"] == 0.5
