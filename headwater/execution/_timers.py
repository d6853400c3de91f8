"""The clock's agenda: the instants at which time alone makes work (a min-heap, lazily pruned)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Literal

__all__ = ["TimerKind", "Timers"]

TimerKind = Literal["window", "cron", "wake", "freshness", "behind"]


class Timers:
    """``(when, kind, subject)`` entries; one pending instant per (kind, subject)."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, TimerKind, Hashable]] = []
        self._pending: dict[tuple[TimerKind, Hashable], datetime] = {}
        self._seq = itertools.count()
        self.on_earlier: Callable[[], None] | None = None
        """Called when a timer is set before every other one (the clock sensor sleeps until
        the earliest: a deadline set during a long tick must wake it, not the next look)."""

    def schedule(self, when: datetime, kind: TimerKind, subject: Hashable) -> None:
        """Set the (kind, subject) timer to ``when``; an earlier pending instant wins."""
        key = (kind, subject)
        current = self._pending.get(key)
        if current is not None and current <= when:
            return
        earliest = self.next() if self.on_earlier is not None else None
        self._pending[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), kind, subject))
        if self.on_earlier is not None and (earliest is None or when < earliest):
            self.on_earlier()

    def due(self, now: datetime) -> list[tuple[TimerKind, Hashable, datetime]]:
        """Remove and return every timer at or before ``now``, with the instant it was set to
        (long before ``now`` after a suspend or a step of the clock)."""
        out: list[tuple[TimerKind, Hashable, datetime]] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, kind, subject = heapq.heappop(self._heap)
            if self._pending.get((kind, subject)) == when:
                del self._pending[(kind, subject)]
                out.append((kind, subject, when))
        return out

    def next(self) -> datetime | None:
        while (
            self._heap
            and self._pending.get((self._heap[0][2], self._heap[0][3])) != self._heap[0][0]
        ):
            heapq.heappop(self._heap)  # superseded by an earlier instant for the same timer
        return self._heap[0][0] if self._heap else None
