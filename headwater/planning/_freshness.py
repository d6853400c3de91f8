"""Freshness SLAs: is a partition late, by how much, and when will it be. Pure.

- ``max_lag`` (assets): late once the partition has been stale, missing or failed for longer
  than ``max_lag``, counted from the first upstream change it does not reflect yet
  (``NodeRecord.pending_since``, carried down the graph from the original change).
- ``max_age``: late once the last materialization (a source's last observed change) is older
  than ``max_age``. A partition with no data counts from the asset's first evaluation. For a
  time-window partition the question is whether its data *arrived*: it is late when it has no
  data ``max_age`` after its window closed; windows that closed before headwater first saw the
  asset are history, not an SLA breach.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from headwater.definitions import AssetDef
from headwater.planning._status import FRESH, Evaluator

__all__ = ["FreshnessStatus", "freshness_status"]


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


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0 and seconds:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def freshness_status(ev: Evaluator, key: str, partition: str | None) -> FreshnessStatus | None:
    """None when the asset or source declares no freshness SLA."""
    node = ev.defs.nodes[key]
    sla = node.freshness
    if sla is None:
        return None
    now = ev.now
    record = ev.state.record((key, partition))
    schedule = ev.state.schedules.get(key)
    first_seen = schedule.first_seen if schedule is not None else now
    reasons: list[str] = []
    deadlines: list[datetime] = []
    lag: timedelta | None = None
    if isinstance(node, AssetDef):
        state = ev.status(key, partition).state
        if state != FRESH and record is not None and record.pending_since is not None:
            lag = max(timedelta(0), now - record.pending_since)
            if sla.max_lag is not None:
                due = record.pending_since + sla.max_lag
                if now >= due:
                    reasons.append(
                        f"{state} for {_span(lag)}, more than max_lag {_span(sla.max_lag)}"
                    )
                else:
                    deadlines.append(due)
        last = record.materialized_at if record is not None else None
    else:
        has_data = record is not None and record.version is not None
        last = record.changed_at if has_data and record is not None else None
    age = None if last is None else now - last
    if sla.max_age is not None:
        window_end = None
        if partition is not None and node.partitions is not None:
            window_end = node.partitions.window_end(partition)
        if window_end is not None:
            if last is None and window_end >= first_seen:
                due = window_end + sla.max_age
                if now >= due:
                    reasons.append(
                        f"no data {_span(now - window_end)} after its window closed, "
                        f"more than max_age {_span(sla.max_age)}"
                    )
                else:
                    deadlines.append(due)
        else:
            base = last or first_seen
            due = base + sla.max_age
            if now >= due:
                what = "last change" if last is not None else "no data since first seen"
                reasons.append(
                    f"{what} {_span(now - base)} ago, more than max_age {_span(sla.max_age)}"
                )
            else:
                deadlines.append(due)
    late = bool(reasons)
    return FreshnessStatus(
        late=late,
        lag=lag,
        age=age,
        deadline=None if late or not deadlines else min(deadlines),
        reasons=tuple(reasons),
    )
