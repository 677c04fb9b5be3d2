"""The image threshold: a false-reject rate on good parts that holds with a stated confidence.

Method (distribution-free order statistic): with n good scores sorted from the top, put the threshold at
the k-th largest, t = s_(k). A part is rejected when its score > t. For any continuous score
distribution the true false-reject rate at t is Beta(k, n - k + 1) distributed, so

    P(FRR(t) > target) = P(Binomial(n, target) <= k - 1).

We take the largest k with that probability <= 1 - confidence (the lowest threshold that still keeps the
promise). This is the Clopper-Pearson one-sided bound read backwards; ties in the scores only make it
more conservative. k >= 1 needs n >= ln(1 - confidence) / ln(1 - target) good images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from onen.calibration.stats import clopper_pearson, min_samples_for_zero_failures, upper_bound
from onen.edge.binomial import log_add_exp
from onen.edge.errors import DataError


class TooFewGoodImages(DataError):
    """The target false-reject rate cannot be shown with this few good images."""

    def __init__(self, have: int, need: int, target: float, confidence: float, source: str = ""):
        self.have, self.need = have, need
        super().__init__(
            f"{source + ': ' if source else ''}{have} good image(s) cannot show a false-reject rate <= {target:g} at "
            f"{confidence:.0%} confidence: "
            f"that needs at least {need} good images (n >= ln(1-{confidence:g})/ln(1-{target:g})); "
            f"add {need - have} more, or relax --target-frr / --confidence"
        )


@dataclass
class FrrThreshold:
    threshold: float  # raw score; reject when score > threshold
    n_good: int
    rank: int  # k: the threshold is the k-th largest good score
    target_frr: float
    confidence: float
    frr_upper_bound: float  # P(true FRR > this) <= 1 - confidence (<= target_frr)
    frr_expected: float  # mean of the true FRR's distribution, k / (n + 1)
    rejects_in_sample: int  # good calibration images above the threshold
    min_good_images: int  # fewest good images this target/confidence needs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def needed_good_images(target_frr: float, confidence: float) -> int:
    """Check the target and return the fewest good images that can show it (see TooFewGoodImages)."""
    if not 0.0 < target_frr < 1.0:
        raise DataError(f"--target-frr must be in (0, 1), got {target_frr}")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"--confidence must be in (0, 1), got {confidence}")
    return min_samples_for_zero_failures(target_frr, confidence)


def _check_scores(scores: npt.ArrayLike, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise DataError(f"{name} scores contain NaN or infinite values; the model output is broken")
    return scores


def frr_threshold(good_scores: npt.ArrayLike, target_frr: float = 0.005, confidence: float = 0.95) -> FrrThreshold:
    """Lowest threshold whose false-reject rate is <= target_frr with the given confidence."""
    need = needed_good_images(target_frr, confidence)
    scores = _check_scores(good_scores, "good")
    n = scores.size
    if n < need:
        raise TooFewGoodImages(n, need, target_frr, confidence)
    rank = _largest_rank(n, target_frr, math.log1p(-confidence))
    descending = np.sort(scores)[::-1]
    threshold = float(descending[rank - 1])
    return FrrThreshold(
        threshold=threshold,
        n_good=n,
        rank=rank,
        target_frr=target_frr,
        confidence=confidence,
        frr_upper_bound=upper_bound(rank - 1, n, confidence),
        frr_expected=rank / (n + 1),
        rejects_in_sample=int(np.sum(scores > threshold)),
        min_good_images=need,
    )


def _largest_rank(n: int, target: float, log_alpha: float) -> int:
    """Largest k with log P(Bin(n, target) <= k - 1) <= log_alpha (cumulated once, not per k)."""
    log_ratio = math.log(target) - math.log1p(-target)
    log_pmf = n * math.log1p(-target)
    log_cdf = log_pmf  # P(X <= 0): k = 1 is valid (checked by the caller)
    rank = 1
    while rank < n:
        log_pmf += math.log((n - rank + 1) / rank) + log_ratio  # P(X = rank)
        log_cdf = log_add_exp(log_cdf, log_pmf)
        if log_cdf > log_alpha:
            break
        rank += 1
    return rank


@dataclass
class RateEstimate:
    """An observed rate with its exact two-sided confidence interval."""

    count: int
    n: int
    rate: float
    low: float
    high: float
    confidence: float

    @classmethod
    def of(cls, count: int, n: int, confidence: float) -> RateEstimate:
        low, high = clopper_pearson(count, n, confidence)
        return cls(int(count), int(n), count / n if n else float("nan"), low, high, confidence)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OperatingPoint:
    """What a threshold does on the calibration images (reject when score > threshold)."""

    threshold: float
    false_reject: RateEstimate
    escape: RateEstimate | None
    f1: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "false_reject": self.false_reject.to_dict(),
            "escape": self.escape.to_dict() if self.escape else None,
            "f1": self.f1,
        }


def operating_point(
    threshold: float, good_scores: npt.ArrayLike, defect_scores: npt.ArrayLike | None, confidence: float
) -> OperatingPoint:
    good = _check_scores(good_scores, "good")
    defect = _check_scores(defect_scores, "defective") if defect_scores is not None else np.empty(0)
    false_rejects = int(np.sum(good > threshold))
    escape = f1 = None
    if defect.size:
        escapes = int(np.sum(defect <= threshold))
        escape = RateEstimate.of(escapes, defect.size, confidence)
        caught = defect.size - escapes
        f1 = 2 * caught / (2 * caught + false_rejects + escapes)
    return OperatingPoint(float(threshold), RateEstimate.of(false_rejects, good.size, confidence), escape, f1)


def f1_optimal_threshold(good_scores: npt.ArrayLike, defect_scores: npt.ArrayLike) -> float:
    """The threshold with the best F1 (defect = positive) on these images; highest one on ties."""
    good = _check_scores(good_scores, "good")
    defect = _check_scores(defect_scores, "defective")
    if not defect.size:
        raise DataError("the F1-optimal threshold needs defective images (--defect)")
    candidates = np.unique(np.concatenate([good, defect, [min(good.min(), defect.min()) - 1e-6]]))
    good_sorted, defect_sorted = np.sort(good), np.sort(defect)
    false_rejects = good.size - np.searchsorted(good_sorted, candidates, side="right")
    caught = defect.size - np.searchsorted(defect_sorted, candidates, side="right")
    escapes = defect.size - caught
    f1 = 2 * caught / np.maximum(2 * caught + false_rejects + escapes, 1)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(candidates[best])
