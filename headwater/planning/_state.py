"""The state of every asset partition, reduced from events. Pure and rebuilt from the log.

A :class:`NodeRecord` is what the event log's ``current_state`` table keeps per
``(asset, partition)``; :meth:`State.reduce` computes the record an event leads to without
changing anything, so the log can write event and record in one transaction before the state
takes the record.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from sys import intern
from typing import Any

import orjson

from headwater._events import Event, EventKind, format_timestamp, parse_timestamp
from headwater._records import record_class, replace

__all__ = [
    "CheckRecord",
    "Failure",
    "InputVersions",
    "Memo",
    "NodeKey",
    "NodeRecord",
    "Schedule",
    "State",
    "replace",
]

NodeKey = tuple[str, str | None]
InputVersions = tuple[tuple[str, str | None, str], ...]
"""Sorted ``(upstream key, upstream partition, data version)`` triples."""


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _dt(value: Any) -> datetime | None:
    return None if value is None else parse_timestamp(value)


def inputs_from_json(raw: Iterable[Sequence[Any]]) -> InputVersions:
    return tuple(sorted((str(a), None if p is None else str(p), str(v)) for a, p, v in raw))


class Memo:
    """Equal strings and instants shared between the records of one load: a version appears
    in its own record and in each reader's inputs, and most records of a state directory share
    a handful of code versions and timestamps."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.instants: dict[str, datetime] = {}

    def text(self, value: str) -> str:
        return self.texts.setdefault(value, value)

    def when(self, value: str | None) -> datetime | None:
        if value is None:
            return None
        parsed = self.instants.get(value)
        if parsed is None:
            parsed = self.instants[value] = parse_timestamp(value)
        return parsed


@dataclass(frozen=True, slots=True)
class Failure:
    at: datetime
    run_id: str
    error: str
    code_version: str | None
    inputs: InputVersions
    attempts: int
    where: str | None = None
    """``file:line`` in the user's code where it raised."""
    final: bool = False
    """No retry: the daemon itself died running it, again and again (the crash-loop guard)."""
    binding: str | None = None
    """Which parameter received which input (``Definitions.binding``); None: not recorded."""
    checks: str | None = None
    """The blocking checks the run had (``Definitions.blocking_checks_version``, "" for
    none); None: recorded before these were (not compared)."""


@dataclass(frozen=True, slots=True)
class CheckRecord:
    name: str
    passed: bool
    blocking: bool
    data_version: str | None
    """The data version the check judged."""
    error: str | None = None
    code_version: str | None = None
    """The check's fingerprint when it judged (``Definitions.check_version``; None: recorded
    before these were)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Per-asset clock bookkeeping: kept in its own table, not as events, because a cron tick
    that finds nothing to do must not make the log grow with time."""

    first_seen: datetime
    """When the engine first evaluated the asset: cron ticks and SLA windows count from here."""
    handled_through: datetime
    """The latest cron tick already evaluated."""


@record_class
class NodeRecord:
    version: str | None = None
    """The current data version: latest observed (sources) or materialized (assets)."""
    changed_at: datetime | None = None
    """When ``version`` last changed."""
    materialized_at: datetime | None = None
    run_id: str | None = None
    code_version: str | None = None
    inputs: InputVersions = ()
    failure: Failure | None = None
    running: str | None = None
    decision: tuple[str, str] | None = None
    checks: tuple[CheckRecord, ...] = ()
    """Results of the asset's checks on its current data."""
    pending_since: datetime | None = None
    """The first upstream change this partition does not reflect yet (for ``max_lag``)."""
    late: bool = False
    """Whether a ``freshness_violated`` was recorded and not yet recovered."""
    lost_at: datetime | None = None
    """When its stored value was found gone (it is missing again until re-materialized)."""
    appeared_at: datetime | None = None
    """When it last went from having no version to having one (its existence began)."""
    crashes: int = 0
    """Runs in a row during which the daemon died (threads executor): the crash-loop guard."""
    binding: str | None = None
    """How the materialization's parameters received their inputs (``Definitions.binding``).
    None: nothing could be swapped unseen then, or written before bindings were recorded
    (either way, not compared)."""
    store: str | None = None
    """Where the materialization stored its value (``Definitions.store_name``: "" for the
    state directory). None: recorded before stores were (not compared). For a plain source,
    "" when its observation stored a value; None when it had a version only (or was
    recorded before this was: its value is read if there, else it has none)."""

    def to_json(self) -> str:
        """Compact: fields at their default are left out (``from_json`` restores them)."""
        out: dict[str, Any] = {}
        for name, value in (
            ("version", self.version),
            ("changed_at", _ts(self.changed_at)),
            ("materialized_at", _ts(self.materialized_at)),
            ("run_id", self.run_id),
            ("code_version", self.code_version),
            ("inputs", self.inputs),
            ("running", self.running),
            ("decision", self.decision),
            ("checks", [[c.name, c.passed, c.blocking, c.data_version, c.error, c.code_version]
                        for c in self.checks]),
            ("pending_since", _ts(self.pending_since)),
            ("late", self.late),
            ("lost_at", _ts(self.lost_at)),
            ("appeared_at", _ts(self.appeared_at)),
            ("crashes", self.crashes),
            ("binding", self.binding),
        ):  # fmt: skip
            if value:
                out[name] = value
        if self.store is not None:  # "" (the state directory) is worth keeping
            out["store"] = self.store
        if (failure := self.failure) is not None:
            out["failure"] = {
                "at": _ts(failure.at),
                "run_id": failure.run_id,
                "error": failure.error,
                "code_version": failure.code_version,
                "inputs": failure.inputs,
                "attempts": failure.attempts,
                "where": failure.where,
                "final": failure.final,
                "binding": failure.binding,
                "checks": failure.checks,
            }
        return orjson.dumps(out).decode()

    @classmethod
    def from_json(cls, text: str, memo: Memo | None = None) -> NodeRecord:
        """Raises ValueError (or TypeError) for a record of the wrong shape or types.

        Runs 100k times when a state directory of 100k partitions opens: plain loops and
        C calls, no per-record closures; the usual record (a version, two instants, a run,
        a code version and inputs) takes only the first branch of each test."""
        raw = orjson.loads(text)
        if type(raw) is not dict:
            raise ValueError("the record is not a JSON object")
        memo = memo or Memo()
        texts = memo.texts.setdefault
        get = raw.get
        version, run_id, code, running = (
            get("version"), get("run_id"), get("code_version"), get("running")
        )  # fmt: skip
        for name, value in (("version", version), ("run_id", run_id), ("code_version", code),
                            ("running", running)):  # fmt: skip
            if value is not None and type(value) is not str:
                raise ValueError(f"{name} is {type(value).__name__}, not text")
        inputs: InputVersions = ()
        if (raw_inputs := get("inputs")) is not None:
            out = []
            for a, p, v in raw_inputs:
                if type(a) is not str or type(v) is not str or not (p is None or type(p) is str):
                    a, p, v = str(a), None if p is None else str(p), str(v)
                out.append((texts(a, a), p, texts(v, v)))
            out.sort()
            inputs = tuple(out)
        f = get("failure")
        decision = get("decision")
        checks = get("checks")
        when = memo.when
        return cls(
            None if version is None else texts(version, version),
            when(get("changed_at")),
            when(get("materialized_at")),
            run_id,
            None if code is None else texts(code, code),
            inputs,
            None
            if f is None
            else Failure(
                at=parse_timestamp(f["at"]),
                run_id=f["run_id"],
                error=f["error"],
                code_version=f.get("code_version"),
                inputs=inputs_from_json(f.get("inputs", ())),
                attempts=int(f.get("attempts", 1)),
                where=f.get("where"),
                final=bool(f.get("final", False)),
                binding=_interned(f.get("binding")),
                checks=f.get("checks"),
            ),
            running,
            None if decision is None else (str(decision[0]), str(decision[1])),
            () if checks is None else tuple(_check_from_json(c) for c in checks),
            when(get("pending_since")),
            bool(get("late", False)),
            when(get("lost_at")),
            when(get("appeared_at")),
            int(get("crashes", 0)),
            None if (binding := get("binding")) is None else intern(str(binding)),
            None if (store := get("store")) is None else intern(str(store)),
        )


def _check_from_json(raw: list[Any]) -> CheckRecord:
    name, passed, blocking, version, error, *rest = raw  # a code version since 2026-12
    return CheckRecord(str(name), bool(passed), bool(blocking), version, error, *rest[:1])


def _interned(value: object) -> str | None:
    """A recorded binding or store, interned as the definitions' are: equal ones are one
    string."""
    return None if value is None else intern(str(value))


def _appeared(old: NodeRecord, event: Event) -> datetime | None:
    if event.data_version is None:
        return None
    return event.timestamp if old.version is None else old.appeared_at


class State:
    """Every record, plus indexes the planner needs: present partitions and dynamic keys."""

    def __init__(self) -> None:
        self.records: dict[NodeKey, NodeRecord] = {}
        self.present: dict[str, dict[str, None]] = {}
        """asset -> partitions that currently have a version (insertion-ordered set)"""
        self.dynamic: dict[str, dict[str, datetime | None]] = {}
        """name -> key -> when it was added (None: before headwater kept that), in order"""
        self.schedules: dict[str, Schedule] = {}
        self.puts = 0
        """Records put so far: what a memo over the records is valid for."""

    def record(self, node: NodeKey) -> NodeRecord | None:
        return self.records.get(node)

    def copy(self) -> State:
        """A copy to change without touching this one (records are immutable: shared)."""
        out = State()
        out.records = dict(self.records)
        out.present = {a: dict(p) for a, p in self.present.items()}
        out.dynamic = {n: dict(k) for n, k in self.dynamic.items()}
        out.schedules = dict(self.schedules)
        return out

    def version(self, node: NodeKey) -> str | None:
        rec = self.records.get(node)
        return None if rec is None else rec.version

    def present_partitions(self, asset: str) -> list[str]:
        return sorted(self.present.get(asset, ()))

    def dynamic_keys(self, name: str) -> Collection[str]:
        """The keys in the order they were added (a view: membership is O(1), nothing copied)."""
        return self.dynamic.get(name, {}).keys()

    def put(self, node: NodeKey, record: NodeRecord) -> None:
        self.records[node] = record
        self.puts += 1
        asset, partition = node
        if partition is not None:
            parts = self.present.setdefault(asset, {})
            if record.version is None:
                parts.pop(partition, None)
            else:
                parts[partition] = None

    def add_dynamic(self, name: str, keys: Iterable[str], at: datetime | None = None) -> list[str]:
        """Add keys, added at ``at``; return the ones that are new."""
        known = self.dynamic.setdefault(name, {})
        new = [k for k in dict.fromkeys(keys) if k not in known]
        for k in new:
            known[k] = at
        return new

    def dynamic_added_at(self, name: str, key: str) -> datetime | None:
        """When the key was added to the dynamic partitions ``name`` (None: not known)."""
        return self.dynamic.get(name, {}).get(key)

    def reduce(self, event: Event, base: NodeRecord | None = None) -> NodeRecord | None:
        """The record ``event`` leads to for its node (None for events about no node).

        ``base`` replaces the stored record, to reduce several events of one node in a row.
        """
        if event.asset is None:
            return None
        old = base or self.records.get((event.asset, event.partition)) or NodeRecord()
        kind = event.kind
        payload = event.payload
        if kind == EventKind.OBSERVATION:
            changed = event.data_version != old.version
            return replace(
                old,
                version=event.data_version,
                changed_at=event.timestamp if changed else old.changed_at,
                appeared_at=_appeared(old, event),
                store=_interned(payload.get("store")),  # a plain source's value: where
            )
        if kind == EventKind.RUN_STARTED:
            return replace(
                old, running=event.run_id, decision=("run", str(payload.get("reason", "")))
            )
        if kind == EventKind.MATERIALIZATION:
            changed = event.data_version != old.version
            return replace(
                old,
                version=event.data_version,
                changed_at=event.timestamp if changed else old.changed_at,
                materialized_at=event.timestamp,
                run_id=event.run_id,
                code_version=payload.get("code_version"),
                inputs=inputs_from_json(payload.get("inputs", ())),
                binding=_interned(payload.get("binding")),
                store=_interned(payload.get("store")),
                failure=None,
                running=None,
                checks=(),
                pending_since=None,
                lost_at=None,
                appeared_at=_appeared(old, event),
                crashes=0,
            )
        if kind == EventKind.VALUE_LOST:
            return replace(
                old,
                version=None,
                changed_at=event.timestamp,
                materialized_at=None,
                inputs=(),
                binding=None,
                checks=(),
                lost_at=event.timestamp,
                appeared_at=None,
            )
        if kind == EventKind.RUN_FAILED:
            inputs = inputs_from_json(payload.get("inputs", ()))
            code = payload.get("code_version")
            previous = old.failure
            binding = _interned(payload.get("binding"))
            checks = payload.get("checks")
            ran = (inputs, code, binding, checks)
            same = previous is not None and ran == (
                previous.inputs, previous.code_version, previous.binding, previous.checks
            )  # fmt: skip
            attempt = payload.get("attempt")
            if not isinstance(attempt, int):
                attempt = previous.attempts + 1 if same and previous is not None else 1
            failure = Failure(
                at=event.timestamp,
                run_id=event.run_id or "",
                error=str(payload.get("error", "")),
                code_version=code,
                inputs=inputs,
                attempts=attempt,
                where=payload.get("where"),
                final=bool(payload.get("final", False)),
                binding=binding,
                checks=checks,
            )
            return replace(old, failure=failure, running=None, crashes=0)
        if kind == EventKind.RUN_ABANDONED:
            crashes = old.crashes + 1 if payload.get("crash") else old.crashes
            return replace(old, running=None, crashes=crashes)
        if kind == EventKind.DECISION:
            return replace(old, decision=(str(payload["decision"]), str(payload["reason"])))
        if kind == EventKind.CHECK:
            result = CheckRecord(
                name=str(payload["check"]),
                passed=bool(payload["passed"]),
                blocking=bool(payload.get("blocking", False)),
                data_version=event.data_version,
                error=payload.get("error"),
                code_version=payload.get("code_version"),
            )
            others = tuple(c for c in old.checks if c.name != result.name)
            return replace(old, checks=(*others, result))
        if kind == EventKind.FRESHNESS_VIOLATED:
            return replace(old, late=True)
        if kind == EventKind.FRESHNESS_RECOVERED:
            return replace(old, late=False)
        return None
