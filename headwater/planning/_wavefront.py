"""Which partitions a tick may decide next: the wavefront of a change. Pure.

A tick does not expand a change to its whole downstream closure up front. It starts from the
seeds (what is dirty and wants to run, and what was requested) and reaches a partition's
children only once that partition has produced something they can see (the caller judges:
a new data version, a failure, a recovery, or a notable decision). A change that early cutoff stops therefore costs what it
reached, never what lies below it (a root whose function returns the same value decides one
partition, whether 100 or 100,000 lie downstream).

Each partition is decided at most once per tick, and only when nothing still pending in the
tick is upstream of it: deciding earlier could run it on an input about to change, and run it
twice. "Upstream" is followed through the edge mappings (same partition, all partitions, one
partition for all), and a search for it stops at the topological position of the earliest
pending asset, so it looks only at the part of the graph the wavefront can still change.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from headwater.definitions import AssetDef, AssetGraph, EdgeMapping
from headwater.planning._state import NodeKey
from headwater.planning._status import Evaluator

__all__ = ["Wavefront", "pending_upstream", "reacting_children", "topological_key"]

_ALL, _IDENTITY, _MAPPED = EdgeMapping.ALL, EdgeMapping.IDENTITY, EdgeMapping.MAPPED

_Up = tuple[str, str | None, bool]
"""An upstream position: asset, partition, and whether any partition of it counts."""


class Wavefront:
    """The pending partitions of one tick, and which of them may be decided now."""

    def __init__(self, ev: Evaluator, seeds: Iterable[NodeKey]) -> None:
        self._graph = ev.graph
        self._pending: dict[str, set[str | None]] = {}
        self._lowest: list[tuple[int, str]] = []
        """A heap of the pending assets' topological positions (finished ones linger until
        they reach the top): the floor of every upstream search, without a scan."""
        self._waiting: dict[NodeKey, list[NodeKey]] = {}
        self._ready: list[NodeKey] = []
        self._reached: set[NodeKey] = set()
        """Every partition that has been pending in this tick: each is decided once."""
        self._clear: set[_Up] = set()
        """Positions found with nothing pending upstream. They stay so: after the seeds, a
        partition becomes pending only as the child of one that was, and so downstream of
        it (which also keeps the floor from falling)."""
        new = [node for node in seeds if self._add(node)]
        self._try_all(new)

    def take_ready(self) -> list[NodeKey]:
        """The partitions that may be decided now, in topological order; each once."""
        ready, self._ready = self._ready, []
        return ready

    def finished(self, node: NodeKey, ev: Evaluator | None) -> None:
        """``node`` is decided (and run, if it ran). Given an evaluator, its output changed
        something its children can see: those that react to upstream changes are reached."""
        partitions = self._pending.get(node[0])
        if partitions is not None:
            partitions.discard(node[1])
            if not partitions:
                del self._pending[node[0]]
        new: list[NodeKey] = []
        if ev is not None:
            new = [child for child in reacting_children(ev, node) if self._add(child)]
        self._try_all(self._waiting.pop(node, []) + new)

    # -- inside ---------------------------------------------------------------------------

    def _add(self, node: NodeKey) -> bool:
        if node in self._reached:
            return False
        self._reached.add(node)
        partitions = self._pending.get(node[0])
        if partitions is None:
            partitions = self._pending[node[0]] = set()
            heapq.heappush(self._lowest, (self._graph.order[node[0]], node[0]))
        partitions.add(node[1])
        return True

    def _try_all(self, nodes: list[NodeKey]) -> None:
        if len(nodes) > 1:
            nodes.sort(key=lambda n: topological_key(self._graph, n))
        for node in nodes:
            blocker = self._pending_upstream(node)
            if blocker is None:
                self._ready.append(node)
            else:
                self._waiting.setdefault(blocker, []).append(node)

    def _pending_upstream(self, node: NodeKey) -> NodeKey | None:
        if not self._pending:
            return None
        lowest = self._lowest
        while lowest[0][1] not in self._pending:  # finished since: drop lazily
            heapq.heappop(lowest)
        return pending_upstream(self._graph, node, self._pending, lowest[0][0], self._clear)


def reacting_children(ev: Evaluator, node: NodeKey) -> Sequence[NodeKey]:
    """The children a change of ``node`` reaches: those whose policy reacts to upstream
    changes, except the history of time partitions (which only a backfill fills)."""
    if node[1] is None and (fixed := ev.defs.fixed_reach(node[0])) is not None:
        return fixed
    nodes = ev.defs.nodes
    out: list[NodeKey] = []
    for child in ev.children(node):
        asset = nodes[child[0]]
        assert isinstance(asset, AssetDef)
        if asset.policy.reacts_to_upstream and not ev.backfill_only(asset, child[1]):
            out.append(child)
    return out


def topological_key(graph: AssetGraph, node: NodeKey) -> tuple[int, str]:
    """Sorts partitions so that every one comes after what is upstream of it."""
    return graph.order[node[0]], node[1] or ""


def pending_upstream(
    graph: AssetGraph,
    node: NodeKey,
    pending: Mapping[str, AbstractSet[str | None]],
    floor: int,
    clear: set[_Up] | None = None,
) -> NodeKey | None:
    """A pending partition upstream of ``node`` (through any number of assets), if any;
    ``floor`` is the lowest topological position of a pending asset (nothing below it is
    searched).

    ``clear`` remembers positions known to have nothing pending upstream, for callers that
    only ever add pending partitions downstream of what they have asked about (the planner,
    which walks the dirty set in topological order).
    """
    if not pending:
        return None
    return _search(graph, (node[0], node[1], False), pending, floor, clear)


def _search(
    graph: AssetGraph,
    start: _Up,
    pending: Mapping[str, AbstractSet[str | None]],
    floor: int,
    clear: set[_Up] | None,
) -> NodeKey | None:
    stack = [start]
    seen: set[_Up] = set()
    order = graph.order
    in_edges = graph.in_edges
    while stack:
        asset, partition, any_partition = stack.pop()
        for parent, mapping in in_edges[asset]:
            if order[parent] < floor:
                continue
            ups: tuple[_Up, ...]
            if any_partition or mapping is _ALL:
                ups = ((parent, None, True),)
            elif mapping is _IDENTITY:
                ups = ((parent, partition, False),)
            elif mapping is _MAPPED and partition is not None:
                keys = graph.edge_map(parent, asset).search_up(partition)
                ups = (
                    ((parent, None, True),)
                    if keys is None
                    else tuple((parent, k, False) for k in keys)
                )
            else:
                ups = ((parent, None, False),)
            held = pending.get(parent)
            for up in ups:
                if up in seen:
                    continue
                seen.add(up)
                if held:
                    if up[2]:
                        return parent, next(iter(held))
                    if up[1] in held:
                        return parent, up[1]
                if clear is None or up not in clear:  # a cleared position may be pending itself
                    stack.append(up)
    if clear is not None:
        clear.update(seen)
        clear.add(start)
    return None
