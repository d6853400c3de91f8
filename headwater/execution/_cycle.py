"""The plan/run cycle: evaluate what is dirty (and requested), run the plan, repeat until quiet.

Ticks may overlap (the daemon starts one per burst of changes, so a long run holds back
nothing unrelated): each takes the dirty set as it finds it, and partitions are claimed one
tick at a time. A run takes a worker slot (``max_concurrency``) *before* ``run_started`` is
written, so the log's runs are the ones that really executed; a partition waiting for a slot
is *queued*, which ``why`` and ``status`` show from the daemon's live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from headwater._events import Event, EventKind, format_timestamp
from headwater._logging import info_dropped
from headwater._storage import StorageFailure
from headwater.definitions import AssetDef, EdgeMapping, ObjectSource, SourceDef
from headwater.eventlog import SmallValue
from headwater.execution._decided import held_value
from headwater.execution._observers import notify_planned
from headwater.execution._results import (
    NOT_RECORDED,
    NOT_STARTED,
    Observed,
    StepCallback,
    TickResult,
)
from headwater.execution._run_start import RunStart
from headwater.execution._runner import Job, Outcome
from headwater.execution._store import FilesystemStore
from headwater.execution.executors import Executor
from headwater.planning import (
    InputVersions,
    NodeKey,
    NodeRecord,
    Plan,
    Request,
    Status,
    Wavefront,
    as_input,
    decide_step,
    node_label,
    plan,
)
from headwater.planning._lazy import blend_duration
from headwater.policies import Decision

if TYPE_CHECKING:
    from headwater.execution._engine import Engine

__all__ = ["RELOADING", "STOPPING", "InFlight", "RunCycle"]

_log = structlog.get_logger("headwater.engine")

STOPPING = NOT_STARTED + "the daemon is stopping"
RELOADING = NOT_STARTED + "the definitions are being reloaded; the new ones decide it"
_ALL = EdgeMapping.ALL


@dataclass(frozen=True, slots=True)
class InFlight:
    """A partition that a tick decided to run: queued for a slot, or running."""

    asset: str
    partition: str | None
    state: str
    """``queued`` or ``running``."""
    since: datetime
    reason: str
    run_id: str | None = None
    timeout: timedelta | None = None
    waiting_for: tuple[str, str | None] | None = None
    """Queued with a slot given up: an input that another tick is running (about to change)."""


def _inputs_json(status: Status) -> list[list[str | None]]:
    return [[a, p, v] for a, p, v in status.inputs]


_STORE_RETRY_S = 30.0
_STORE_RETRY_MAX_S = 600.0
_LOSS_LIMIT = 5
_LOSS_WINDOW = 600.0
_LOSSES_KEPT = 10_000
_LOST_AGAIN = (
    f"its value store lost its value {_LOSS_LIMIT} times within {_LOSS_WINDOW / 60:.0f} "
    "minutes, each time found gone by a reader: the store does not keep what it is given"
)


class RunCycle:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._gate = _Gate(engine.slots)
        self.in_flight: dict[NodeKey, InFlight] = {}
        self.stopping = False
        self._not_started = STOPPING
        """Why a partition reached after :meth:`stop_starting` did not start."""
        self._claims: dict[NodeKey, asyncio.Event] = {}
        """Partitions being decided or run by some tick, each claimed by exactly one."""
        self._ticks = 0
        self.usual: dict[str, float] = {}
        """Per asset, the usual duration of a successful run in seconds (a moving average)."""
        self._quiet = anyio.Event()
        self._quiet.set()
        self._store_waits: dict[NodeKey, int] = {}
        """Per reader, how many times in a row an ObjectStore holding an input's value did
        not answer it (the wait before the next try doubles)."""
        self._losses: dict[NodeKey, deque[float]] = {}
        """Per partition, when its value was last found lost by readers (monotonic)."""

    def _lost_too_often(self, node: NodeKey) -> bool:
        """Whether ``node``'s value is lost again and again: a store that does not keep what
        it is given (a cleaner emptying its folder, an object written over each time) would
        have it run, and be lost by its readers, for ever."""
        now = time.monotonic()
        if len(self._losses) >= _LOSSES_KEPT:
            self._losses = {n: t for n, t in self._losses.items() if now - t[-1] < _LOSS_WINDOW}
        times = self._losses.setdefault(node, deque(maxlen=_LOSS_LIMIT))
        times.append(now)
        if len(times) == _LOSS_LIMIT and now - times[0] < _LOSS_WINDOW:
            del self._losses[node]
            return True
        return False

    def stop_starting(self, reason: str = STOPPING) -> None:
        """Start no new run from now on; runs already going finish (or are left behind)."""
        self.stopping = True
        self._not_started = reason

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
        result = TickResult()
        self._ticks += 1
        self._quiet = anyio.Event()
        try:
            await self._cycle(dict(requests or {}), only_requested, result, on_step)
        except StorageFailure:
            pass  # the engine is degraded now; recovery evaluates everything again
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
        engine = self.engine
        clockwork = engine.clockwork
        due_cron: dict[str, datetime] = {}
        if not only_requested:
            if engine.full_evaluation and (tracked := engine.defs.lag_tracked):
                # before the timers expire: those of the stuck partitions may be due already
                await engine.note_unreflected([n for n in engine.state.records if n[0] in tracked])
                clockwork.resume_behind()
            await clockwork.expire()
            ev = engine.evaluator()
            if engine.full_evaluation:
                engine.full_evaluation = False
                for key in engine.defs.assets:
                    engine.dirty.update((key, p) for p in ev.partitions(key))
                held = clockwork.sla_nodes(ev)
                await clockwork.check_freshness(held)
                await clockwork.close_dropped_violations(held)
            due_cron = clockwork.due_cron(ev)
        planned = False
        while not self.stopping:
            planned = True
            ev = engine.evaluator()
            dirty: set[NodeKey] = set()
            if not only_requested:
                dirty, engine.dirty = engine.dirty, set()
            began = time.perf_counter()
            current = plan(ev, dirty, pending, busy=self._claims)
            if engine.observers:
                notify_planned(engine.observers, time.perf_counter() - began)
            result.decided += len(current.decisions)  # the seeds count as their steps decide
            for node, decision in current.decisions.items():
                await self._note_decision(node, decision, result)
            if not current:
                break
            # Requests whose run read an input that was replaced meanwhile: asked for again.
            pending = await self._execute(current, pending, result, on_step)
            if not pending and (only_requested or not engine.dirty):
                break
        if self.stopping:  # a due tick whose run did not start is still due, for the next
            # engine (a reload) or the next start
            unstarted = {n[0] for n, why in result.skipped.items() if why == self._not_started}
            due_cron = {k: t for k, t in due_cron.items() if planned and k not in unstarted}
        await clockwork.handled_cron(due_cron)

    async def _note_decision(self, node: NodeKey, decision: Decision, result: TickResult) -> None:
        engine = self.engine
        if decision.wake_at is not None:
            engine.clockwork.timers.schedule(decision.wake_at, "wake", node)
        if not decision.notable:
            return
        if not (decision.kind == "idle" and node in result.failed):
            result.skipped[node] = decision.reason
        record = engine.state.record(node)
        if record is None or record.decision != (decision.kind, decision.reason):
            payload = {"decision": decision.kind, "reason": decision.reason}
            await engine.append([engine.event(EventKind.DECISION, node, payload=payload)])

    async def _execute(
        self,
        current: Plan,
        requests: Mapping[NodeKey, Request],
        result: TickResult,
        on_step: StepCallback | None,
    ) -> dict[NodeKey, Request]:
        """Decide (and run) the seeds, then whatever their outputs reach, each partition once
        nothing upstream of it is pending. A task exists only for a partition being decided.
        Returns the requests to make again: their run was abandoned because an input was
        replaced while it read it."""
        engine = self.engine
        again: dict[NodeKey, Request] = {}
        front = Wavefront(engine.evaluator(), current.steps)

        async def step(node: NodeKey | None) -> None:
            # The first partition that this one's end makes ready is decided in this same
            # task (all of a chain): a task per partition cost ~15 µs of a ~0.6 ms run.
            while node is not None:
                node = await decide(node)

        async def decide(node: NodeKey) -> NodeKey | None:
            reaches = done = False
            nearest: NodeKey | None = None
            try:
                if self.stopping:
                    result.skipped[node] = self._not_started
                    outcome = "skipped"
                else:
                    claim = await self._claim(node)
                    before = as_input(engine.state.record(node), engine.defs, node[0])
                    try:
                        engine.dirty.discard(node)
                        result.skipped.pop(node, None)  # what an earlier round said is past
                        outcome = await self._step(node, requests.get(node), result)
                        if outcome == "replaced":
                            if node in requests:
                                again[node] = requests[node]
                            outcome = "skipped"
                    except StorageFailure as failure:  # siblings go on; recovery re-plans this
                        result.skipped[node] = NOT_RECORDED + str(failure)
                        outcome = "skipped"
                    finally:
                        del self._claims[node]
                        claim.set()
                    # Its children hear of a failure, a notable decision, or any change in
                    # what they see of it as an input: a partition that waited on it while it
                    # was failed must run once it recovers, even with the same version.
                    reaches = outcome in ("failed", "held") or (
                        as_input(engine.state.record(node), engine.defs, node[0]) != before
                    )
                result.decided += 1
                if on_step is not None:
                    on_step(node, "skipped" if outcome == "held" else outcome)
                done = True
            finally:
                front.finished(node, engine.evaluator() if reaches else None)
                ready = front.take_ready()
                if done and ready:
                    nearest = ready.pop(0)
                for other in ready:  # all of them when this one failed
                    tg.start_soon(step, other)
            return nearest

        async with anyio.create_task_group() as tg:
            for node in front.take_ready():
                tg.start_soon(step, node)
        return again

    async def _step(self, node: NodeKey, request: Request | None, result: TickResult) -> str:
        """Decide; if it runs, queue for a slot and run. "held" is a notable decision not to
        run (waiting, manual, ...), which its children must hear of too; "replaced": the run
        was abandoned because an input was replaced while it read it (a request is made
        again)."""
        engine = self.engine
        status, decision = decide_step(engine.evaluator(), node, request)
        if request is not None and status.state == "fresh" and await engine.value_gone(node):
            status, decision = decide_step(engine.evaluator(), node, request)  # missing now
        if decision.kind != "run":
            await self._note_decision(node, decision, result)
            return "held" if decision.notable else "skipped"
        self.in_flight[node] = InFlight(*node, "queued", engine.clock.now(), decision.reason)
        try:
            record = engine.state.record(node)
            alone = engine.crash_guard and record is not None and record.crashes > 0
            slot = await self._take_slot(node, alone)
            try:
                if self.stopping:
                    result.skipped[node] = self._not_started
                    return "skipped"
                if engine.degraded is not None:
                    result.skipped[node] = NOT_STARTED + engine.degraded.reason
                    return "skipped"
                if slot.waited:
                    # Inputs may have changed while it waited: decide on what the run reads.
                    status, decision = decide_step(engine.evaluator(), node, request)
                    if decision.kind != "run":
                        await self._note_decision(node, decision, result)
                        return "held" if decision.notable else "skipped"
                retrying = request is None and status.state == "failed"
                return await self._run(
                    node, status, decision.reason, result, slot, retrying=retrying
                )
            finally:
                slot.leave()
        finally:
            del self.in_flight[node]

    async def _take_slot(self, node: NodeKey, alone: bool) -> _Slot:
        """Enter the gate (the slot says whether it had to wait). One that waited lets go of its slot
        while inputs are claimed by other ticks meanwhile (about to change, as in
        :meth:`_claim`), then takes one again."""
        slot = await self._gate.enter(alone=alone)
        if slot.waited and (held := self._claimed_inputs(node)):
            slot.leave()
            flight = self.in_flight[node]
            self.in_flight[node] = dataclasses.replace(flight, waiting_for=held[0])
            await self._wait_for(held)  # not holding the gate: cancelled here, none to leave
            self.in_flight[node] = flight
            slot = await self._gate.enter(alone=alone)
            slot.waited = True
        return slot

    async def _claim(self, node: NodeKey) -> asyncio.Event:
        """Wait until no other tick holds this partition, and until the ticks that hold its
        inputs have let them go, then hold it.

        An input another tick is re-materializing is "about to change": deciding before it
        has would run this partition on data that is already outdated. The inputs claimed
        when it looks are waited for once: under a stream of changes (new partitions landing
        for a reader of all of them) some input is always claimed, and waiting for none would
        hold the reader back for as long as the stream lasts. One claimed after it looked is
        another change, which makes it stale again.
        """
        looked = False
        while True:
            if (claim := self._claims.get(node)) is not None:
                await claim.wait()
                continue
            held = [] if looked else self._claimed_inputs(node)
            if not held:
                claim = self._claims[node] = asyncio.Event()  # no await since the check
                return claim
            await self._wait_for(held)
            looked = True

    async def _wait_for(self, nodes: list[NodeKey]) -> None:
        for node in nodes:
            if (claim := self._claims.get(node)) is not None:
                await claim.wait()

    def _claimed_inputs(self, node: NodeKey) -> list[NodeKey]:
        """The inputs of ``node`` that ticks hold (deciding or running them)."""
        claims = self._claims
        fixed = self.engine.defs.fixed_inputs(node[0]) if node[1] is None else None
        if fixed is not None:  # most nodes: no evaluator, no lists built
            return [n for n in fixed if n in claims]
        held = [n for _, inputs in self.engine.evaluator().input_nodes(*node) for n in inputs
                if n in claims]  # fmt: skip
        # A reader of all partitions reads those present: one that another tick materializes
        # for the first time is not among them yet, and about to be.
        every = {p for p, mapping in self.engine.defs.graph.in_edges[node[0]] if mapping is _ALL}
        if every:
            seen = set(held)
            held += [n for n in claims if n[0] in every and n not in seen]
        return held

    async def _run(
        self,
        node: NodeKey,
        status: Status,
        reason: str,
        result: TickResult,
        slot: _Slot,
        *,
        retrying: bool,
    ) -> str:
        """Materialize one partition in its slot; return "materialized", "failed", "skipped"
        or "replaced" (see :meth:`_step`)."""
        engine = self.engine
        asset = engine.defs.nodes[node[0]]
        assert isinstance(asset, AssetDef)
        ev = engine.evaluator()
        code = ev.code_version(asset)
        run_id = new_run_id()
        record = engine.state.record(node) or NodeRecord()
        attempt = record.failure.attempts + 1 if retrying and record.failure else 1
        common: dict[str, Any] = {
            "code_version": code,
            "inputs": _inputs_json(status),
            "attempt": attempt,
        }
        if (binding := engine.defs.binding(node[0])) is not None:
            common["binding"] = binding
        if (checks := engine.defs.blocking_checks_version(node[0])) is not None:
            common["checks"] = checks
        if record.pending_since is not None:
            common["reflects_since"] = format_timestamp(record.pending_since)
        started = engine.event(
            EventKind.RUN_STARTED, node, run_id=run_id, payload={**common, "reason": reason}
        )
        self.in_flight[node] = InFlight(
            *node,
            "running",
            started.timestamp,
            reason,
            run_id,
            asset.timeout or engine.default_timeout,
        )
        small = await engine.small_inputs(status.inputs)
        job = Job(asset, node[1], run_id, ev.now, status.inputs, code, small,
                  _stored_source_values(engine, status.inputs))  # fmt: skip
        # On disk before the function starts: a function that kills the daemon (threads)
        # finds its run open at the next start (the crash-loop guard).
        start = RunStart(engine, started)
        try:
            return await self._started(node, start, job, common, result, slot)
        finally:
            start.close()

    async def _started(
        self,
        node: NodeKey,
        start: RunStart,
        job: Job,
        common: dict[str, Any],
        result: TickResult,
        slot: _Slot,
    ) -> str:
        engine = self.engine
        run_id = job.run_id
        flight = self.in_flight[node]
        talk = not info_dropped()
        if talk:
            _log.info("run_started", asset=node[0], partition=node[1], run_id=run_id,
                      reason=flight.reason)  # fmt: skip
        outcome: Outcome | None = None
        since = engine.observation_mark()  # a sensor's word after this is newer than the read
        try:
            outcome = await _run_guarded(engine.executor, job, flight.timeout)
            # Its function is over: another may start while this end is recorded (with two
            # slots, the loop would otherwise record two ends while the threads sit idle).
            slot.function_done()
        except anyio.get_cancelled_exc_class():
            # Stopped past the grace period (the executor has stopped the function): say so,
            # so that a run still open at the next start means the owner died mid-run.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                why = {"reason": "still running when the daemon stopped"}
                abandoned = engine.event(EventKind.RUN_ABANDONED, node, run_id=run_id, payload=why)
                with contextlib.suppress(StorageFailure):
                    await start.append_with([abandoned])
            raise
        assert outcome is not None
        if outcome.lost:
            return await self._lost_inputs(node, start, outcome, result, job)
        if outcome.gone:
            return await self._gone_sources(node, start, outcome, result)
        if outcome.unreadable:
            return await self._unreadable_sources(node, start, outcome, result)
        if outcome.storage is not None:
            # Not the function's failure: no retry is spent; recovery abandons and re-runs it.
            engine.casualties[node] = outcome.error or str(outcome.storage)
            engine.storage_failed(outcome.storage)
            result.failed[node] = outcome.error or str(outcome.storage)
            _log.error("run_failed", error=outcome.error, asset=node[0], partition=node[1],
                       run_id=run_id, storage=True)  # fmt: skip
            return "failed"
        before = engine.state.version(node)
        payload = {**common, "duration_ms": round(outcome.duration_ms, 3)}
        if outcome.inputs is not None:  # what the function really read
            payload["inputs"] = [[a, p, v] for a, p, v in outcome.inputs]
        events: list[Event]
        values: dict[NodeKey, SmallValue | None] = {}
        if outcome.ok and (outcome.small is not None or engine.keeps_small(node[0])):
            values[node] = outcome.small  # None: a file holds it now, not the log
        if outcome.ok:
            events = [
                engine.event(
                    EventKind.MATERIALIZATION,
                    node,
                    run_id=run_id,
                    data_version=outcome.data_version,
                    payload={
                        **payload,
                        "metadata": outcome.metadata,
                        "store": engine.defs.store_name(node[0]),
                    },
                )
            ]
            events += self._check_events(node, run_id, outcome)
        else:
            payload.update(error=outcome.error, traceback=outcome.traceback, where=outcome.where)
            payload.setdefault("checks", "")  # none: a blocking check added since moots it
            if outcome.stderr:
                payload["stderr"] = outcome.stderr
            events = [engine.event(EventKind.RUN_FAILED, node, run_id=run_id, payload=payload)]
        await start.append_with(events, values=values)
        await self._read_newer_objects(outcome, since)
        fields = {"asset": node[0], "partition": node[1], "run_id": run_id,
                  "duration_ms": payload["duration_ms"]}  # fmt: skip
        if outcome.ok:
            seconds = outcome.duration_ms / 1000
            self.usual[node[0]] = blend_duration(self.usual.get(node[0]), seconds)
            result.materialized.append(node)
            self._store_waits.pop(node, None)
            result.failed.pop(node, None)
            result.skipped.pop(node, None)
            changed = outcome.data_version != before
            if talk:
                _log.info("materialized", data_version=outcome.data_version, changed=changed,
                          **fields)  # fmt: skip
            for c in outcome.checks:
                if not c.passed:
                    _log.warning(
                        "check_failed", check=c.name, blocking=c.blocking, error=c.error, **fields
                    )
            if changed:
                engine.mark_children(node)
            await engine.note_unreflected([node])
            return "materialized"
        result.failed[node] = outcome.error or "failed"
        _log.error(
            "run_failed",
            error=outcome.error,
            where=outcome.where,
            attempt=common["attempt"],
            **fields,
        )
        engine.dirty.add(node)  # looked at again: a retry may be due later
        return "failed"

    async def _read_newer_objects(self, outcome: Outcome, since: int) -> None:
        """The run read an object newer than the last listing saw (written since it listed):
        that version is observed now, as the next listing would, so the source and its other
        readers do not wait for that listing (status showed the run's input as changed from
        the version it read back to the older one)."""
        engine = self.engine
        newer = [
            Observed(a, p, v)
            for a, p, v in outcome.inputs or ()
            if isinstance(engine.defs.nodes.get(a), ObjectSource)
            and engine.state.version((a, p)) not in (v, None)
        ]
        if newer:
            with contextlib.suppress(StorageFailure):  # the next listing records it then
                await engine.observe_many(newer, listed_since=since)

    def _check_events(self, node: NodeKey, run_id: str, outcome: Outcome) -> list[Event]:
        """One verdict per check the definitions declare, with its code version. A worker
        that loaded other definitions (edited on disk, not reloaded yet) may not have run one:
        it is recorded as failed, not left out, or its asset would look unjudged, and run
        again, for as long as the worker lacks it."""
        defs = self.engine.defs
        declared = {c.name: c for c in defs.checks.get(node[0], ())}
        verdicts: list[dict[str, Any]] = []
        for c in outcome.checks:
            check = declared.pop(c.name, None)
            code = None if check is None else defs.check_version(check)
            verdicts.append({"check": c.name, "passed": c.passed, "blocking": c.blocking,
                             "metadata": c.metadata, "error": c.error,
                             "code_version": code})  # fmt: skip
        for check in declared.values():
            error = "not run: the definitions the run loaded do not declare it (reload them)"
            verdicts.append({"check": check.name, "passed": False, "blocking": check.blocking,
                             "metadata": {}, "error": error,
                             "code_version": defs.check_version(check)})  # fmt: skip
        version = outcome.data_version
        return [
            self.engine.event(EventKind.CHECK, node, run_id=run_id, data_version=version, payload=p)
            for p in verdicts
        ]

    async def _lost_inputs(
        self, node: NodeKey, start: RunStart, outcome: Outcome, result: TickResult, job: Job
    ) -> str:
        """An input's stored value is gone: that input is missing again (its policy
        re-materializes it), and this run is abandoned, not failed: it spends no retry.

        Unless it was replaced rather than lost: a reader holds back no writer of its inputs,
        so one may store a newer version while the run reads (an observation, another tick's
        run). Then nothing is missing: the run is abandoned and decided again, on the new
        version."""
        engine = self.engine
        read = {(a, p): v for a, p, v in job.inputs}
        await engine.settled(outcome.lost)  # a write under way of one may say it was replaced
        seen = {n: engine.state.record(n) for n in outcome.lost}
        lost = [
            n
            for n in outcome.lost
            if engine.state.version(n) == read.get(n)
            and n not in self._claims
            and n not in engine.storing
        ]
        if lost and not outcome.lost_damaged:
            lost = await self._still_gone(lost)
        lost = [n for n in lost if held_value(engine.state.record(n)) == held_value(seen[n])]
        if lost:
            reason = f"input {outcome.error}; it must be materialized again first"
        else:
            inputs = ", ".join(node_label(*n) for n in outcome.lost)
            reason = f"input {inputs} changed while it was read; it is decided again"
        events = [engine.value_lost_event(n, "found gone when a reader loaded it") for n in lost]
        for n in lost:
            if n[0] in engine.defs.assets and self._lost_too_often(n) and (was := seen[n]):
                # It stays failed (no retry) until an input or its code changes, or it is asked.
                failed = {"code_version": was.code_version, "attempt": 1, "final": True,
                          "inputs": [[a, p, v] for a, p, v in was.inputs], "error": _LOST_AGAIN}  # fmt: skip
                events.append(
                    engine.event(EventKind.RUN_FAILED, n, run_id=new_run_id(), payload=failed)
                )
        events.append(engine.event(EventKind.RUN_ABANDONED, node, run_id=start.run_id,
                                   payload={"reason": reason}))  # fmt: skip
        written = await start.append_with(events, decided_on=seen, basis=held_value)
        lost = [(str(e.asset), e.partition) for e in written if e.kind == EventKind.VALUE_LOST]
        for gone in lost:
            _log.warning("value_lost", asset=gone[0], partition=gone[1], reader=node[0])
            engine.dirty.add(gone)
            engine.mark_children(gone)
        engine.dirty.add(node)
        result.skipped[node] = f"waiting: {reason}" if lost else reason
        return "skipped" if lost else "replaced"

    async def _gone_sources(
        self, node: NodeKey, start: RunStart, outcome: Outcome, result: TickResult
    ) -> str:
        """A file source's file (an object source's object) was not there when the run read
        it (deleted after it was observed): not the function's failure, so the run is
        abandoned and spends no retry. The deletion is recorded as a sensor would record it,
        unless the file is back or was observed meanwhile; the run is then decided again on what the log says (its input
        missing: it waits; the file back: it runs on it). Without that record, a tick with no
        sensor (the harness, `materialize` before the sensor's event) would run it again and
        again on a file that is not there."""
        engine = self.engine
        since = engine.observation_mark()  # a sensor's word after this look stands
        now = await anyio.to_thread.run_sync(engine.runner.source_versions, outcome.gone)
        gone = [n for n in outcome.gone if n in now and now[n] is None]
        if gone:
            await engine.observe_deleted(gone, listed_since=since)
        files = ", ".join(node_label(*n) for n in outcome.gone)
        what = (
            "object"
            if any(isinstance(engine.defs.nodes[k], ObjectSource) for k, _ in outcome.gone)
            else "file"
        )
        reason = (
            f"input {files}: its {what} was deleted before the run read it"
            if gone
            else f"input {files}: its {what} was replaced while the run read it; it is decided again"
        )
        _log.warning("input_file_gone", asset=node[0], partition=node[1], run_id=start.run_id,
                     error=outcome.error, back=not gone)  # fmt: skip
        abandoned = engine.event(EventKind.RUN_ABANDONED, node, run_id=start.run_id,
                                 payload={"reason": reason})  # fmt: skip
        await start.append_with([abandoned])
        engine.dirty.add(node)
        result.skipped[node] = f"waiting: {reason}" if gone else reason
        return "skipped" if gone else "replaced"

    async def _unreadable_sources(
        self, node: NodeKey, start: RunStart, outcome: Outcome, result: TickResult
    ) -> str:
        """An object source's store did not answer the run's read (down, refusing, timing
        out): not the function's failure, so the run is abandoned and spends no retry. It is
        decided again once a listing of that source works (the object sensor tells the
        engine), not at once: a store that is down would be asked again and again."""
        engine = self.engine
        if any(key in engine.defs.assets for key, _ in outcome.unreadable):
            # An asset's value in an ObjectStore: no sensor lists it to say the store is
            # back, so the run is tried again after a while, longer each time it is down.
            waits = self._store_waits.get(node, 0)
            wait = min(_STORE_RETRY_S * 2**waits, _STORE_RETRY_MAX_S)
            self._store_waits[node] = waits + 1
            engine.clockwork.timers.schedule(
                engine.clock.now() + timedelta(seconds=wait), "wake", node
            )
            reason = f"{outcome.error}; it is tried again in {wait:.0f} s"
        else:
            reason = f"{outcome.error}; it runs again once the store answers"
        _log.warning("input_store_unavailable", asset=node[0], partition=node[1],
                     run_id=start.run_id, error=outcome.error)  # fmt: skip
        abandoned = engine.event(EventKind.RUN_ABANDONED, node, run_id=start.run_id,
                                 payload={"reason": reason})  # fmt: skip
        await start.append_with([abandoned])
        for source, _ in outcome.unreadable:
            if source not in engine.defs.assets:
                engine.awaiting_store.setdefault(source, set()).add(node)
        result.skipped[node] = f"waiting: {reason}"
        return "skipped"

    async def _still_gone(self, nodes: list[NodeKey]) -> list[NodeKey]:
        """Those whose stored file does not hold the version the log records now. One that
        does went to another version and back while the run read it (A -> B -> A): the
        reader saw B (or, between a format's file and the next, none), the log says A again,
        and A is there. (Never asked of a damaged file: one damaged under a good header says
        the right version, and would be read again and again.)"""
        engine = self.engine
        gone: list[NodeKey] = []
        for node in nodes:
            asset = node[0] in engine.defs.assets
            store = engine.runner.io_for(node[0]) if asset else engine.runner.store
            version = engine.state.version(node)
            if isinstance(store, FilesystemStore) and version is not None:
                check = [(node, version)]
                if not await anyio.to_thread.run_sync(store.mismatched, check):
                    continue
            gone.append(node)
        return gone


_run_ids = random.Random()  # seeded from os.urandom, as again in a forked child
os.register_at_fork(after_in_child=_run_ids.seed)
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_V4_SET = (0x4 << 76) | (0x2 << 62)  # version 4; the RFC 4122 variant


def new_run_id() -> str:
    """A random UUID (version 4, as OpenLineage expects a run's id to be) in 32 hex digits.
    Run ids need to be unique, not secret: a generator seeded from the system's randomness
    makes them without a system call on the event loop per run (one released the GIL to the
    worker threads, and the loop waited to get it back: 2.5% of a trivial run)."""
    return f"{_run_ids.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"


class _Gate:
    """What a run holds: one of the worker slots (``max_concurrency``) while its function
    runs, and, for a run during which the daemon died (threads), the whole executor until
    its end is recorded: with no other run open, a crash can only be its own, so a bystander
    is never blamed twice. Plain methods, not a context manager: entered and left once per
    run."""

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._open = 0
        """Runs entered and not left: running, or recording their end."""
        self._alone = False
        self._changed = anyio.Event()

    async def enter(self, *, alone: bool) -> _Slot:
        """Hold a slot (and every other run out, if ``alone``). A free slot is taken without
        yielding to the loop, so nothing can have changed in between."""
        # asyncio's own primitives here and for claims: anyio's cost a run ~3% (their
        # backend is looked up at each creation and acquire), and the engine runs on asyncio.
        waited = self._slots.locked()
        await self._slots.acquire()  # no yield when a slot is free
        try:
            while self._alone or (alone and self._open):
                self._changed = anyio.Event() if self._changed.is_set() else self._changed
                await self._changed.wait()
                waited = True
        except BaseException:
            self._slots.release()
            raise
        self._open += 1
        self._alone = alone
        return _Slot(self, waited)

    def _function_done(self) -> None:
        self._slots.release()

    def _left(self) -> None:
        self._open -= 1
        self._alone = False
        self._changed.set()


class _Slot:
    """One run's hold on the gate."""

    __slots__ = ("gate", "running", "waited")

    def __init__(self, gate: _Gate, waited: bool) -> None:
        self.gate = gate
        self.waited = waited
        """It had to wait for the slot (its inputs may have changed meanwhile)."""
        self.running = True

    def function_done(self) -> None:
        """The function returned: its slot may run another function."""
        if self.running:
            self.running = False
            self.gate._function_done()

    def leave(self) -> None:
        """The run is over (its end recorded, or it never started)."""
        self.function_done()
        self.gate._left()


async def _run_guarded(executor: Executor, job: Job, limit: timedelta | None) -> Outcome:
    """The executor's outcome; a bug in the executor itself fails this run, not the daemon."""
    started = time.monotonic()
    try:
        return await executor.run(job, limit)
    except Exception as exc:
        _log.exception("executor_failed", asset=job.asset.key, partition=job.partition,
                       run_id=job.run_id)  # fmt: skip
        return Outcome(
            ok=False, duration_ms=(time.monotonic() - started) * 1000,
            error=f"the executor failed: {type(exc).__name__}: {exc}",
        )  # fmt: skip


def _stored_source_values(engine: Engine, inputs: InputVersions) -> frozenset[NodeKey]:
    """The inputs of plain sources whose observation stored a value (see ``Job.stored``)."""
    nodes, records = engine.defs.nodes, engine.state.records
    return frozenset(
        (a, p)
        for a, p, _ in inputs
        if type(nodes[a]) is SourceDef
        and (record := records.get((a, p))) is not None
        and record.store is not None
    )
