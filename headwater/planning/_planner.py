"""Where a tick starts: the seeds of the minimal plan after a change. Pure.

A plan is computed from a *dirty set* (partitions whose inputs or code may have changed) and
explicit requests. Seeds are the partitions whose policy wants to run now (and the requested
ones); the tick reaches their children only as their outputs change (:mod:`._wavefront`).
Whether a reached partition really runs is decided when its turn comes, once nothing upstream
of it is still pending: an upstream that produced the same data version does not reach it at
all (early cutoff).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

from headwater.planning._state import NodeKey
from headwater.planning._status import FRESH, Evaluator, Status
from headwater.planning._wavefront import pending_upstream
from headwater.policies import Decision

__all__ = ["Plan", "Request", "decide_step", "plan"]


@dataclass(frozen=True, slots=True)
class Request:
    """An explicit ask to materialize a partition (CLI or API); ``force`` runs it even if fresh."""

    force: bool = False


@dataclass(slots=True)
class Plan:
    steps: list[NodeKey] = field(default_factory=list)
    """The seeds: requested partitions, and dirty ones whose policy wants to run, in
    topological order."""
    decisions: dict[NodeKey, Decision] = field(default_factory=dict)
    """Dirty partitions evaluated but not seeded, with the policy's decision."""
    deferred: set[NodeKey] = field(default_factory=set)
    """Seeds not decided yet: something upstream of them is seeded (or another tick holds
    them); they are decided in their turn."""

    def __bool__(self) -> bool:
        return bool(self.steps)


def plan(
    ev: Evaluator,
    dirty: Iterable[NodeKey],
    requests: Mapping[NodeKey, Request] | None = None,
    busy: Container[NodeKey] = (),
) -> Plan:
    """Seed the requests, then walk the dirty set in topological order: a partition with a
    seed upstream of it is seeded too (it is decided in its turn, after that seed), any other
    is decided now and seeded if its policy wants to run.

    ``busy`` partitions (another tick is deciding or running them) are seeded too: their
    record is about to change, and a decision on it now could drop a change for good (a
    source that went A -> B -> A while its reader ran on B looks fresh until that run ends)."""
    requests = requests or {}
    result = Plan()
    seeded: dict[str, set[str | None]] = {}
    for asset, partition in requests:
        seeded.setdefault(asset, set()).add(partition)
    floor = min((ev.graph.order[a] for a in seeded), default=0)
    clear: set[tuple[str, str | None, bool]] = set()
    for node in _in_order(ev, dirty):
        if node[1] in seeded.get(node[0], ()) or not ev.exists(*node):
            continue
        if node not in busy and pending_upstream(ev.graph, node, seeded, floor, clear) is None:
            decision = ev.decide(*node, ev.status(*node))
            if decision.kind != "run":
                result.decisions[node] = decision
                continue
        else:
            result.deferred.add(node)
        order = ev.graph.order[node[0]]
        floor = min(floor, order) if seeded else order
        seeded.setdefault(node[0], set()).add(node[1])
    result.steps = _in_order(ev, ((a, p) for a, parts in seeded.items() for p in parts))
    return result


def _in_order(ev: Evaluator, nodes: Iterable[NodeKey]) -> list[NodeKey]:
    """The asset partitions among ``nodes`` in topological order (as ``topological_key``).

    Two stable sorts with keys that are a string and an int: a tuple per node as the key
    would allocate 100k containers at a full evaluation, and set off the cyclic collector
    over the whole state."""
    assets = ev.defs.assets
    order = ev.graph.order
    out = [n for n in nodes if n[0] in assets]
    out.sort(key=_partition_key)
    out.sort(key=lambda n: order[n[0]])
    return out


def _partition_key(node: NodeKey) -> str:
    return node[1] or ""


def decide_step(ev: Evaluator, node: NodeKey, request: Request | None) -> tuple[Status, Decision]:
    """Decide a seeded or reached partition once nothing upstream of it is pending."""
    status = ev.status(*node)
    if request is None:
        return status, ev.decide(*node, status)
    if status.blockers:
        return status, Decision.wait("requested, but waiting: " + "; ".join(status.blockers))
    if request.force:
        return status, Decision.run(f"requested with force ({status.state})")
    if status.state == FRESH:
        return status, Decision.idle(
            "requested, but fresh; use force to run it anyway", notable=False
        )
    return status, Decision.run(f"requested ({status.state}: {'; '.join(status.reasons)})")
