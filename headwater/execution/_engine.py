"""The engine: state in memory, the event log, planning and execution wired together.

Everything that happens goes to the event log first; the in-memory state takes the records the
log committed, then the engine acts. Work after a change is driven by a *dirty set*: the
partitions whose inputs may have changed (:mod:`._cycle` plans and runs it). Work caused by
time is driven by a timer heap (:mod:`._clockwork`). Nothing scans the whole graph except the
first evaluation after opening.

Only the owner of the state directory opens an engine (see :mod:`headwater._statedir`): opening
marks runs that never ended as abandoned and removes temp files a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog

from headwater._clock import Clock
from headwater._durations import format_duration
from headwater._errors import PartitionKeyError, SelectionError
from headwater._events import Event, EventKind, format_timestamp, parse_timestamp
from headwater._storage import StorageFailure, free_bytes
from headwater._usercode import in_a_worker
from headwater.definitions import Definitions, DynamicPartitions, SourceDef, dynamic_keys_in
from headwater.eventlog import EventLog, EventLogReader, Pruned, SmallValue, open_event_log
from headwater.eventlog._starts import StartJournal
from headwater.execution._backup import remove_snapshots, take_snapshot
from headwater.execution._clockwork import Clockwork
from headwater.execution._cycle import RELOADING, STOPPING, InFlight, RunCycle
from headwater.execution._decided import Basis, held_value
from headwater.execution._object_store import ObjectStore
from headwater.execution._observers import EngineObserver, notify_written
from headwater.execution._results import Observed, StepCallback, TickResult
from headwater.execution._runner import Runner
from headwater.execution._store import FilesystemStore, IOManager
from headwater.execution.executors import Executor, ExecutorSettings, open_executor
from headwater.execution.executors._threads import ThreadExecutor
from headwater.planning import (
    Evaluator,
    FreshnessStatus,
    InputVersions,
    NodeKey,
    NodeRecord,
    Request,
    Schedule,
    State,
    Status,
    backfill_nodes,
    carry_pending_since,
    explain,
    freshness_status,
    held_above,
    node_label,
    partition_range,
    released_below,
    resolve_selection,
    unreflected_since,
    usual_durations,
)
from headwater.sensors._scan import listed_gone
from headwater.versions import data_version as fingerprint

__all__ = ["Degraded", "Engine", "InFlight", "Observed", "StepCallback", "TickResult"]

_log = structlog.get_logger("headwater.engine")

SMALL_CACHE = 4096
"""Small values remembered after they are written: a 16 KiB value at most, 64 MiB in all."""

SMALL_READS_ON_LOOP = 16
"""Inputs of a run read one by one on the loop; more are read by one query in a thread."""

CRASH_LIMIT = 3
"""Runs in a row during which the daemon died before one is recorded as failed (threads)."""


@dataclass(frozen=True, slots=True)
class Degraded:
    """Why the engine cannot write its state directory, since when."""

    reason: str
    path: str
    since: datetime


class Engine:
    """Observe sources, request materializations, and tick: plan and run until quiet."""

    def __init__(
        self,
        defs: Definitions,
        log: EventLog,
        state: State,
        store: IOManager,
        clock: Clock,
        private: tuple[str, ...] = (),
    ) -> None:
        self.defs = defs
        self.log = log
        self.state = state
        self.store = store
        self.clock = clock
        self.runner = Runner(defs, store, private)
        self.runner.small_lookup = log.small_value
        self.slots = defs.max_concurrency or os.cpu_count() or 1
        """How many runs may be in flight at once (``max_concurrency``)."""
        self.executor: Executor = ThreadExecutor(self.runner)
        self.default_timeout: timedelta | None = None
        self.crash_guard = False
        """Whether functions run in this process (threads): see :meth:`_abandon_open_runs`."""
        self.dirty: set[NodeKey] = set()
        self.awaiting_store: dict[str, set[NodeKey]] = {}
        """Object source -> partitions whose run its store did not answer (see
        :meth:`store_answered`)."""
        self.storing: dict[NodeKey, int] = {}
        """Source partitions whose observed value is being stored, not yet in the log: a
        reader that finds a new version there finds it replaced, not lost."""
        self.full_evaluation = True
        self.degraded: Degraded | None = None
        """Set while the state directory refuses writes: no run starts, nothing is recorded."""
        self.on_degraded: Callable[[], None] = lambda: None
        self.observers: list[EngineObserver] = []
        """Told of every committed batch of events and every plan (metrics, the web page,
        OpenLineage)."""
        self._writing: dict[NodeKey, list[asyncio.Future[None]] | None] = {}
        """Partitions whose new records are being written (a commit in the writer's thread
        yields), with the writes waiting to reduce from those records instead of the ones
        before them (see :meth:`_written_first`)."""
        self.casualties: dict[NodeKey, str] = {}
        """Runs that could not record their end while degraded, and why."""
        self.starts = StartJournal(log.path.parent)
        """Starts of runs on disk ahead of the log (see :mod:`._run_start`)."""
        self.stranded: dict[str, Event] = {}
        """Starts the log does not hold of runs that are over (cut off by the death of the
        previous owner, or ended while the disk refused writes), by run id: recorded, and
        their runs abandoned, as soon as the log takes them."""
        self._small: dict[NodeKey, SmallValue] = {}
        """Small values recently written (see :meth:`_remember_small`)."""
        self._observe_lock = anyio.Lock()
        self._observations = 0
        """A counter that orders observations and the beginnings of listings."""
        self._observed: dict[NodeKey, int] = {}
        """Per source partition, when what was last recorded of it was read (see
        :meth:`observation_mark`): an older listing does not undo it."""
        self.clockwork = Clockwork(self)
        self.cycle = RunCycle(self)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        defs: Definitions,
        state_dir: Path,
        clock: Clock,
        store: IOManager | None = None,
        executor: ExecutorSettings | None = None,
        *,
        long_lived: bool = False,
    ) -> AsyncIterator[Engine]:
        """Open the event log in ``state_dir``, rebuild the state, mark abandoned runs, start
        the executor (threads unless ``executor`` says otherwise). The caller must own the
        state directory.

        ``long_lived`` (the daemon): what is alive once the state is loaded (the state, the
        definitions, imported modules) is taken out of the cyclic collector's walks for good
        (``gc.freeze``). At 100k partitions the first collections after a load walked a
        million new objects (~0.13 s of the open), and each full one later stopped the whole
        daemon for ~0.3 s. A process that opens engines again and again (tests) must not:
        the cycles that were alive then would never be collected."""
        if in_a_worker():
            raise RuntimeError(
                "an engine (a Harness?) was opened while a worker process imported the "
                "definitions: the file that builds them opens it at its top level; put that "
                "under `if __name__ == '__main__':` (each worker imports the file again)"
            )
        settings = executor or ExecutorSettings()
        value_store = store or FilesystemStore(state_dir / "values")
        if isinstance(value_store, FilesystemStore):
            await anyio.to_thread.run_sync(value_store.remove_temp_files)
            await anyio.to_thread.run_sync(value_store.mark_versioned_if_empty)
        await anyio.to_thread.run_sync(remove_snapshots, state_dir)  # a backup cut short
        await anyio.to_thread.run_sync(defs.compute_code_versions)
        await anyio.to_thread.run_sync(defs.compute_fingerprints)
        async with open_event_log(state_dir) as log:
            # no source may read the state directory through a link
            private = (str(await anyio.Path(state_dir).resolve()),)
            state = await log.load_state(long_lived=long_lived)
            if long_lived:  # what else is alive now (the definitions, modules): as the state
                gc.freeze()
            engine = cls(defs, log, state, value_store, clock, private)
            engine.default_timeout = settings.timeout
            engine.cycle.usual.update(await anyio.to_thread.run_sync(recent_durations, state_dir))
            engine.crash_guard = settings.kind == "threads"
            try:
                with contextlib.suppress(StorageFailure):  # a full disk at start: degraded
                    engine.stranded = await engine._journaled_starts()
                    await engine._abandon_open_runs(owner_died=True)
                    engine.casualties.clear()
                    engine.starts.forget()
                    await engine.clockwork.first_seen()
                async with open_executor(
                    settings, engine.runner, engine.slots, state_dir
                ) as engine.executor:
                    yield engine
            finally:
                engine._close_journal()

    # -- writing -------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[Event],
        dynamic: Sequence[tuple[str, str, datetime]] = (),
        *,
        check_freshness: bool = True,
        values: Mapping[NodeKey, SmallValue | None] | None = None,
        decided_on: Mapping[NodeKey, NodeRecord | None] | None = None,
        basis: Basis | None = None,
        gather: bool = False,
    ) -> Sequence[Event]:
        """Write events (and the records they lead to, and small values) to the log, then
        take the records; return the events written (``gather``: see :meth:`EventLog.write`).

        ``decided_on``: the records that events of those partitions were decided on (a
        lateness, a lost value). Such an event is dropped once its partition's record is
        another (``basis``: once what the decision rests on differs, see :func:`held_value`):
        the write that changed it decided again on what it led to, and the event would
        otherwise apply a decision to a record it was not made for."""
        while True:
            if decided_on is not None:
                events = [e for e in events if self._still_as_decided(e, decided_on, basis)]
                if not events and not dynamic and not values:
                    return events
            records: dict[NodeKey, NodeRecord] = {}
            for event in events:
                node = (event.asset or "", event.partition)
                record = self.state.reduce(event, records.get(node))
                if record is not None:
                    records[node] = record
            readers, maybe = self._carry_pending_since(events, records)
            if not await self._written_first(records):
                break
        self._refuse_if_degraded()
        await self._write(
            records, self.log.write(events, records, dynamic, values=values, gather=gather)
        )
        for name, key, at in dynamic:
            self.state.add_dynamic(name, [key], at)
        for node, record in records.items():
            self.state.put(node, record)
        if values:
            self._remember_small(values)
        if self.observers:
            notify_written(self.observers, events)
        if check_freshness and self.clockwork.sla_keys:
            # its own record, or an input's, may move a partition's deadline
            nodes = self.defs.nodes  # a partition of an asset the definitions dropped: none
            await self.clockwork.check_freshness(
                [
                    n
                    for n in dict.fromkeys(
                        [
                            *records,
                            *readers,
                            *self._released(maybe),
                            *self.clockwork.made_by_keys(dynamic),
                        ]
                    )
                    if getattr(nodes.get(n[0]), "freshness", None)
                ]
            )
        return events

    async def put(
        self,
        schedules: Mapping[str, Schedule],
        pending_since: Mapping[NodeKey, datetime | None] | None = None,
        decided_on: Mapping[NodeKey, NodeRecord | None] | None = None,
    ) -> dict[NodeKey, NodeRecord]:
        """Bookkeeping that is not an event: clock state, and corrections of the derived
        ``pending_since`` (dropped, as :meth:`append`'s events, for a partition whose record
        is no longer the one in ``decided_on``). Returns the records it wrote."""
        state = self.state
        while True:
            records = {
                node: replace(state.record(node) or NodeRecord(), pending_since=since)
                for node, since in (pending_since or {}).items()
                if decided_on is None or node not in decided_on
                or state.record(node) is decided_on[node]
            }  # fmt: skip
            if not await self._written_first(records):
                break
        if not records and not schedules:
            return records
        self._refuse_if_degraded()
        await self._write(records, self.log.write([], records, schedules=schedules))
        for node, record in records.items():
            state.put(node, record)
        state.schedules.update(schedules)
        return records

    def _still_as_decided(
        self, event: Event, decided_on: Mapping[NodeKey, NodeRecord | None], basis: Basis | None
    ) -> bool:
        node = (event.asset or "", event.partition)
        if node not in decided_on:
            return True
        now, then = self.state.record(node), decided_on[node]
        return now is then if basis is None else basis(now) == basis(then)

    @property
    def writing(self) -> bool:
        """Whether any write is under way (see :meth:`settled`)."""
        return bool(self._writing)

    async def settled(self, nodes: Iterable[NodeKey]) -> None:
        """Return once the writes of these partitions under way now have landed: what is
        decided next on their records is decided on what those writes led to. Writes begun
        meanwhile are not waited for (under steady writes that would never end); each decides
        again for what it changes."""
        waiters = [self._landed(n) for n in dict.fromkeys(nodes) if n in self._writing]
        for waiter in waiters:
            await waiter

    async def _written_first(self, records: Mapping[NodeKey, object]) -> bool:
        """Wait for a write under way of one of these partitions, if any: True when it did
        (reduce again, from the record that write leads to). Two writes of one partition
        reduced from the same record would otherwise each drop what the other changed (the
        one applied last wins), in memory and in ``current_state``."""
        for node in records:
            if node in self._writing:
                await self._landed(node)
                return True
        return False

    def _landed(self, node: NodeKey) -> asyncio.Future[None]:
        """Done once the write of ``node`` under way has landed (or failed)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._writing[node]
        if waiting is None:
            waiting = self._writing[node] = []
        waiting.append(waiter)
        return waiter

    async def _write(self, records: Mapping[NodeKey, NodeRecord], write: Awaitable[None]) -> None:
        """Await ``write`` of ``records`` (marked as being written meanwhile)."""
        writing = self._writing
        for node in records:
            writing[node] = None  # no one waits yet: no list for each write
        try:
            await write  # never cancelled half-way: see EventLog.write
        except StorageFailure as failure:
            self.storage_failed(failure)
            raise
        finally:
            for node in records:
                for waiter in writing.pop(node, None) or ():
                    if not waiter.done():
                        waiter.set_result(None)

    # -- a state directory that refuses writes ------------------------------------------

    def _refuse_if_degraded(self) -> None:
        if self.degraded is not None:
            raise StorageFailure(Path(self.degraded.path), self.degraded.reason)

    def storage_failed(self, failure: StorageFailure) -> None:
        """Enter the degraded state (once per outage, with one error line)."""
        if self.degraded is not None:
            return
        self.degraded = Degraded(failure.reason, str(failure.path), self.clock.now())
        _log.error(
            "storage_failed",
            path=str(failure.path),
            reason=failure.reason,
            free_bytes=free_bytes(failure.path.parent),
        )
        self.on_degraded()

    async def probe_storage(self) -> None:
        """Raise :class:`StorageFailure` unless the value store and the log take writes."""
        if isinstance(self.store, FilesystemStore):
            await anyio.to_thread.run_sync(self.store.probe)
        await self.log.probe()

    async def recover(self) -> None:
        """Writes succeed again: record the outage, abandon the runs it cut off (they run
        again, spending no retry), and evaluate everything again."""
        degraded, self.degraded = self.degraded, None
        if degraded is None:
            return
        payload = {
            "reason": degraded.reason,
            "path": degraded.path,
            "since": format_timestamp(degraded.since),
        }
        await self.append([self.event(EventKind.STORAGE_RECOVERED, payload=payload)])
        await self._abandon_open_runs(owner_died=False)
        self.casualties.clear()
        self.full_evaluation = True
        _log.info(
            "storage_recovered",
            path=degraded.path,
            down_s=(self.clock.now() - degraded.since).total_seconds(),
        )

    def event(self, kind: EventKind, node: NodeKey | None = None, **fields: Any) -> Event:
        """An event stamped with the engine's clock."""
        asset, partition = node if node is not None else (None, None)
        return Event(
            kind=kind, timestamp=self.clock.now(), asset=asset, partition=partition, **fields
        )

    def value_lost_event(self, node: NodeKey, how: str) -> Event:
        return self.event(EventKind.VALUE_LOST, node, payload={"reason": how})

    def _carry_pending_since(
        self, events: Sequence[Event], records: dict[NodeKey, NodeRecord]
    ) -> tuple[list[NodeKey], list[NodeKey]]:
        """A new version leaves its readers behind since the original change: each reader with
        a ``max_lag`` downstream of it (itself included) remembers the earliest change it does
        not reflect yet, carried down through the assets in between. (Lag never counts from
        before a reader's inputs all existed: the SLA evaluation clamps it.) Returns the
        readers, whose deadlines may have moved, and the partitions that were behind and may
        be up to date once written (see :meth:`_released`)."""
        tracked = self.defs.lag_tracked
        readers: list[NodeKey] = []
        maybe: list[NodeKey] = []
        if not tracked:
            return readers, maybe
        ev: Evaluator | None = None
        for event in events:
            if (
                event.kind not in (EventKind.OBSERVATION, EventKind.MATERIALIZATION)
                or not event.asset
            ):
                continue
            node = (event.asset, event.partition)
            old = self.state.record(node)
            if event.kind == EventKind.MATERIALIZATION and old is not None and old.pending_since:
                ev = ev or self.evaluator()
                if held_above(ev, node) is not None:
                    # it ran for another input: still behind an asset above that is stuck
                    records[node] = replace(records[node], pending_since=old.pending_since)
                else:
                    maybe.append(node)
            if records[node].version == (old.version if old is not None else None):
                continue
            since = event.payload.get("reflects_since")
            origin = parse_timestamp(since) if isinstance(since, str) else event.timestamp
            ev = ev or self.evaluator()
            carried = carry_pending_since(ev, node, origin, records)
            readers += carried
            maybe += [r for r in carried if r not in records and ev.state.record(r) is not None]
        for reader in readers:
            if (record := records.get(reader)) is not None and record.pending_since is not None:
                self.clockwork.behind(reader, record.pending_since)
        return readers, maybe

    def _released(self, maybe: Sequence[NodeKey]) -> list[NodeKey]:
        """Of the partitions that were behind, those up to date now (a run of the version they
        had, an input changed back) release the readers below that remembered a change
        through them: those with a ``max_lag``, to check again."""
        if not maybe:
            return []
        ev = self.evaluator()
        return [
            holder
            for node in dict.fromkeys(maybe)
            if (record := self.state.record(node)) is not None
            and (record.pending_since is None or ev.status(*node).state == "fresh")
            for holder in released_below(ev, node)
        ]

    # -- small values, kept in the log -------------------------------------------------

    def keeps_small(self, key: str) -> bool:
        """Whether the log may keep this asset's values (the default store's, if small)."""
        return bool(self.runner.small_max) and self.runner.io_for(key) is self.store

    async def small_inputs(self, inputs: InputVersions) -> dict[NodeKey, SmallValue]:
        """The inputs whose value the log keeps, at the versions a run is to read: given to
        the run, so that a worker never opens the log. The newest come from memory, a few
        others from one read each, many (an asset reading every partition) from one query
        per asset in a thread."""
        found: dict[NodeKey, SmallValue] = {}
        unknown: list[NodeKey] = []
        wanted: dict[NodeKey, str] = {}
        for asset, partition, version in inputs:
            if asset not in self.defs.assets or not self.keeps_small(asset):
                continue
            node = (asset, partition)
            wanted[node] = version
            kept = self._small.get(node)
            if kept is None:
                unknown.append(node)
            elif kept.version == version:
                found[node] = kept
        if len(unknown) > SMALL_READS_ON_LOOP:
            read = await self.log.small_values(unknown)
        else:
            read = {n: kept for n in unknown if (kept := self.log.small_value(n)) is not None}
        found.update((n, kept) for n, kept in read.items() if kept.version == wanted[n])
        return found

    def _remember_small(self, values: Mapping[NodeKey, SmallValue | None]) -> None:
        """The newest small values written, so that their readers (usually next) need no read
        of the log: at most ``SMALL_CACHE`` of them."""
        for node, kept in values.items():
            self._small.pop(node, None)
            if kept is not None:
                self._small[node] = kept
        while len(self._small) > SMALL_CACHE:
            del self._small[next(iter(self._small))]

    async def note_unreflected(self, nodes: Iterable[NodeKey]) -> None:
        """Partitions with a ``max_lag`` below them that do not reflect an input's version
        and remember no change: their lag counts from that input's change. After a run, an
        input that changed while it ran (the materialization cleared the older change); at
        start, partitions that became tracked (an SLA added: they were behind already)."""
        tracked = self.defs.lag_tracked
        nodes = [
            node
            for node in nodes
            if node[0] in tracked
            and (record := self.state.record(node)) is not None
            and record.pending_since is None
        ]  # most runs: none, and no evaluator made
        if not nodes:
            return
        since = unreflected_since(self.evaluator(), nodes)
        if since:
            await self.put({}, pending_since=since)
            for node, at in since.items():
                self.clockwork.behind(node, at)

    async def _journaled_starts(self) -> dict[str, Event]:
        """Starts the previous owner journaled that the log does not hold: it died before
        their runs' first commit, or stopped while the disk refused them (then it said why,
        and those runs are abandoned for that reason, not counted as crashes)."""
        found = await anyio.to_thread.run_sync(self.starts.read)
        missing: dict[str, Event] = {}
        for event in found:
            run_id = event.run_id
            assert run_id is not None
            if (why := event.payload.get(_CUT_OFF)) is not None:
                self.casualties[(event.asset or "", event.partition)] = str(why)
                payload = {k: v for k, v in event.payload.items() if k != _CUT_OFF}
                event = replace(event, payload=payload)
            if await self.log.run_started((event.asset or "", event.partition), run_id) is None:
                missing[run_id] = event
        return missing

    def _close_journal(self) -> None:
        """Closing with runs whose end the log could not take (the disk refuses writes):
        journal why, with their starts if the log lacks those too, for the next owner to
        abandon them for it. This owner did not die in those runs: no crash is counted. (So
        is a start a dead owner left that this one could not record, the disk being full
        from its start on: in that double fault the crash-loop guard misses one death.)"""
        cut_off = dict(self.stranded)
        for node in self.casualties:
            record = self.state.record(node)
            if record is not None and record.running and record.running not in cut_off:
                # its start is in the log: this line only says why (added below)
                cut_off[record.running] = self.event(
                    EventKind.RUN_STARTED, node, run_id=record.running
                )
        with contextlib.suppress(StorageFailure):
            for event in cut_off.values():
                why = self.casualties.get((event.asset or "", event.partition), _OUTAGE)
                self.starts.write(replace(event, payload={**event.payload, _CUT_OFF: why}))
        self.starts.close()

    async def _abandon_open_runs(self, *, owner_died: bool) -> None:
        """Runs still open in the log were going when their owner died (a clean stop records
        the end of every run it leaves behind). Under threads the function may be what killed
        it: the third time in a row the run is recorded as failed for good instead (the
        crash-loop guard), so a function that kills the process cannot make it crash-loop."""
        if self.stranded:  # their runs are open once the log holds their starts
            await self.append(list(self.stranded.values()), check_freshness=False)
            self.starts.settle(self.stranded)
            self.stranded = {}
        going = set() if owner_died else {f.run_id for f in self.in_flight()}
        # after an outage, a run still going in this process was not cut off: it records its end
        open_runs = [
            (n, r)
            for n, r in self.state.records.items()
            if r.running and (r.running not in going or n in self.casualties)
        ]
        events: list[Event] = []
        for node, record in open_runs:
            run_id = record.running
            assert run_id is not None
            if node in self.casualties:
                events.append(self.event(EventKind.RUN_ABANDONED, node, run_id=run_id,
                                         payload={"reason": self.casualties[node]}))  # fmt: skip
            elif not (owner_died and self.crash_guard):
                events.append(self.event(EventKind.RUN_ABANDONED, node, run_id=run_id))
            elif record.crashes + 1 < CRASH_LIMIT:
                payload = {"reason": "the daemon died while running it", "crash": True}
                events.append(
                    self.event(EventKind.RUN_ABANDONED, node, run_id=run_id, payload=payload)
                )
            else:
                started = await self.log.run_started(node, run_id)
                run = dict(started.payload) if started is not None else {}
                error = f"the daemon died while running it {CRASH_LIMIT} times"
                payload = {"code_version": run.get("code_version"), "inputs": run.get("inputs", []),
                           "attempt": run.get("attempt", 1), "error": error, "final": True}  # fmt: skip
                for kept in ("binding", "checks"):
                    if kept in run:
                        payload[kept] = run[kept]
                events.append(
                    self.event(EventKind.RUN_FAILED, node, run_id=run_id, payload=payload)
                )
        if events:
            await self.append(events)
        for event in events:
            if event.kind == EventKind.RUN_FAILED:
                _log.error("run_failed", asset=event.asset, partition=event.partition,
                           run_id=event.run_id, error=event.payload["error"])  # fmt: skip
            else:
                _log.warning("run_abandoned", asset=event.asset, partition=event.partition,
                             run_id=event.run_id)  # fmt: skip

    async def forget_lost_values(self, *, again: bool = False) -> int:
        """Make every materialized partition whose stored value is gone missing again; return
        how many. One listing per value folder, off the loop: the daemon runs it in the
        background after start-up, and ``again`` every rescan interval after (a reader that
        finds a value gone does the same for it).
        The first time after the machine restarted, every value's version is read as well:
        values are not synced one by one, so a power loss may have taken some back."""
        store = self.store
        if not isinstance(store, FilesystemStore):
            return 0
        # On the loop, so once per asset, not per partition: a plain membership test each.
        in_files = {key for key in self.defs.assets if self.runner.io_for(key) is store}
        stored = {
            node: record
            for node, record in self.state.records.items()
            if node[0] in in_files and record.materialized_at is not None
        }
        for node in await self.log.small_value_nodes():  # kept in the log, not in a file
            stored.pop(node, None)
        check = not await anyio.to_thread.run_sync(store.checked_this_boot)
        if check:
            expected = [(n, r.version or "") for n, r in stored.items()]
            gone = await anyio.to_thread.run_sync(store.mismatched, expected)
            how = "gone or not the recorded version after the machine restarted"
        else:
            gone = await anyio.to_thread.run_sync(store.absent, list(stored))
            looked = "by a periodic look at the stored values" if again else "at start"
            how = f"found gone {looked}"
        # A run may have stored a new value while the folders were read: that one stands. One
        # still under way may have removed the file of a value the log now keeps, and not yet
        # recorded that (hostile37b bug3): its end says what holds the value.
        under_way = set(self._under_way())
        gone = [
            n
            for n in gone
            if n not in under_way
            and (r := self.state.record(n)) is not None
            and r.run_id == stored[n].run_id
        ]
        if check:
            try:
                await anyio.to_thread.run_sync(store.mark_checked_this_boot)
            except OSError as exc:  # a full disk: the next start checks again
                _log.warning("values_check_not_recorded", error=f"{type(exc).__name__}: {exc}")
        if gone:
            written = await self.append(
                [self.value_lost_event(n, how) for n in gone],
                decided_on={n: stored[n] for n in gone},  # not a value a run stored since
                basis=held_value,
            )
            gone = [(str(e.asset), e.partition) for e in written]
            for node in gone:
                _log.warning("value_lost", asset=node[0], partition=node[1])
                self.dirty.add(node)
                self.mark_children(node)
        return len(gone)

    # -- retention -----------------------------------------------------------------------

    async def prune(self, cutoff: datetime) -> Pruned:
        """Delete events older than ``cutoff``, keeping what explains every asset partition
        (the newest observation, materialization and run events of each, open SLA
        violations), in short transactions."""
        self._refuse_if_degraded()
        try:
            pruned = await self.log.prune(cutoff)
        except StorageFailure as failure:
            self.storage_failed(failure)
            raise
        _log.info(
            "pruned",
            events=pruned.events,
            before=format_timestamp(cutoff),
            bytes_freed=pruned.bytes_freed,
            longest_batch_ms=round(pruned.longest_batch_s * 1000, 3),
        )
        return pruned

    async def maintain(
        self, cutoff: datetime | None, *, values: bool = False, vacuum: bool = False
    ) -> dict[str, Any]:
        """``headwater prune``: events older than ``cutoff`` (if any), stored values no asset
        partition holds (``values``), a full VACUUM (``vacuum``). A summary of what went."""
        done: dict[str, Any] = {}
        if cutoff is not None:
            pruned = await self.prune(cutoff)
            done.update(events=pruned.events, before=format_timestamp(cutoff),
                        bytes_freed=pruned.bytes_freed)  # fmt: skip
        if values:
            if not isinstance(self.store, FilesystemStore):
                done["values"] = "the value store is not the state directory's: nothing removed"
            else:
                store = self.store
                # No value is published while the files are weighed against the log: a run
                # that stores one now would be deleted as held by nobody.
                lock = await anyio.to_thread.run_sync(store.hold_publishing)
                try:
                    small = await self.log.small_value_nodes()
                    # From here to the walk, no await: what holds a value is one snapshot
                    # (a run that ends meanwhile would leave the runs under way, and be
                    # missing from what the state held a moment before).
                    held = self.held_values()
                    # a file of a partition whose value the log keeps is an older value
                    in_files = {
                        k: [p for p in parts if (k, p) not in small] for k, parts in held.items()
                    }
                    # A run under way may have stored its value and not yet recorded it.
                    for key, partition in self._under_way():
                        in_files.setdefault(key, []).append(partition)
                    removed = await anyio.to_thread.run_sync(store.prune_values, in_files)
                finally:
                    await anyio.to_thread.run_sync(os.close, lock)
                self._refuse_if_degraded()

                def keep() -> set[NodeKey]:
                    held = self.held_values()
                    return {(k, p) for k, parts in held.items() for p in parts} | set(
                        self._under_way()
                    )

                dropped = await self.log.prune_small_values(keep)
                self._remember_small(dict.fromkeys(dropped))
                done["values"] = [str(p) for p in removed] + [
                    f"{node_label(*n)} (kept in the event log)" for n in dropped
                ]
        if vacuum:
            self._refuse_if_degraded()
            done["vacuum_bytes_freed"] = await self.log.vacuum()
        return done

    async def value_gone(self, node: NodeKey) -> bool:
        """A partition asked for by name: is its stored value still there? If not, it is
        missing again (so the request runs it instead of calling it fresh)."""
        if node[0] not in self.defs.assets or await self._still_held(node):
            return False
        await self.append([self.value_lost_event(node, "found gone when it was asked for")])
        _log.warning("value_lost", asset=node[0], partition=node[1])
        self.mark_children(node)
        return True

    async def _still_held(self, node: NodeKey) -> bool:
        """Whether the store holds the partition's value, as far as can be told (a store of
        the user's cannot say; one that does not answer is taken to hold it)."""
        store = self.runner.io_for(node[0])
        if isinstance(store, ObjectStore):
            if (version := self.state.version(node)) is None:
                return True
            try:
                return await anyio.to_thread.run_sync(store.holds, node[0], node[1], version)
            except Exception:
                return True
        if not isinstance(store, FilesystemStore):
            return True
        if self.keeps_small(node[0]) and self.log.small_value(node) is not None:
            return True
        return not await anyio.to_thread.run_sync(store.absent, [node])

    async def snapshot(self, state_dir: Path) -> Path:
        """A consistent copy of the log and the values, inside the state directory (see
        :mod:`._backup`); the caller copies it out and removes it."""
        if not isinstance(self.store, FilesystemStore):
            raise SelectionError("the value store is not the state directory's: back it up itself")
        store = self.store
        return await anyio.to_thread.run_sync(take_snapshot, state_dir, store)

    def _under_way(self) -> list[NodeKey]:
        """Partitions whose value may be stored and not yet recorded: runs in flight, and
        observations whose value is being stored."""
        return [*self.cycle.in_flight, *self.storing]

    def held_values(self) -> dict[str, list[str | None]]:
        """Every asset or source of the definitions, with its partitions that have a value
        (partitions it no longer has, a key removed, hold none: SPEC §5)."""
        held: dict[str, list[str | None]] = {key: [] for key in self.defs.nodes}
        exists = self.evaluator().exists
        for (key, partition), record in self.state.records.items():
            if key in held and record.version is not None and exists(key, partition):
                held[key].append(partition)
        return held

    # -- inputs from outside -------------------------------------------------------------

    def evaluator(self) -> Evaluator:
        return Evaluator(self.defs, self.state, self.clock.now(), self.cycle.usual)

    def _source(self, key: str) -> SourceDef:
        node = self.defs.nodes.get(key)
        if not isinstance(node, SourceDef):
            what = "an asset (assets are materialized, not observed)" if node else "not defined"
            raise SelectionError(f"cannot observe {key!r}: it is {what}")
        return node

    async def add_partitions(self, name: str, keys: Iterable[str]) -> list[str]:
        """Add keys to the dynamic partitions ``name``; return the new ones."""
        new = self._new_dynamic(name, keys)
        if new:
            await self.append(*self._partitions_added({name: new}))
            self._dirty_new_partitions({name: new})
        return new

    def _new_dynamic(self, name: str, keys: Iterable[str]) -> list[str]:
        known = self.state.dynamic.get(name, {})
        new = [k for k in dict.fromkeys(keys) if k not in known]
        for k in new:
            DynamicPartitions(name).check_key(k)
        return new

    def _partitions_added(
        self, added: Mapping[str, list[str]]
    ) -> tuple[list[Event], list[tuple[str, str, datetime]]]:
        events = [
            self.event(EventKind.PARTITIONS_ADDED, payload={"name": name, "keys": keys})
            for name, keys in added.items()
        ]
        at = events[0].timestamp if events else self.clock.now()
        return events, [(name, k, at) for name, keys in added.items() for k in keys]

    def _dirty_new_partitions(self, added: Mapping[str, list[str]]) -> None:
        readers = self.defs.dynamic_assets
        for name, keys in added.items():
            for key in readers.get(name, ()):
                self.dirty.update((key, k) for k in keys)

    def _check_observed(self, key: str, partition: str | None) -> SourceDef:
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
        return source

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
        self._check_observed(key, partition)
        if deleted:
            version = None
        elif data_version is None:
            if value is None:
                raise ValueError(f"observe({key!r}): give data_version, value, or deleted=True")
            version = fingerprint(value)
        else:
            version = data_version
        payload = {k: v for k, v in (payload or {}).items() if k != "store"}  # the engine's
        node = (key, partition)
        if value is not None:
            payload["store"] = ""  # the value is stored: a reader that finds none lost it
        observed = [Observed(key, partition, version, payload)]
        if value is None or version == self.state.version(node):
            if value is not None and await self._file_gone(node):
                # The same value again, its file deleted meanwhile: stored again. Else the
                # first reader found it lost, and the source waited for yet another
                # observation of what had just been observed.
                await self._storing(node, value, version, [])
            before = self.state.version(node)
            changed = bool(await self.observe_many(observed))
            if changed and value is None and version is not None and before is not None:
                await self._discard_value(key, partition, before)
            return changed
        return await self._storing(node, value, version, observed)

    async def _storing(
        self, node: NodeKey, value: Any, version: str | None, observed: list[Observed]
    ) -> bool:
        """Store a source's ``value``, then record ``observed``; whether a version changed."""
        self.storing[node] = self.storing.get(node, 0) + 1
        try:
            store = self.store
            key, partition = node
            if isinstance(store, FilesystemStore):  # the version goes into the file
                await anyio.to_thread.run_sync(store.store, key, partition, value, version)
            else:
                await anyio.to_thread.run_sync(store.save, key, partition, value)
            return bool(await self.observe_many(observed)) if observed else False
        finally:
            if self.storing[node] == 1:
                del self.storing[node]
            else:
                self.storing[node] -= 1

    async def _file_gone(self, node: NodeKey) -> bool:
        """Whether the state directory's store should hold a file of ``node``'s value and
        does not (another store cannot say cheaply: taken to hold it)."""
        store = self.store
        if not isinstance(store, FilesystemStore):
            return False
        return bool(await anyio.to_thread.run_sync(store.absent, [node]))

    async def _discard_value(self, key: str, partition: str | None, version: str) -> None:
        """A plain source observed with a version only has no value: its readers get None.
        The value stored with the version before goes (its file would be read as a value
        lost, and its readers would wait for good)."""
        store = self.store
        if type(self.defs.nodes[key]) is SourceDef and isinstance(store, FilesystemStore):
            await anyio.to_thread.run_sync(store.discard, key, partition, version)

    async def observe_many(
        self, items: Sequence[Observed], *, listed_since: int = -1
    ) -> list[Observed]:
        """Record many observations (a sensor's batch) in one transaction; return those that
        changed a version (the latest of each partition). Unchanged ones write nothing; new
        dynamic partitions are added in the same transaction. ``listed_since`` (a listing's:
        see :meth:`observation_mark`): a partition observed since the listing began keeps that
        newer observation."""
        for item in items:
            self._check_observed(item.key, item.partition)
        async with self._observe_lock:  # two sensors seeing one change record it once
            # what a listing read counts from when it began; any other observation from now
            if listed_since < 0:
                self._observations += 1
            read_at = listed_since if listed_since >= 0 else self._observations
            latest: dict[NodeKey, Observed] = {}
            seen = self._observed
            for item in items:
                node = (item.key, item.partition)
                if seen.get(node, 0) > read_at:
                    continue  # observed after this listing began: the newer word stands
                latest[node] = item
            for node in latest:
                seen[node] = read_at
            changed = [o for n, o in latest.items() if o.version != self.state.version(n)]
            # A key of a dynamic set is added when a source holds it, changed or not: a set
            # renamed in the definitions starts empty, and its files are there unchanged.
            candidates: dict[str, list[str]] = {}
            for item in latest.values():
                if item.partition is None or item.version is None:
                    continue
                parts = self.defs.nodes[item.key].partitions
                for name, key in dynamic_keys_in(parts, item.partition):
                    candidates.setdefault(name, []).append(key)
            added = {
                n: new for n, keys in candidates.items() if (new := self._new_dynamic(n, keys))
            }
            if not changed and not added:
                return []
            events, dynamic = self._partitions_added(added)
            events += [
                self.event(
                    EventKind.OBSERVATION,
                    (o.key, o.partition),
                    data_version=o.version,
                    payload=dict(o.payload),
                )
                for o in changed
            ]
            await self.append(events, dynamic)
        self._dirty_new_partitions(added)
        for item in changed:
            self.mark_children((item.key, item.partition))
        return changed

    async def observe_deleted(self, nodes: Sequence[NodeKey], *, listed_since: int) -> int:
        """Record that these source partitions are gone, as a listing begun at
        ``listed_since`` found them (see :meth:`observe_many`)."""
        gone = [Observed(key, partition, None) for key, partition in nodes]
        return len(await self.observe_many(gone, listed_since=listed_since))

    def observation_mark(self) -> int:
        """Taken before a listing begins, and given to :meth:`reconcile` with it: later than
        every observation and listing begun before, earlier than every one begun after."""
        self._observations += 1
        return self._observations

    async def reconcile(
        self, key: str, found: Mapping[str | None, str], since: int, *, complete: bool = True
    ) -> list[Observed]:
        """Observe a listing of a source (``{partition: version}``): every version in it and,
        if it is ``complete``, a deletion for each partition the log has that it lacks (one
        with a hole, a folder it could not read, infers none: they would be false). Return
        the observations that changed a version.

        ``since``: :meth:`observation_mark` as the listing began. A partition a watcher
        observed since then keeps that observation: the listing may have read it before it
        changed (or not found it yet), and a change after the watcher's is an event of its."""
        items = [Observed(key, p, v) for p, v in found.items()]
        source = self._source(key)
        if complete:
            gone = listed_gone(source, found, self.state, self.evaluator().pctx)
            items += [Observed(key, partition, None) for partition in gone]
        return await self.observe_many(items, listed_since=since)

    def store_answered(self, source: str) -> bool:
        """A listing of the object source ``source`` worked: the runs abandoned because its
        store did not answer them are decided again. Returns whether there were any."""
        waiting = self.awaiting_store.pop(source, None)
        if waiting:
            self.dirty.update(waiting)
        return bool(waiting)

    def mark_children(self, node: NodeKey) -> None:
        self.dirty.update(self.evaluator().children(node))

    # -- the clock and the cycle ---------------------------------------------------------

    def on_earlier_timer(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a timer is set before every other one."""
        self.clockwork.timers.on_earlier = callback

    def next_wakeup(self) -> datetime | None:
        """The next instant at which the clock alone makes something to do."""
        return self.clockwork.next_wakeup()

    async def tick(
        self,
        requests: Mapping[NodeKey, Request] | None = None,
        *,
        only_requested: bool = False,
        on_step: StepCallback | None = None,
    ) -> TickResult:
        """Evaluate what is dirty (and requested), run the plan, repeat until nothing is left."""
        return await self.cycle.tick(requests, only_requested=only_requested, on_step=on_step)

    async def idle(self) -> None:
        """Return once no tick is running."""
        await self.cycle.idle()

    def stop_starting(self, *, reloading: bool = False) -> None:
        """Start no new run from now on: a stopping daemon, or a reloading one, which leaves
        what has not started to the next engine (it evaluates everything, under the new
        definitions: nothing runs its old code after the reload, nor twice)."""
        self.cycle.stop_starting(RELOADING if reloading else STOPPING)

    def in_flight(self) -> list[InFlight]:
        """Partitions queued for a worker slot or running, oldest first."""
        return sorted(self.cycle.in_flight.values(), key=lambda f: f.since)

    def overdue(self, flight: InFlight) -> str | None:
        """Why a running partition deserves a look: past its timeout, or running far longer
        than usual (ten times its usual duration, and a minute more than it)."""
        if flight.state != "running":
            return None
        elapsed = self.clock.now() - flight.since
        if flight.timeout is not None and elapsed > flight.timeout:
            return f"past its timeout of {format_duration(flight.timeout)}"
        usual = self.cycle.usual.get(flight.asset)
        if usual is not None and elapsed.total_seconds() > max(10 * usual, usual + 60):
            took = format_duration(timedelta(seconds=usual))
            return f"running for {format_duration(elapsed)}, usually {took}"
        return None

    # -- requests ------------------------------------------------------------------------

    def resolve(
        self, selection: Iterable[str], partitions: Sequence[str] | None = None
    ) -> list[NodeKey]:
        """The asset partitions a request names; errors name the asset or partition at fault."""
        return resolve_selection(self.evaluator(), selection, partitions)

    def backfill(self, asset: str, first: str, last: str) -> list[NodeKey]:
        """A range of partitions of ``asset``, after the upstream partitions they need that
        are not fresh (a backfill of days fills the hours they read first)."""
        ev = self.evaluator()
        return backfill_nodes(ev, asset, partition_range(ev, asset, first, last))

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
        everything else that is dirty for a later tick (a request does not also run unrelated
        work).
        """
        requests = {n: Request(force=force) for n in nodes}
        return await self.tick(requests, only_requested=only_requested, on_step=on_step)

    # -- reading -------------------------------------------------------------------------

    def freshness(self, asset: str, partition: str | None = None) -> FreshnessStatus | None:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return freshness_status(ev, asset, partition)

    def status(self, asset: str, partition: str | None = None) -> Status:
        ev = self.evaluator()
        ev.check_node(asset, partition)
        return ev.status(asset, partition)

    def why(self, asset: str, partition: str | None = None) -> list[str]:
        ev = self.evaluator()
        ev.check_node(asset, partition, or_recorded=True)
        lines = explain(ev, asset, partition)
        flight = self.cycle.in_flight.get((asset, partition))
        if flight is not None:
            lines.insert(1, describe_in_flight(flight))
        return lines


_CUT_OFF = "headwater.cut_off"
"""In a journaled start only: why its run ended unrecorded, when its owner knew."""
_OUTAGE = "the state directory refused writes when it ended"

RECENT_RUNS = 2000
"""Materializations read at open to know how long each asset's runs usually take."""


def recent_durations(state_dir: Path) -> dict[str, float]:
    """Usual run durations by asset from the log's latest materializations (lazy leads and
    "running far longer than usual" need them from the first tick, not after a run each)."""
    latest = EventLogReader(state_dir).events(
        kind=EventKind.MATERIALIZATION, newest_first=True, limit=RECENT_RUNS
    )
    return usual_durations(reversed(latest))


def describe_in_flight(flight: InFlight) -> str:
    if flight.state == "queued":
        why = "waiting for a free worker slot"
        if flight.waiting_for is not None:
            why = f"waiting for {node_label(*flight.waiting_for)}, which another plan is running"
        return f"queued since {flight.since.isoformat()}: {why} ({flight.reason})"
    return f"running since {flight.since.isoformat()} (run {flight.run_id}): {flight.reason}"
