"""The exact binomial CDF in log space (no scipy on a station): calibration's bounds and checks, and the fleet
rollout's reject-rate gate, read it. Thousands of images and small rates neither underflow nor lose precision."""

from __future__ import annotations

import math

import numpy as np


def binom_logcdf(k: int, n: int, p: float) -> float:
    """log P(Binomial(n, p) <= k), summing the pmf terms (built by their ratios) in log space."""
    if k < 0:
        return -math.inf
    if k >= n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return -math.inf
    log_ratio = math.log(p) - math.log1p(-p)
    log_pmf = n * math.log1p(-p)  # P(X = 0)
    if k < 64:  # plain Python is faster than numpy's call overhead here
        log_cdf = log_pmf
        for i in range(k):
            log_pmf += math.log((n - i) / (i + 1)) + log_ratio
            log_cdf = log_add_exp(log_cdf, log_pmf)
        return min(log_cdf, 0.0)
    steps = np.arange(k, dtype=np.float64)
    log_pmfs = log_pmf + np.concatenate([[0.0], np.cumsum(np.log((n - steps) / (steps + 1)) + log_ratio)])
    return min(float(np.logaddexp.reduce(log_pmfs)), 0.0)


def binom_cdf(k: int, n: int, p: float) -> float:
    return math.exp(binom_logcdf(k, n, p))


def log_add_exp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))
