"""Is this frame really captured? Black frames (no signal, lens cap, decoder hiccup) and frames identical
to the previous one (a stale buffer handed out again after a stall) must never be inspected."""
from __future__ import annotations

import numpy as np


class FrameChecks:
    def __init__(self, reject_black: bool, black_level: int, reject_repeated: bool):
        self.reject_black, self.black_level, self.reject_repeated = reject_black, black_level, reject_repeated
        self._previous: np.ndarray | None = None

    def reason_to_reject(self, image: np.ndarray) -> str | None:
        """None for a good frame, else "black" or "repeated". Call once per frame read, in order."""
        previous, self._previous = self._previous, image
        if self.reject_black and is_black(image, self.black_level):
            return "black"
        if self.reject_repeated and previous is not None and previous.shape == image.shape \
                and np.array_equal(previous, image):
            return "repeated"
        return None


def is_black(image: np.ndarray, level: int) -> bool:
    """Every pixel at or below `level` (checked on a 1-in-4 grid first, which decides almost all frames)."""
    if image[::4, ::4].max() > level:
        return False
    return bool(image.max() <= level)
