"""The engine: state in memory, the event log, planning and execution wired together.

Everything that happens goes to the event log first; the in-memory state takes the records the
log committed, then the engine acts. Work after a change is driven by a *dirty set*: the
partitions whose inputs may have changed. Nothing scans the whole graph except the first
evaluation after opening.
"""

from __future__ import annotations

import heapq
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import structlog

from headwater._clock import Clock
from headwater._errors import PartitionKeyError, SelectionError
from headwater._events import Event, EventKind
from headwater.definitions import AssetDef, Definitions, DynamicPartitions, SourceDef
from headwater.eventlog import EventLog, open_event_log
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution._store import FilesystemStore, IOManager
from headwater.planning import (
    Evaluator,
    NodeKey,
    NodeRecord,
    Plan,
    Request,
    State,
    Status,
    decide_step,
    explain,
    plan,
)
from headwater.policies import Decision
from headwater.versions import data_version as fingerprint

__all__ = ["Engine", "TickResult"]

_log = structlog.get_logger("headwater.engine")


@dataclass(slots=True)
class TickResult:
    """What one evaluation-and-run cycle did."""

    materialized: list[tuple[str, str | None]] = field(default_factory=list)
    """``(asset, partition)`` in completion order."""
    skipped: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """Partitions a policy held back (waiting, manual, ...) with the reason."""
    failed: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """Partitions whose run failed, with the error message."""

    @property
    def assets(self) -> set[str]:
        return {asset for asset, _ in self.materialized}

    def merge(self, other: TickResult) -> None:
        for node in other.materialized:
            self.skipped.pop(node, None)
            self.failed.pop(node, None)
        self.materialized.extend(other.materialized)
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)


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
        self._full_evaluation = True
        self._tick_lock = anyio.Lock()
        self._window_ends: list[tuple[datetime, str]] = []
        now = clock.now()
        for key, asset in defs.assets.items():
            if asset.partitions is not None and (end := asset.partitions.next_window_end(now)):
                self._window_ends.append((end, key))
        heapq.heapify(self._window_ends)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, defs: Definitions, state_dir: Path, clock: Clock, store: IOManager | None = None
    ) -> AsyncIterator[Engine]:
        """Open the event log in ``state_dir``, rebuild the state, mark abandoned runs."""
        value_store = store or FilesystemStore(state_dir / "values")
        if isinstance(value_store, FilesystemStore):
            await anyio.to_thread.run_sync(value_store.remove_temp_files)
        async with open_event_log(state_dir) as log:
            engine = cls(defs, log, await log.load_state(), value_store, clock)
            await engine._abandon_open_runs()
            yield engine

    # -- writing -------------------------------------------------------------------------

    async def append(
        self, events: Sequence[Event], dynamic: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Write events (and the records they lead to) to the log, then take the records."""
        records: dict[NodeKey, NodeRecord] = {}
        for event in events:
            node = (event.asset or "", event.partition)
            record = self.state.reduce(event, records.get(node))
            if record is not None:
                records[node] = record
        await self.log.write(events, records, dynamic)
        for name, key in dynamic:
            self.state.add_dynamic(name, [key])
        for node, record in records.items():
            self.state.put(node, record)

    def _event(self, kind: EventKind, node: NodeKey | None = None, **fields: Any) -> Event:
        asset, partition = node if node is not None else (None, None)
        return Event(
            kind=kind, timestamp=self.clock.now(), asset=asset, partition=partition, **fields
        )

    async def _abandon_open_runs(self) -> None:
        open_runs = [(n, r.running) for n, r in self.state.records.items() if r.running]
        if open_runs:
            await self.append(
                [self._event(EventKind.RUN_ABANDONED, n, run_id=run_id) for n, run_id in open_runs]
            )
            for node, run_id in open_runs:
                _log.warning("run_abandoned", asset=node[0], partition=node[1], run_id=run_id)

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
            [self._event(EventKind.PARTITIONS_ADDED, payload={"name": name, "keys": new})],
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
        if version == self.state.version(node):
            return False
        if value is not None:
            await anyio.to_thread.run_sync(self.store.save, key, partition, value)
        await self.append(
            [self._event(EventKind.OBSERVATION, node, data_version=version, payload=payload or {})]
        )
        self._mark_children(node)
        return True

    def _mark_children(self, node: NodeKey) -> None:
        self.dirty.update(self.evaluator().children(node))

    def _expire_windows(self) -> None:
        """New time windows completed: their newest partitions need a look."""
        now = self.clock.now()
        ev: Evaluator | None = None
        while self._window_ends and self._window_ends[0][0] <= now:
            _, key = heapq.heappop(self._window_ends)
            parts = self.defs.nodes[key].partitions
            assert parts is not None
            ev = ev or self.evaluator()
            self.dirty.update((key, p) for p in parts.newest_keys(ev.pctx) or ())
            if (end := parts.next_window_end(now)) is not None:
                heapq.heappush(self._window_ends, (end, key))

    def next_wakeup(self) -> datetime | None:
        """The next instant at which the clock alone makes something to do."""
        return self._window_ends[0][0] if self._window_ends else None

    # -- requests ------------------------------------------------------------------------

    def resolve(
        self, selection: Iterable[str], partitions: Sequence[str] | None = None
    ) -> list[NodeKey]:
        """The asset partitions a request names; errors name the asset or partition at fault."""
        ev = self.evaluator()
        nodes: list[NodeKey] = []
        for key in selection:
            node = self.defs.nodes.get(key)
            if node is None:
                raise SelectionError(f"unknown asset {key!r}")
            if not isinstance(node, AssetDef):
                raise SelectionError(f"{key!r} is a source: sources are observed, not materialized")
            if node.partitions is None:
                if partitions:
                    raise PartitionKeyError(f"asset {key!r} is not partitioned; drop --partition")
                nodes.append((key, None))
                continue
            if not partitions:
                nodes.extend((key, p) for p in node.partitions.keys(ev.pctx))
                continue
            for p in partitions:
                node.partitions.require_key(p, ev.pctx, asset=key)
                nodes.append((key, p))
        return nodes

    async def materialize(
        self, nodes: Iterable[NodeKey], *, force: bool = False, only_requested: bool = False
    ) -> TickResult:
        """Run the named partitions (if stale, missing or failed, or always with ``force``).

        Eager dependents of what changes run in the same plan. ``only_requested`` leaves
        everything else that is dirty for a later tick (the CLI uses it so that a request does
        not also run unrelated work).
        """
        return await self.tick(
            {n: Request(force=force) for n in nodes}, only_requested=only_requested
        )

    # -- the cycle -----------------------------------------------------------------------

    async def tick(
        self, requests: Mapping[NodeKey, Request] | None = None, *, only_requested: bool = False
    ) -> TickResult:
        """Evaluate what is dirty (and requested), run the plan, repeat until nothing is left."""
        result = TickResult()
        async with self._tick_lock:
            pending = dict(requests or {})
            while True:
                ev = self.evaluator()
                if only_requested:
                    dirty: set[NodeKey] = set()
                else:
                    self._expire_windows()
                    if self._full_evaluation:
                        self._full_evaluation = False
                        for key in self.defs.assets:
                            self.dirty.update((key, p) for p in ev.partitions(key))
                    dirty, self.dirty = self.dirty, set()
                current = plan(ev, dirty, pending)
                for node, decision in current.decisions.items():
                    await self._note_decision(node, decision, result)
                if not current:
                    break
                await self._execute(current, pending, result)
                pending = {}
                if only_requested or not self.dirty:
                    break
        return result

    async def _note_decision(self, node: NodeKey, decision: Decision, result: TickResult) -> None:
        if not decision.notable:
            return
        result.skipped[node] = decision.reason
        record = self.state.record(node)
        if record is None or record.decision != (decision.kind, decision.reason):
            payload = {"decision": decision.kind, "reason": decision.reason}
            await self.append([self._event(EventKind.DECISION, node, payload=payload)])

    async def _execute(
        self, current: Plan, requests: Mapping[NodeKey, Request], result: TickResult
    ) -> None:
        done = {node: anyio.Event() for node in current.steps}

        async def step(node: NodeKey) -> None:
            try:
                for parent in current.parents[node]:
                    await done[parent].wait()
                self.dirty.discard(node)
                status, decision = decide_step(self.evaluator(), node, requests.get(node))
                if decision.kind == "run":
                    await self._run(node, status, decision.reason, result)
                else:
                    await self._note_decision(node, decision, result)
            finally:
                done[node].set()

        async with anyio.create_task_group() as tg:
            for node in current.steps:
                tg.start_soon(step, node)

    async def _run(self, node: NodeKey, status: Status, reason: str, result: TickResult) -> None:
        asset = self.defs.nodes[node[0]]
        assert isinstance(asset, AssetDef)
        ev = self.evaluator()
        code = ev.code_version(asset)
        run_id = uuid.uuid4().hex
        inputs = _inputs_json(status)
        await self.append(
            [
                self._event(
                    EventKind.RUN_STARTED,
                    node,
                    run_id=run_id,
                    payload={"reason": reason, "code_version": code, "inputs": inputs},
                )
            ]
        )
        _log.info("run_started", asset=node[0], partition=node[1], run_id=run_id, reason=reason)
        job = Job(asset, node[1], run_id, ev.now, status.inputs)
        outcome: Outcome = await anyio.to_thread.run_sync(
            self.runner.run, job, limiter=self.limiter
        )
        before = self.state.version(node)
        payload: dict[str, Any] = {
            "code_version": code,
            "inputs": inputs,
            "duration_ms": round(outcome.duration_ms, 3),
        }
        if outcome.ok:
            payload["metadata"] = outcome.metadata
            event = self._event(
                EventKind.MATERIALIZATION,
                node,
                run_id=run_id,
                data_version=outcome.data_version,
                payload=payload,
            )
        else:
            payload.update(error=outcome.error, traceback=outcome.traceback)
            event = self._event(EventKind.RUN_FAILED, node, run_id=run_id, payload=payload)
        await self.append([event])
        fields = {
            "asset": node[0],
            "partition": node[1],
            "run_id": run_id,
            "duration_ms": payload["duration_ms"],
        }
        if outcome.ok:
            result.materialized.append(node)
            result.failed.pop(node, None)
            result.skipped.pop(node, None)
            changed = outcome.data_version != before
            _log.info("materialized", data_version=outcome.data_version, changed=changed, **fields)
            if changed:
                self._mark_children(node)
        else:
            result.failed[node] = outcome.error or "failed"
            _log.warning("run_failed", error=outcome.error, **fields)

    # -- reading -------------------------------------------------------------------------

    def status(self, asset: str, partition: str | None = None) -> Status:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return ev.status(asset, partition)

    def why(self, asset: str, partition: str | None = None) -> list[str]:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return explain(ev, asset, partition)
