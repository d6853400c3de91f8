"""``Definitions``: every asset, source and check of a project, validated on construction."""

from __future__ import annotations

import functools
import graphlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from headwater._errors import DefinitionError, did_you_mean
from headwater.definitions._assets import AssetDef
from headwater.definitions._checks import CheckDef
from headwater.definitions._graph import AssetGraph, EdgeMapping
from headwater.definitions._sources import SourceDef
from headwater.policies import ClockPolicy
from headwater.versions import code_version

if TYPE_CHECKING:
    from headwater.execution._store import IOManager

__all__ = ["EXECUTORS", "Definitions", "Node"]

EXECUTORS = ("processes", "threads")

Node = AssetDef | SourceDef


def _caller() -> tuple[Path, str | None]:
    """The folder of the file that constructed the Definitions (relative paths resolve
    there), and the name of its module (where a worker process finds them again)."""
    frame = sys._getframe(2)
    module = frame.f_globals.get("__name__")
    filename = frame.f_globals.get("__file__")
    if not isinstance(filename, str):
        return Path.cwd(), None
    path = Path(filename)  # module paths are absolute: no filesystem call needed
    folder = path.parent if path.is_absolute() else path.resolve().parent
    return folder, module if isinstance(module, str) else None


class Definitions:
    """The assets, sources and checks of a project.

    Raises :class:`DefinitionError`, naming the assets involved, for an unknown dependency, a
    cycle, a duplicate key, a partition mismatch, or a parameter that matches no asset.
    """

    def __init__(
        self,
        assets: Iterable[Node],
        checks: Iterable[CheckDef] = (),
        *,
        io: IOManager | None = None,
        max_concurrency: int | None = None,
        executor: str | None = None,
    ) -> None:
        self.base_dir, self.module = _caller()
        self.origin: str | None = None
        """What they were loaded from (``load_definitions``'s target, made absolute)."""
        self.source: bytes | None = None
        """The text of the definitions file as it was loaded (workers run exactly that)."""
        self.io = io
        if executor is not None and executor not in EXECUTORS:
            raise DefinitionError(
                f"executor={executor!r}: use one of {', '.join(repr(e) for e in EXECUTORS)}"
            )
        self.executor = executor
        """Where functions run; None: ``[tool.headwater] executor``, else ``processes``."""
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise DefinitionError(
                f"max_concurrency must be a whole number >= 1, not {max_concurrency!r}"
            )
        self.max_concurrency = max_concurrency
        self.nodes: dict[str, Node] = {}
        for item in assets:
            if not isinstance(item, AssetDef | SourceDef):
                raise DefinitionError(
                    f"Definitions(assets=...) holds {item!r}, which is neither an @hw.asset "
                    "nor a source; decorate the function with @hw.asset"
                )
            if item.key in self.nodes:
                raise DefinitionError(
                    f"duplicate key {item.key!r}: two assets or sources are declared with it"
                )
            self.nodes[item.key] = item
        self._code_versions: dict[str, str] = {}
        self.checks = self._validate_checks(checks)
        self._validate_dependencies()
        mappings = self._validate_partitions()
        parents = {
            key: node.upstream if isinstance(node, AssetDef) else ()
            for key, node in self.nodes.items()
        }
        try:
            self.graph = AssetGraph(parents, mappings)
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])
            raise DefinitionError(
                "cycle in the asset graph: "
                + " -> ".join(cycle)
                + "; an asset cannot depend on itself, directly or through others"
            ) from None

    def code_version(self, key: str) -> str:
        """``code_version=`` if given, else the fingerprint of the function's syntax tree."""
        version = self._code_versions.get(key)
        if version is None:
            asset = self.assets[key]
            version = asset.code_version or code_version(asset.fn)
            self._code_versions[key] = version
        return version

    def compute_code_versions(self) -> None:
        """Fingerprint every asset now. It reads source files, so the engine calls it in a
        worker thread when it opens, keeping file reads off the event loop."""
        for key in self.assets:
            self.code_version(key)

    @functools.cached_property
    def assets(self) -> dict[str, AssetDef]:
        return {k: n for k, n in self.nodes.items() if isinstance(n, AssetDef)}

    @functools.cached_property
    def sources(self) -> dict[str, SourceDef]:
        return {k: n for k, n in self.nodes.items() if isinstance(n, SourceDef)}

    @functools.cached_property
    def clock_driven(self) -> frozenset[str]:
        """Assets whose policy acts on the clock (cron). Computed once: a runtime-checkable
        Protocol's isinstance costs tens of microseconds, and planning asks per partition."""
        by_type: dict[type, bool] = {}  # a policy's methods are its class's: one check each
        driven = set()
        for key, asset in self.assets.items():
            kind = type(asset.policy)
            clock = by_type.get(kind)
            if clock is None:
                clock = by_type[kind] = isinstance(asset.policy, ClockPolicy)
            if clock:
                driven.add(key)
        return frozenset(driven)

    @functools.cached_property
    def lag_tracked(self) -> frozenset[str]:
        """Assets with a ``max_lag`` SLA and every asset upstream of one: their partitions
        remember the first upstream change they do not reflect, so that lag counts from the
        original change through any number of assets in between."""
        holders = {
            k for k, a in self.assets.items() if a.freshness and a.freshness.max_lag is not None
        }
        return frozenset(k for k in holders | self.graph.ancestors(holders) if k in self.assets)

    def __getitem__(self, key: str) -> Node:
        return self.nodes[key]

    def __contains__(self, key: object) -> bool:
        return key in self.nodes

    def _validate_checks(self, checks: Iterable[CheckDef]) -> dict[str, list[CheckDef]]:
        by_asset: dict[str, list[CheckDef]] = {}
        for item in checks:
            if not isinstance(item, CheckDef):
                raise DefinitionError(
                    f"Definitions(checks=...) holds {item!r}, which is not an @hw.check"
                )
            target = self.nodes.get(item.asset)
            if not isinstance(target, AssetDef):
                what = "a source" if target is not None else "not defined"
                raise DefinitionError(
                    f"check {item.name!r} targets {item.asset!r}, which is {what}"
                    + ("" if target is not None else did_you_mean(item.asset, self.nodes))
                )
            same = by_asset.setdefault(item.asset, [])
            if any(c.name == item.name for c in same):
                raise DefinitionError(f"asset {item.asset!r} has two checks named {item.name!r}")
            same.append(item)
        return by_asset

    def _validate_dependencies(self) -> None:
        for key, node in self.nodes.items():
            if not isinstance(node, AssetDef):
                continue
            for param, upstream in node.inputs.items():
                if upstream in self.nodes:
                    continue
                if param == upstream:
                    raise DefinitionError(
                        f"asset {key!r}: parameter {param!r} matches no asset or source"
                        f"{did_you_mean(param, self.nodes)}; name the parameter after an upstream key "
                        f"or map it with ins={{{param!r}: 'upstream/key'}}"
                    )
                raise DefinitionError(
                    f"asset {key!r}: input {param!r} maps to unknown dependency {upstream!r}"
                    f"{did_you_mean(upstream, self.nodes)}"
                )
            for dep in node.deps:
                if dep not in self.nodes:
                    raise DefinitionError(
                        f"asset {key!r} depends on unknown dependency {dep!r}{did_you_mean(dep, self.nodes)}"
                    )

    def _validate_partitions(self) -> dict[tuple[str, str], EdgeMapping]:
        mappings: dict[tuple[str, str], EdgeMapping] = {}
        for key, node in self.nodes.items():
            if not isinstance(node, AssetDef):
                continue
            for parent_key in node.upstream:
                parent = self.nodes[parent_key].partitions
                child = node.partitions
                if parent is None and child is None:
                    mapping = EdgeMapping.NONE
                elif parent is None:
                    mapping = EdgeMapping.FAN_OUT
                elif child is None:
                    mapping = EdgeMapping.ALL
                elif parent == child:
                    mapping = EdgeMapping.IDENTITY
                else:
                    raise DefinitionError(
                        f"partition mismatch: asset {key!r} ({child.describe()}) depends on "
                        f"{parent_key!r} ({parent.describe()}) and there is no mapping between "
                        "different partitions definitions; use the same definition on both"
                    )
                mappings[(parent_key, key)] = mapping
        return mappings
