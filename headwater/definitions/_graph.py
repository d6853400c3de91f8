"""The asset graph: parents, children and a stable topological order. Built once, then read."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headwater.definitions._mappings import EdgeMap

__all__ = ["AssetGraph", "EdgeMapping"]


class EdgeMapping(Enum):
    """How the partitions of a child relate to those of one parent."""

    NONE = "none"  # both unpartitioned
    IDENTITY = "identity"  # same partitions definition
    ALL = "all"  # partitioned parent, unpartitioned child: the child reads every partition
    FAN_OUT = "fan_out"  # unpartitioned parent: every child partition reads it
    MAPPED = "mapped"  # partitioned both: through a partition mapping (graph.edge_map)


class AssetGraph:
    """Parents and children by key, and ``order[key]``: the key's index in a topological order."""

    def __init__(
        self,
        parents: Mapping[str, tuple[str, ...]],
        mappings: Mapping[tuple[str, str], EdgeMapping],
        edge_maps: Mapping[tuple[str, str], EdgeMap] | None = None,
    ) -> None:
        self.parents = dict(parents)
        children: dict[str, list[str]] = {key: [] for key in parents}
        for child, ups in parents.items():
            for parent in ups:
                children[parent].append(child)
        self.children = {key: tuple(v) for key, v in children.items()}
        self.mappings = dict(mappings)
        self.in_edges = {
            child: tuple((parent, self.mappings[(parent, child)]) for parent in ups)
            for child, ups in self.parents.items()
        }
        """Per key, ``(parent, mapping)`` of each input edge: what a status walks, without a
        tuple key built and hashed per edge."""
        self.edge_maps = dict(edge_maps or {})
        self.order = {key: i for i, key in enumerate(self._stable_order())}

    def _stable_order(self) -> list[str]:
        """Level by level, alphabetical within a level, so plans read the same every time."""
        sorter = graphlib.TopologicalSorter(self.parents)
        sorter.prepare()  # raises graphlib.CycleError; Definitions turns that into a message
        out: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            out.extend(ready)
            sorter.done(*ready)
        return out

    def mapping(self, parent: str, child: str) -> EdgeMapping:
        return self.mappings[(parent, child)]

    def edge_map(self, parent: str, child: str) -> EdgeMap:
        """The partition mapping of a MAPPED edge."""
        return self.edge_maps[(parent, child)]

    def descendants(self, keys: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(keys)
        while stack:
            for child in self.children[stack.pop()]:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def ancestors(self, keys: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(keys)
        while stack:
            for parent in self.parents[stack.pop()]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen
