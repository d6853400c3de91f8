"""Partitions per state and late partitions, per asset: what ``/metrics`` and the web page
both show. Computed from the serving engine at most once per change (and every minute, for
windows the clock opens), however many scrapes and browsers ask, and off the event loop: it
looks at every partition (0.45 s at 100k assets), which on the loop held back every file
landing meanwhile."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from headwater._events import Event
from headwater.planning import Evaluator, failed_blocking

if TYPE_CHECKING:
    from headwater.execution import Engine

__all__ = ["MAX_AGE_S", "StateSummary", "Summary"]

MAX_AGE_S = 60.0
"""A summary serves for this long while nothing is written: what only the clock changes (a
window that closes) shows within a minute; a graph of many partitions is not recounted on the
event loop every few seconds for nothing."""


@dataclass(frozen=True, slots=True)
class Summary:
    states: dict[str, dict[str, int]]
    """asset or source -> state -> partitions in it (states no partition is in are absent)"""
    late: dict[str, int]
    """asset or source with a freshness SLA -> partitions late by it"""
    held: dict[str, int]
    """asset with a blocking check -> partitions whose current data a blocking check failed
    (their readers wait)"""


class StateSummary:
    """An engine observer that only notes that something was written."""

    def __init__(self) -> None:
        self.generation = 0
        self._cached: tuple[float, tuple[int, int], Summary] | None = None
        self._counting = anyio.Lock()

    def written(self, events: Sequence[Event]) -> None:
        self.generation += 1

    def planned(self, seconds: float) -> None:
        return None

    async def of(self, engine: Engine) -> Summary:
        """The summary of ``engine``'s state now (or of less than :data:`MAX_AGE_S` ago, if
        nothing was written since): counted in a worker thread, on a copy of the state taken
        on the loop (records are shared, not copied), one count at a time."""
        async with self._counting:
            now = time.monotonic()
            seen = (id(engine), self.generation)
            cached = self._cached
            if cached is not None and cached[1] == seen and now - cached[0] < MAX_AGE_S:
                return cached[2]
            ev = Evaluator(engine.defs, engine.state.copy(), engine.clock.now())
            summary = await anyio.to_thread.run_sync(_summarize, ev)
            self._cached = (now, seen, summary)
            return summary


def _summarize(ev: Evaluator) -> Summary:
    status = ev.status
    defs = ev.defs
    records = ev.state.records
    late_by: dict[str, int] = {}
    for (key, _), record in records.items():
        if record.late:
            late_by[key] = late_by.get(key, 0) + 1
    states: dict[str, dict[str, int]] = {}
    late: dict[str, int] = {}
    for key, node in defs.nodes.items():
        counts: dict[str, int] = {}
        for partition in ev.partitions(key):
            state = status(key, partition).state
            counts[state] = counts.get(state, 0) + 1
        states[key] = counts
        if node.freshness is not None:
            late[key] = late_by.get(key, 0)
    held = {
        key: sum(failed_blocking(defs, key, records.get((key, p))) for p in ev.partitions(key))
        for key in defs.guarded
    }
    return Summary(states, late, held)
