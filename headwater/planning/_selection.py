"""Which asset partitions a request names. Pure; errors name the asset or partition at fault."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from headwater._errors import PartitionKeyError, SelectionError, did_you_mean
from headwater.definitions import AssetDef
from headwater.planning._state import NodeKey
from headwater.planning._status import FRESH, Evaluator
from headwater.planning._wavefront import topological_key

__all__ = ["backfill_nodes", "expand_selection", "partition_range", "resolve_selection"]

_GLOB = "*?["


def expand_selection(ev: Evaluator, selection: Iterable[str]) -> list[str]:
    """Asset keys and glob patterns (``'sales/*'``) as asset keys, each once, in order."""
    keys: list[str] = []
    for item in selection:
        if any(c in item for c in _GLOB):
            matched = [k for k in ev.defs.assets if fnmatch.fnmatchcase(k, item)]
            if not matched:
                raise SelectionError(f"selection {item!r} matches no asset")
            keys += matched
        else:
            keys.append(item)
    return list(dict.fromkeys(keys))


def _asset(ev: Evaluator, key: str) -> AssetDef:
    node = ev.defs.nodes.get(key)
    if node is None:
        raise SelectionError(f"unknown asset {key!r}{did_you_mean(key, ev.defs.assets)}")
    if not isinstance(node, AssetDef):
        raise SelectionError(f"{key!r} is a source: sources are observed, not materialized")
    return node


def resolve_selection(
    ev: Evaluator, selection: Iterable[str], partitions: Sequence[str] | None = None
) -> list[NodeKey]:
    """Every named asset (or glob of assets) at the named partitions (all existing ones when
    none are named)."""
    nodes: list[NodeKey] = []
    for key in expand_selection(ev, selection):
        node = _asset(ev, key)
        if node.partitions is None:
            if partitions:
                raise PartitionKeyError(f"asset {key!r} is not partitioned; drop --partition")
            nodes.append((key, None))
        elif not partitions:
            nodes.extend((key, p) for p in node.partitions.keys(ev.pctx))
        else:
            for p in partitions:
                node.partitions.require_key(p, ev.pctx, asset=key)
                nodes.append((key, p))
    return nodes


def partition_range(ev: Evaluator, asset: str, first: str, last: str) -> list[str]:
    """The existing partitions of ``asset`` from ``first`` to ``last``, both included."""
    node = _asset(ev, asset)
    if node.partitions is None:
        raise PartitionKeyError(f"asset {asset!r} is not partitioned; a backfill needs partitions")
    for key in (first, last):
        node.partitions.require_key(key, ev.pctx, asset=asset)
    keys = list(node.partitions.keys(ev.pctx))
    start, end = keys.index(first), keys.index(last)
    if start > end:
        raise PartitionKeyError(f"asset {asset!r}: --from {first!r} comes after --to {last!r}")
    return keys[start : end + 1]


def backfill_nodes(ev: Evaluator, asset: str, keys: Sequence[str]) -> list[NodeKey]:
    """The partitions ``keys`` of ``asset`` and, before them, the asset partitions upstream
    (through the partition mappings) that they need and that are not fresh, or have something
    upstream that is not: a backfill of days fills the hours they read first."""
    wanted: list[NodeKey] = [(asset, k) for k in keys]
    closure: set[NodeKey] = set()
    stack = list(wanted)
    while stack:
        for _, nodes in ev.input_nodes(*stack.pop()):
            for up in nodes:
                kind = ev.defs.nodes[up[0]]
                if up not in closure and isinstance(kind, AssetDef) and ev.exists(*up):
                    closure.add(up)
                    stack.append(up)
    needed: set[NodeKey] = set()
    for node in sorted(closure, key=lambda n: topological_key(ev.graph, n)):
        ups = (u for _, nodes in ev.input_nodes(*node) for u in nodes)
        if ev.status(*node).state != FRESH or any(u in needed for u in ups):
            needed.add(node)
    first = sorted(needed, key=lambda n: topological_key(ev.graph, n))
    return first + [n for n in wanted if n not in needed]
