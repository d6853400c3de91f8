"""The engine's duties to the clock: new time windows, cron ticks, retry delays, SLA deadlines.

Each is a timer in one heap; the daemon sleeps until the earliest. Cron bookkeeping (first
evaluation, last tick handled) lives in the ``schedules`` table, not in events, so that quiet
ticks do not grow the log. Lateness changes are events, recorded once each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog

from headwater._events import Event, EventKind
from headwater.definitions import (
    AssetDef,
    DynamicPartitions,
    MultiPartitions,
    PartitionsDefinition,
    keys_holding,
)
from headwater.execution._timers import Timers
from headwater.planning import (
    Evaluator,
    NodeKey,
    NodeRecord,
    Schedule,
    behind_until,
    freshness_status,
    lag_since,
    stuck_below,
)
from headwater.policies import ClockPolicy

if TYPE_CHECKING:
    from headwater.execution._engine import Engine

__all__ = ["Clockwork"]

_TICK = timedelta(microseconds=1)
_NOT_TICKING = datetime(9999, 1, 1, tzinfo=UTC)
"""What a schedule row says it handled through while its asset has no cron policy."""
_log = structlog.get_logger("headwater.engine")


class Clockwork:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        defs = engine.defs
        self.timers = Timers()
        self.cron: dict[str, ClockPolicy] = {
            k: cast(ClockPolicy, defs.assets[k].policy) for k in sorted(defs.clock_driven)
        }
        self.sla_keys = [k for k, n in defs.nodes.items() if n.freshness is not None]
        self._sla_by_dynamic: dict[str, list[str]] = {}
        """Per dynamic set, the SLA holders partitioned by it (a dimension of theirs, too),
        but for those with a time dimension: the windows that closed before a key was added
        are history, and the window timer sets the deadlines of the others as they close
        (checked at the addition, a year of hourly windows cost a tenth of a second a key)."""
        now = engine.clock.now()
        for key in self.sla_keys:
            parts = defs.nodes[key].partitions
            if parts is None or parts.next_window_end(now) is not None:
                continue
            for name in _dynamic_sets(parts):
                self._sla_by_dynamic.setdefault(name, []).append(key)
        self._cron_pending: set[str] = set()
        for key, node in defs.nodes.items():  # sources too: a window's max_age starts there
            if (isinstance(node, AssetDef) or node.freshness is not None) and (
                node.partitions is not None and (end := node.partitions.next_window_end(now))
            ):
                self.timers.schedule(end, "window", key)

    def next_wakeup(self) -> datetime | None:
        """The next instant at which the clock alone makes something to do."""
        return self.timers.next()

    async def first_seen(self) -> None:
        """Cron ticks and SLA windows count from an asset's first evaluation: remember it."""
        engine = self.engine
        now = engine.clock.now()
        keys = {*self.cron, *self.sla_keys}
        schedules = engine.state.schedules
        new = {k: Schedule(now, now) for k in sorted(keys) if k not in schedules}
        # An asset that does not tick now has handled every tick: switched back to cron
        # later, its ticks count from then (the clock "wrong" about them, see
        # Evaluator.handled_through), not from a tick that passed while it had no cron.
        new.update(
            (k, replace(s, handled_through=_NOT_TICKING))
            for k, s in schedules.items()
            if k not in self.cron and s.handled_through != _NOT_TICKING
        )
        if new:
            await engine.put(new)
        self._cron_pending.update(self.cron)
        ev = engine.evaluator()
        for key, policy in self.cron.items():
            self.timers.schedule(ev.next_cron_tick(key, policy), "cron", key)

    async def expire(self) -> None:
        """Turn the timers that are due into dirty partitions, pending cron ticks and checks."""
        engine = self.engine
        now = engine.clock.now()
        freshness: list[NodeKey] = []
        ev = engine.evaluator()
        schedules = engine.state.schedules
        wrong = {  # ticks "handled" in a future the clock was wrong about: count from now
            key: replace(schedules[key], handled_through=now)
            for key in self.cron
            if key in schedules and ev.handled_through(key) != schedules[key].handled_through
        }
        if wrong:
            await engine.put(wrong)
            ev = engine.evaluator()
            for key in wrong:  # its next tick comes long before the timer set for it
                self.timers.schedule(ev.next_cron_tick(key, self.cron[key]), "cron", key)
        for kind, subject, when in self.timers.due(now):
            if kind == "window":
                key = str(subject)
                parts = engine.defs.nodes[key].partitions
                assert parts is not None
                newest = [(key, p) for p in parts.newest_keys(ev.pctx) or ()]
                if isinstance(engine.defs.nodes[key], AssetDef):
                    engine.dirty.update(newest)  # the newest window fills itself, no other
                if engine.defs.nodes[key].freshness is not None:
                    # its max_age deadline starts with the window: with each window that
                    # ended since the timer's instant, the newest among them (more than one
                    # after a suspend or a clock stepped forward)
                    freshness.extend(_ended_since(key, parts, when, ev))
                if (end := parts.next_window_end(now)) is not None:
                    self.timers.schedule(end, "window", key)
            elif kind == "cron":
                self._cron_pending.add(str(subject))
            elif kind == "wake":
                engine.dirty.add(cast(NodeKey, subject))
            elif kind == "behind":
                freshness += await self._stuck(cast(NodeKey, subject))
            else:
                freshness.append(cast(NodeKey, subject))
        if freshness:
            await self.check_freshness(freshness)

    def behind(self, node: NodeKey, since: datetime) -> None:
        """``node`` is behind a change since ``since``: if it is still behind when an asset
        below it may be late through it, those assets are behind too (see :meth:`_stuck`)."""
        lag = self.engine.defs.lag_below(node[0])
        if lag is not None:
            self.timers.schedule(since + lag, "behind", node)

    def resume_behind(self) -> None:
        """At start: the partitions that were behind when the last owner stopped (the stuck
        ones: those below that remember their change are up to date themselves)."""
        engine = self.engine
        ev = engine.evaluator()
        tracked = engine.defs.lag_tracked
        for node in engine.state.records:
            if node[0] in tracked and (due := behind_until(ev, node)) is not None:
                self.timers.schedule(due, "behind", node)

    async def _stuck(self, node: NodeKey) -> list[NodeKey]:
        """The ``behind`` timer of ``node``: still behind, it is stuck (failing, retrying,
        manual, waiting for a cron tick), and the assets below that read it are behind since
        the same change, though none of their inputs has a new version: remembered on each
        (the CLI reads it too), and the readers with a ``max_lag`` returned to be checked."""
        engine = self.engine
        ev = engine.evaluator()
        if (due := behind_until(ev, node)) is None:
            return []
        if due > ev.now:  # it got a later change since: its timer comes later
            self.timers.schedule(due, "behind", node)
            return []
        since = engine.state.records[node].pending_since
        assert since is not None
        updates, holders = stuck_below(ev, node, since)
        if updates:
            seen = {n: engine.state.record(n) for n in updates}
            await engine.put({}, pending_since=updates, decided_on=seen)
        return holders

    def due_cron(self, ev: Evaluator) -> dict[str, datetime]:
        """Cron assets whose tick has come: their partitions are looked at in this tick."""
        due: dict[str, datetime] = {}
        for key in sorted(self._cron_pending):
            asset = self.engine.defs.assets[key]
            tick = ev.due_tick(asset)
            if tick is not None:
                due[key] = tick
                self.engine.dirty.update((key, p) for p in ev.partitions(key))
            else:
                self.timers.schedule(ev.next_cron_tick(key, self.cron[key]), "cron", key)
        self._cron_pending.clear()
        return due

    async def handled_cron(self, due: Mapping[str, datetime]) -> None:
        if not due:
            return
        schedules = {}
        for key, tick in due.items():
            schedules[key] = replace(self.engine.state.schedules[key], handled_through=tick)
            self.timers.schedule(self.cron[key].next_tick(tick), "cron", key)
        await self.engine.put(schedules)

    def made_by_keys(self, dynamic: Sequence[tuple[str, str, datetime]]) -> list[NodeKey]:
        """The partitions with an SLA that new dynamic keys made: their ``max_age`` counts
        from the key's addition, and nothing else would set its deadline (no record of
        theirs changed, no window ended)."""
        if not dynamic or not self._sla_by_dynamic:
            return []
        nodes = self.engine.defs.nodes
        ctx = self.engine.evaluator().pctx
        return [
            (key, p)
            for name, added, _ in dynamic
            for key in self._sla_by_dynamic.get(name, ())
            for p in keys_holding(nodes[key].partitions, name, added, ctx)
        ]

    def sla_nodes(self, ev: Evaluator) -> list[NodeKey]:
        return [(key, p) for key in self.sla_keys for p in ev.partitions(key)]

    async def close_dropped_violations(self, sla_nodes: Iterable[NodeKey]) -> None:
        """Close the violations no SLA of the definitions covers any more (the SLA removed,
        its asset or partition gone): nothing would ever recover them, and retention keeps
        open violations for ever."""
        engine = self.engine
        covered = set(sla_nodes)
        why = {"reason": "no freshness SLA of the definitions covers it any more"}
        seen = {n: r for n, r in engine.state.records.items() if r.late and n not in covered}
        events = [engine.event(EventKind.FRESHNESS_RECOVERED, n, payload=why) for n in seen]
        if events:  # it rests on the violation being open, nothing else (no SLA covers it)
            written = await engine.append(
                events, check_freshness=False, decided_on=seen, basis=_late
            )
            _log_sla(written)

    async def check_freshness(self, nodes: Iterable[NodeKey]) -> None:
        """Record lateness changes once each, and schedule the next deadline."""
        todo = list(dict.fromkeys(nodes))  # one partition due twice (a window and a deadline)
        while todo:
            todo = await self._check_freshness(todo)

    async def _check_freshness(self, nodes: list[NodeKey]) -> list[NodeKey]:
        """One round of :meth:`check_freshness`; returns the partitions to decide again: a
        write of theirs landed first (a run's, committing in the writer's thread), so what
        was decided on the record before it is dropped, not applied to the new one."""
        engine = self.engine
        ev = engine.evaluator()
        if engine.writing:
            # Decided on what the writes under way lead to: a partition's lateness depends on
            # its inputs' records too (a run of one, committing, makes it stale again).
            ups = [u for n in nodes if ev.exists(*n) for _, us in ev.input_nodes(*n) for u in us]
            await engine.settled([*nodes, *ups])
        events: list[Event] = []
        corrections: dict[NodeKey, datetime | None] = {}
        seen: dict[NodeKey, NodeRecord | None] = {}
        for node in nodes:
            fs = freshness_status(ev, *node)
            if fs is None:
                continue
            seen[node] = engine.state.record(node)
            record = seen[node] or NodeRecord()
            payload: dict[str, Any] = {"reason": "; ".join(fs.reasons)}
            if fs.lag is not None:
                payload["lag_s"] = fs.lag.total_seconds()
            if fs.late and not record.late:
                events.append(engine.event(EventKind.FRESHNESS_VIOLATED, node, payload=payload))
            elif not fs.late and record.late:
                events.append(engine.event(EventKind.FRESHNESS_RECOVERED, node, payload=payload))
            if fs.deadline is not None:
                self.timers.schedule(fs.deadline, "freshness", node)
            if (
                record.pending_since is not None
                and ev.status(*node).state == "fresh"
                and lag_since(ev, *node, "fresh") is None
            ):
                corrections[node] = None  # up to date again, and nothing above is stuck
        again: list[NodeKey] = []
        if corrections:
            corrected = await engine.put({}, pending_since=corrections, decided_on=seen)
            seen.update(corrected)
            again += [n for n in corrections if n not in corrected]
        if events:
            written = await engine.append(events, check_freshness=False, decided_on=seen)
            _log_sla(written)
            kept = {id(e) for e in written}
            again += [(str(e.asset), e.partition) for e in events if id(e) not in kept]
        return list(dict.fromkeys(again))


def _dynamic_sets(parts: PartitionsDefinition | None) -> list[str]:
    if isinstance(parts, DynamicPartitions):
        return [parts.name]
    if isinstance(parts, MultiPartitions):
        return [d.name for d in parts.dimensions.values() if isinstance(d, DynamicPartitions)]
    return []


def _log_sla(written: Iterable[Event]) -> None:
    """A warning per violation opened or closed, as the README promises for both."""
    for e in written:
        _log.warning(str(e.kind), asset=e.asset, partition=e.partition, reason=e.payload["reason"])


def _late(record: NodeRecord | None) -> bool:
    return record is not None and record.late


def _ended_since(
    key: str, parts: PartitionsDefinition, when: datetime, ev: Evaluator
) -> list[NodeKey]:
    """The partitions whose window ended in ``[when, now]``: more than the newest after a
    suspend or a forward step of the clock (the timer fires late)."""
    return [(key, p) for p in parts.ended_between(when, ev.now + _TICK, ev.pctx) or ()]
