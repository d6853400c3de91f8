"""The minimal plan after a change: the affected asset partitions in topological order. Pure.

A plan is computed from a *dirty set* (partitions whose inputs or code may have changed) and
explicit requests. Seeds are the partitions whose policy wants to run now; the plan is their
closure over children whose policy reacts to upstream changes. Whether a planned partition
really runs is decided again when its turn comes, once its planned parents have finished: an
upstream that produced the same data version leaves it fresh (early cutoff).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from headwater.definitions import AssetDef, EdgeMapping
from headwater.planning._state import NodeKey
from headwater.planning._status import FRESH, Evaluator, Status
from headwater.policies import Decision

__all__ = ["Plan", "Request", "decide_step", "plan"]


@dataclass(frozen=True, slots=True)
class Request:
    """An explicit ask to materialize a partition (CLI or API); ``force`` runs it even if fresh."""

    force: bool = False


@dataclass(slots=True)
class Plan:
    steps: list[NodeKey] = field(default_factory=list)
    """Every planned partition once, in topological order."""
    parents: dict[NodeKey, list[NodeKey]] = field(default_factory=dict)
    """For each step, the planned partitions it waits for."""
    decisions: dict[NodeKey, Decision] = field(default_factory=dict)
    """Partitions evaluated but not planned, with the policy's decision."""

    def __bool__(self) -> bool:
        return bool(self.steps)


def _sort_key(ev: Evaluator, node: NodeKey) -> tuple[int, str]:
    return ev.graph.order[node[0]], node[1] or ""


def plan(
    ev: Evaluator, dirty: Iterable[NodeKey], requests: Mapping[NodeKey, Request] | None = None
) -> Plan:
    requests = requests or {}
    result = Plan()
    planned: set[NodeKey] = set(requests)
    candidates = [n for n in dirty if isinstance(ev.defs.nodes.get(n[0]), AssetDef)]
    for node in sorted(candidates, key=lambda n: _sort_key(ev, n)):
        if node in planned or not ev.exists(*node):
            continue
        decision = ev.decide(*node, ev.status(*node))
        if decision.kind == "run":
            planned.add(node)
        else:
            result.decisions[node] = decision
    stack = list(planned)
    while stack:
        for child in ev.children(stack.pop()):
            if child in planned:
                continue
            asset = ev.defs.nodes[child[0]]
            assert isinstance(asset, AssetDef)
            if asset.policy.reacts_to_upstream and not ev.backfill_only(asset, child[1]):
                planned.add(child)
                stack.append(child)
                result.decisions.pop(child, None)
    result.steps = sorted(planned, key=lambda n: _sort_key(ev, n))
    by_asset: dict[str, list[str | None]] = {}
    for asset_key, partition in result.steps:
        by_asset.setdefault(asset_key, []).append(partition)
    for node in result.steps:
        result.parents[node] = _planned_parents(ev, node, by_asset, planned)
    return result


def _planned_parents(
    ev: Evaluator, node: NodeKey, by_asset: Mapping[str, list[str | None]], planned: set[NodeKey]
) -> list[NodeKey]:
    asset, partition = node
    out: list[NodeKey] = []
    for parent in ev.graph.parents[asset]:
        if parent not in by_asset:
            continue
        mapping = ev.graph.mapping(parent, asset)
        if mapping is EdgeMapping.ALL:
            out.extend((parent, p) for p in by_asset[parent])
        elif mapping is EdgeMapping.IDENTITY:
            if (parent, partition) in planned:
                out.append((parent, partition))
        elif (parent, None) in planned:
            out.append((parent, None))
    return out


def decide_step(ev: Evaluator, node: NodeKey, request: Request | None) -> tuple[Status, Decision]:
    """Decide a planned partition once its planned parents are done (early cutoff happens here)."""
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
