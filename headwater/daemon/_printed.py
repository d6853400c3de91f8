"""What the definitions print while the daemon imports them, as lines of its log.

A ``print`` at module level (``print("loading...")``) would otherwise reach the daemon's
stdout as a raw line among its JSON ones, where ``jq`` and log shippers stop at it; and a
file that prints megabytes would flood the journal. Each line becomes one
``definitions_printed`` event (the first :data:`LINES` of an import; the rest are counted in
``definitions_output_dropped``). Only what Python code writes to ``sys.stdout`` and
``sys.stderr`` is caught: a C library writing to the file descriptors is not.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog

from headwater._loading import load_definitions
from headwater._text import printable
from headwater.definitions import Definitions

__all__ = ["LINES", "load_logged"]

LINES = 200
"""Lines logged per import at most."""
LINE_MAX = 2000

_log = structlog.get_logger("headwater.definitions")


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
        self._partial = ""
        self._lock = threading.Lock()  # the file may print from threads of its own

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
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            if len(self._partial) > LINE_MAX:  # a line without end: shown in pieces
                lines.append(self._partial)
                self._partial = ""
        for line in lines:
            self._emit(self._stream, line)
        return len(text)

    def rest(self) -> None:
        """Log a last line that has no end."""
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            self._emit(self._stream, partial)


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
        _log.info("definitions_printed", stream=stream, line=printable(line)[:LINE_MAX])

    out, err = _Lines("stdout", emit, sys.stdout), _Lines("stderr", emit, sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return load_definitions(target)
    finally:
        out.rest()
        err.rest()
        if dropped:
            _log.warning("definitions_output_dropped", lines=dropped, logged=LINES)
