"""The engine: state in memory, the event log, planning and execution wired together.

Everything that happens goes to the event log first; the in-memory state takes the records the
log committed, then the engine acts. Work after a change is driven by a *dirty set*: the
partitions whose inputs may have changed. Work caused by time (new windows, cron ticks, retry
delays, SLA deadlines) is driven by a timer heap. Nothing scans the whole graph except the
first evaluation after opening.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import anyio
import structlog

from headwater._clock import Clock
from headwater._errors import PartitionKeyError, SelectionError
from headwater._events import Event, EventKind, format_timestamp, parse_timestamp
from headwater.definitions import AssetDef, Definitions, DynamicPartitions, SourceDef
from headwater.eventlog import EventLog, open_event_log
from headwater.execution._results import StepCallback, TickResult
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution._store import FilesystemStore, IOManager
from headwater.execution._timers import Timers
from headwater.planning import (
    Evaluator,
    FreshnessStatus,
    NodeKey,
    NodeRecord,
    Plan,
    Request,
    Schedule,
    State,
    Status,
    decide_step,
    explain,
    freshness_status,
    partition_range,
    plan,
    resolve_selection,
)
from headwater.policies import ClockPolicy, Decision
from headwater.versions import data_version as fingerprint

__all__ = ["Engine", "StepCallback", "TickResult"]

_log = structlog.get_logger("headwater.engine")


def _inputs_json(status: Status) -> list[list[str | None]]:
    return [[a, p, v] for a, p, v in status.inputs]


class Engine:
    """Observe sources, request materializations, and tick: plan and run until quiet."""

    def __init__(
        self,
        defs: Definitions,
        log: EventLog,
        state: State,
        store: IOManager,
        clock: Clock,
    ) -> None:
        self.defs = defs
        self.log = log
        self.state = state
        self.store = store
        self.clock = clock
        self.runner = Runner(defs, store)
        self.limiter = anyio.CapacityLimiter(defs.max_concurrency or os.cpu_count() or 1)
        self.dirty: set[NodeKey] = set()
        self.timers = Timers()
        self._full_evaluation = True
        self._inflight: dict[NodeKey, anyio.Event] = {}
        """Partitions being decided or run by some tick, each claimed by exactly one."""
        self._ticks = 0
        self._quiet = anyio.Event()
        self._quiet.set()
        self._observe_lock = anyio.Lock()
        self._cron_pending: set[str] = set()
        self._cron: dict[str, ClockPolicy] = {
            k: a.policy for k, a in defs.assets.items() if isinstance(a.policy, ClockPolicy)
        }
        self._sla_keys = [k for k, n in defs.nodes.items() if n.freshness is not None]
        now = clock.now()
        for key, asset in defs.assets.items():
            if asset.partitions is not None and (end := asset.partitions.next_window_end(now)):
                self.timers.schedule(end, "window", key)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, defs: Definitions, state_dir: Path, clock: Clock, store: IOManager | None = None
    ) -> AsyncIterator[Engine]:
        """Open the event log in ``state_dir``, rebuild the state, mark abandoned runs."""
        value_store = store or FilesystemStore(state_dir / "values")
        if isinstance(value_store, FilesystemStore):
            await anyio.to_thread.run_sync(value_store.remove_temp_files)
        await anyio.to_thread.run_sync(defs.compute_code_versions)
        async with open_event_log(state_dir) as log:
            engine = cls(defs, log, await log.load_state(), value_store, clock)
            await engine._abandon_open_runs()
            await engine._first_seen()
            yield engine

    # -- writing -------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[Event],
        dynamic: Sequence[tuple[str, str]] = (),
        *,
        check_freshness: bool = True,
    ) -> None:
        """Write events (and the records they lead to) to the log, then take the records."""
        records: dict[NodeKey, NodeRecord] = {}
        for event in events:
            node = (event.asset or "", event.partition)
            record = self.state.reduce(event, records.get(node))
            if record is not None:
                records[node] = record
        self._carry_pending_since(events, records)
        await self.log.write(events, records, dynamic)
        for name, key in dynamic:
            self.state.add_dynamic(name, [key])
        for node, record in records.items():
            self.state.put(node, record)
        if check_freshness and self._sla_keys:
            await self._check_freshness([n for n in records if self.defs.nodes[n[0]].freshness])

    async def _put(
        self, records: Mapping[NodeKey, NodeRecord], schedules: Mapping[str, Schedule]
    ) -> None:
        """Bookkeeping that is not an event: clock state and corrections of derived fields."""
        await self.log.write([], records, schedules=schedules)
        for node, record in records.items():
            self.state.put(node, record)
        self.state.schedules.update(schedules)

    def event(self, kind: EventKind, node: NodeKey | None = None, **fields: Any) -> Event:
        """An event stamped with the engine's clock."""
        asset, partition = node if node is not None else (None, None)
        return Event(
            kind=kind, timestamp=self.clock.now(), asset=asset, partition=partition, **fields
        )

    def _carry_pending_since(
        self, events: Sequence[Event], records: dict[NodeKey, NodeRecord]
    ) -> None:
        """A new version makes children with a ``max_lag`` behind since the original change."""
        ev: Evaluator | None = None
        for event in events:
            if (
                event.kind not in (EventKind.OBSERVATION, EventKind.MATERIALIZATION)
                or not event.asset
            ):
                continue
            node = (event.asset, event.partition)
            if records[node].version == self.state.version(node):
                continue
            since = event.payload.get("reflects_since")
            origin = parse_timestamp(since) if isinstance(since, str) else event.timestamp
            ev = ev or self.evaluator()
            for child in ev.children(node):
                asset = self.defs.nodes[child[0]]
                assert isinstance(asset, AssetDef)
                if asset.freshness is None or asset.freshness.max_lag is None:
                    continue
                record = records.get(child) or self.state.record(child) or NodeRecord()
                if record.pending_since is None or origin < record.pending_since:
                    records[child] = replace(record, pending_since=origin)

    async def _abandon_open_runs(self) -> None:
        open_runs = [(n, r.running) for n, r in self.state.records.items() if r.running]
        if open_runs:
            await self.append(
                [self.event(EventKind.RUN_ABANDONED, n, run_id=run_id) for n, run_id in open_runs]
            )
            for node, run_id in open_runs:
                _log.warning("run_abandoned", asset=node[0], partition=node[1], run_id=run_id)

    async def _first_seen(self) -> None:
        """Cron ticks and SLA windows count from an asset's first evaluation: remember it."""
        now = self.clock.now()
        keys = {*self._cron, *self._sla_keys}
        new = {k: Schedule(now, now) for k in sorted(keys) if k not in self.state.schedules}
        if new:
            await self._put({}, new)
        self._cron_pending.update(self._cron)
        for key, policy in self._cron.items():
            handled = self.state.schedules[key].handled_through
            self.timers.schedule(policy.next_tick(max(now, handled)), "cron", key)

    # -- inputs from outside -------------------------------------------------------------

    def evaluator(self) -> Evaluator:
        return Evaluator(self.defs, self.state, self.clock.now())

    def _source(self, key: str) -> SourceDef:
        node = self.defs.nodes.get(key)
        if not isinstance(node, SourceDef):
            what = "an asset (assets are materialized, not observed)" if node else "not defined"
            raise SelectionError(f"cannot observe {key!r}: it is {what}")
        return node

    async def add_partitions(self, name: str, keys: Iterable[str]) -> list[str]:
        """Add keys to the dynamic partitions ``name``; return the new ones."""
        known = set(self.state.dynamic_keys(name))
        new = [k for k in dict.fromkeys(keys) if k not in known]
        if not new:
            return []
        for k in new:
            DynamicPartitions(name).check_key(k)
        await self.append(
            [self.event(EventKind.PARTITIONS_ADDED, payload={"name": name, "keys": new})],
            dynamic=[(name, k) for k in new],
        )
        for key, node in self.defs.nodes.items():
            if node.partitions == DynamicPartitions(name) and isinstance(node, AssetDef):
                self.dirty.update((key, k) for k in new)
        return new

    async def observe(
        self,
        key: str,
        data_version: str | None = None,
        *,
        partition: str | None = None,
        value: Any = None,
        payload: Mapping[str, Any] | None = None,
        deleted: bool = False,
    ) -> bool:
        """Record what a source holds now; return whether its version changed.

        An observation that does not change the version writes nothing.
        """
        source = self._source(key)
        if source.partitions is None:
            if partition is not None:
                raise PartitionKeyError(
                    f"source {key!r} is not partitioned; got partition {partition!r}"
                )
        else:
            if partition is None:
                raise PartitionKeyError(f"source {key!r} is partitioned; name a partition")
            source.partitions.check_key(partition)
            if isinstance(source.partitions, DynamicPartitions):
                await self.add_partitions(source.partitions.name, [partition])
        if deleted:
            version = None
        elif data_version is None:
            if value is None:
                raise ValueError(f"observe({key!r}): give data_version, value, or deleted=True")
            version = fingerprint(value)
        else:
            version = data_version
        node = (key, partition)
        async with self._observe_lock:  # two sensors seeing one change record it once
            if version == self.state.version(node):
                return False
            if value is not None:
                await anyio.to_thread.run_sync(self.store.save, key, partition, value)
            event = self.event(
                EventKind.OBSERVATION, node, data_version=version, payload=payload or {}
            )
            await self.append([event])
        self._mark_children(node)
        return True

    async def reconcile(self, key: str, found: Mapping[str | None, str]) -> int:
        """Observe a *complete* listing of a source (``{partition: version}``): every version in
        it, and a deletion for each partition the log has that the listing lacks. Return how
        many versions changed. Only a complete listing may do this, or deletions are false."""
        changed = 0
        for partition, version in found.items():
            changed += await self.observe(key, version, partition=partition)
        source = self._source(key)
        known = [None] if source.partitions is None else self.state.present_partitions(key)
        for partition in known:
            if partition not in found and self.state.version((key, partition)) is not None:
                changed += await self.observe(key, partition=partition, deleted=True)
        return changed

    def _mark_children(self, node: NodeKey) -> None:
        self.dirty.update(self.evaluator().children(node))

    # -- the clock -----------------------------------------------------------------------

    def next_wakeup(self) -> datetime | None:
        """The next instant at which the clock alone makes something to do."""
        return self.timers.next()

    async def _expire_timers(self) -> None:
        now = self.clock.now()
        freshness: list[NodeKey] = []
        ev = self.evaluator()
        for kind, subject in self.timers.due(now):
            if kind == "window":
                key = str(subject)
                parts = self.defs.nodes[key].partitions
                assert parts is not None
                self.dirty.update((key, p) for p in parts.newest_keys(ev.pctx) or ())
                if (end := parts.next_window_end(now)) is not None:
                    self.timers.schedule(end, "window", key)
            elif kind == "cron":
                self._cron_pending.add(str(subject))
            elif kind == "retry":
                self.dirty.add(cast(NodeKey, subject))
            else:
                freshness.append(cast(NodeKey, subject))
        if freshness:
            await self._check_freshness(freshness)

    def _due_cron(self, ev: Evaluator) -> dict[str, datetime]:
        """Cron assets whose tick has come: their partitions are looked at in this tick."""
        due: dict[str, datetime] = {}
        for key in sorted(self._cron_pending):
            asset = self.defs.assets[key]
            tick = ev.due_tick(asset)
            if tick is not None:
                due[key] = tick
                self.dirty.update((key, p) for p in ev.partitions(key))
            else:
                self.timers.schedule(self._cron[key].next_tick(ev.now), "cron", key)
        self._cron_pending.clear()
        return due

    async def _handled_cron(self, due: Mapping[str, datetime]) -> None:
        if not due:
            return
        schedules = {}
        for key, tick in due.items():
            schedules[key] = replace(self.state.schedules[key], handled_through=tick)
            self.timers.schedule(self._cron[key].next_tick(tick), "cron", key)
        await self._put({}, schedules)

    # -- freshness -----------------------------------------------------------------------

    def freshness(self, asset: str, partition: str | None = None) -> FreshnessStatus | None:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return freshness_status(ev, asset, partition)

    def _sla_nodes(self, ev: Evaluator) -> list[NodeKey]:
        return [(key, p) for key in self._sla_keys for p in ev.partitions(key)]

    async def _check_freshness(self, nodes: Iterable[NodeKey]) -> None:
        """Record lateness changes once each, and schedule the next deadline."""
        ev = self.evaluator()
        events: list[Event] = []
        corrections: dict[NodeKey, NodeRecord] = {}
        for node in nodes:
            fs = freshness_status(ev, *node)
            if fs is None:
                continue
            record = self.state.record(node) or NodeRecord()
            payload: dict[str, Any] = {"reason": "; ".join(fs.reasons)}
            if fs.lag is not None:
                payload["lag_s"] = fs.lag.total_seconds()
            if fs.late and not record.late:
                events.append(self.event(EventKind.FRESHNESS_VIOLATED, node, payload=payload))
            elif not fs.late and record.late:
                events.append(self.event(EventKind.FRESHNESS_RECOVERED, node, payload=payload))
            if fs.deadline is not None:
                self.timers.schedule(fs.deadline, "freshness", node)
            if record.pending_since is not None and ev.status(*node).state == "fresh":
                corrections[node] = replace(record, pending_since=None)  # up to date again
        if corrections:
            await self._put(corrections, {})
        if events:
            await self.append(events, check_freshness=False)
            for e in events:
                _log.warning(
                    str(e.kind), asset=e.asset, partition=e.partition, reason=e.payload["reason"]
                )

    # -- requests ------------------------------------------------------------------------

    def resolve(
        self, selection: Iterable[str], partitions: Sequence[str] | None = None
    ) -> list[NodeKey]:
        """The asset partitions a request names; errors name the asset or partition at fault."""
        return resolve_selection(self.evaluator(), selection, partitions)

    def partition_range(self, asset: str, first: str, last: str) -> list[str]:
        """The existing partitions of ``asset`` from ``first`` to ``last``, both included."""
        return partition_range(self.evaluator(), asset, first, last)

    async def materialize(
        self,
        nodes: Iterable[NodeKey],
        *,
        force: bool = False,
        only_requested: bool = False,
        on_step: StepCallback | None = None,
    ) -> TickResult:
        """Run the named partitions (if stale, missing or failed, or always with ``force``).

        Eager dependents of what changes run in the same plan. ``only_requested`` leaves
        everything else that is dirty for a later tick (the CLI uses it so that a request does
        not also run unrelated work).
        """
        requests = {n: Request(force=force) for n in nodes}
        return await self.tick(requests, only_requested=only_requested, on_step=on_step)

    # -- the cycle -----------------------------------------------------------------------

    async def idle(self) -> None:
        """Return once no tick is running."""
        while self._ticks:
            await self._quiet.wait()

    async def tick(
        self,
        requests: Mapping[NodeKey, Request] | None = None,
        *,
        only_requested: bool = False,
        on_step: StepCallback | None = None,
    ) -> TickResult:
        """Evaluate what is dirty (and requested), run the plan, repeat until nothing is left.

        Ticks may overlap (the daemon starts one per burst of changes, so a long run does not
        hold back unrelated work): each takes the dirty set as it finds it, and partitions are
        claimed one tick at a time.
        """
        result = TickResult()
        self._ticks += 1
        self._quiet = anyio.Event()
        try:
            await self._cycle(dict(requests or {}), only_requested, result, on_step)
        finally:
            self._ticks -= 1
            if not self._ticks:
                self._quiet.set()
        return result

    async def _cycle(
        self,
        pending: dict[NodeKey, Request],
        only_requested: bool,
        result: TickResult,
        on_step: StepCallback | None,
    ) -> None:
        due_cron: dict[str, datetime] = {}
        if not only_requested:
            await self._expire_timers()
            ev = self.evaluator()
            if self._full_evaluation:
                self._full_evaluation = False
                for key in self.defs.assets:
                    self.dirty.update((key, p) for p in ev.partitions(key))
                await self._check_freshness(self._sla_nodes(ev))
            due_cron = self._due_cron(ev)
        while True:
            ev = self.evaluator()
            dirty: set[NodeKey] = set()
            if not only_requested:
                dirty, self.dirty = self.dirty, set()
            current = plan(ev, dirty, pending)
            for node, decision in current.decisions.items():
                await self._note_decision(node, decision, result)
            if not current:
                break
            await self._execute(current, pending, result, on_step)
            pending = {}
            if only_requested or not self.dirty:
                break
        await self._handled_cron(due_cron)

    async def _note_decision(self, node: NodeKey, decision: Decision, result: TickResult) -> None:
        if decision.wake_at is not None:
            self.timers.schedule(decision.wake_at, "retry", node)
        if not decision.notable:
            return
        if not (decision.kind == "idle" and node in result.failed):
            result.skipped[node] = decision.reason
        record = self.state.record(node)
        if record is None or record.decision != (decision.kind, decision.reason):
            payload = {"decision": decision.kind, "reason": decision.reason}
            await self.append([self.event(EventKind.DECISION, node, payload=payload)])

    async def _execute(
        self,
        current: Plan,
        requests: Mapping[NodeKey, Request],
        result: TickResult,
        on_step: StepCallback | None,
    ) -> None:
        done = {node: anyio.Event() for node in current.steps}

        def report(node: NodeKey, outcome: str) -> None:
            if on_step is not None:
                on_step(node, outcome)

        async def step(node: NodeKey) -> None:
            try:
                for parent in current.parents[node]:
                    await done[parent].wait()
                claim = await self._claim(node)
                try:
                    self.dirty.discard(node)
                    request = requests.get(node)
                    status, decision = decide_step(self.evaluator(), node, request)
                    if decision.kind == "run":
                        retrying = request is None and status.state == "failed"
                        outcome = await self._run(
                            node, status, decision.reason, result, retrying=retrying
                        )
                        report(node, outcome)
                    else:
                        await self._note_decision(node, decision, result)
                        report(node, "skipped")
                finally:
                    del self._inflight[node]
                    claim.set()
            finally:
                done[node].set()

        async with anyio.create_task_group() as tg:
            for node in current.steps:
                tg.start_soon(step, node)

    async def _claim(self, node: NodeKey) -> anyio.Event:
        """Wait until no other tick holds this partition or one of its inputs, then hold it.

        An input another tick is re-materializing is "about to change": deciding before it
        has would run this partition on data that is already outdated.
        """
        while True:
            busy = self._inflight.get(node)
            if busy is None:
                for _, inputs in self.evaluator().input_nodes(*node):
                    busy = next((self._inflight[n] for n in inputs if n in self._inflight), None)
                    if busy is not None:
                        break
            if busy is None:
                claim = self._inflight[node] = anyio.Event()  # no await since the check
                return claim
            await busy.wait()

    async def _run(
        self, node: NodeKey, status: Status, reason: str, result: TickResult, *, retrying: bool
    ) -> str:
        """Materialize one partition; return "materialized" or "failed"."""
        asset = self.defs.nodes[node[0]]
        assert isinstance(asset, AssetDef)
        ev = self.evaluator()
        code = ev.code_version(asset)
        run_id = uuid.uuid4().hex
        record = self.state.record(node) or NodeRecord()
        attempt = record.failure.attempts + 1 if retrying and record.failure else 1
        common: dict[str, Any] = {
            "code_version": code,
            "inputs": _inputs_json(status),
            "attempt": attempt,
        }
        if record.pending_since is not None:
            common["reflects_since"] = format_timestamp(record.pending_since)
        started = {**common, "reason": reason}
        await self.append([self.event(EventKind.RUN_STARTED, node, run_id=run_id, payload=started)])
        _log.info("run_started", asset=node[0], partition=node[1], run_id=run_id, reason=reason)
        job = Job(asset, node[1], run_id, ev.now, status.inputs)
        # abandon_on_cancel: past the stop grace period the daemon leaves a still-running
        # function behind; its run stays open in the log and is re-planned on the next start.
        outcome: Outcome = await anyio.to_thread.run_sync(
            self.runner.run, job, limiter=self.limiter, abandon_on_cancel=True
        )
        before = self.state.version(node)
        payload = {**common, "duration_ms": round(outcome.duration_ms, 3)}
        if outcome.ok:
            events = [
                self.event(
                    EventKind.MATERIALIZATION,
                    node,
                    run_id=run_id,
                    data_version=outcome.data_version,
                    payload={**payload, "metadata": outcome.metadata},
                )
            ]
            events += [
                self.event(
                    EventKind.CHECK, node, run_id=run_id, data_version=outcome.data_version,
                    payload={"check": c.name, "passed": c.passed, "blocking": c.blocking,
                             "metadata": c.metadata, "error": c.error},
                )
                for c in outcome.checks
            ]  # fmt: skip
        else:
            payload.update(error=outcome.error, traceback=outcome.traceback)
            events = [self.event(EventKind.RUN_FAILED, node, run_id=run_id, payload=payload)]
        await self.append(events)
        fields = {"asset": node[0], "partition": node[1], "run_id": run_id,
                  "duration_ms": payload["duration_ms"]}  # fmt: skip
        if outcome.ok:
            result.materialized.append(node)
            result.failed.pop(node, None)
            result.skipped.pop(node, None)
            changed = outcome.data_version != before
            _log.info("materialized", data_version=outcome.data_version, changed=changed, **fields)
            for c in outcome.checks:
                if not c.passed:
                    _log.warning(
                        "check_failed", check=c.name, blocking=c.blocking, error=c.error, **fields
                    )
            if changed:
                self._mark_children(node)
            return "materialized"
        result.failed[node] = outcome.error or "failed"
        _log.warning("run_failed", error=outcome.error, attempt=attempt, **fields)
        self.dirty.add(node)  # looked at again: a retry may be due later
        return "failed"

    # -- reading -------------------------------------------------------------------------

    def status(self, asset: str, partition: str | None = None) -> Status:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return ev.status(asset, partition)

    def why(self, asset: str, partition: str | None = None) -> list[str]:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return explain(ev, asset, partition)
