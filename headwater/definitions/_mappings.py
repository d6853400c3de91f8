"""Partition mappings: which partitions of an upstream a partition of its reader reads.

Declared with ``ins={"param": hw.Input("upstream", mapping=..., optional=...)}`` (or in
``deps``). Between two different time partitionings the default is :class:`TimeWindow`; between
equal definitions it is :class:`Identity`. A mapping is resolved once, when the definitions are
validated, into a :class:`PartitionMap` that the planner and the runner ask (pure, no I/O).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from headwater._errors import DefinitionError, PartitionKeyError
from headwater.definitions._partitions import (
    MULTI_SEPARATOR,
    MultiPartitions,
    PartitionContext,
    PartitionsDefinition,
)
from headwater.definitions._time_partitions import TimePartitions

__all__ = [
    "AllPartitions",
    "EdgeMap",
    "Identity",
    "Input",
    "MappingSpec",
    "PartitionMap",
    "PartitionMapping",
    "TimeWindow",
    "resolve_mapping",
]


MAX_OFFSET = 100_000
"""Windows an offset may reach: eleven years of hours, centuries of days."""


class PartitionMapping:
    """How a reader's partitions relate to its upstream's: see :class:`Identity`,
    :class:`AllPartitions` and :class:`TimeWindow`."""

    def describe(self) -> str:
        return type(self).__name__ + "()"

    def __repr__(self) -> str:
        return f"hw.{self.describe()}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


class Identity(PartitionMapping):
    """A partition reads the upstream partition with the same key."""


class AllPartitions(PartitionMapping):
    """A partition reads every partition of the upstream that exists, as a dict by key."""


class TimeWindow(PartitionMapping):
    """Between two time partitionings: a coarser window reads the finer windows that begin
    inside it (a dict by key, present once all of them exist); any other window reads the one
    window that holds its start (a day in UTC reads the day in Kolkata that holds its midnight). ``offset`` shifts the window read, counted in windows of the
    coarser of the two partitionings: ``TimeWindow(offset=-1)`` on a daily asset reading a daily
    upstream reads the day before (day-over-day)."""

    def __init__(self, offset: int = 0) -> None:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise DefinitionError(f"hw.TimeWindow(offset={offset!r}): offset is a whole number")
        if abs(offset) > MAX_OFFSET:
            raise DefinitionError(
                f"hw.TimeWindow(offset={offset}): offsets reach at most {MAX_OFFSET:,} windows"
            )
        self.offset = offset

    def describe(self) -> str:
        return "TimeWindow()" if not self.offset else f"TimeWindow(offset={self.offset})"


MappingSpec = PartitionMapping | Mapping[str, PartitionMapping]
"""A mapping, or one per dimension of a multi-partitioned asset (``{"date": TimeWindow()}``)."""


@dataclass(frozen=True)
class Input:
    """An input with a partition mapping: ``ins={"yesterday": hw.Input("sales",
    mapping=hw.TimeWindow(offset=-1), optional=True)}``.

    ``key`` defaults to the parameter's name. ``optional=True``: when the mapped window lies
    outside the upstream's partitions (the day before the first day), the function receives
    ``None`` instead of the partition waiting for a window that will never exist.
    """

    key: Any = None
    mapping: MappingSpec | None = None
    optional: bool = False


class EdgeMap:
    """Every mapping through which one asset reads one upstream: several parameters may read
    the same upstream (today's and yesterday's partition), so an edge reads their union."""

    def __init__(self, maps: Sequence[tuple[PartitionMap, bool]]) -> None:
        self._maps = list(maps)
        self.many = any(m.many for m, _ in self._maps)
        self.label = " + ".join(dict.fromkeys(m.label for m, _ in self._maps))

    def upstream(self, key: str, ctx: PartitionContext) -> tuple[list[str], str | None, bool]:
        """The upstream keys read; why a required window lies outside the upstream's
        partitions; and whether an optional input's window does (it reads None there)."""
        keys: dict[str, None] = {}
        problem: str | None = None
        waived = False
        for mapping, optional in self._maps:
            found, why = mapping.upstream(key, ctx)
            keys.update(dict.fromkeys(found))
            if why is not None:
                waived = waived or optional
                if not optional and problem is None:
                    problem = why
        return list(keys), problem, waived

    def downstream(self, key: str, ctx: PartitionContext) -> list[str]:
        out: dict[str, None] = {}
        for mapping, _ in self._maps:
            out.update(dict.fromkeys(mapping.downstream(key, ctx)))
        return list(out)

    def search_up(self, key: str) -> list[str] | None:
        out: dict[str, None] = {}
        for mapping, _ in self._maps:
            found = mapping.search_up(key)
            if found is None:
                return None
            out.update(dict.fromkeys(found))
        return list(out)


class _DimMap(Protocol):
    many: bool

    def up(self, key: str) -> tuple[list[str], str | None]:
        """The upstream keys a reader key reads, and why some window is out of range."""

    def down(self, key: str) -> list[str]:
        """The reader keys that read an upstream key."""

    def covers(self, reader: str, upstream: str) -> bool: ...


class _SameKey:
    many = False

    def __init__(self, reader: PartitionsDefinition, upstream: PartitionsDefinition) -> None:
        self.reader, self.upstream = reader, upstream

    def up(self, key: str) -> tuple[list[str], str | None]:
        try:
            self.upstream.check_key(key)
        except PartitionKeyError as exc:
            return [], str(exc)
        return [key], None

    def down(self, key: str) -> list[str]:
        try:
            self.reader.check_key(key)
        except PartitionKeyError:
            return []
        return [key]

    def covers(self, reader: str, upstream: str) -> bool:
        return reader == upstream


class _Window:
    def __init__(self, reader: TimePartitions, upstream: TimePartitions, offset: int) -> None:
        self.reader, self.upstream, self.offset = reader, upstream, offset
        self.finer_upstream = upstream.rank < reader.rank
        self.many = self.finer_upstream

    def _keys(self, starts: Sequence[Any]) -> tuple[list[str], str | None]:
        keys = [self.upstream.label(s) for s in starts if self.upstream.in_range(s)]
        if keys:
            return keys, None
        if not starts:
            return [], "no window of it lies inside this one"
        first = starts[0]
        problem = self.upstream.range_problem(first)
        return [], f"window {self.upstream.label(first)} {problem}"

    def up(self, key: str) -> tuple[list[str], str | None]:
        try:
            return self._up(key)
        except (OverflowError, ValueError):  # PartitionKeyError is a KeyError: not caught
            return [], f"the window {self.offset:+} from {key} lies beyond the calendar"

    def _up(self, key: str) -> tuple[list[str], str | None]:
        start = self.reader.window_start(key)
        if self.upstream.rank >= self.reader.rank:  # not finer: the window holding its start
            held = self.upstream.shift(self.upstream.containing(start), self.offset)
            return self._keys([held])
        shifted = self.reader.shift(start, self.offset)
        return self._keys(self.upstream.starts_within(shifted, self.reader.following(shifted)))

    def down(self, key: str) -> list[str]:
        try:
            return self._down(key)
        except (OverflowError, ValueError):
            return []

    def _down(self, key: str) -> list[str]:
        start = self.upstream.window_start(key)
        if self.upstream.rank >= self.reader.rank:
            held = self.upstream.shift(start, -self.offset)
            starts = self.reader.starts_within(held, self.upstream.following(held))
        else:
            starts = [self.reader.shift(self.reader.containing(start), -self.offset)]
        return [self.reader.label(s) for s in starts if self.reader.in_range(s)]

    def covers(self, reader: str, upstream: str) -> bool:
        return upstream in self.up(reader)[0]


def _dims(parts: PartitionsDefinition) -> list[tuple[str | None, PartitionsDefinition]]:
    if isinstance(parts, MultiPartitions):
        return list(parts.dimensions.items())
    return [(None, parts)]


class PartitionMap:
    """A resolved mapping between a reader's and an upstream's partitions definitions, one
    dimension at a time: each reader dimension either reads one upstream dimension through a
    dimension mapping, or is free (every key of it reads the same); an upstream dimension no
    reader dimension reads is read whole."""

    def __init__(
        self,
        reader: PartitionsDefinition,
        upstream: PartitionsDefinition,
        pairs: Mapping[int, tuple[int, _DimMap]],
        label: str,
    ) -> None:
        self._reader = _dims(reader)
        self._upstream = _dims(upstream)
        self._pairs = dict(pairs)
        self._by_upstream = {u: (r, m) for r, (u, m) in self._pairs.items()}
        self.label = label
        self.shape = tuple(
            sorted((r, u, type(m).__name__, getattr(m, "offset", 0)) for r, (u, m) in pairs.items())
        )
        """What it reads, comparable between two maps of one edge: a mapping declared that
        reads what the default does has the default's shape."""
        self.same_keys = len(self._pairs) == len(self._reader) == len(self._upstream) and all(
            r == u and getattr(m, "offset", 0) == 0 for r, (u, m) in self._pairs.items()
        )
        """Each dimension reads its own, unshifted: between equal partitionings, what the
        identity reads (``TimeWindow()`` from days to days)."""
        self.many = any(m.many for _, m in self._pairs.values()) or len(self._by_upstream) < len(
            self._upstream
        )

    def upstream(self, key: str, ctx: PartitionContext | None) -> tuple[list[str], str | None]:
        """The upstream keys that reader partition ``key`` reads, and why a window it reads
        lies outside the upstream's partitions (None when all are inside). ``ctx`` is needed
        only when an upstream dimension is read whole."""
        parts = key.split(MULTI_SEPARATOR) if len(self._reader) > 1 else [key]
        per_dim: list[Sequence[str]] = []
        for index, (_, definition) in enumerate(self._upstream):
            pair = self._by_upstream.get(index)
            if pair is None:
                per_dim.append(definition.keys(ctx) if ctx is not None else ())
                continue
            keys, problem = pair[1].up(parts[pair[0]])
            if problem is not None and not keys:
                return [], problem
            per_dim.append(keys)
        return [MULTI_SEPARATOR.join(c) for c in itertools.product(*per_dim)], None

    def search_up(self, key: str) -> list[str] | None:
        """The upstream keys read, or None when that depends on the time or the dynamic keys."""
        if len(self._by_upstream) < len(self._upstream):
            return None
        return self.upstream(key, None)[0]

    def downstream(self, key: str, ctx: PartitionContext) -> list[str]:
        parts = key.split(MULTI_SEPARATOR) if len(self._upstream) > 1 else [key]
        per_dim: list[Sequence[str]] = []
        for index, (_, definition) in enumerate(self._reader):
            pair = self._pairs.get(index)
            per_dim.append(definition.keys(ctx) if pair is None else pair[1].down(parts[pair[0]]))
        return [MULTI_SEPARATOR.join(c) for c in itertools.product(*per_dim)]

    def covers(self, reader: str, upstream: str) -> bool:
        """Whether reader partition ``reader`` reads upstream partition ``upstream``."""
        r_parts = reader.split(MULTI_SEPARATOR) if len(self._reader) > 1 else [reader]
        u_parts = upstream.split(MULTI_SEPARATOR) if len(self._upstream) > 1 else [upstream]
        return all(m.covers(r_parts[r], u_parts[u]) for r, (u, m) in self._pairs.items())


def _dim_map(
    declared: PartitionMapping | None,
    reader: PartitionsDefinition,
    upstream: PartitionsDefinition,
    where: str,
) -> _DimMap:
    if isinstance(declared, AllPartitions):
        raise DefinitionError(f"{where}: AllPartitions maps a whole asset, not one dimension")
    both_time = isinstance(reader, TimePartitions) and isinstance(upstream, TimePartitions)
    if isinstance(declared, TimeWindow) or (declared is None and both_time and reader != upstream):
        if not both_time:
            raise DefinitionError(
                f"{where}: TimeWindow maps between time partitions, not {reader.describe()} "
                f"and {upstream.describe()}"
            )
        assert isinstance(reader, TimePartitions) and isinstance(upstream, TimePartitions)
        offset = declared.offset if isinstance(declared, TimeWindow) else 0
        return _Window(reader, upstream, offset)
    if reader == upstream or (
        isinstance(declared, Identity) and not (isinstance(reader, TimePartitions) or both_time)
    ):
        return _SameKey(reader, upstream)
    if isinstance(declared, Identity) and both_time:
        raise DefinitionError(
            f"{where}: Identity reads the same key, but {reader.describe()} and "
            f"{upstream.describe()} are different time partitionings; use hw.TimeWindow()"
        )
    raise DefinitionError(
        f"partition mismatch: {where}, and there is no mapping between {reader.describe()} and "
        f"{upstream.describe()}; use the same definition, or read the input whole with "
        "hw.Input(mapping=hw.AllPartitions())"
    )


def _infer_pairs(
    reader: list[tuple[str | None, PartitionsDefinition]],
    upstream: list[tuple[str | None, PartitionsDefinition]],
) -> dict[str | None, PartitionMapping | None]:
    """Dimensions paired when no mapping is declared: by name when both sides are
    multi-partitioned; else the multi side's one dimension equal to the other side (or its one
    time dimension, when the other side is time-partitioned)."""
    if len(reader) > 1 and len(upstream) > 1:
        names = {n for n, _ in upstream}
        return {n: None for n, _ in reader if n in names}
    single = (upstream if len(upstream) == 1 else reader)[0][1]
    multi = reader if len(upstream) == 1 else upstream
    equal = [n for n, d in multi if d == single]
    if len(equal) == 1:
        return {equal[0]: None}
    times = [n for n, d in multi if isinstance(d, TimePartitions)]
    if isinstance(single, TimePartitions) and len(times) == 1:
        return {times[0]: None}
    return {}


def resolve_mapping(
    declared: MappingSpec | None,
    reader: PartitionsDefinition,
    upstream: PartitionsDefinition,
    where: str,
) -> PartitionMap | None:
    """The resolved mapping between two partitioned definitions; None for "every partition"
    (:class:`AllPartitions`), which the planner reads from the state."""
    if isinstance(declared, AllPartitions):
        return None
    r_dims, u_dims = _dims(reader), _dims(upstream)
    if len(r_dims) == 1 and len(u_dims) == 1:
        if isinstance(declared, Mapping):
            raise DefinitionError(
                f"{where}: a mapping per dimension needs a MultiPartitions asset on one side"
            )
        dim = _dim_map(declared, reader, upstream, where)
        return PartitionMap(reader, upstream, {0: (0, dim)}, _label(declared, dim))
    if declared is not None and not isinstance(declared, Mapping):
        raise DefinitionError(
            f"{where}: a multi-partitioned input maps each dimension on its own: "
            "mapping={'dimension': hw.TimeWindow(), ...}"
        )
    per_dim: dict[str | None, PartitionMapping | None] = (
        dict(declared.items()) if declared is not None else _infer_pairs(r_dims, u_dims)
    )
    if not per_dim:
        raise DefinitionError(
            f"partition mismatch: {where}, and no dimension of {reader.describe()} matches one of "
            f"{upstream.describe()}; map a dimension with mapping={{'dimension': ...}}"
        )
    pairs: dict[int, tuple[int, _DimMap]] = {}
    labels: list[str] = []
    for name, mapping in per_dim.items():
        if mapping is not None and not isinstance(mapping, PartitionMapping):
            raise DefinitionError(f"{where}: dimension {name!r}: {mapping!r} is not a mapping")
        r_index = _dim_index(r_dims, name, where, "reader")
        u_index = _dim_index(u_dims, name, where, "upstream")
        dim = _dim_map(
            mapping, r_dims[r_index][1], u_dims[u_index][1], f"{where}, dimension {name!r}"
        )
        pairs[r_index] = (u_index, dim)
        labels.append(f"{name}: {_label(mapping, dim)}" if name else _label(mapping, dim))
    return PartitionMap(reader, upstream, pairs, ", ".join(labels))


def _dim_index(
    dims: list[tuple[str | None, PartitionsDefinition]], name: str | None, where: str, side: str
) -> int:
    if len(dims) == 1:
        return 0
    for index, (dim_name, _) in enumerate(dims):
        if dim_name == name:
            return index
    raise DefinitionError(
        f"{where}: the {side} has no dimension {name!r} (it has {[n for n, _ in dims]})"
    )


def _label(declared: PartitionMapping | None, dim: _DimMap) -> str:
    if declared is not None:
        return declared.describe()
    return "TimeWindow()" if isinstance(dim, _Window) else "Identity()"
