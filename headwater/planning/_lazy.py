"""Which downstream freshness SLA pulls a lazy partition, and the latest instant to start it. Pure.

A lazy partition that is stale or missing runs only when some SLA holder downstream of it
(through any number of assets, whatever their policies) would otherwise be late: ``max_lag``
counts from the first change the lazy partition does not reflect, ``max_age`` from the
holder's last materialization. It starts ``lead`` before the earliest such deadline, where
``lead`` is the run durations along the way (the lazy asset's own included), with headroom.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from headwater._events import Event
from headwater.definitions import AssetDef
from headwater.planning._freshness import age_deadline, lag_since, span
from headwater.planning._state import NodeKey
from headwater.planning._status import Evaluator, Status, node_label
from headwater.policies import Pull

__all__ = ["HEADROOM", "MARGIN", "blend_duration", "pull", "usual_durations"]

HEADROOM = 1.5
"""Runs take up to this many times their usual duration before a deadline is at risk."""
MARGIN = timedelta(seconds=1)
"""Added to every lead: starting a run and noticing its result take time too."""


def blend_duration(usual: float | None, seconds: float) -> float:
    """The usual duration of an asset's runs after one more that took ``seconds``: a moving
    average that follows a change in a few runs."""
    return seconds if usual is None else 0.7 * usual + 0.3 * seconds


def usual_durations(materializations: Iterable[Event]) -> dict[str, float]:
    """Usual run durations (seconds) by asset, from materialization events oldest first."""
    usual: dict[str, float] = {}
    for event in materializations:
        took = event.payload.get("duration_ms")
        if event.asset and isinstance(took, int | float) and took >= 0:
            usual[event.asset] = blend_duration(usual.get(event.asset), took / 1000)
    return usual


def _deadlines(ev: Evaluator, node: NodeKey, since: datetime | None) -> list[tuple[datetime, str]]:
    asset = ev.defs.nodes[node[0]]
    sla = asset.freshness
    out: list[tuple[datetime, str]] = []
    if sla is None or not isinstance(asset, AssetDef):
        return out
    if sla.max_lag is not None and since is not None:
        out.append((since + sla.max_lag, f"max_lag {span(sla.max_lag)}"))
    if sla.max_age is not None and (due := age_deadline(ev, *node)) is not None:
        out.append((due, f"max_age {span(sla.max_age)}"))
    return out


def pull(ev: Evaluator, node: NodeKey, status: Status) -> Pull | None:
    """The most urgent SLA that needs ``node`` to run, or None when none does."""
    pulled = ev.defs.sla_pulled
    if node[0] not in pulled:
        return None
    since = lag_since(ev, node[0], node[1], status.state)
    lead_of: dict[NodeKey, float] = {node: ev.durations.get(node[0], 0.0)}
    stack = [node]
    best: Pull | None = None
    while stack:
        current = stack.pop()
        lead = lead_of[current]
        for deadline, reason in _deadlines(ev, current, since):
            ahead = timedelta(seconds=HEADROOM * lead) + MARGIN
            run_at = deadline - ahead
            if best is None or run_at < best.run_at:
                holder = node_label(*current)
                best = Pull(holder, current, reason, deadline, run_at, ahead.total_seconds())
        for child in ev.children(current):
            if child[0] not in pulled:
                continue
            longer = lead + ev.durations.get(child[0], 0.0)
            if longer > lead_of.get(child, -1.0):
                lead_of[child] = longer
                stack.append(child)
    return best
