"""What a worker prints, as lines of the daemon's log that name the run.

A function that prints a million lines must not flood the journal: each of a worker's streams
(stdout, stderr, its structured log) has a token bucket (a burst of :data:`BURST` lines, then
:data:`RATE` a second), so a flood on stdout cannot hide what comes on stderr; what does not
fit is counted and the count logged (``output_dropped``). The last lines of stderr are kept whatever
the rate, for the ``run_failed`` payload: a crash's Python stack (faulthandler) ends up there.

A Dask worker has no pipe per run: several runs share its process, in threads. There
:func:`captured` catches what one run's thread writes (:class:`Printed`, bounded) and the
daemon logs it, once the run has ended, as the same lines.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import structlog

from headwater._text import printable
from headwater.execution._runner import Outcome

__all__ = [
    "BURST", "DROPPED", "PER_RUN", "RATE", "TAIL_LINES", "Bucket", "LineStream", "OutputLines",
    "Printed", "captured", "shown", "with_stderr",
]  # fmt: skip

BURST = 100
RATE = 25.0
LINE_MAX = 2000
DROPPED = f"more than {BURST} lines at once or {RATE:.0f} a second"
"""Why ``output_dropped`` counts lines."""
PER_RUN = f"more than {BURST} lines in one run (sent back with its outcome)"
"""Why ``output_dropped`` counts lines of a run on a worker that sends them back at its end."""
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
            _output(stream, text, {**self.fields, "pid": self.pid})

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
                _dropped(stream, bucket.dropped, DROPPED, {**self.fields, "pid": self.pid})
                bucket.dropped = 0


def _output(stream: str, text: str, fields: dict[str, Any]) -> None:
    _log.info("output", stream=stream, line=text, **fields)


def _dropped(stream: str, lines: int, reason: str, fields: dict[str, Any]) -> None:
    _log.warning("output_dropped", stream=stream, lines=lines, reason=reason, **fields)


def with_stderr(outcome: Outcome, tail: str | None) -> Outcome:
    """A failed run's outcome carries the last lines its worker wrote to stderr (for the
    ``run_failed`` payload and ``why``); a successful one needs none."""
    return replace(outcome, stderr=tail) if tail and not outcome.ok else outcome


class Printed:
    """What one run wrote to ``sys.stdout`` and ``sys.stderr`` on a worker that sends it back
    with the outcome rather than as it comes (a Dask worker): the first :data:`BURST` lines of
    each stream, how many more there were, and the last :data:`TAIL_LINES` of stderr whatever
    the count. Bounded (each line at most :data:`LINE_MAX` characters): a flood costs its
    worker's memory and the answer nothing more than a few lines do."""

    __slots__ = ("dropped", "kept", "lines", "tail")

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        """(stream, line) in the order written."""
        self.kept = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def add(self, stream: str, raw: str) -> None:
        if stream == "stderr":
            self.tail.append(shown(raw))
        if self.kept[stream] < BURST:
            self.kept[stream] += 1
            self.lines.append((stream, shown(raw)))
        else:  # counted only: a million lines cost a counter, not a million strings
            self.dropped[stream] += 1

    def log(self, fields: dict[str, Any]) -> str | None:
        """On the daemon: log the lines as a streaming worker's are (``output``, then the
        ``output_dropped`` counts), with ``fields`` (the run's, and the worker's); return the
        tail of stderr."""
        for stream, text in self.lines:
            _output(stream, text, fields)
        for stream, lines in self.dropped.items():
            if lines:
                _dropped(stream, lines, PER_RUN, fields)
        return "\n".join(self.tail) if self.tail else None


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


class _Routed(LineStream):
    """``sys.stdout`` (``sys.stderr``) of a process that runs several runs at once in threads
    of its own (a Dask worker): what a thread inside :func:`captured` writes goes to its run's
    :class:`Printed`, whatever any other thread writes (the worker's own, one a function
    started) to the stream it replaced. A redirect (``contextlib.redirect_stdout``) would
    swap the process's one stream: two runs at once would get each other's lines, and the
    worker's own output would land in a run."""

    def __init__(self, stream: str, real: Any) -> None:
        super().__init__(stream, _to_run, real)
        self.encoding = getattr(real, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if getattr(_capturing, "printed", None) is None:
            return int(self._real.write(text))
        return super().write(text)

    def flush(self) -> None:
        if getattr(_capturing, "printed", None) is None:
            self._real.flush()


_capturing = threading.local()
"""``printed``: the :class:`Printed` of the run the thread is running, if any."""
_installing = threading.Lock()


def _to_run(stream: str, line: str) -> None:
    printed: Printed | None = getattr(_capturing, "printed", None)
    if printed is not None:  # None: the line's end came after its run (never in practice)
        printed.add(stream, line)


def _routed(name: str) -> _Routed:
    """The process's routing ``sys.<name>``, installed the first time (and again should
    something have replaced it since, wrapping what is there now)."""
    with _installing:  # two runs starting at once install one, not one around the other
        current = getattr(sys, name)
        if not isinstance(current, _Routed):
            current = _Routed(name, current)
            setattr(sys, name, current)
        return current


@contextlib.contextmanager
def captured() -> Iterator[Printed]:
    """What this thread writes to ``sys.stdout`` and ``sys.stderr`` within the block. Only
    this thread: what threads it starts write goes to the process's streams."""
    out, err = _routed("stdout"), _routed("stderr")
    printed = _capturing.printed = Printed()
    try:
        yield printed
    finally:
        out.rest()  # a last line without its end
        err.rest()
        _capturing.printed = None


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
