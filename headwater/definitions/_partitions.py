"""Partition definitions: which partition keys an asset has, given the time and the dynamic keys.

Time partitions exist up to the last *complete* window in their timezone. Windows are counted in
wall-clock time, so a daily window is a calendar day even across a DST change.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from headwater._errors import DefinitionError, PartitionKeyError, did_you_mean

__all__ = [
    "DynamicPartitions",
    "MultiPartitions",
    "PartitionContext",
    "PartitionsDefinition",
    "StaticPartitions",
    "dynamic_keys_in",
    "keys_holding",
]

MULTI_SEPARATOR = "|"


@dataclass(frozen=True)
class PartitionContext:
    """What partition keys depend on besides their definition: the time and dynamic keys."""

    now: datetime
    dynamic_keys: Callable[[str], Collection[str]] = field(default=lambda _name: ())
    """The keys of a dynamic partitions definition, in the order they were added."""


class PartitionsDefinition(ABC):
    """A set of partition keys. Two definitions are the same partitioning when they are equal."""

    @abstractmethod
    def keys(self, ctx: PartitionContext) -> Sequence[str]:
        """Every key that exists at ``ctx.now``, in order."""

    @abstractmethod
    def has_key(self, key: str, ctx: PartitionContext) -> bool:
        """Whether ``key`` exists at ``ctx.now``."""

    @abstractmethod
    def check_key(self, key: str) -> None:
        """Raise :class:`PartitionKeyError` if ``key`` can never be one of this definition's."""

    def defines(self, key: str, ctx: PartitionContext) -> bool:
        """Whether ``key`` is one of this definition's, now or once its time window closes
        (what a partition the log holds must be to be read at all)."""
        try:
            self.check_key(key)
        except PartitionKeyError:
            return False
        return True

    def newest_keys(self, ctx: PartitionContext) -> Sequence[str] | None:
        """The keys of the newest complete time window, or None when not time-based."""
        return None

    def next_window_end(self, now: datetime) -> datetime | None:
        """The next instant after ``now`` at which a new key comes into existence by time."""
        return None

    def ended_between(
        self, begin: datetime, end: datetime, ctx: PartitionContext
    ) -> Sequence[str] | None:
        """The keys whose time window closed in ``[begin, end)`` (and exist at ``ctx.now``),
        or None when not time-based: the windows a clock that jumped forward passed over."""
        return None

    def window_end(self, key: str) -> datetime | None:
        """When the time window named by ``key`` closes; None for keys that are not times."""
        return None

    def describe(self) -> str:
        return type(self).__name__

    def require_key(self, key: str, ctx: PartitionContext, *, asset: str) -> None:
        """Raise a message naming ``asset`` if ``key`` does not exist now."""
        self.check_key(key)
        if not self.has_key(key, ctx):
            raise PartitionKeyError(
                f"asset {asset!r}: partition {key!r} does not exist ({self.describe()} at "
                f"{ctx.now.isoformat()})"
            )


KEY_MAX_BYTES = 255
"""A file name's limit: a key that names a file (``inbox/{partition}.csv``) always fits."""


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be a static or dynamic partition key, or None if it can."""
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    if MULTI_SEPARATOR in key or "/" in key:
        return "must not contain '|' or '/'"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        return "must not contain control characters"
    if any("\ud800" <= c <= "\udfff" for c in key):  # a file name's bytes that are not UTF-8
        return "must be valid UTF-8 text (a file name in another encoding: rename the file)"
    if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
        return f"must be at most {KEY_MAX_BYTES} bytes of UTF-8"
    return None


def _check_plain_key(key: object, where: str) -> str:
    if (problem := key_problem(key)) is not None:
        raise DefinitionError(f"{where}: partition key {key!r} {problem}")
    assert isinstance(key, str)
    return key


class StaticPartitions(PartitionsDefinition):
    """A fixed list of keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        if isinstance(keys, str):  # iterating it would make each character a key
            raise DefinitionError(
                f"StaticPartitions takes a list of keys, not the string {keys[:40]!r}: "
                f"write StaticPartitions([{keys[:40]!r}])"
            )
        self._keys = tuple(_check_plain_key(k, "StaticPartitions") for k in keys)
        if not self._keys:
            raise DefinitionError("StaticPartitions needs at least one key")
        self._set = frozenset(self._keys)
        if len(self._set) != len(self._keys):  # counted once each: 100k keys in milliseconds
            duplicates = sorted(k for k, n in Counter(self._keys).items() if n > 1)
            shown = ", ".join(map(repr, duplicates[:10])) + (
                ", ..." if len(duplicates) > 10 else ""
            )
            raise DefinitionError(f"StaticPartitions: duplicate keys {shown}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticPartitions) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self._keys)

    def __repr__(self) -> str:
        return f"StaticPartitions({list(self._keys)!r})"

    def describe(self) -> str:
        if len(self._keys) <= 20:
            return repr(self)
        shown = ", ".join(map(repr, self._keys[:5]))
        return f"StaticPartitions of {len(self._keys)} keys ({shown}, ...)"

    def keys(self, ctx: PartitionContext) -> Sequence[str]:
        return self._keys

    def has_key(self, key: str, ctx: PartitionContext) -> bool:
        return key in self._set

    def check_key(self, key: str) -> None:
        if key not in self._set:
            if len(self._keys) <= 20:
                raise PartitionKeyError(f"partition {key!r} is not one of {list(self._keys)}")
            raise PartitionKeyError(  # not 100k keys in one message
                f"partition {key!r} is not one of the {len(self._keys)} keys "
                f"({', '.join(map(repr, self._keys[:5]))}, ...)"
                f"{did_you_mean(key, self._keys)}"
            )


class DynamicPartitions(PartitionsDefinition):
    """Keys that appear at run time: when a sensor sees them, or through the API."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError("DynamicPartitions needs a non-empty name")
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DynamicPartitions) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("dynamic", self.name))

    def __repr__(self) -> str:
        return f"DynamicPartitions({self.name!r})"

    def describe(self) -> str:
        return repr(self)

    def keys(self, ctx: PartitionContext) -> Sequence[str]:
        return list(ctx.dynamic_keys(self.name))

    def has_key(self, key: str, ctx: PartitionContext) -> bool:
        return key in ctx.dynamic_keys(self.name)

    def defines(self, key: str, ctx: PartitionContext) -> bool:
        return self.has_key(key, ctx)  # keys of another name's set are not this one's

    def check_key(self, key: str) -> None:
        if (problem := key_problem(key)) is not None:
            raise PartitionKeyError(
                f"{key!r} cannot be a key of DynamicPartitions({self.name!r}): it {problem}"
            )


class MultiPartitions(PartitionsDefinition):
    """The product of named dimensions; keys join one key per dimension with ``|``."""

    def __init__(self, dimensions: Mapping[str, PartitionsDefinition]) -> None:
        if len(dimensions) < 2:
            raise DefinitionError("MultiPartitions needs at least two dimensions")
        for name, dim in dimensions.items():
            if isinstance(dim, MultiPartitions) or not isinstance(dim, PartitionsDefinition):
                raise DefinitionError(
                    f"MultiPartitions dimension {name!r} must be a single partitions definition"
                )
        self.dimensions = dict(dimensions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiPartitions) and list(other.dimensions.items()) == list(
            self.dimensions.items()
        )

    def __hash__(self) -> int:
        return hash(tuple(self.dimensions.items()))

    def __repr__(self) -> str:
        return f"MultiPartitions({self.dimensions!r})"

    def describe(self) -> str:
        return repr(self)

    def split(self, key: str) -> list[str]:
        parts = key.split(MULTI_SEPARATOR)
        if len(parts) != len(self.dimensions):
            names = MULTI_SEPARATOR.join(self.dimensions)
            raise PartitionKeyError(
                f"partition {key!r} is not a key of {self.describe()} (keys look like {names!r})"
            )
        return parts

    def keys(self, ctx: PartitionContext) -> Sequence[str]:
        per_dim = [dim.keys(ctx) for dim in self.dimensions.values()]
        return [MULTI_SEPARATOR.join(combo) for combo in itertools.product(*per_dim)]

    def has_key(self, key: str, ctx: PartitionContext) -> bool:
        try:
            parts = self.split(key)
        except PartitionKeyError:
            return False
        return all(
            dim.has_key(part, ctx)
            for dim, part in zip(self.dimensions.values(), parts, strict=True)
        )

    def defines(self, key: str, ctx: PartitionContext) -> bool:
        try:
            parts = self.split(key)
        except PartitionKeyError:
            return False
        dims = self.dimensions.values()
        return all(dim.defines(part, ctx) for dim, part in zip(dims, parts, strict=True))

    def check_key(self, key: str) -> None:
        for (name, dim), part in zip(self.dimensions.items(), self.split(key), strict=True):
            try:
                dim.check_key(part)
            except PartitionKeyError as exc:
                raise PartitionKeyError(f"partition {key!r}: dimension {name!r}: {exc}") from None

    def newest_keys(self, ctx: PartitionContext) -> Sequence[str] | None:
        per_dim: list[Sequence[str]] = []
        time_based = False
        for dim in self.dimensions.values():
            newest = dim.newest_keys(ctx)
            time_based = time_based or newest is not None
            per_dim.append(dim.keys(ctx) if newest is None else newest)
        if not time_based:
            return None
        return [MULTI_SEPARATOR.join(combo) for combo in itertools.product(*per_dim)]

    def next_window_end(self, now: datetime) -> datetime | None:
        ends = [e for d in self.dimensions.values() if (e := d.next_window_end(now)) is not None]
        return min(ends, default=None)

    def ended_between(
        self, begin: datetime, end: datetime, ctx: PartitionContext
    ) -> Sequence[str] | None:
        per_dim: list[Sequence[str]] = []
        time_based = False
        for dim in self.dimensions.values():
            ended = dim.ended_between(begin, end, ctx)
            time_based = time_based or ended is not None
            per_dim.append(dim.keys(ctx) if ended is None else ended)
        if not time_based:
            return None
        return [MULTI_SEPARATOR.join(combo) for combo in itertools.product(*per_dim)]

    def window_end(self, key: str) -> datetime | None:
        for dim, part in zip(self.dimensions.values(), self.split(key), strict=True):
            if (end := dim.window_end(part)) is not None:
                return end
        return None


def dynamic_keys_in(parts: PartitionsDefinition | None, key: str) -> list[tuple[str, str]]:
    """The ``(dynamic set, key)`` pairs a partition key holds: itself for a dynamic set, one
    per dynamic dimension of a multi-partition (what an observation of it adds)."""
    if isinstance(parts, DynamicPartitions):
        return [(parts.name, key)]
    if not isinstance(parts, MultiPartitions):
        return []
    dims = parts.dimensions.values()
    if not any(isinstance(d, DynamicPartitions) for d in dims):
        return []
    try:
        split = parts.split(key)
    except PartitionKeyError:
        return []
    return [
        (d.name, k) for d, k in zip(dims, split, strict=True) if isinstance(d, DynamicPartitions)
    ]


def keys_holding(
    parts: PartitionsDefinition | None, name: str, key: str, ctx: PartitionContext
) -> Sequence[str]:
    """The partition keys of ``parts`` that hold ``key`` of the dynamic set ``name``: the key
    itself for that set, every combination with it for a multi-partition with it as a
    dimension, none otherwise (the partitions a new dynamic key made)."""
    if isinstance(parts, DynamicPartitions):
        return [key] if parts.name == name else []
    if not isinstance(parts, MultiPartitions):
        return []
    dims = list(parts.dimensions.values())
    every = [dim.keys(ctx) for dim in dims]
    out: dict[str, None] = {}
    for i, dim in enumerate(dims):  # the set may be two dimensions: the key in either
        if isinstance(dim, DynamicPartitions) and dim.name == name:
            per_dim = [*every[:i], [key], *every[i + 1 :]]
            out.update((MULTI_SEPARATOR.join(c), None) for c in itertools.product(*per_dim))
    return list(out)
