"""``replay``: re-decide a recorded history under other definitions, on the virtual clock.

The recorded log says what came from outside: sources' versions over time, dynamic partition
keys, and explicit requests (``materialize``/``backfill``). Those are fed, at their recorded
instants, to the real engine on a virtual clock (the Harness), with each asset's function
replaced by a stand-in that runs nothing: it gives the outcome the recorded history had for the
same asset partition, code version and input versions (in order, when the same inputs ran more
than once), given to the same parameters (its binding), and a new data version when the
history never ran it so. Policies, mappings, SLAs, retries and early cutoff are the engine's
own. The result compares, per asset, the runs and
the SLA violations that did happen with those that would have.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from headwater._errors import HeadwaterError
from headwater._events import Event, EventKind
from headwater.definitions import AssetDef, Definitions, source
from headwater.definitions._bindings import binding_changes
from headwater.definitions._values import Output
from headwater.execution._context import Context

__all__ = ["AssetReplay", "ReplayReport", "replay"]

_Inputs = tuple[tuple[str, str | None, str], ...]
_Key = tuple[str, str | None, str | None, _Inputs]
_Outcome = tuple[str | None, str | None]
"""(data version, None) for a materialization, (None, error) for a failure."""


class ReplayedFailure(Exception):
    """The recorded history had this run fail."""


@dataclass(slots=True)
class AssetReplay:
    asset: str
    runs_did: int = 0
    runs_would: int = 0
    violations_did: int = 0
    violations_would: int = 0
    late_did: timedelta = timedelta(0)
    late_would: timedelta = timedelta(0)


@dataclass(slots=True)
class ReplayReport:
    start: datetime | None
    end: datetime | None
    events: int
    assets: dict[str, AssetReplay] = field(default_factory=dict)
    runs_would: list[tuple[str, str | None, datetime]] = field(default_factory=list)
    """Every run the replay started: asset, partition, when."""
    skipped: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Recorded changes and requests the new definitions cannot take, by key: how many, and
    why the first one could not."""
    dropped: list[str] = field(default_factory=list)
    """Assets that ran in the history but that the new definitions do not hold."""


def _inputs(payload: Mapping[str, Any]) -> _Inputs:
    raw = payload.get("inputs") or ()
    return tuple(sorted((str(a), None if p is None else str(p), str(v)) for a, p, v in raw))


class _Outcomes:
    """What the recorded runs gave, by asset partition, code version and inputs, in order,
    each with the binding it ran with (a run whose parameters got other values is another)."""

    def __init__(self, events: Iterable[Event]) -> None:
        self._queues: dict[_Key, list[tuple[str | None, _Outcome]]] = defaultdict(list)
        for event in events:
            if event.asset is None:
                continue
            if event.kind == EventKind.MATERIALIZATION:
                outcome: _Outcome = (event.data_version, None)
            elif event.kind == EventKind.RUN_FAILED:
                outcome = (None, str(event.payload.get("error", "failed")))
            else:
                continue
            code = event.payload.get("code_version")
            key = (event.asset, event.partition, None if code is None else str(code))
            binding = event.payload.get("binding")
            recorded = None if binding is None else str(binding)
            self._queues[(*key, _inputs(event.payload))].append((recorded, outcome))

    def take(self, key: _Key, binding: str | None, plain: frozenset[str]) -> _Outcome:
        """The next recorded outcome (the last one again once they are used up) of a run
        whose binding was ``binding``, or one not recorded then (``plain``: see
        ``Definitions.plain_reads``)."""
        queue = self._queues.get(key, [])
        same = [i for i, (was, _) in enumerate(queue) if _same_binding(was, binding, plain)]
        if same:
            return queue.pop(same[0])[1] if len(same) > 1 else queue[same[0]][1]
        digest = hashlib.blake2b(repr((key, binding)).encode(), digest_size=16).hexdigest()
        return f"replayed-{digest}", None


def _same_binding(recorded: str | None, now: str | None, plain: frozenset[str]) -> bool:
    return recorded is None or now is None or not binding_changes(recorded, now, plain)


def _stand_in(asset: AssetDef, defs: Definitions, outcomes: _Outcomes) -> AssetDef:
    key = asset.key
    code, binding, plain = defs.code_version(key), defs.binding(key), defs.plain_reads(key)

    def run(**kwargs: Any) -> Output:
        context: Context = kwargs["context"]
        inputs = tuple(sorted((a, p, v) for (a, p), v in context.input_versions.items()))
        version, error = outcomes.take((key, context.partition, code, inputs), binding, plain)
        if error is not None:
            raise ReplayedFailure(error)
        return Output(None, data_version=version)

    return replace(asset, fn=run, wants_context=True, code_version=code, io=None)


def _stand_ins(defs: Definitions, outcomes: _Outcomes) -> Definitions:
    nodes: list[Any] = []
    for key, node in defs.nodes.items():
        if isinstance(node, AssetDef):
            nodes.append(_stand_in(node, defs, outcomes))
        else:
            nodes.append(source(key, partitions=node.partitions, freshness=node.freshness))
    return Definitions(nodes, executor="threads", max_concurrency=defs.max_concurrency)


def _late_spans(events: Iterable[Event], end: datetime) -> dict[str, tuple[int, timedelta]]:
    """Per asset: violations recorded, and the time its partitions spent late."""
    since: dict[tuple[str, str | None], datetime] = {}
    out: dict[str, tuple[int, timedelta]] = defaultdict(lambda: (0, timedelta(0)))
    for event in events:
        if event.asset is None:
            continue
        node = (event.asset, event.partition)
        count, total = out[event.asset]
        if event.kind == EventKind.FRESHNESS_VIOLATED:
            since.setdefault(node, event.timestamp)
            out[event.asset] = (count + 1, total)
        elif event.kind == EventKind.FRESHNESS_RECOVERED and node in since:
            out[event.asset] = (count, total + event.timestamp - since.pop(node))
    for (asset, _), start in since.items():
        count, total = out[asset]
        out[asset] = (count, total + max(timedelta(0), end - start))
    return out


def replay(
    recorded: list[Event], defs: Definitions, *, end: datetime | None = None
) -> ReplayReport:
    """Re-decide ``recorded`` (oldest first) under ``defs``; writes nothing outside a temporary
    directory."""
    from headwater.testing import Harness  # the virtual-clock bench is the engine's own

    report = ReplayReport(
        start=recorded[0].timestamp if recorded else None,
        end=end or (recorded[-1].timestamp if recorded else None),
        events=len(recorded),
    )
    if report.start is None or report.end is None:
        return report
    stand_ins = _stand_ins(defs, _Outcomes(recorded))
    with (
        tempfile.TemporaryDirectory(prefix="headwater-replay-") as scratch,
        Harness(stand_ins, now=report.start, state_dir=scratch) as h,
    ):
        h.tick()
        pending = False  # sources changed and the engine not told yet
        for event in recorded:
            if not _outside(event, stand_ins):
                if pending and _reaction(event):
                    h.tick()
                    pending = False
                continue
            ahead = event.timestamp - h.now
            if ahead > timedelta(0) and not (pending and ahead <= BATCH):
                h.advance(ahead)  # ticks first: what is pending reacts at its own instant
                pending = False
            pending = _feed(h, stand_ins, event, report.skipped) or pending
        if report.end > h.now:
            h.advance(report.end - h.now)
        else:
            h.tick()
        replayed = h.events()
    for key in defs.assets:
        report.assets[key] = AssetReplay(key)
    for event in recorded:
        ran = event.asset
        if event.kind == EventKind.RUN_STARTED and ran and ran not in report.assets:
            report.assets[ran] = AssetReplay(ran)
            report.dropped.append(ran)
    did = _late_spans(recorded, report.end)
    would = _late_spans(replayed, report.end)
    for event in recorded:
        if event.kind == EventKind.RUN_STARTED and event.asset in report.assets:
            report.assets[event.asset].runs_did += 1
    for event in replayed:
        if event.kind == EventKind.RUN_STARTED and event.asset in defs.assets:
            report.assets[event.asset].runs_would += 1
            report.runs_would.append((event.asset, event.partition, event.timestamp))
    for key, row in report.assets.items():
        row.violations_did, row.late_did = did.get(key, (0, timedelta(0)))
        row.violations_would, row.late_would = would.get(key, (0, timedelta(0)))
    return report


BATCH = timedelta(seconds=1)
"""Changes this close together are one batch, as the daemon settles a burst of file events."""


def _outside(event: Event, defs: Definitions) -> bool:
    """Whether the event is something the engine was told, not something it decided."""
    if event.kind in (EventKind.OBSERVATION, EventKind.PARTITIONS_ADDED):
        return True
    reason = str(event.payload.get("reason", ""))
    return event.kind == EventKind.RUN_STARTED and reason.startswith("requested")


def _reaction(event: Event) -> bool:
    return event.kind in (EventKind.RUN_STARTED, EventKind.DECISION)


def _feed(h: Any, defs: Definitions, event: Event, skipped: dict[str, tuple[int, str]]) -> bool:
    """Give the engine what came from outside at this instant; True when it must still react
    (a request runs at once)."""
    kind, key = event.kind, event.asset
    where = key or str(event.payload.get("name", ""))
    if kind != EventKind.PARTITIONS_ADDED and key not in defs.nodes:
        _skip(skipped, where, "the new definitions do not hold it")
        return False
    if kind == EventKind.OBSERVATION and key not in defs.sources:
        _skip(skipped, where, "it is an asset in the new definitions, not a source")
        return False
    try:
        if kind == EventKind.OBSERVATION and key in defs.sources:
            return bool(
                h.observe(
                    key,
                    event.data_version,
                    partition=event.partition,
                    deleted=event.data_version is None,
                )
            )
        if kind == EventKind.PARTITIONS_ADDED:
            name, keys = event.payload.get("name"), event.payload.get("keys")
            if isinstance(name, str) and isinstance(keys, list):
                return bool(h.add_partitions(name, [str(k) for k in keys]))
        if kind == EventKind.RUN_STARTED and key in defs.assets:
            reason = str(event.payload.get("reason", ""))
            h.materialize(
                key, partition=event.partition, force=reason.startswith("requested with force")
            )
    except HeadwaterError as exc:  # a partition the new definitions do not have
        _skip(skipped, where, str(exc))
    return False


def _skip(skipped: dict[str, tuple[int, str]], key: str, why: str) -> None:
    count, first = skipped.get(key, (0, why))
    skipped[key] = (count + 1, first)
