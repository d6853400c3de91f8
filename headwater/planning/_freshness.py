"""Freshness SLAs: is a partition late, by how much, and when will it be. Pure.

- ``max_lag`` (assets): late once the partition has been stale, missing or failed for longer
  than ``max_lag``, counted from the first upstream change it does not reflect yet
  (``NodeRecord.pending_since``, carried down the graph from the original change), but never
  from before all of its inputs existed: while an input it reads has never arrived it is not
  late by ``max_lag`` (a source's ``max_age`` watches for that). Up to date, its lag is 0.
- ``max_age``: late once the last materialization (a source's last observed change) is older
  than ``max_age``. A partition with no data counts from the asset's first evaluation, or from
  when its dynamic partition key was added if that is later (a key that did not exist cannot
  have been late: a file landing in an inbox is on time when processed at once). For a
  time-window partition the question is whether its data *arrived*: it is late when it has no
  data ``max_age`` after its window closed; windows that closed before headwater first saw the
  asset are history, not an SLA breach.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from headwater._durations import format_duration
from headwater.definitions import AssetDef, Node, PartitionsDefinition, dynamic_keys_in
from headwater.planning._state import NodeKey, NodeRecord, replace
from headwater.planning._status import FRESH, Evaluator, node_label

__all__ = [
    "FreshnessStatus",
    "age_deadline",
    "behind_until",
    "behind_upstream",
    "carry_pending_since",
    "freshness_status",
    "held_above",
    "lag_since",
    "never_arrived",
    "released_below",
    "span",
    "stuck_below",
    "unreflected_since",
]


@dataclass(frozen=True, slots=True)
class FreshnessStatus:
    late: bool
    lag: timedelta | None
    """How long the partition has been behind its upstream (None when it is up to date)."""
    age: timedelta | None
    """Time since its last materialization, or a source's last observed change."""
    deadline: datetime | None
    """When it becomes late if nothing happens (None when late already, or never)."""
    reasons: tuple[str, ...]


_SECOND = timedelta(seconds=1)


def span(delta: timedelta) -> str:
    """A duration the way an SLA is written: ``"1d"``, ``"2h"``, ``"15m"``, ``"90s"``
    (``"500ms"`` under a second: a sub-second SLA does not read "0s")."""
    if timedelta(0) < delta < _SECOND:
        return format_duration(delta)
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def never_arrived(record: NodeRecord | None) -> bool:
    """A partition that never had a version: its readers are not late by ``max_lag``."""
    return record is None or (
        record.version is None and record.changed_at is None and record.lost_at is None
    )


def _lag(
    ev: Evaluator, key: str, partition: str | None, state: str
) -> tuple[timedelta, datetime | None] | None:
    """How far behind its upstream the partition is, and since when; ``(0, None)`` when it
    reflects everything; None while an input it reads has never arrived (its lag cannot start
    before all of its inputs exist)."""
    if state == FRESH:
        record = ev.state.record((key, partition))
        if record is None or (since := record.pending_since) is None:
            return timedelta(0), None
        if held_above(ev, (key, partition)) is None:
            return timedelta(0), None  # what it remembers was resolved by early cutoff
        return max(timedelta(0), ev.now - since), since  # an asset above is stuck
    inputs_since: datetime | None = None
    for _, nodes in ev.input_nodes(key, partition):
        if not nodes:
            return None
        for up in nodes:
            record = ev.state.record(up)
            if record is None or never_arrived(record):
                return None
            if record.version is None:
                continue  # it did arrive, and was deleted (or its value lost) since: a change
            if record.appeared_at is not None and (
                inputs_since is None or record.appeared_at > inputs_since
            ):
                inputs_since = record.appeared_at
    record = ev.state.record((key, partition))
    since = record.pending_since if record is not None else None
    if since is None:
        if record is None or record.materialized_at is None:
            since = inputs_since  # missing: behind since its inputs all exist
        if since is None:
            return None
    if inputs_since is not None and inputs_since > since:
        since = inputs_since
        # A partition that appeared since (a new file's) does not bring its lateness with it,
        # nor does it take away the lateness of a change an asset above still holds back.
        stuck = behind_upstream(ev, (key, partition))
        held = ev.state.record(stuck) if stuck is not None else None
        if held is not None and held.pending_since is not None:
            since = min(since, max(held.pending_since, held.appeared_at or held.pending_since))
    return max(timedelta(0), ev.now - since), since


def _age_due(
    ev: Evaluator,
    partitions: PartitionsDefinition | None,
    partition: str | None,
    last: datetime | None,
    seen: tuple[datetime, str],
    max_age: timedelta,
) -> tuple[datetime | None, str]:
    """When ``max_age`` makes the partition late, and how to say why once it is."""
    now = ev.now
    first_seen, seen_as = seen
    window_end = None
    if partition is not None and partitions is not None:
        window_end = partitions.window_end(partition)
    if window_end is not None:
        if last is None and window_end >= first_seen:
            return (
                window_end + max_age,
                f"no data {span(now - window_end)} after its window closed",
            )
        return None, ""  # it has data, or its window closed before headwater first saw it
    base = last or first_seen
    what = "last change" if last is not None else f"no data since {seen_as}"
    return base + max_age, f"{what} {span(now - base)} ago"


def age_deadline(ev: Evaluator, key: str, partition: str | None) -> datetime | None:
    """When the ``max_age`` SLA of an asset or source partition makes it late (None: none)."""
    node = ev.defs.nodes[key]
    if node.freshness is None or node.freshness.max_age is None:
        return None
    last = _last_change(node, ev.state.record((key, partition)))
    first_seen = _first_seen(ev, node, key, partition)
    return _age_due(ev, node.partitions, partition, last, first_seen, node.freshness.max_age)[0]


def _first_seen(ev: Evaluator, node: Node, key: str, partition: str | None) -> tuple[datetime, str]:
    """Since when headwater has known the partition, and how to say so: its asset's first
    evaluation, or when its dynamic key was added, whichever is later (keys added before
    schema 6 have no time, and one stamped by a clock that was ahead has a time to come: the
    asset's first evaluation stands)."""
    schedule = ev.state.schedules.get(key)
    since = schedule.first_seen if schedule is not None else ev.now
    seen_as = "first seen"
    if partition is not None:
        for name, dynamic_key in dynamic_keys_in(node.partitions, partition):
            added = ev.state.dynamic_added_at(name, dynamic_key)
            # a time ahead of the clock was written by a clock that was wrong: ignored
            if added is not None and since < added <= ev.now:
                since, seen_as = added, f"{dynamic_key!r} was added to {name!r}"
    return since, seen_as


def _last_change(node: Node, record: NodeRecord | None) -> datetime | None:
    """What ``max_age`` counts from: an asset's last materialization, a source's last change."""
    if record is None:
        return None
    if isinstance(node, AssetDef):
        return record.materialized_at
    return record.changed_at if record.version is not None else None


def behind_upstream(ev: Evaluator, node: NodeKey) -> NodeKey | None:
    """An asset upstream of ``node`` that is behind a change it has not produced a version
    for yet (failing, retrying, manual, waiting for its cron tick), reached through assets
    that remember that change (``pending_since``, pushed down by :func:`stuck_below`); None:
    none. Walks only those, the stuck region, not the ancestry, and each of them once per
    evaluator (``Evaluator.stuck_above``): every holder below a stuck chain asks."""
    memo = ev.stuck_above
    if ev.stuck_at != ev.state.puts:  # a view of a state that changed since (a dry run)
        memo.clear()
        ev.stuck_at = ev.state.puts
    if node in memo:
        return memo[node]
    assets = ev.defs.assets
    parent: dict[NodeKey, NodeKey | None] = {node: None}
    stack = [node]
    found: NodeKey | None = None
    below: NodeKey | None = None  # the partition whose input led to it
    while stack and found is None:
        current = stack.pop()
        for _, ups in ev.input_nodes(*current):
            for up in ups:
                if up in parent or up[0] not in assets:
                    continue
                record = ev.state.record(up)
                if record is None or record.pending_since is None:
                    continue
                if ev.status(*up).state != FRESH:  # before the memo: it says what is above
                    parent[up] = current
                    found, below = up, current
                    break
                if up in memo:
                    if (found := memo[up]) is not None:
                        below = current
                        break
                    continue
                parent[up] = current
                stack.append(up)
            if found is not None:
                break
    if found is None:
        memo.update(dict.fromkeys(parent))  # each was walked through to its end
    else:
        at = below
        while at is not None:  # the path to it: each reaches it the same way
            memo[at] = found
            at = parent[at]
    return found


def held_above(ev: Evaluator, node: NodeKey) -> NodeKey | None:
    """The stuck asset above ``node`` (:func:`behind_upstream`) that holds back the change
    ``node`` remembers: behind since no later than that change. One behind only since a
    later change (a new input it is about to run for) is not why ``node`` remembers an
    earlier one: that was left by a stuck asset that since produced the same version."""
    if (since := _pending(ev, node)) is None or (stuck := behind_upstream(ev, node)) is None:
        return None
    held = _pending(ev, stuck)
    return stuck if held is not None and held <= since else None


def _remembers(ev: Evaluator, node: NodeKey) -> bool:
    """Whether the change the partition remembers is still one it does not reflect (else it
    is left from a stuck asset above that since produced the same version)."""
    return ev.status(*node).state != FRESH or held_above(ev, node) is not None


def _tracked_below(ev: Evaluator, node: NodeKey, *, remembering: bool) -> Iterator[NodeKey]:
    """The partitions tracked for ``max_lag`` below ``node``, each once (``remembering``: only
    through those that remember a change)."""
    tracked = ev.defs.lag_tracked
    queue, seen = list(ev.children(node)), {node}
    while queue:
        child = queue.pop()
        if child in seen or child[0] not in tracked:
            continue
        seen.add(child)
        if remembering and _pending(ev, child) is None:
            continue
        queue.extend(ev.children(child))
        yield child


def _pending(ev: Evaluator, node: NodeKey) -> datetime | None:
    record = ev.state.record(node)
    return None if record is None else record.pending_since


def _lag_holder(ev: Evaluator, node: NodeKey) -> bool:
    sla = ev.defs.nodes[node[0]].freshness
    return sla is not None and sla.max_lag is not None


def behind_until(ev: Evaluator, node: NodeKey) -> datetime | None:
    """When the assets below ``node`` that read it are behind through it, if it stays behind
    its remembered change (it is stuck: failing, retrying, manual, waiting for a cron tick)
    until then: that change plus the longest ``max_lag`` below. None if it is not behind
    (fresh: it produced the change, or it is below the stuck one) or nothing below lags."""
    record = ev.state.record(node)
    if record is None or (since := record.pending_since) is None:
        return None
    if node[0] not in ev.defs.assets or not ev.exists(*node):
        return None
    if ev.status(*node).state == FRESH:
        return None
    lag = ev.defs.lag_below(node[0])
    return None if lag is None else since + lag


def stuck_below(
    ev: Evaluator, node: NodeKey, since: datetime
) -> tuple[dict[NodeKey, datetime], list[NodeKey]]:
    """``node`` has been behind since ``since`` for as long as an asset below may lag: every
    asset below that reads it, directly or through others, is behind since then too, though
    none of their inputs has a new version yet. Returns the ``pending_since`` to write (the
    earlier one each already remembers stands) and the readers with a ``max_lag``."""
    updates: dict[NodeKey, datetime] = {}
    holders: list[NodeKey] = []
    for child in _tracked_below(ev, node, remembering=False):
        if _lag_holder(ev, child):
            holders.append(child)
        known = _pending(ev, child)
        if known is None or known > since or not _remembers(ev, child):
            updates[child] = since
    return updates, holders


def released_below(ev: Evaluator, node: NodeKey) -> list[NodeKey]:
    """``node`` produced the version it had: the readers with a ``max_lag`` below it that
    remember a change through it (:func:`stuck_below`) are to be checked again. Walks only
    partitions that remember one: none after an ordinary early cutoff."""
    return [c for c in _tracked_below(ev, node, remembering=True) if _lag_holder(ev, c)]


def carry_pending_since(
    ev: Evaluator, node: NodeKey, origin: datetime, records: dict[NodeKey, NodeRecord]
) -> list[NodeKey]:
    """``node`` got a new version reflecting changes since ``origin``: each reader with a
    ``max_lag`` downstream of it (itself included) is behind since then, unless it already was
    since earlier. Updates ``records`` (over the state); returns those readers."""
    tracked = ev.defs.lag_tracked
    readers: list[NodeKey] = []
    if not tracked:
        return readers
    for child in ev.children(node):
        if child[0] not in tracked:
            continue
        readers.append(child)
        record = records.get(child) or ev.state.record(child) or NodeRecord()
        if (
            record.pending_since is None
            or origin < record.pending_since
            or (child not in records and not _remembers(ev, child))
        ):
            records[child] = replace(record, pending_since=origin)
    return readers


def unreflected_since(ev: Evaluator, nodes: Iterable[NodeKey]) -> dict[NodeKey, datetime]:
    """Of ``nodes``, the partitions with a ``max_lag`` below them that do not reflect an
    input's version and remember no change (an input changed while they ran; an SLA was
    added, or the owner stopped, before they could run): since when their lag counts, the
    earliest change of such an input."""
    tracked = ev.defs.lag_tracked
    state = ev.state
    since: dict[NodeKey, datetime] = {}
    for node in nodes:
        record = state.record(node)
        if node[0] not in tracked or record is None or record.pending_since is not None:
            continue
        read = {(a, p): v for a, p, v in record.inputs}
        changed = [
            r.changed_at
            for _, ups in ev.input_nodes(*node)
            for up in ups
            if (r := state.record(up)) is not None
            and r.version is not None
            and read.get(up) != r.version
            and r.changed_at is not None
        ]
        if changed:
            since[node] = min(changed)
    return since


def lag_since(ev: Evaluator, key: str, partition: str | None, state: str) -> datetime | None:
    """Since when the partition has been behind its upstream (None: up to date, or an input
    never arrived)."""
    lag = _lag(ev, key, partition, state)
    return None if lag is None else lag[1]


def freshness_status(ev: Evaluator, key: str, partition: str | None) -> FreshnessStatus | None:
    """None when the asset or source declares no freshness SLA."""
    node = ev.defs.nodes[key]
    sla = node.freshness
    if sla is None:
        return None
    now = ev.now
    record = ev.state.record((key, partition))
    first_seen = _first_seen(ev, node, key, partition)
    reasons: list[str] = []
    deadlines: list[datetime] = []
    lag: tuple[timedelta, datetime | None] | None = None
    if isinstance(node, AssetDef):
        status = ev.status(key, partition)
        lag = _lag(ev, key, partition, status.state)
        if lag is not None and (since := lag[1]) is not None and sla.max_lag is not None:
            behind = lag[0]
            due = since + sla.max_lag
            if now >= due:
                what = status.state
                if what == FRESH and (stuck := held_above(ev, (key, partition))):
                    what = f"behind {node_label(*stuck)} ({ev.status(*stuck).state})"
                reasons.append(f"{what} for {span(behind)}, more than max_lag {span(sla.max_lag)}")
            else:
                deadlines.append(due)
    last = _last_change(node, record)
    age = None if last is None else now - last
    if sla.max_age is not None:
        too_old, what = _age_due(ev, node.partitions, partition, last, first_seen, sla.max_age)
        if too_old is not None and now >= too_old:
            reasons.append(f"{what}, more than max_age {span(sla.max_age)}")
        elif too_old is not None:
            deadlines.append(too_old)
    late = bool(reasons)
    return FreshnessStatus(
        late=late,
        lag=None if lag is None else lag[0],
        age=age,
        deadline=None if late or not deadlines else min(deadlines),
        reasons=tuple(reasons),
    )
