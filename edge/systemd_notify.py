"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET (no libsystemd needed).

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog_for_us = usec is not None and usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s: float | None = (
            int(usec) / 1e6 / 2 if usec is not None and watchdog_for_us else None
        )  # ping at half the timeout

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        """Send e.g. "READY=1" or "WATCHDOG=1"; False when not under systemd or the socket is gone."""
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(state.encode())
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")
