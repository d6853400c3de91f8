"""What Python code in the daemon's process prints, as lines of its log.

A ``print`` would otherwise reach the daemon's stdout or stderr as a raw line among its JSON
ones, where ``jq`` and log shippers stop at it, and a flood of them would fill the journal:

- while the daemon imports the definitions, each line is a ``definitions_printed`` event
  (the first :data:`LINES` of an import; the rest are counted in
  ``definitions_output_dropped``);
- afterwards, a line printed in a run's thread (the ``threads`` executor) is an ``output``
  event of that run, as a worker's is, and any other (a thread the definitions started) a
  ``printed`` event; at the rate a worker's are (``_output.Bucket``), the rest counted in
  ``output_dropped``.

Only what Python code writes to ``sys.stdout`` and ``sys.stderr`` is caught: a C library
writing to the file descriptors is not.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from headwater._loading import load_definitions
from headwater.definitions import Definitions
from headwater.execution.executors._output import DROPPED, LINE_MAX, Bucket, shown

__all__ = ["LINES", "load_logged", "printed_as_log"]

LINES = 200
"""Lines logged per import at most."""

_log = structlog.get_logger("headwater.definitions")
_run_log = structlog.get_logger("headwater.run")


class _Lines(io.TextIOBase):
    """A text stream that logs each complete line it is given. What asks for the stream
    underneath (``fileno()`` for ``faulthandler.enable()``, ``buffer``, ``isatty()``) gets the
    daemon's own: what it writes there is not caught, and the import goes on."""

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


@contextlib.contextmanager
def printed_as_log() -> Iterator[None]:
    """For as long as the block runs: what Python code prints is logged (see the module)."""
    buckets = {"stdout": Bucket(), "stderr": Bucket()}
    lock = threading.Lock()

    def emit(stream: str, line: str) -> None:
        bucket = buckets[stream]
        with lock:
            if not bucket.take():
                return
            dropped, bucket.dropped = bucket.dropped, 0
        if dropped:
            _log.warning("output_dropped", stream=stream, lines=dropped, reason=DROPPED)
        # a run's thread has its asset, partition and run id bound (the log line takes them)
        if "run_id" in structlog.contextvars.get_contextvars():
            _run_log.info("output", stream=stream, line=shown(line))
        else:
            _log.info("printed", stream=stream, line=shown(line))

    out, err = _Lines("stdout", emit, sys.stdout), _Lines("stderr", emit, sys.stderr)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield
        finally:
            out.rest()
            err.rest()


def load_logged(target: str) -> Definitions:
    """:func:`load_definitions`, with what the import prints logged (see the module)."""
    logged = dropped = 0
    count = threading.Lock()

    def emit(stream: str, line: str) -> None:
        nonlocal logged, dropped
        with count:
            if logged >= LINES:
                dropped += 1
                return
            logged += 1
        _log.info("definitions_printed", stream=stream, line=shown(line))

    out, err = _Lines("stdout", emit, sys.stdout), _Lines("stderr", emit, sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return load_definitions(target)
    finally:
        out.rest()
        err.rest()
        if dropped:
            _log.warning("definitions_output_dropped", lines=dropped, logged=LINES)
