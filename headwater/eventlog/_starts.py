"""Starts of runs, written ahead of the log.

A run's ``run_started`` is on disk before its function starts: a function that kills the
daemon (threads) must find its run open at the next start (the crash-loop guard), and a run
that kill -9 cut off is marked abandoned (SPEC §5). A transaction of its own cost a run ~80 µs
at 5k assets (a sixth of a trivial run); a line written here costs one ``pwrite`` over blocks the
file already has (~1 µs), and like a commit with ``synchronous=NORMAL`` it survives the death
of the process, not a power loss. The start enters the log in its run's last transaction, or
alone once the run has gone on for a while (the engine decides when).

The file is a ring of generations: lines are ``[generation, *event row]``, written from offset 0
on. When no start waits for its commit any more, the next generation begins, again at offset 0,
and the first byte is spoiled so that a file left now reads as empty. A reader takes the lines
of the first line's generation, in a row, and stops at the first other one (a line the current
generation did not reach, or the torn end of a longer one). Under runs that never all end at
once, the waiting starts are rewritten as a new generation once the ring passes ``RING_BYTES``.
The owner reads the file when it opens the state directory, commits every start the log does
not hold (the usual abandoning of runs that never ended follows) and empties it; its own
generations come after every one the file held.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import orjson

from headwater._errors import StateDirError
from headwater._events import Event
from headwater._storage import StorageFailure, storage_failure
from headwater.eventlog._rows import MalformedRow, event_from_row, event_row

__all__ = ["JOURNAL_NAME", "StartJournal"]

JOURNAL_NAME = "starts.journal"
RING_BYTES = 1 << 20
"""Past this, the waiting starts begin a new generation at offset 0."""
READ_BYTES = 64 * RING_BYTES


class StartJournal:
    """The owner's journal of run starts not yet committed (one writer: the event loop)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_NAME
        self._fd: int | None = None
        self._generation = 0
        self._offset = 0
        self._waiting: dict[str, bytes] = {}
        """Run id -> its line's row, for a rewrite as a new generation."""

    def read(self) -> list[Event]:
        """The starts a previous owner left waiting (a torn line ends them: a power loss may
        leave one). This owner's generations follow every one the file holds. The ring never
        grows far past ``RING_BYTES``: what lies beyond ``READ_BYTES`` is no journal's."""
        fd = self._open()
        data = os.pread(fd, min(os.fstat(fd).st_size, READ_BYTES), 0)
        found: list[Event] = []
        first: int | None = None
        newest = -1
        in_first = True
        for line in data.split(b"\n"):
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                in_first = False
                continue
            if not (isinstance(parsed, list) and len(parsed) == 8 and type(parsed[0]) is int):
                in_first = False
                continue
            newest = max(newest, parsed[0])
            first = parsed[0] if first is None else first
            in_first = in_first and parsed[0] == first
            if not in_first:
                continue
            try:
                event = event_from_row((None, *parsed[1:]))
            except MalformedRow:
                in_first = False
                continue
            if event.kind == "run_started" and event.run_id and event.asset:
                found.append(event)
        self._generation = newest + 1
        self._offset = 0
        return found

    def forget(self) -> None:
        """Empty the file: what a previous owner left is in the log now."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._open(), 0)
            self._offset = 0

    def write(self, start: Event) -> None:
        """Add ``start``; raise :class:`StorageFailure` if the disk refuses it (the run must
        not start then: nothing would say it did)."""
        assert start.run_id is not None
        row = orjson.dumps(list(event_row(start)))
        if self._offset > RING_BYTES and self._waiting:
            self._next_generation()
            self._put(b"".join(self._line(r) for r in self._waiting.values()))
        self._put(self._line(row))
        self._waiting[start.run_id] = row

    def settle(self, run_ids: Iterable[str]) -> None:
        """The log holds these starts now. Once none waits, the next generation begins."""
        for run_id in run_ids:
            self._waiting.pop(run_id, None)
        if not self._waiting and self._offset:
            self._next_generation()
            # A first line that cannot parse: the file reads as empty. Should that fail,
            # what it holds is in the log, and the next owner skips it.
            with contextlib.suppress(OSError):
                os.pwrite(self._open(), b"#", 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _line(self, row: bytes) -> bytes:
        return b"[%d," % self._generation + row[1:] + b"\n"

    def _next_generation(self) -> None:
        self._generation += 1
        self._offset = 0

    def _put(self, data: bytes) -> None:
        try:
            written = os.pwrite(self._open(), data, self._offset)
            if written != len(data):  # the disk filled up mid-line: the next write goes here
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise storage_failure(exc, self.path) or StorageFailure(self.path, str(exc)) from exc
        self._offset += written

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if failure := storage_failure(exc, self.path):
                raise failure from exc
            raise _not_a_journal(self.path) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO (opened without blocking)
            os.close(fd)
            raise _not_a_journal(self.path)
        self._fd = fd
        return fd


def _not_a_journal(path: Path) -> StateDirError:
    return StateDirError(
        f"{path} is not a regular file: the daemon keeps the starts of runs there. "
        f"Remove it (rm -r {path})"
    )
