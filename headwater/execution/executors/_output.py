"""What a worker prints, as lines of the daemon's log that name the run.

A function that prints a million lines must not flood the journal: each of a worker's streams
(stdout, stderr, its structured log) has a token bucket (a burst of :data:`BURST` lines, then
:data:`RATE` a second), so a flood on stdout cannot hide what comes on stderr; what does not
fit is counted and the count logged (``output_dropped``). The last lines of stderr are kept whatever
the rate, for the ``run_failed`` payload: a crash's Python stack (faulthandler) ends up there.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from headwater._text import printable

__all__ = ["BURST", "DROPPED", "RATE", "Bucket", "LineStream", "OutputLines", "shown"]

BURST = 100
RATE = 25.0
LINE_MAX = 2000
DROPPED = f"more than {BURST} lines at once or {RATE:.0f} a second"
"""Why ``output_dropped`` counts lines."""
TAIL_LINES = 30
_LEVELS = ("debug", "info", "warning", "error", "critical")

_log = structlog.get_logger("headwater.run")


class OutputLines:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fields: dict[str, Any] = {}
        self._partial = {"stdout": bytearray(), "stderr": bytearray()}
        self._buckets = {name: Bucket() for name in ("stdout", "stderr", "log")}
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def begin(self, asset: str, partition: str | None, run_id: str) -> None:
        self.fields = {"asset": asset, "partition": partition, "run_id": run_id}
        self.tail.clear()

    def end(self) -> str | None:
        """The run is over: flush a last unterminated line; return the tail of stderr."""
        for stream, partial in self._partial.items():
            if partial:
                self.line(stream, bytes(partial))
                partial.clear()
        self._report_dropped()
        tail = "\n".join(self.tail) if self.tail else None
        self.fields = {}
        return tail

    def feed(self, stream: str, data: bytes) -> None:
        partial = self._partial[stream]
        partial += data
        *lines, rest = bytes(partial).split(b"\n")
        if len(rest) > LINE_MAX * 4:  # a line without end: show it in pieces
            lines.append(rest)
            rest = b""
        partial[:] = rest
        for line in lines:
            self.line(stream, line)

    def event(self, event: dict[str, Any]) -> None:
        """A structlog event the run logged through ``context.log`` (or headwater's own code
        in the worker)."""
        if not self._admit("log"):
            return
        level = str(event.pop("level", "info"))
        name = str(event.pop("event", "log"))
        event.pop("timestamp", None)
        for key in ("asset", "partition", "run_id", "logger"):
            event.pop(key, None)
        log = getattr(_log, level if level in _LEVELS else "info")
        log(name, **{**event, **self.fields, "pid": self.pid})

    def line(self, stream: str, raw: bytes | str) -> None:
        """One line the worker wrote to ``stream`` (``log``: a line its own structlog renderer
        made, a function having configured one)."""
        text = shown(raw)
        if stream == "stderr":
            self.tail.append(text)
        if self._admit(stream):
            _log.info("output", stream=stream, line=text, **self.fields, pid=self.pid)

    def _admit(self, stream: str) -> bool:
        bucket = self._buckets[stream]
        if not bucket.take():
            return False
        if bucket.dropped:
            self._report_dropped()
        return True

    def _report_dropped(self) -> None:
        for stream, bucket in self._buckets.items():
            if bucket.dropped:
                _log.warning(
                    "output_dropped",
                    stream=stream,
                    lines=bucket.dropped,
                    reason=DROPPED,
                    **self.fields,
                    pid=self.pid,
                )
                bucket.dropped = 0


class LineStream(io.TextIOBase):
    """A text stream that hands each complete line it is given to ``emit`` (the daemon logs
    them). What asks for the stream underneath (``fileno()`` for ``faulthandler.enable()``,
    ``buffer``, ``isatty()``) gets the real one: what it writes there is not caught, and the
    code goes on."""

    encoding = "utf-8"  # read by libraries that print (io's None would fail some)

    def __init__(self, stream: str, emit: Callable[[str, str], None], real: Any) -> None:
        super().__init__()
        self._stream = stream
        self._emit = emit
        self._real = real
        self._partials = threading.local()
        """Each thread's line so far: two threads printing at once do not mix their lines."""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._real.fileno())

    def isatty(self) -> bool:
        return bool(self._real.isatty())

    @property
    def buffer(self) -> Any:
        return self._real.buffer

    def reconfigure(self, **_: Any) -> None:
        """Nothing to change: lines are logged as text."""

    def write(self, text: str) -> int:
        *lines, partial = (getattr(self._partials, "text", "") + text).split("\n")
        if len(partial) > LINE_MAX:  # a line without end: shown in pieces
            lines.append(partial)
            partial = ""
        self._partials.text = partial
        for line in lines:
            self._emit(self._stream, line)
        return len(text)

    def rest(self) -> None:
        """Log this thread's last line, which has no end."""
        partial, self._partials.text = getattr(self._partials, "text", ""), ""
        if partial:
            self._emit(self._stream, partial)


def shown(raw: bytes | str) -> str:
    """A printed line as a log line holds it: text, its control characters escaped, at most
    :data:`LINE_MAX` characters."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    text = printable(raw.rstrip("\r"))
    if len(text) > LINE_MAX:
        text = text[:LINE_MAX] + f"… ({len(text) - LINE_MAX} more characters)"
    return text


class Bucket:
    """A token bucket: :data:`BURST` lines at once, then :data:`RATE` a second."""

    def __init__(self) -> None:
        self.tokens = float(BURST)
        self.refilled = time.monotonic()
        self.dropped = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.refilled) * RATE)
        self.refilled = now
        if self.tokens < 1:
            self.dropped += 1
            return False
        self.tokens -= 1
        return True
