"""Only the current attempt of a run may publish its value.

A run that timed out (or was stopped) is superseded: its function may still be running (a
thread cannot be killed; a worker process takes a moment to die), and whatever it stores
afterwards must not replace what the log says is there. The executor sets the attempt's guard
in a context variable; the value store asks it while holding its publishing lock, so that
"superseded" and "renamed into place" can never both happen.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

__all__ = ["PublishGuard", "Superseded", "ThreadGuard", "current_guard", "guarded"]


class Superseded(Exception):
    """This attempt may no longer publish: the run timed out or the daemon stopped it."""

    def __init__(self) -> None:
        super().__init__("superseded: the run timed out or was stopped; its value is discarded")


class PublishGuard(Protocol):
    def publishing(self) -> contextlib.AbstractContextManager[None]:
        """Held around the rename that publishes a value; raises :class:`Superseded`."""
        ...


current_guard: ContextVar[PublishGuard | None] = ContextVar("headwater_guard", default=None)


def guarded() -> contextlib.AbstractContextManager[None]:
    guard = current_guard.get()
    return contextlib.nullcontext() if guard is None else guard.publishing()


class ThreadGuard:
    """For a function running in a thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._superseded = False

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        with self._lock:
            if self._superseded:
                raise Superseded
            yield

    def supersede(self) -> None:
        """From now on nothing this attempt stores is published (waits for a rename under
        way: a moment)."""
        with self._lock:
            self._superseded = True
