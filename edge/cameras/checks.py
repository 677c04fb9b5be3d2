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
        if self.reject_repeated and previous is not None and is_repeat(previous, image):
            return "repeated"
        return None


def is_repeat(previous: np.ndarray, image: np.ndarray) -> bool:
    """Bit-identical frames. Live sensors always differ by noise, so every 16th row almost always decides
    at once; only a candidate repeat pays for the full comparison."""
    if previous.shape != image.shape or not np.array_equal(previous[::16], image[::16]):
        return False
    return bool(np.array_equal(previous, image))


def is_black(image: np.ndarray, level: int) -> bool:
    """Every pixel at or below `level` (every 8th row first: contiguous memory, and it decides almost every frame)."""
    if image[::8].max() > level:
        return False
    return bool(image.max() <= level)
