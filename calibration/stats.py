"""Exact binomial statistics (no scipy needed on a station): Clopper-Pearson bounds, sample sizes; the CDF is
edge.binomial's (`onen fleet`'s rollout gate reads it too).

All in log space so that thousands of images and small rates neither underflow nor lose precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from onen.edge.binomial import binom_cdf


def _bisect(function: Callable[[float], float], target: float, increasing: bool, iterations: int = 60) -> float:
    """p in [0, 1] with function(p) == target, for a monotone function."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        value = function(middle)
        if (value < target) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def upper_bound(successes: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound: the rate p with P(Bin(n, p) <= successes) = 1 - confidence."""
    if n <= 0:
        return 1.0
    if successes >= n:
        return 1.0
    alpha = 1.0 - confidence
    return _bisect(lambda p: binom_cdf(successes, n, p), alpha, increasing=False)


def clopper_pearson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact interval for a binomial rate (each tail (1 - confidence) / 2)."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2
    low = 0.0 if successes == 0 else _bisect(lambda p: 1.0 - binom_cdf(successes - 1, n, p), tail, increasing=True)
    high = 1.0 if successes >= n else _bisect(lambda p: binom_cdf(successes, n, p), tail, increasing=False)
    return low, high


def min_samples_for_zero_failures(rate: float, confidence: float) -> int:
    """Smallest n with (1 - rate)^n <= 1 - confidence: the fewest good images that can show FRR <= rate.

    With fewer, even a threshold above every good score cannot bound the false-reject rate at `rate`.
    """
    if not 0.0 < rate < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"rate and confidence must be in (0, 1), got {rate}, {confidence}")
    n = max(1, math.ceil(math.log1p(-confidence) / math.log1p(-rate)))
    while n > 1 and (n - 1) * math.log1p(-rate) <= math.log1p(-confidence):
        n -= 1
    while n * math.log1p(-rate) > math.log1p(-confidence):
        n += 1
    return n
