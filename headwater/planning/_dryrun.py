"""A dry run: what the next tick would run, in order and why, without running anything. Pure.

It plays a tick on a copy of the state: the planner seeds what is dirty (everything, as a
daemon starting now would see it, or what the given source changes reach), and each step is
decided as the engine decides it, once everything upstream of it is (one at a time, in
topological order: the engine's wavefront gives the same guarantee to concurrent steps). A
step that would run is assumed to produce a new data version (so its readers are reached) and
to pass its checks: the steps a change reaches only through others are marked as ones early
cutoff may stop, should an upstream step produce the data it had before.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import overload

from headwater._collector import collector_paused
from headwater._errors import did_you_mean
from headwater._records import record_class, replace
from headwater.definitions import Definitions, SourceDef
from headwater.planning._facts import CHECKED, PLAIN_STEP, UNKNOWN, VARIES, Facts, facts_of
from headwater.planning._freshness import (
    behind_until,
    carry_pending_since,
    freshness_status,
    held_above,
    never_arrived,
    stuck_below,
    unreflected_since,
)
from headwater.planning._lazy import pull
from headwater.planning._planner import decide_step, plan
from headwater.planning._state import CheckRecord, InputVersions, NodeKey, NodeRecord, State
from headwater.planning._status import (
    CHANGES_SHOWN,
    MISSING,
    Evaluator,
    input_changed,
    node_label,
)
from headwater.planning._wavefront import reacting_children

__all__ = ["DryRun", "PlannedStep", "PlannedSteps", "SlaRisk", "dry_run", "put_observed"]


@record_class
class PlannedStep:
    asset: str
    partition: str | None
    reason: str
    may_stop: bool
    """It runs only because of other planned steps (reached through them, or a seed that is
    fresh without them): early cutoff stops it if they produce the data they had before."""


class PlannedSteps(Sequence[PlannedStep]):
    """The steps of a dry run in columns, each :class:`PlannedStep` built when read: 97k step
    objects were all in the cyclic collector's youngest generation when a plan at 100k ended,
    and the collection that followed walked them (~0.6 µs a step, a tenth of the plan)."""

    __slots__ = ("assets", "partitions", "reasons", "stops")

    def __init__(self) -> None:
        self.assets: list[str] = []
        self.partitions: list[str | None] = []
        self.reasons: list[str] = []
        self.stops = bytearray()

    def add(self, asset: str, partition: str | None, reason: str, may_stop: bool) -> None:
        self.assets.append(asset)
        self.partitions.append(partition)
        self.reasons.append(reason)
        self.stops.append(may_stop)

    def __len__(self) -> int:
        return len(self.assets)

    @overload
    def __getitem__(self, index: int) -> PlannedStep: ...
    @overload
    def __getitem__(self, index: slice) -> list[PlannedStep]: ...
    def __getitem__(self, index: int | slice) -> PlannedStep | list[PlannedStep]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return PlannedStep(
            self.assets[index], self.partitions[index], self.reasons[index], bool(self.stops[index])
        )

    def __iter__(self) -> Iterator[PlannedStep]:
        for asset, partition, reason, stop in zip(
            self.assets, self.partitions, self.reasons, self.stops, strict=True
        ):
            yield PlannedStep(asset, partition, reason, bool(stop))

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same steps (a list of them, say)."""
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlannedSteps({list(self)!r})"


@dataclass(frozen=True, slots=True)
class SlaRisk:
    asset: str
    partition: str | None
    late: bool
    deadline: datetime | None
    reason: str


@dataclass(slots=True)
class DryRun:
    steps: PlannedSteps = field(default_factory=PlannedSteps)
    held: dict[NodeKey, str] = field(default_factory=dict)
    """Partitions the tick looks at and does not run, with why (waiting, manual, lazy...)."""
    risks: list[SlaRisk] = field(default_factory=list)


def _carry(ev: Evaluator, node: NodeKey, origin: datetime, touched: set[NodeKey]) -> None:
    """As the engine does on a new version: readers with a ``max_lag`` downstream are behind
    since ``origin``."""
    if not ev.defs.lag_tracked:
        return
    records: dict[NodeKey, NodeRecord] = {}
    touched.update(carry_pending_since(ev, node, origin, records))
    for reader, record in records.items():
        ev.state.put(reader, record)


def _resume_behind(ev: Evaluator, tracked: list[NodeKey]) -> None:
    """What the engine's first tick does before it plans (``Engine.note_unreflected``, then
    the ``behind`` timers of ``Clockwork.resume_behind`` that are due): partitions that do
    not reflect an input remember its change, and the assets below a stuck one are behind
    since its change, in the order the timers would expire."""
    state = ev.state
    for node, since in unreflected_since(ev, tracked).items():
        state.put(node, replace(state.records[node], pending_since=since))
    due = sorted(
        (at, node)
        for node in tracked
        if (at := behind_until(ev, node)) is not None and at <= ev.now
    )
    for _, node in due:
        pending = state.records[node].pending_since
        if pending is None or behind_until(ev, node) is None:  # released by an earlier push
            continue
        updates, _ = stuck_below(ev, node, pending)
        for below, at in updates.items():
            state.put(below, replace(state.record(below) or NodeRecord(), pending_since=at))


def put_observed(state: State, node: NodeKey, version: str | None, now: datetime) -> None:
    """Put into ``state`` what an observation of ``version`` at ``now`` leaves (for a dry
    run: nothing is recorded)."""
    old = state.record(node) or NodeRecord()
    appeared = old.appeared_at if old.version is not None else now
    state.put(node, replace(old, version=version, changed_at=now, appeared_at=appeared))


def dry_run(
    defs: Definitions,
    state: State,
    now: datetime,
    *,
    changed: Iterable[NodeKey] | None = None,
    durations: Mapping[str, float] | None = None,
) -> DryRun:
    """The tick that would run now (``changed=None``: every partition looked at, as a daemon
    starting now does), or right after the sources in ``changed`` got new versions."""
    with collector_paused():  # a record, a step and a status per step, none in a cycle
        return _dry_run(defs, state, now, changed, durations)


def _dry_run(
    defs: Definitions,
    state: State,
    now: datetime,
    changed: Iterable[NodeKey] | None,
    durations: Mapping[str, float] | None,
) -> DryRun:
    sim = state.copy()
    out = DryRun()
    ev = Evaluator(defs, sim, now, durations)  # a view: it sees each change made to ``sim``
    touched: set[NodeKey] = set()
    if changed is None:
        dirty = {(key, p) for key in defs.assets for p in ev.partitions(key)}
        if lagging := defs.lag_tracked:  # as the engine's first tick: their lag counts since
            _resume_behind(ev, [n for n in sim.records if n[0] in lagging])
    else:
        dirty = set()
        for n, node in enumerate(changed):
            put_observed(sim, node, f"(new {n})", now)
        for node in changed:
            dirty.update(ev.children(node))
            _carry(ev, node, now, touched)
    current = plan(ev, dirty)
    for node, decision in current.decisions.items():
        if decision.notable:
            out.held[node] = decision.reason
    seeds = set(current.steps)
    before = Evaluator(defs, sim.copy(), now, durations) if current.deferred else None
    # One step at a time, in topological order: each is decided once everything upstream of
    # it is, as the engine's wavefront ensures for steps that run concurrently. The queue
    # holds topological places, plain integers: an unpartitioned node is its asset's place,
    # the partitions of a partitioned one wait in ``parted`` (in key order, as
    # ``topological_key`` sorts them). A step only ever reaches places after its own, so
    # what is taken from the queue never grows smaller, and a place taken is done with.
    facts = facts_of(defs)
    keys = facts.keys
    order = defs.graph.order
    records = sim.records
    tracked = bool(defs.lag_tracked)
    queue: list[int] = []
    reached = bytearray(len(keys))
    """Per place, whether its unpartitioned node was reached."""
    parted: dict[int, set[str]] = {}
    _reach(seeds, order, queue, reached, parted)
    planned: list[str | None] = [None] * len(keys)
    """The version each unpartitioned step planned so far produces, by place: what the
    plain steps below it read."""
    unwritten: list[int] = []
    """The places of plain steps planned whose record is not in ``sim`` yet: written before
    anything else reads ``sim``, so a plan of plain steps alone builds none of them. Their
    records are as planned until then: a plain step's inputs are planned before it."""
    made = 0
    last = -1
    flags = facts.flags
    reach_at, reach_n, reached_places = facts.reach_at, facts.reach_n, facts.reached
    steps = out.steps
    # The columns' appends, bound once: four of them cost less than a step object.
    step_assets, step_partitions = steps.assets.append, steps.partitions.append
    step_reasons, step_stops = steps.reasons.append, steps.stops.append
    while queue:
        place = heapq.heappop(queue)
        if place == last:  # reached both as a node and as partitions (none are both)
            continue
        last = place
        key = keys[place]
        partitions = parted.pop(place, None)
        if (
            (flags[place] or facts.make(place)) & PLAIN_STEP
            and partitions is None
            and not tracked  # else its run carries lag to its readers' records
            and (reasons := _plain_status(ev, facts, place, planned)) is not None
        ):
            if not reasons:
                continue  # fresh: eager idles, and nothing its readers can see
            node = (key, None)
            # Stale, so not missing: early cutoff may stop it, as below. Nothing holds it
            # back: it runs, for what decide_eagerly says, its reasons joined.
            may_stop = node not in seeds or (
                before is not None and node in current.deferred and not _on_its_own(before, node)
            )
            step_assets(key)
            step_partitions(None)
            step_reasons("; ".join(reasons))
            step_stops(may_stop)
            made += 1
            planned[place] = f"(planned {made})"
            unwritten.append(place)
            if (n := reach_n[place]) == UNKNOWN:
                n = facts.reach(place)
            if n != VARIES:
                at = reach_at[place]
                for child in reached_places[at : at + n]:  # as _reach does, for the usual step
                    if not reached[child]:
                        reached[child] = 1
                        heapq.heappush(queue, child)
            else:
                _write(defs, facts, sim, unwritten, planned, now)
                _reach(reacting_children(ev, node), order, queue, reached, parted)
            continue
        _write(defs, facts, sim, unwritten, planned, now)
        todo: tuple[NodeKey, ...] | list[NodeKey] = ((key, None),)
        if partitions is not None:
            todo = [(key, p) for p in sorted(partitions)]
            if reached[place]:
                todo.insert(0, (key, None))
        for node in todo:
            status, decision = decide_step(ev, node, None)
            if decision.kind == "run":
                # Early cutoff stops a step only if it has data to keep: a missing one runs
                # whatever its inputs produce.
                may_stop = status.state != MISSING and (
                    node not in seeds
                    or (
                        before is not None
                        and node in current.deferred
                        and not _on_its_own(before, node)
                    )
                )
                steps.add(*node, decision.reason, may_stop)
                old = records.get(node) or _NO_RECORD
                made += 1
                behind: datetime | None = None
                if tracked:
                    _carry(ev, node, old.pending_since or now, touched)
                    if held_above(ev, node) is not None:
                        behind = old.pending_since  # as the engine: it ran for another input
                version = f"(planned {made})"
                if node[1] is None:
                    planned[place] = version
                done = _materialized(defs, facts, place, node, old, status.inputs, version, now)
                sim.put(node, done if behind is None else replace(done, pending_since=behind))
            elif decision.notable:
                out.held[node] = decision.reason
            else:
                continue  # nothing its readers can see
            if node[1] is None and (n := facts.reach(place)) != VARIES:
                at = reach_at[place]
                for child in reached_places[at : at + n]:  # as _reach does, for the usual step
                    if not reached[child]:
                        reached[child] = 1
                        heapq.heappush(queue, child)
            else:
                _reach(reacting_children(ev, node), order, queue, reached, parted)
    if out.held or defs.sla_holders:  # else _risks reads nothing: none to write
        _write(defs, facts, sim, unwritten, planned, now)
        out.risks = _risks(ev, out, touched)
    return out


def _plain_status(
    ev: Evaluator, facts: Facts, place: int, planned: Sequence[str | None]
) -> list[str] | None:
    """What :meth:`Evaluator.status` says of a plain step (see ``_facts.PLAIN``) that has
    materialized, whose last run did not fail and whose inputs are all there, read from
    ``planned`` before the state: its reasons to be stale (none: fresh). None for
    any other step: the evaluator decides it. Its inputs are those :func:`_plain_inputs`
    gives."""
    records = ev.state.records
    keys = facts.keys
    key = keys[place]
    old = records.get((key, None))
    if old is None or old.failure is not None or old.materialized_at is None:
        return None
    at = facts.inputs_at[place]
    ups = facts.inputs[at : at + facts.inputs_n[place]]
    recorded = old.inputs
    # The usual step: only its inputs' versions changed. They are compared as they are
    # read, with no tuple built for the inputs (it would be thrown away: nothing reads the
    # record of a plain step unless a plan needs the state, and then _write builds it).
    judged = (
        len(recorded) == len(ups)
        and len(ups) <= CHANGES_SHOWN + 1
        and ev.judged_by_inputs(facts, place, old)
    )
    reasons: list[str] = []
    for n, up in enumerate(ups):
        parent = keys[up]
        version = planned[up]
        if version is None:
            up_record = records.get((parent, None))
            if up_record is None or (version := up_record.version) is None:
                return None
            if up_record.failure is not None:
                return None
        if judged:
            was_key, was_partition, was = recorded[n]
            if was_key != parent or was_partition is not None:
                judged = False  # reshaped: the full look names what changed
            elif was != version:
                reasons.append(input_changed(parent, was, version))
    if judged:
        return reasons
    return ev.stale_reasons(key, place, old, _plain_inputs(facts, place, records, planned))


def _plain_inputs(
    facts: Facts,
    place: int,
    records: Mapping[NodeKey, NodeRecord],
    planned: Sequence[str | None],
) -> InputVersions:
    """The inputs of the plain step at ``place``, each as planned or else as recorded (every
    one there: :func:`_plain_status` checked it)."""
    keys = facts.keys
    at = facts.inputs_at[place]
    return tuple(
        (keys[up], None, planned[up] or records[(keys[up], None)].version)  # type: ignore[misc]
        for up in facts.inputs[at : at + facts.inputs_n[place]]
    )


def _materialized(
    defs: Definitions,
    facts: Facts,
    place: int,
    node: NodeKey,
    old: NodeRecord,
    inputs: InputVersions,
    version: str,
    now: datetime,
) -> NodeRecord:
    """What a planned run's materialization leaves (as State.reduce does), built in one
    call; it passes its checks."""
    return NodeRecord(
        version=version,
        changed_at=now,
        materialized_at=now,
        run_id=old.run_id,
        code_version=facts.code[place],
        inputs=inputs,
        decision=old.decision,
        checks=_passed(defs, node[0], version) if facts.flags[place] & CHECKED else (),
        late=old.late,
        appeared_at=old.appeared_at if old.version is not None else now,
        binding=facts.binding[place],
        store=facts.store[place],
    )


def _write(
    defs: Definitions,
    facts: Facts,
    sim: State,
    unwritten: list[int],
    planned: Sequence[str | None],
    now: datetime,
) -> None:
    """Put the records of the plain steps planned so far (their places) into ``sim``."""
    keys = facts.keys
    records = sim.records
    for place in unwritten:
        node = (keys[place], None)
        inputs = _plain_inputs(facts, place, records, planned)
        version = planned[place]
        assert version is not None
        sim.put(node, _materialized(defs, facts, place, node, records[node], inputs, version, now))
    unwritten.clear()


_NO_RECORD = NodeRecord()


def _reach(
    nodes: Iterable[NodeKey],
    order: Mapping[str, int],
    queue: list[int],
    reached: bytearray,
    parted: dict[int, set[str]],
) -> None:
    """Queue the nodes not reached yet."""
    for key, partition in nodes:
        place = order[key]
        if partition is None:
            if reached[place]:
                continue
            reached[place] = 1
        elif (known := parted.get(place)) is not None:
            known.add(partition)
            continue
        else:
            parted[place] = {partition}
        heapq.heappush(queue, place)


def _passed(defs: Definitions, key: str, version: str) -> tuple[CheckRecord, ...]:
    """A planned run passes its checks (the plan assumes it): its readers do not wait for
    a verdict on the data it is planned to produce."""
    blocking = defs.blocking_checks(key)
    return tuple(
        CheckRecord(c.name, True, c.name in blocking, version, None, defs.check_version(c))
        for c in defs.checks[key]
    )


def _on_its_own(before: Evaluator, node: NodeKey) -> bool:
    """Whether a seed that waited for the steps upstream of it runs whatever they produce:
    it would run on the state before any of them (a changed source it reads, its code)."""
    return decide_step(before, node, None)[1].kind == "run"


def _risks(ev: Evaluator, run: DryRun, touched: set[NodeKey]) -> list[SlaRisk]:
    """SLA holders the plan touches (runs, holds back, or leaves behind its changes) that are
    late after it, or will be by a deadline."""
    out: list[SlaRisk] = []
    seen: set[NodeKey] = set()
    for node in run.held:  # held back with a change to pass on: the SLA it leaves behind
        status = ev.status(*node) if ev.exists(*node) else None
        if status is None or status.state not in ("missing", "stale", "failed"):
            continue
        if never_arrived(ev.state.record(node)):
            continue  # its readers are not late by max_lag: an input they read never came
        need = pull(ev, node, status)
        if need is not None and need.node not in seen:
            seen.add(need.node)
            late = ev.now >= need.deadline
            why = (
                f"{need.reason}: late at {need.deadline.isoformat()} unless the change "
                f"{node_label(*node)} holds back reaches it"
            )
            out.append(SlaRisk(*need.node, late, need.deadline, why))
    holders = ev.defs.sla_holders
    if not holders:  # most graphs: no walk over every planned step
        return out
    planned = zip(run.steps.assets, run.steps.partitions, strict=True)
    nodes = [*planned, *run.held, *sorted(touched, key=str)]
    for node in dict.fromkeys(n for n in nodes if n[0] in holders):
        if node in seen or not ev.exists(*node):
            continue
        fs = freshness_status(ev, *node)
        if fs is None or (not fs.late and fs.deadline is None):
            continue
        reason = (
            "; ".join(fs.reasons)
            if fs.late or fs.deadline is None
            else (f"late at {fs.deadline.isoformat()}")
        )
        out.append(SlaRisk(*node, fs.late, fs.deadline, reason))
    return out


def changed_node(defs: Definitions, spec: str) -> NodeKey:
    """``SOURCE`` or ``SOURCE:PARTITION`` as a node; ValueError naming what is wrong."""
    key, colon, partition = spec.partition(":")
    if colon and not partition:
        raise ValueError(f"--changed {spec!r}: no partition after ':' (SOURCE or SOURCE:PARTITION)")
    node = defs.nodes.get(key)
    if not isinstance(node, SourceDef):
        what = (
            "an asset; --changed names sources"
            if node is not None
            else "not defined" + did_you_mean(key, defs.sources)
        )
        raise ValueError(f"--changed {spec!r}: {key!r} is {what}")
    if node.partitions is None and partition:
        raise ValueError(f"--changed {spec!r}: source {key!r} is not partitioned")
    if node.partitions is not None and not partition:
        raise ValueError(
            f"--changed {spec!r}: source {key!r} is partitioned; name one as {key}:PARTITION"
        )
    return key, partition or None


def label(step: PlannedStep) -> str:
    return node_label(step.asset, step.partition)
