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
import sys
import threading
from collections.abc import Iterator

import structlog

from headwater._loading import load_definitions
from headwater.definitions import Definitions
from headwater.execution.executors._output import DROPPED, Bucket, LineStream, shown

__all__ = ["LINES", "load_logged", "printed_as_log"]

LINES = 200
"""Lines logged per import at most."""

_log = structlog.get_logger("headwater.definitions")
_run_log = structlog.get_logger("headwater.run")


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

    out, err = LineStream("stdout", emit, sys.stdout), LineStream("stderr", emit, sys.stderr)
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

    out, err = LineStream("stdout", emit, sys.stdout), LineStream("stderr", emit, sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return load_definitions(target, serving=True)
    finally:
        out.rest()
        err.rest()
        if dropped:
            _log.warning("definitions_output_dropped", lines=dropped, logged=LINES)
