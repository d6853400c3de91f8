"""Bindings: how an asset's parameters receive their inputs, recorded with each run.

The same upstream keys and the same function syntax can still hand the function other
values: two parameters swap their inputs or their partition mappings, an input trades places
with a ``deps`` key, a file source gets another ``loader=``. Staleness compares the binding a
run recorded with the one the definitions give now, parameter by parameter, so a renamed
parameter (reading what the old name read) or an added ``deps`` key is no such change.

A binding is one line, ``param=key[mapping]~loader`` per parameter in the function's order,
joined by spaces: ``[mapping]`` only for a declared mapping, ``~loader`` (a fingerprint, ``-`` for
loading by extension) only for a file or object source. It is interned: records loaded with
the binding the definitions give share its string, so most comparisons are of two pointers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from headwater.definitions._mappings import Identity, MappingSpec, PartitionMapping

if TYPE_CHECKING:
    from headwater.definitions._assets import AssetDef

__all__ = ["binding_changes", "binding_of", "no_loaders"]


_IDENTITY = Identity()
"""Written out, it reads what the default did where the default is Identity; elsewhere it
reads other partitions, which the recorded inputs tell: never a binding of its own."""


def _mapping_text(mapping: MappingSpec) -> str:
    if isinstance(mapping, PartitionMapping):
        return mapping.describe()
    return "{" + ",".join(f"{dim}:{m.describe()}" for dim, m in sorted(mapping.items())) + "}"


def no_loaders(key: str) -> str | None:
    """For :func:`binding_of` when no input is a file (what an asset alone can tell)."""
    return None


def binding_of(
    asset: AssetDef, loader_of: Callable[[str], str | None], by_default: Collection[str] = ()
) -> str | None:
    """The binding of ``asset``; ``loader_of(key)`` is the loader fingerprint of a file or
    object source, None for any other node; ``by_default``: the parameters whose declared
    mapping reads what the default does (only the graph can tell). None when nothing could
    be swapped unseen: one input, no ``deps``, not read from a file (another key there
    changes the inputs read, which staleness sees already). In parameter order, not sorted (:func:`binding_changes`
    compares parameter by parameter): each asset gets one when it is declared.
    """
    inputs = asset.inputs
    if not inputs:
        return None
    mappings = asset.mappings
    entries = []
    loaded = False
    for param, key in inputs.items():
        entry = f"{param}={key}"
        declared = mappings.get(param) if mappings else None
        if (
            declared is not None
            and declared[0] not in (None, _IDENTITY)
            and param not in by_default
        ):
            entry += f"[{_mapping_text(declared[0])}]".replace(" ", "")
        if (loader := loader_of(key)) is not None:
            entry += f"~{loader}"
            loaded = True
        entries.append(entry)
    if len(entries) == 1 and not asset.deps and not loaded:
        return None
    return sys.intern(" ".join(entries))


def _parse(binding: str) -> dict[str, tuple[str, str]]:
    """param -> (key and mapping, loader)."""
    out = {}
    for entry in binding.split(" "):
        param, _, rest = entry.partition("=")
        read, _, loader = rest.partition("~")
        out[param] = (read, loader)
    return out


def binding_changes(recorded: str, now: str, plain: Collection[str] = ()) -> list[str]:
    """Why a run with the ``recorded`` binding would get other values now, one line per
    parameter that both have (one renamed or added is the function's own change), or [].
    ``plain``: recorded entries that read what their bare key reads now
    (``Definitions.plain_reads``).
    """
    if recorded == now:
        return []
    was, current = _parse(recorded), _parse(now)
    out = []
    for param, (read, loader) in current.items():
        if (before := was.get(param)) is None:
            continue
        if read != before[0] and not (before[0] in plain and read == before[0].partition("[")[0]):
            out.append(f"parameter {param} reads {read} (was {before[0]})")
        elif loader != before[1]:
            key = read.partition("[")[0]
            out.append(f"input {key} is loaded by another loader= than in its last run")
    return out
