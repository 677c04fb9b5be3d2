"""The published score: raw scores mapped piecewise linearly to 0..1 with the decision threshold at 0.5.

raw_low is the lowest good score seen (a typical good part publishes ~0), raw_high the highest defect
score seen (a clear defect publishes ~1); without defective images the upper part mirrors the lower
one around the threshold. Operators then read one scale on every camera whatever the model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from onen.edge.bundle import ScoreNormalisation
from onen.edge.calibration_view import check_normalisation

_EPS = 1e-6


def fit_normalisation(
    threshold: float, good_scores: npt.ArrayLike, defect_scores: npt.ArrayLike | None = None
) -> ScoreNormalisation:
    good = np.asarray(good_scores, np.float64)
    defect = np.asarray(defect_scores if defect_scores is not None else [], np.float64)
    low = min(float(good.min()), threshold - _EPS) if good.size else threshold - 0.5
    if low >= threshold:
        low = threshold - _EPS
    mirrored = threshold + (threshold - low)
    above = defect[defect > threshold]
    high = float(above.max()) if above.size else mirrored
    high = max(high, threshold + _EPS)
    return check_normalisation(
        ScoreNormalisation(raw_threshold=float(threshold), raw_low=float(low), raw_high=float(high)),
        "fitted normalisation",
    )
