"""Partitions per state and late partitions, per asset: what ``/metrics`` and the web page
both show.

Counted off the event loop (in a worker thread, on a copy of the state) and at most once per
change, however many scrapes and browsers ask. After the first count only what may have
changed is counted again: the assets an event was written about and their readers (a status
reads its own records and its inputs' only), and the assets whose partitions the clock or a
dynamic key adds (at most every :data:`MAX_AGE_S`, when nothing was written). A full count
looks at every partition (0.45 s at 100k assets); a scrape after one file landed, at a few.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from headwater._events import Event
from headwater.definitions import (
    Definitions,
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
)
from headwater.planning import Evaluator, failed_blocking

if TYPE_CHECKING:
    from headwater.execution import Engine

__all__ = ["MAX_AGE_S", "StateSummary", "Summary"]

MAX_AGE_S = 60.0
"""A summary serves for this long while nothing is written: what only the clock changes (a
window that closes) shows within a minute."""
_MAX_AGE = timedelta(seconds=MAX_AGE_S)


@dataclass(frozen=True, slots=True)
class Summary:
    states: dict[str, dict[str, int]]
    """asset or source -> state -> partitions in it (states no partition is in are absent).
    An asset counted again gets a new dict; one not counted keeps the same one (what the
    scrape renders again is what changed)."""
    late: dict[str, int]
    """asset or source with a freshness SLA -> partitions late by it"""
    held: dict[str, int]
    """asset with a blocking check -> partitions whose current data a blocking check failed
    (their readers wait)"""


@dataclass(frozen=True, slots=True)
class _Counted:
    engine: weakref.ref[Engine]
    generation: int
    at: datetime
    """The engine's clock when counted (the Harness's virtual one in tests)."""
    summary: Summary


class StateSummary:
    """An engine observer that notes which assets were written about."""

    def __init__(self) -> None:
        self.generation = 0
        self._dirty: set[str] = set()
        self._counted: _Counted | None = None
        self._counting = anyio.Lock()
        self._clocked: tuple[weakref.ref[Definitions], frozenset[str]] | None = None

    def written(self, events: Sequence[Event]) -> None:
        self.generation += 1
        dirty = self._dirty
        for event in events:
            if event.asset is not None:
                dirty.add(event.asset)

    def planned(self, seconds: float) -> None:
        return None

    async def of(self, engine: Engine) -> Summary:
        """The summary of ``engine``'s state now (or of less than :data:`MAX_AGE_S` ago, if
        nothing was written since), one count at a time."""
        async with self._counting:
            now = engine.clock.now()
            last = self._counted
            if last is not None and last.engine() is not engine:
                last = None  # another engine (a reload): counted afresh
            if (
                last is not None
                and last.generation == self.generation
                and timedelta(0) <= now - last.at < _MAX_AGE  # a clock stepped back: again
            ):
                return last.summary
            # Taken with the copy, on the loop: what is written from here on counts next time.
            dirty, self._dirty = self._dirty, set()
            generation = self.generation
            defs = engine.defs
            ev = Evaluator(defs, engine.state.copy(), now)
            if last is not None:
                keys = _readers_too(defs, dirty) | self._clock_counted(defs)
                summary = await anyio.to_thread.run_sync(_recount, ev, last.summary, keys)
            else:
                summary = await anyio.to_thread.run_sync(_count, ev)
            self._counted = _Counted(weakref.ref(engine), generation, now, summary)
            return summary

    def _clock_counted(self, defs: Definitions) -> frozenset[str]:
        """The nodes whose partitions come and go with no event of theirs: time windows
        opening, dynamic keys added (their own, or those of an input they map from)."""
        cached = self._clocked
        if cached is not None and cached[0]() is defs:
            return cached[1]
        moving = {key for key, node in defs.nodes.items() if not _fixed(node.partitions)}
        keys = frozenset(moving | {c for key in moving for c in defs.graph.children[key]})
        self._clocked = (weakref.ref(defs), keys)
        return keys


def _fixed(parts: PartitionsDefinition | None) -> bool:
    if parts is None or isinstance(parts, StaticPartitions):
        return True
    if isinstance(parts, MultiPartitions):
        return all(_fixed(d) for d in parts.dimensions.values())
    return False


def _readers_too(defs: Definitions, dirty: Collection[str]) -> set[str]:
    """``dirty`` (those the definitions still have) and their readers: a partition's status
    reads its inputs' records."""
    nodes, children = defs.nodes, defs.graph.children
    out = {key for key in dirty if key in nodes}
    for key in list(out):
        out.update(children[key])
    return out


def _count(ev: Evaluator) -> Summary:
    return _recount(ev, Summary({}, {}, {}), ev.defs.nodes.keys())


def _recount(ev: Evaluator, before: Summary, keys: Collection[str]) -> Summary:
    """``before`` with the nodes ``keys`` counted again."""
    states, late, held = dict(before.states), dict(before.late), dict(before.held)
    defs = ev.defs
    status = ev.status
    records = ev.state.records
    holders, guarded = defs.sla_holders, defs.guarded
    for key in keys:
        partitions = ev.partitions(key)
        counts: dict[str, int] = {}
        for partition in partitions:
            state = status(key, partition).state
            counts[state] = counts.get(state, 0) + 1
        states[key] = counts
        if key in holders:
            late[key] = sum(
                1 for p in partitions if (r := records.get((key, p))) is not None and r.late
            )
        if key in guarded:
            held[key] = sum(failed_blocking(defs, key, records.get((key, p))) for p in partitions)
    return Summary(states, late, held)
