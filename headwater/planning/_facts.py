"""What planning needs to know of one asset, gathered once per definitions. Pure.

A dry run of 100k steps asked the definitions, per step, for the asset's node, code version,
binding, store, policy kind, inputs and the children it reaches: a dozen dictionary lookups
and calls, each as dear as the step's own work. One object per asset holds them, made the
first time the asset is looked at and kept as long as the definitions (a reload makes new
ones, and so new facts).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from headwater._records import record_class
from headwater.definitions import Definitions, EdgeMapping
from headwater.planning._state import NodeKey
from headwater.policies import EagerPolicy

__all__ = ["UNKNOWN", "AssetFacts", "Facts", "facts_of"]

_NONE = EdgeMapping.NONE


@record_class  # one per asset at the first full evaluation: plain slot stores
class AssetFacts:
    """One asset's part of the definitions, as a status and a step read it."""

    key: str
    node: NodeKey
    """Its unpartitioned node, ``(key, None)``: built once, not per lookup."""
    code_version: str
    binding: str | None
    store: str
    eager: bool
    """Its policy is :class:`EagerPolicy` itself: decided without a policy context."""
    checked: bool
    """It has checks of its own (a planned run records their verdicts)."""
    guarded: bool
    """It has a blocking check (its status asks whether their verdicts judged its data)."""
    plain_inputs: tuple[str, ...] | None
    """Unpartitioned, reading each input as its one node, none of them held by a blocking
    check: the input keys, sorted, as a status lists its inputs. None otherwise (the status
    walks the edge mappings)."""
    plain_places: tuple[int, ...]
    """The topological places of ``plain_inputs``, in the same order. Flat tuples, not a
    tuple per input: a dry run's first plan makes facts for every step, and each object
    made then is walked by the collector when the plan ends."""
    plain_step: bool
    """Eager, with ``plain_inputs`` and no checks: a dry run decides it from the versions
    planned so far (``_dryrun._plain_status``)."""


UNKNOWN: tuple[int, ...] = (-1,)
"""In :attr:`Facts.reaches`: not worked out yet (:meth:`Facts.reach` does)."""


class Facts:
    """The facts of every asset of one :class:`Definitions`, each made when first asked."""

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self.by_key: dict[str, AssetFacts] = {}
        """Made so far; :meth:`of` makes the others."""
        self._keys: list[str] = []
        self.reaches: list[tuple[int, ...] | None] = []
        """Per place, :meth:`reach` once worked out, else :data:`UNKNOWN` (filled along
        with :attr:`keys`): a dry run reads it without a call per step."""

    @property
    def keys(self) -> list[str]:
        """Every key (sources too) at its place in the topological order: a plan can keep
        its queue as plain integers. Made when first asked (a tick that plans nothing never
        asks)."""
        if not self._keys:
            order = self.defs.graph.order
            keys = [""] * len(order)
            for key, place in order.items():
                keys[place] = key
            self._keys = keys
            self.reaches = [UNKNOWN] * len(keys)
        return self._keys

    def of(self, key: str) -> AssetFacts:
        """The facts of asset ``key`` (a KeyError for a source or an unknown key)."""
        made = self.by_key.get(key)
        return made if made is not None else self._make(key)

    def reach(self, place: int) -> tuple[int, ...] | None:
        """``Definitions.fixed_reach`` of the asset at ``place``, as places (None: it depends
        on the instant). Apart from the facts: a full evaluation that runs nothing needs it
        for no asset."""
        keys = self.keys
        reach = self.reaches[place]
        if reach is UNKNOWN:
            found = self.defs.fixed_reach_keys(keys[place])
            order = self.defs.graph.order
            reach = self.reaches[place] = (
                None if found is None else tuple([order[key] for key in found])
            )
        return reach

    def _make(self, key: str) -> AssetFacts:
        defs = self.defs
        asset = defs.assets[key]
        guarded = defs.guarded
        plain: tuple[str, ...] | None = None
        places: tuple[int, ...] = ()
        if asset.partitions is None:
            graph = defs.graph
            inputs = []
            for parent, mapping in graph.in_edges[key]:
                if mapping is not _NONE or parent in guarded:
                    break
                inputs.append(parent)
            else:
                inputs.sort()
                plain = tuple(inputs)
                order = graph.order
                places = tuple([order[parent] for parent in inputs])
        eager = type(asset.policy) is EagerPolicy
        checked = key in defs.checks
        made = self.by_key[key] = AssetFacts(
            key,
            (key, None),
            defs.code_version(key),
            defs.binding(key),
            defs.store_name(key),
            eager,
            checked,
            key in guarded,
            plain,
            places,
            eager and plain is not None and not checked,
        )
        return made


_FACTS: WeakKeyDictionary[Definitions, Facts] = WeakKeyDictionary()


def facts_of(defs: Definitions) -> Facts:
    """The facts of ``defs``, shared by every evaluator over them (kept while they live)."""
    facts = _FACTS.get(defs)
    if facts is None:
        facts = _FACTS[defs] = Facts(defs)
    return facts
