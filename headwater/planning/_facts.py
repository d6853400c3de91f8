"""What planning needs to know of each asset, gathered once per definitions, in columns. Pure.

A dry run of 100k steps asked the definitions, per step, for the asset's node, code version,
binding, store, policy kind, inputs and the children it reaches: a dozen dictionary lookups
and calls, each as dear as the step's own work. Each asset's answers are gathered the first
time a plan reaches it and kept as long as the definitions (a reload makes new ones, and so
new facts). Gathering them all at the first full evaluation, which reads every asset, cost
it more (0.25 s at 100k) than its plain assets then saved (0.1 s).

They are kept in columns by topological place, not in an object per asset: an object, its
node and three tuples per asset made the first plan at 100k build half a million objects
that the cyclic collector then walked when the plan ended (~2 µs of a 13 µs step) and at
every full collection after, for as long as the daemon lived. Strings, bytes and arrays of
integers are nothing the collector tracks.
"""

from __future__ import annotations

import threading
import weakref
from array import array
from weakref import WeakKeyDictionary

from headwater.definitions import Definitions, EdgeMapping
from headwater.policies import EagerPolicy

__all__ = [
    "CHECKED",
    "EAGER",
    "GUARDED",
    "MADE",
    "PLAIN",
    "PLAIN_STEP",
    "UNKNOWN",
    "VARIES",
    "Facts",
    "facts_of",
]

_NONE = EdgeMapping.NONE

MADE = 1
"""The asset's facts are gathered (a source's never are: 0)."""
EAGER = 2
"""Its policy is :class:`EagerPolicy` itself: decided without a policy context."""
CHECKED = 4
"""It has checks of its own (a planned run records their verdicts)."""
GUARDED = 8
"""It has a blocking check (its status asks whether their verdicts judged its data)."""
PLAIN = 16
"""Unpartitioned, reading each input as its one node, none of them held by a blocking check:
its inputs are in :attr:`Facts.inputs_at`, sorted by key as a status lists them. Otherwise
the status walks the edge mappings."""
PLAIN_STEP = 32
"""Eager and plain, with no checks: a dry run decides it from the versions planned so far
(``_dryrun._plain_status``)."""

_PARTITIONED = 64
_REACTS = 128
"""Unpartitioned, and its policy reacts to upstream changes (what :meth:`Facts.reach` reads
of each child)."""

UNKNOWN = -1
"""In :attr:`Facts.reach_n`: not worked out yet (:meth:`Facts.reach` does)."""
VARIES = -2
"""In :attr:`Facts.reach_n`: the children it reaches depend on the instant."""


class Facts:
    """The facts of the assets of one :class:`Definitions` by topological place, each
    asset's gathered when first asked (:meth:`make`): planning in proportion to the change
    gathers those of the assets it reaches, not of the whole graph."""

    def __init__(self, defs: Definitions) -> None:
        self._defs = weakref.ref(defs)
        """Not the definitions themselves: the facts are kept as long as they live, in a
        weak dictionary whose values must not keep its keys alive (each reload's would)."""
        self._reserving = threading.Lock()
        """Held while a slice of :attr:`inputs` or :attr:`reached` is taken: two plans in
        two threads would otherwise each point an asset at the other's slice. A slice is
        pointed at only once it is filled: another thread may gather the same asset again
        while a plan reads its first slice."""
        order = self.order = defs.graph.order
        n = len(order)
        keys = [""] * n
        for key, place in order.items():
            keys[place] = key
        self.keys = keys
        """Every key (sources too) at its place: a plan keeps its queue as plain integers."""
        self.flags = bytearray(n)
        """Per place, the bits above; 0 until gathered, and for a source."""
        self.code: list[str] = [""] * n
        self.binding: list[str | None] = [None] * n
        self.store: list[str] = [""] * n
        self.inputs_at = array("i", bytes(4 * n))
        """Per place of a :data:`PLAIN` asset, where its inputs' places start in
        :attr:`inputs`; :attr:`inputs_n` of them."""
        self.inputs_n = array("i", bytes(4 * n))
        self.inputs = array("i")
        self.reach_at = array("i", bytes(4 * n))
        """Per place, where :meth:`reach` put the places of the children it reaches in
        :attr:`reached`; :attr:`reach_n` of them, or :data:`UNKNOWN` or :data:`VARIES`.
        Apart from the other facts: a full evaluation that runs nothing needs it for no
        asset."""
        self.reach_n = array("i", [UNKNOWN]) * n
        self.reached = array("i")
        # What make and reach read of the definitions, held here, not through them: a
        # lookup each through the definitions was a tenth of gathering an asset. None of
        # these holds the definitions themselves (see ``_defs``).
        self._assets = defs.assets
        self._in_edges = defs.graph.in_edges
        self._children = defs.graph.children
        self._guarded = defs.guarded
        self._checks = defs.checks

    def make(self, place: int) -> int:
        """Gather the facts of the asset at ``place``; return its flags (a KeyError for a
        source)."""
        key = self.keys[place]
        asset = self._assets[key]
        guarded = self._guarded
        flags = MADE
        if asset.partitions is None:
            parents = []
            for parent, mapping in self._in_edges[key]:
                if mapping is not _NONE or parent in guarded:
                    break
                parents.append(parent)
            else:
                if len(parents) > 1:
                    parents.sort()
                with self._reserving:
                    at = len(self.inputs)
                    self.inputs.extend(map(self.order.__getitem__, parents))
                # Published once its slice is complete: a plan in another thread may read it
                # as soon as it is set (the first to set it has set inputs_n and flags).
                self.inputs_at[place] = at
                self.inputs_n[place] = len(parents)
                flags |= PLAIN
            if asset.policy.reacts_to_upstream:
                flags |= _REACTS
        else:
            flags |= _PARTITIONED
        if type(asset.policy) is EagerPolicy:
            flags |= EAGER
        if key in self._checks:
            flags |= CHECKED
        elif flags & (EAGER | PLAIN) == EAGER | PLAIN:
            flags |= PLAIN_STEP
        if key in guarded:
            flags |= GUARDED
        defs = self._definitions()
        self.code[place] = defs.code_version(key)
        self.binding[place] = defs.binding(key)
        self.store[place] = defs.store_name(key)
        self.flags[place] = flags
        return flags

    def _definitions(self) -> Definitions:
        defs = self._defs()
        assert defs is not None, "facts outlived their definitions"
        return defs

    def made(self, key: str) -> int:
        """The place of asset ``key`` if its facts are gathered, else -1 (a KeyError for an
        unknown key)."""
        place = self.order[key]
        return place if self.flags[place] else -1

    def reach(self, place: int) -> int:
        """Work out ``Definitions.fixed_reach`` of the asset at ``place`` as places in
        :attr:`reached`; return how many (:data:`VARIES`: it depends on the instant)."""
        n = self.reach_n[place]
        if n == UNKNOWN:  # as Definitions.fixed_reach, from the flags (no node per child)
            order, flags = self.order, self.flags
            found = []
            for child in self._children[self.keys[place]]:
                at = order[child]
                bits = flags[at] or self.make(at)  # a dry run reaches it next
                if bits & _PARTITIONED:
                    n = VARIES
                    break
                if bits & _REACTS:
                    found.append(at)
            else:
                with self._reserving:
                    at = len(self.reached)
                    self.reached.extend(found)
                self.reach_at[place] = at  # once complete, as inputs_at in make
                n = len(found)
            self.reach_n[place] = n
        return n


_FACTS: WeakKeyDictionary[Definitions, Facts] = WeakKeyDictionary()
_MAKING = threading.Lock()


def facts_of(defs: Definitions) -> Facts:
    """The facts of ``defs``, shared by every evaluator over them (kept while they live)."""
    facts = _FACTS.get(defs)
    if facts is None:
        with _MAKING:  # one per definitions: a plan reads them through its evaluator too
            facts = _FACTS.get(defs)
            if facts is None:
                facts = _FACTS[defs] = Facts(defs)
    return facts
