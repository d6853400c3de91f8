"""What the engine tells those who watch it: metrics, the live web page, lineage events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from headwater._events import Event

__all__ = ["EngineObserver", "notify_planned", "notify_written"]

_log = structlog.get_logger("headwater.engine")


class EngineObserver(Protocol):
    """Called on the event loop; must return quickly and never block (queue slow work)."""

    def written(self, events: Sequence[Event]) -> None:
        """``events`` were committed to the log (and the state holds what they lead to)."""

    def planned(self, seconds: float) -> None:
        """The planner took ``seconds`` to seed a plan."""


def notify_written(observers: Sequence[EngineObserver], events: Sequence[Event]) -> None:
    for observer in observers:
        try:
            observer.written(events)
        except Exception:  # a watcher's bug must never stop the engine
            _log.exception("observer_failed", observer=type(observer).__name__)


def notify_planned(observers: Sequence[EngineObserver], seconds: float) -> None:
    for observer in observers:
        try:
            observer.planned(seconds)
        except Exception:
            _log.exception("observer_failed", observer=type(observer).__name__)
