"""Exponential reconnect delays with jitter, so a lost camera is retried quickly at first and a dead one
does not hammer the network (and several stations do not reconnect in lockstep)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, initial_s: float, max_s: float, factor: float = 2.0, jitter: float = 0.2, rng: random.Random | None = None
    ):
        self.initial_s, self.max_s, self.factor, self.jitter = initial_s, max(max_s, initial_s), factor, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt: initial * factor**n capped at max, times 1 +- jitter."""
        base = min(self.max_s, self.initial_s * self.factor**self.attempt)
        self.attempt += 1
        return min(self.max_s, base * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Called once a real frame arrived: the connection is good again."""
        self.attempt = 0
