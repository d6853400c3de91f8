"""sd_notify: tell systemd (or a test) how the service is doing, over an AF_UNIX datagram socket.

No libsystemd: the protocol is one datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET``, a path
or an ``@abstract`` name. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

_log = structlog.get_logger("headwater.daemon")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop: a reader that stops reading fills the datagram queue
            # (net.unix.max_dgram_qlen, 10 by default) and a blocking sendto would then hang.
            self._socket.setblocking(False)
        self._failing = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2_000_000 if watched else None
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""

    def send(self, **fields: str) -> None:
        if self._socket is None:
            return
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError as exc:  # reader gone or queue full: never fatal, never blocking
            if not self._failing:
                _log.warning("sd_notify_failed", error=str(exc), dropped=message.decode())
            self._failing = True
        else:
            self._failing = False

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        self.send(
            RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        )

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="stopping")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for more time to start (or stop) than its timeout allows."""
        self.send(EXTEND_TIMEOUT_USEC=str(int(seconds * 1_000_000)))

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
