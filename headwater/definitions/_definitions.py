"""``Definitions``: every asset, source and check of a project, validated on construction."""

from __future__ import annotations

import functools
import graphlib
import hashlib
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from headwater._errors import DefinitionError, did_you_mean
from headwater.definitions._assets import AssetDef
from headwater.definitions._bindings import binding_of
from headwater.definitions._checks import CheckDef
from headwater.definitions._graph import AssetGraph, EdgeMapping
from headwater.definitions._mappings import (
    AllPartitions,
    EdgeMap,
    Identity,
    MappingSpec,
    PartitionMap,
    TimeWindow,
    resolve_mapping,
)
from headwater.definitions._partitions import DynamicPartitions
from headwater.definitions._sources import FileSource, ObjectSource, SourceDef
from headwater.policies import ClockPolicy
from headwater.versions import callable_version, code_version

if TYPE_CHECKING:
    from headwater.execution._store import IOManager

__all__ = ["EXECUTORS", "Definitions", "Node", "ReadMap", "valid_executor"]

EXECUTORS = ("processes", "threads", "dask://HOST:PORT")


def valid_executor(name: object) -> bool:
    """``processes``, ``threads``, or ``dask://HOST:PORT`` (a Dask distributed scheduler)."""
    if name in ("processes", "threads"):
        return True
    if not isinstance(name, str) or not name.startswith("dask://"):
        return False
    host, _, port = name[len("dask://") :].rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


Node = AssetDef | SourceDef


@dataclass(frozen=True, slots=True)
class ReadMap:
    """How one parameter reads its upstream: the kind of edge, the resolved mapping for a
    MAPPED one, and whether a window outside the upstream's partitions reads None."""

    kind: EdgeMapping
    mapping: PartitionMap | None
    optional: bool


_PLAIN_READS = {(k, o): ReadMap(k, None, o) for k in EdgeMapping for o in (False, True)}


def _plain_read(kind: EdgeMapping, optional: bool) -> ReadMap:
    """A read without a mapping: one shared instance per kind (one per edge was 10 MB at
    100k assets)."""
    return _PLAIN_READS[(kind, optional)]


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
        self.instance = uuid.uuid4().hex
        """Unique to this object: a Dask worker that keeps definitions imported imports them
        again for another (a reload), and with them the helper modules they import."""
        self.origin: str | None = None
        """What they were loaded from (``load_definitions``'s target, made absolute)."""
        self.source: bytes | None = None
        """The text of the definitions file as it was loaded (workers run exactly that)."""
        self.modules: dict[str, tuple[str, bytes]] = {}
        """The user's modules the load imported (a helper beside the file; a module target
        and its package), by name: file and text, which workers import instead of the
        files as they are when they start."""
        self.io = io
        if executor is not None and not valid_executor(executor):
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
        self._stores = self._name_stores()
        """Per asset not stored in the state directory, where its values are kept."""
        self._fixed_reach: dict[str, tuple[tuple[str, None], ...] | None] = {}
        self._fixed_inputs: dict[str, tuple[tuple[str, None], ...] | None] = {}
        self._bindings: dict[str, str | None] = {}
        self._default_mapped: dict[str, set[str]] = {}
        """Per asset, the parameters whose declared mapping reads what the default does."""
        self._plain_reads: dict[str, frozenset[str]] = {}
        self._loaders: dict[str, str] = {}
        self._check_versions: dict[tuple[str, str], str] = {}
        self._blocking_versions: dict[str, str] = {}
        self.checks = self._validate_checks(checks)
        self._validate_dependencies()
        self._validate_partitions()
        parents = {
            key: node.upstream if isinstance(node, AssetDef) else ()
            for key, node in self.nodes.items()
        }
        try:
            self.graph = AssetGraph(parents, self.edge_kinds, self.edge_maps)
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

    @property
    def stored_elsewhere(self) -> frozenset[str]:
        """The assets whose values are not kept in the state directory (``io=``)."""
        return self._elsewhere

    def store_name(self, key: str) -> str:
        """Where asset ``key``'s values are kept, as its materializations record it: "" for
        the state directory (no ``io=``), else the store's ``location`` (an object store's
        URL) or, for a store of the user's that has none, its class. A record made in
        another store is stale: the value it names is not where readers now look."""
        return self._stores.get(key, "")

    def _name_stores(self) -> dict[str, str]:
        """Each ``io=`` checked and named once, as the definitions are made: a store without
        ``save`` or ``load``, or whose ``location`` raises, is a DefinitionError naming the
        asset (it failed its runs, or stopped the daemon at its first status)."""
        from headwater.execution._object_store import ObjectStore  # it imports this module

        names: dict[str, str] = {}
        named: dict[int, str] = {}  # one store serves many assets (Definitions(io=...))
        objects: dict[tuple[str, str], str] = {}
        for key, node in self.nodes.items():
            if isinstance(node, AssetDef) and (io := node.io or self.io) is not None:
                name = named.get(id(io))
                if name is None:
                    name = named[id(io)] = _store_name(io, key, self.module)
                names[key] = name
                if isinstance(io, ObjectStore):
                    where = (io.bucket, io.key(key, None))
                    if (other := objects.setdefault(where, key)) != key:
                        raise DefinitionError(
                            f"assets {other!r} and {key!r} store their values in one object, "
                            f"s3://{where[0]}/{where[1]} (their stores' prefixes overlap): "
                            "each run would make the other's value lost; give one another prefix"
                        )
        self._elsewhere = frozenset(names)
        return names

    def compute_code_versions(self) -> None:
        """Fingerprint every asset now. It reads source files, so the engine calls it in a
        worker thread when it opens, keeping file reads off the event loop. Assets made by a
        factory share their function: it is fingerprinted once (100k assets: 0.18 s -> 0.08)."""
        by_function: dict[int, str] = {}  # the assets hold the functions: ids stay unique
        for key, asset in self.assets.items():
            if key not in self._code_versions:
                version = asset.code_version or by_function.get(id(asset.fn))
                if version is None:
                    version = by_function[id(asset.fn)] = code_version(asset.fn)
                self._code_versions[key] = version

    def compute_fingerprints(self) -> None:
        """Fingerprint every loader and check now (what readers and verdicts record): it
        reads source files and walks what they hold, which may be a big lookup table, so the
        engine calls it in a worker thread when it opens. Workers need none of it."""
        for source in self.sources.values():
            if isinstance(source, FileSource | ObjectSource):
                self._loader_version(source)
        for checks in self.checks.values():
            for item in checks:
                self.check_version(item)

    def check_version(self, check: CheckDef) -> str:
        """The fingerprint of a check function (its syntax tree, and what it holds: see
        ``callable_version``), recorded with its verdict: a blocking check edited since it
        judged the current data has not judged it (see ``Evaluator.status``). Memoized."""
        version = self._check_versions.get((check.asset, check.name))
        if version is None:
            version = self._check_versions[(check.asset, check.name)] = callable_version(check.fn)
        return version

    def blocking_checks_version(self, key: str) -> str | None:
        """One fingerprint of the blocking checks declared on ``key`` (names and code), or
        None without any: recorded with a run, so that a failure under other checks than the
        definitions' now no longer stands (an edit re-ran the asset and the run failed; the
        edit reverted, its last value is judged again by what judged it). Memoized."""
        if key not in self.guarded:
            return None
        version = self._blocking_versions.get(key)
        if version is None:
            named = sorted(
                f"{c.name}={self.check_version(c)}"
                for c in self.checks[key]
                if c.name in self._blocking[key]
            )
            digest = hashlib.blake2b("\n".join(named).encode(), digest_size=8).hexdigest()
            version = self._blocking_versions[key] = digest
        return version

    def fixed_reach(self, key: str) -> tuple[tuple[str, None], ...] | None:
        """The children that a change of ``key``'s unpartitioned node reaches, when that does
        not depend on the instant: every child unpartitioned (each is then reached as its one
        node, whatever the edge), kept if its policy reacts to upstream changes. None when a
        child is partitioned (which partitions exist may change with time or dynamic keys).
        Memoized per key: a tick's wavefront asks once per step (a dry run keeps its own, as
        topological places: ``planning._facts``)."""
        if key in self._fixed_reach:
            return self._fixed_reach[key]
        assets = self.assets
        found: list[tuple[str, None]] = []
        reach: tuple[tuple[str, None], ...] | None = None
        for child in self.graph.children[key]:
            asset = assets[child]
            if asset.partitions is not None:
                break
            if asset.policy.reacts_to_upstream:
                found.append((child, None))
        else:
            reach = tuple(found)
        self._fixed_reach[key] = reach
        return reach

    def fixed_inputs(self, key: str) -> tuple[tuple[str, None], ...] | None:
        """The input nodes of asset ``key``'s unpartitioned node, when they do not depend on
        the instant: every edge but ALL reads one node of an input (ALL reads the partitions
        present now). None for a partitioned asset or one with an ALL edge. Memoized."""
        if key in self._fixed_inputs:
            return self._fixed_inputs[key]
        inputs: tuple[tuple[str, None], ...] | None = None
        if self.assets[key].partitions is None:
            edges = self.graph.in_edges[key]
            if all(mapping is not EdgeMapping.ALL for _, mapping in edges):
                inputs = tuple((parent, None) for parent, _ in edges)
        self._fixed_inputs[key] = inputs
        return inputs

    def binding(self, key: str) -> str | None:
        """How asset ``key``'s parameters receive their inputs (see ``_bindings``), recorded
        with each run and compared by staleness: :attr:`AssetDef.binding`, with the loaders
        of the files it reads, without the mappings that read what the default does."""
        if key not in self._own_bindings:
            return self.assets[key].binding
        if key in self._bindings:
            return self._bindings[key]
        binding = self._bindings[key] = binding_of(
            self.assets[key], self._loader_of, self._default_mapped.get(key, ())
        )
        return binding

    @functools.cached_property
    def _own_bindings(self) -> frozenset[str]:
        """The assets whose binding the definitions tell, not the asset alone."""
        return self._file_readers | self._default_mapped.keys()

    def _loader_of(self, key: str) -> str | None:
        if key not in self._loaded_sources:
            return None
        return self._loader_version(cast("FileSource | ObjectSource", self.nodes[key]))

    @functools.cached_property
    def _file_readers(self) -> frozenset[str]:
        """The assets with an input from a file or object source."""
        return frozenset(
            child
            for key in self._loaded_sources
            for child in self.graph.children[key]
            if key in self.assets[child].inputs.values()
        )

    @functools.cached_property
    def _loaded_sources(self) -> frozenset[str]:
        """File and object sources: their readers' bindings name their loaders."""
        kinds = FileSource | ObjectSource
        return frozenset(k for k, s in self.sources.items() if isinstance(s, kinds))

    def _loader_version(self, source: FileSource | ObjectSource) -> str:
        version = self._loaders.get(source.key)
        if version is None:
            loader = source.loader  # what cannot be encoded counts by its type: no error
            version = "-" if loader is None else callable_version(loader)[:16]
            self._loaders[source.key] = version
        return version

    def blocking_checks(self, key: str) -> frozenset[str]:
        """The names of the blocking checks declared on ``key`` (what a failed check result
        in the log holds back is decided by these, not by how it was declared then)."""
        return self._blocking.get(key, frozenset())

    @functools.cached_property
    def guarded(self) -> frozenset[str]:
        """The assets with a blocking check: their readers may have to wait for a verdict."""
        return frozenset(key for key, names in self._blocking.items() if names)

    @functools.cached_property
    def _blocking(self) -> dict[str, frozenset[str]]:
        return {
            key: frozenset(c.name for c in checks if c.blocking)
            for key, checks in self.checks.items()
        }

    @functools.cached_property
    def assets(self) -> dict[str, AssetDef]:
        return {k: n for k, n in self.nodes.items() if isinstance(n, AssetDef)}

    @functools.cached_property
    def sources(self) -> dict[str, SourceDef]:
        return {k: n for k, n in self.nodes.items() if isinstance(n, SourceDef)}

    @functools.cached_property
    def dynamic_assets(self) -> dict[str, tuple[str, ...]]:
        """Per dynamic partitions name, the assets partitioned by it: what a new key of it
        adds partitions to (asked at every observation, so not a walk of every asset)."""
        out: dict[str, list[str]] = {}
        for key, asset in self.assets.items():
            if isinstance(asset.partitions, DynamicPartitions):
                out.setdefault(asset.partitions.name, []).append(key)
        return {name: tuple(keys) for name, keys in out.items()}

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
        return self._with_upstream(
            k for k, a in self.assets.items() if a.freshness and a.freshness.max_lag is not None
        )

    def lag_below(self, key: str) -> timedelta | None:
        """The smallest ``max_lag`` of the assets downstream of ``key`` (None: none has one):
        how long it may stay behind before one of them is late through it."""
        if key not in self._lag_below:
            lags = [
                lag
                for k in self.graph.descendants([key]) - {key}
                if (sla := self.nodes[k].freshness) is not None and (lag := sla.max_lag)
            ]
            self._lag_below[key] = min(lags, default=None)
        return self._lag_below[key]

    @functools.cached_property
    def _lag_below(self) -> dict[str, timedelta | None]:
        return {}

    @functools.cached_property
    def sla_holders(self) -> frozenset[str]:
        """Assets and sources with a freshness SLA."""
        return frozenset(k for k, n in self.nodes.items() if n.freshness is not None)

    @functools.cached_property
    def sla_pulled(self) -> frozenset[str]:
        """Assets with a freshness SLA and every asset upstream of one: where a lazy asset
        looks for what pulls it."""
        return self._with_upstream(k for k, a in self.assets.items() if a.freshness is not None)

    def _with_upstream(self, holders: Iterable[str]) -> frozenset[str]:
        """``holders`` and every asset upstream of them (sources left out)."""
        found = set(holders)
        return frozenset(k for k in found | self.graph.ancestors(found) if k in self.assets)

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

    def _validate_partitions(self) -> None:
        """Resolve every read's partition mapping: per parameter (what the runner passes in)
        and per edge (the union the planner follows)."""
        self.edge_kinds: dict[tuple[str, str], EdgeMapping] = {}
        self.edge_maps: dict[tuple[str, str], EdgeMap] = {}
        self.read_maps: dict[tuple[str, str], ReadMap] = {}
        for key, node in self.nodes.items():
            if not isinstance(node, AssetDef):
                continue
            per_edge: dict[str, list[ReadMap]] = {}
            reads: list[tuple[str | None, str, tuple[MappingSpec | None, bool]]] = [
                (p, up, node.mappings.get(p, (None, False))) for p, up in node.inputs.items()
            ]
            reads += [(None, d, node.dep_mappings.get(d, (None, False))) for d in node.deps]
            for param, upstream, (declared, optional) in reads:
                read = self._resolve_read(node, upstream, declared, optional)
                if param is not None:
                    self.read_maps[(key, param)] = read
                    if declared is not None and self._reads_by_default(node, upstream, read):
                        self._default_mapped.setdefault(key, set()).add(param)
                per_edge.setdefault(upstream, []).append(read)
            for upstream, edge_reads in per_edge.items():
                kinds = {r.kind for r in edge_reads}
                if len(kinds) == 1 and kinds != {EdgeMapping.MAPPED}:
                    self.edge_kinds[(upstream, key)] = kinds.pop()
                    continue
                if EdgeMapping.ALL in kinds:
                    raise DefinitionError(
                        f"asset {key!r} reads {upstream!r} both whole (AllPartitions) and by "
                        "partition; read it one way"
                    )
                parts = [
                    (r.mapping or self._identity(node, upstream), r.optional) for r in edge_reads
                ]
                self.edge_kinds[(upstream, key)] = EdgeMapping.MAPPED
                self.edge_maps[(upstream, key)] = EdgeMap(parts)

    def _reads_by_default(self, node: AssetDef, upstream: str, read: ReadMap) -> bool:
        """Whether a declared mapping reads what no mapping would (``AllPartitions()`` into
        an unpartitioned reader, ``TimeWindow()`` from hours to days or from days to days):
        its binding names no mapping then, so declaring or dropping it is no change."""
        try:
            default = self._resolve_read(node, upstream, None, read.optional)
        except DefinitionError:  # no default between these partitionings
            return False
        if default.kind is EdgeMapping.IDENTITY and read.mapping is not None:
            return read.mapping.same_keys
        if default.kind is not read.kind:
            return False
        if default.mapping is None or read.mapping is None:
            return default.mapping is read.mapping
        return default.mapping.shape == read.mapping.shape

    def plain_reads(self, key: str) -> frozenset[str]:
        """The binding entries ``upstream[mapping]`` of asset ``key`` that read what the bare
        ``upstream`` reads now: how a run recorded before such mappings were left out of
        bindings names them (compared as the bare key, so an upgrade re-runs nothing).
        Memoized."""
        found = self._plain_reads.get(key)
        if found is None:
            node = self.assets[key]
            texts = set()
            for param, upstream in node.inputs.items():
                optional = node.mappings.get(param, (None, False))[1]
                for mapping in (AllPartitions(), TimeWindow()):
                    try:
                        read = self._resolve_read(node, upstream, mapping, optional)
                    except DefinitionError:
                        continue
                    if self._reads_by_default(node, upstream, read):
                        texts.add(f"{upstream}[{mapping.describe()}]")
            found = self._plain_reads[key] = frozenset(texts)
        return found

    def _identity(self, node: AssetDef, upstream: str) -> PartitionMap:
        parent = self.nodes[upstream].partitions
        assert node.partitions is not None and parent is not None
        resolved = resolve_mapping(None, node.partitions, parent, f"asset {node.key!r}")
        assert resolved is not None
        return resolved

    def _resolve_read(
        self, node: AssetDef, upstream: str, declared: MappingSpec | None, optional: bool
    ) -> ReadMap:
        parent = self.nodes[upstream].partitions
        child = node.partitions
        where = f"asset {node.key!r} depends on {upstream!r}"
        if parent is None or child is None:
            if declared is not None and not (
                isinstance(declared, AllPartitions) and parent is not None
            ):
                raise DefinitionError(
                    f"{where}: mapping={declared!r} maps between two partitioned assets, but "
                    f"{(node.key if child is None else upstream)!r} is not partitioned"
                )
            if parent is None:
                kind = EdgeMapping.NONE if child is None else EdgeMapping.FAN_OUT
            else:
                kind = EdgeMapping.ALL
            return _plain_read(kind, optional)
        if isinstance(declared, AllPartitions):
            return _plain_read(EdgeMapping.ALL, optional)
        if parent == child and (declared is None or isinstance(declared, Identity)):
            return _plain_read(EdgeMapping.IDENTITY, optional)
        resolved = resolve_mapping(
            declared,
            child,
            parent,
            f"asset {node.key!r} ({child.describe()}) depends on {upstream!r} ({parent.describe()})",
        )
        assert resolved is not None
        return ReadMap(EdgeMapping.MAPPED, resolved, optional)


def _store_name(io: object, key: str, module: str | None) -> str:
    owner = f"asset {key!r}: io={type(io).__name__}"
    for method in ("save", "load"):
        if not callable(getattr(io, method, None)):
            raise DefinitionError(
                f"{owner} has no {method}() method; a value store has save(asset, partition, "
                "value) and load(asset, partition)"
            )
    try:
        location = getattr(io, "location", None)
    except Exception as exc:
        raise DefinitionError(
            f"{owner}: reading its location raised {type(exc).__name__}: {exc}"
        ) from None
    if location is not None:
        if not isinstance(location, str) or not location:
            raise DefinitionError(f"{owner}: its location is {location!r}, not non-empty text")
        return location
    cls = type(io)
    if cls.__module__ in (module, "__main__") or cls.__module__.startswith(
        "headwater_definitions_"
    ):
        return cls.__qualname__  # the definitions file's module is named after where it lies
    return f"{cls.__module__}.{cls.__qualname__}"
