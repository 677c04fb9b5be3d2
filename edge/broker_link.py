"""The state of the station's link to its broker, said out loud.

paho retries a failed connection silently; a wrong port or password would otherwise show only as a
growing spool. Every failure's reason (refused, DNS, TLS, authentication, timeout) is kept here, logged
at once and then with a backoff (after 10 s, 30 s, 1 min, then every 5 min) so an outage of hours does
not flood the journal, and handed to `stats` and the systemd status line.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("onen.edge.mqtt")

REPEAT_AFTER_S = (10.0, 30.0, 60.0, 300.0)  # then every 300 s


def describe_failure(error: BaseException | None) -> str:
    """A person's words for why a connection attempt failed."""
    if error is None:
        return "connection failed (no reason given)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name (DNS: {error.strerror or error})"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({error.verify_message or error})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({getattr(error, 'reason', None) or error})"
    if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED:
        return "connection refused (nothing listens on that port)"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out (no answer from the host)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return f"{type(error).__name__}: {error}"


class BrokerLink:
    """Connected / failing / lost, with the last reason; thread-safe (paho's thread writes, others read)."""

    def __init__(self, address: str, backlog: Callable[[], int], clock: Callable[[], float] = time.monotonic):
        self.address = address
        self._backlog = backlog
        self._clock = clock
        self._lock = threading.Lock()
        self.state = "connecting"
        self.reason: str | None = None
        self.failures = 0  # attempts failed since the last good connection
        self._failing_since: float | None = None
        self._next_log_at = 0.0
        self._repeats = 0

    def connected(self, connection: int) -> None:
        with self._lock:
            after = self.failures
            self.state, self.reason, self.failures, self._failing_since, self._repeats = "connected", None, 0, None, 0
        suffix = f" after {after} failed attempt(s)" if after else ""
        log.info("mqtt: connected to %s (connection %d)%s", self.address, connection, suffix)

    def lost(self, reason: str) -> None:
        with self._lock:
            self.state, self.reason = "lost", reason
            self._failing_since = self._clock()
            self._next_log_at = 0.0
        log.warning(
            "mqtt: lost the broker %s (%s); results wait in the spool (%d)", self.address, reason, self._backlog()
        )

    def failed(self, reason: str) -> None:
        """One connection attempt failed: log now if it is the first or the backoff says so."""
        now = self._clock()
        with self._lock:
            self.state, self.reason = "failing", reason
            self.failures += 1
            if self._failing_since is None:
                self._failing_since = now
            due = now >= self._next_log_at
            if due:
                self._next_log_at = now + REPEAT_AFTER_S[min(self._repeats, len(REPEAT_AFTER_S) - 1)]
                self._repeats += 1
            failures, since = self.failures, now - self._failing_since
        if due:
            log.warning(
                "mqtt: cannot connect to %s: %s; retrying with backoff (%d attempt(s) over %.0f s, %d result(s) in "
                "the spool)",
                self.address,
                reason,
                failures,
                since,
                self._backlog(),
            )

    def describe(self) -> dict[str, Any]:
        with self._lock:
            since = None if self._failing_since is None else round(self._clock() - self._failing_since, 1)
            return {
                "broker": self.address,
                "state": self.state,
                "reason": self.reason,
                "failed_attempts": self.failures,
                "failing_for_s": since,
            }

    def summary(self) -> str:
        """One line for the systemd status and `onen run`."""
        d = self.describe()
        if d["state"] == "connected":
            return f"mqtt connected to {self.address}"
        if d["state"] == "connecting":
            return f"mqtt connecting to {self.address}"
        return (
            f"mqtt {d['state']} ({self.address}: {d['reason']}, {d['failing_for_s']:.0f} s, {self._backlog()} in spool)"
        )
