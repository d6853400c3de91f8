"""Sources: data that arrives from outside. Their versions come from observations."""

from __future__ import annotations

import contextlib
import glob
import posixpath
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from headwater._durations import Duration, parse_duration
from headwater._errors import DefinitionError, PartitionKeyError
from headwater.definitions._keys import check_key
from headwater.definitions._partitions import MULTI_SEPARATOR, MultiPartitions, PartitionsDefinition
from headwater.policies import Freshness

__all__ = ["FileSource", "ObjectSource", "SourceDef", "source"]

SourceKind = Literal["source", "file", "object"]


@dataclass(eq=False)
class SourceDef:
    """A source whose versions come from ``observe`` calls or a custom sensor."""

    key: str
    partitions: PartitionsDefinition | None = None
    freshness: Freshness | None = None
    kind: SourceKind = field(default="source", init=False)

    @property
    def kind_label(self) -> str:
        """How status, lineage and the page name its kind: "source", "file source"..."""
        return "source" if self.kind == "source" else f"{self.kind} source"

    def __post_init__(self) -> None:
        check_key(self.key, "source")
        if self.partitions is not None and not isinstance(self.partitions, PartitionsDefinition):
            raise DefinitionError(
                f"source {self.key!r}: partitions={self.partitions!r} is not a partitions definition"
            )
        if self.freshness is not None and not isinstance(self.freshness, Freshness):
            raise DefinitionError(f"source {self.key!r}: freshness= takes hw.Freshness(...)")


def source(
    key: str, *, partitions: PartitionsDefinition | None = None, freshness: Freshness | None = None
) -> SourceDef:
    """Declare a source whose versions are reported with ``observe`` (or a custom sensor)."""
    return SourceDef(key, partitions, freshness)


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _dimension_names(partitions: PartitionsDefinition | None) -> list[str]:
    if partitions is None:
        return []
    if isinstance(partitions, MultiPartitions):
        return list(partitions.dimensions)
    return ["partition"]


def _check_template(key: str, template: str, partitions: PartitionsDefinition | None) -> None:
    try:
        found = _placeholders(template)
    except ValueError as exc:
        raise DefinitionError(f"source {key!r}: pattern {template!r} is malformed: {exc}") from exc
    wanted = _dimension_names(partitions)
    if sorted(found) != sorted(wanted):
        if wanted:
            need = " and ".join("{" + w + "}" for w in wanted)
            raise DefinitionError(
                f"source {key!r}: pattern {template!r} must hold {need} exactly once "
                f"for its partitions, and no other placeholder"
            )
        raise DefinitionError(
            f"source {key!r}: pattern {template!r} has placeholders {found} but the source is "
            "not partitioned; pass partitions= or remove them"
        )


class _TemplatedSource(SourceDef):
    """Shared by sources whose partitions map to a path or key through a ``{partition}`` template."""

    template: str

    def _dims(self) -> list[str]:
        return _dimension_names(self.partitions)

    def render(self, partition: str | None) -> str:
        """The path or key that holds ``partition``."""
        dims = self._dims()
        if not dims:
            return self.template
        if partition is None:
            raise DefinitionError(f"source {self.key!r} is partitioned; name a partition")
        parts = partition.split(MULTI_SEPARATOR) if len(dims) > 1 else [partition]
        return self.template.format(**dict(zip(dims, parts, strict=True)))

    def partition_of(self, path: str) -> str | None:
        """The partition a path or key belongs to, or None if it does not match the template.

        Raises :class:`PartitionKeyError` when it matches but names no key the partitions can
        have (``data/not-a-date.csv``, ``data/2026-1-5.csv``): such a file is not a partition,
        and the caller says so once.
        """
        dims = self._dims()
        if not dims or self.partitions is None:
            return None
        match = self._regex().fullmatch(path)
        if match is None:
            return None
        # Two placeholders in one name (``{region}-{date}``) may be split anywhere the text
        # between them occurs: ``eu-2026-01-02`` is eu and 2026-01-02, where the regex alone
        # says eu-2026-01 and 02. Every split is tried; the partitions say which is a key.
        keys = self._splits(path, dims) if self._shares_a_name() else []
        if len(keys) == 1:
            return keys[0]
        if keys:
            raise PartitionKeyError(
                f"{path!r} matches source {self.key!r} as more than one partition: "
                + ", ".join(map(repr, keys[:5]))
            )
        key = MULTI_SEPARATOR.join(match.group(d) for d in dims)
        try:
            self.partitions.check_key(key)
        except PartitionKeyError as exc:
            raise PartitionKeyError(f"{path!r} matches source {self.key!r}, but {exc}") from None
        return key

    def _shares_a_name(self) -> bool:
        """Whether two placeholders stand in one folder or file name of the template."""
        shared = self.__dict__.get("_shared")
        if shared is None:
            shared = self.__dict__["_shared"] = any(
                segment.count("{") > 1 for segment in self.template.split("/")
            )
        return bool(shared)

    def _splits(self, path: str, dims: list[str]) -> list[str]:
        """Every way of reading ``path`` with the template whose key the partitions have."""
        parts = list(string.Formatter().parse(self.template))
        found: list[str] = []

        def walk(index: int, at: int, values: dict[str, str]) -> None:
            if index == len(parts):
                if at == len(path):
                    key = MULTI_SEPARATOR.join(values[d] for d in dims)
                    with contextlib.suppress(PartitionKeyError):
                        assert self.partitions is not None
                        self.partitions.check_key(key)
                        found.append(key)
                return
            literal, name, _, _ = parts[index]
            if not path.startswith(literal, at):
                return
            at += len(literal)
            if name is None:
                walk(index + 1, at, values)
                return
            end = path.find("/", at)
            for stop in range(at + 1, len(path) + 1 if end == -1 else end + 1):
                walk(index + 1, stop, {**values, name: path[at:stop]})

        walk(0, 0, {})
        return sorted(set(found))

    def _regex(self) -> re.Pattern[str]:
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            pattern = ""
            for literal, name, _, _ in string.Formatter().parse(self.template):
                pattern += re.escape(literal)
                if name is not None:
                    pattern += f"(?P<{name}>[^/]+)"
            compiled = self.__dict__["_compiled"] = re.compile(pattern, re.DOTALL)
        return compiled

    @property
    def is_glob(self) -> bool:
        return not self._dims() and glob.has_magic(self.template)

    @property
    def static_prefix(self) -> str:
        """The part of the template before its first placeholder or glob character."""
        cut = len(self.template)
        for mark in "{*?[":
            index = self.template.find(mark)
            if index != -1:
                cut = min(cut, index)
        return self.template[:cut]

    @property
    def scan_glob(self) -> str:
        """A glob that matches every path or key of this source."""
        out = ""
        for literal, name, _, _ in string.Formatter().parse(self.template):
            out += glob.escape(literal) if self._dims() else literal
            if name is not None:
                out += "*"
        return out


class FileSource(_TemplatedSource):
    """Files under a path pattern; ``{partition}`` marks where the partition key goes.

    An unpartitioned pattern may be a glob (``**`` recurses); its value is the sorted list of
    matching paths (or ``loader(paths)``). A single file loads by extension (csv, parquet, json)
    unless ``loader=`` is given. Relative patterns resolve against the definitions file's folder.
    Only regular files count; ``symlinks`` says which symbolic links are followed (``"inside"``
    the pattern's fixed folder, ``"follow"`` any, ``"ignore"`` none). ``settle`` waits that
    long after a file's last change before observing it (a file appended to in steps counts
    once, with its final content).
    """

    def __init__(
        self,
        key: str,
        pattern: str | Path,
        *,
        partitions: PartitionsDefinition | None = None,
        loader: Callable[[Any], Any] | None = None,
        freshness: Freshness | None = None,
        symlinks: str = "inside",
        settle: Duration | None = None,
    ) -> None:
        super().__init__(key, partitions, freshness)
        self.kind = "file"
        # as paths are compared with it: ``./inbox/{partition}.csv`` (or ``data//x.csv``)
        # matched no file, with nothing said
        self.template = posixpath.normpath(str(pattern)) if str(pattern) else str(pattern)
        self.loader = loader
        if loader is not None and not callable(loader):
            raise DefinitionError(f"source {key!r}: loader= must be callable")
        _check_template(key, self.template, partitions)
        if symlinks not in ("inside", "follow", "ignore"):
            raise DefinitionError(
                f"source {key!r}: symlinks={symlinks!r} must be 'inside', 'follow' or 'ignore'"
            )
        self.symlinks = symlinks
        try:
            self.settle = (
                None if settle is None else parse_duration(settle, what=f"source {key!r} settle")
            )
        except ValueError as exc:
            raise DefinitionError(str(exc)) from exc

    def __repr__(self) -> str:
        return f"FileSource({self.key!r}, {self.template!r})"

    def resolve(self, base_dir: Path, partition: str | None) -> Path:
        path = Path(self.render(partition))
        return path if path.is_absolute() else base_dir / path

    def root(self, base_dir: Path) -> Path:
        """The fixed folder of the pattern, before its first placeholder or wildcard: what is
        watched, and where ``symlinks="inside"`` lets links point."""
        prefix = self.static_prefix
        folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
        return folder if folder.is_absolute() else base_dir / folder


class ObjectSource(_TemplatedSource):
    """Objects in an S3-compatible store under ``s3://bucket/prefix/{partition}.csv``.

    Credentials and endpoint come from ``storage_options`` or the standard AWS environment
    variables. The store is polled every ``poll``; versions are ETags.
    """

    def __init__(
        self,
        key: str,
        url: str,
        *,
        partitions: PartitionsDefinition | None = None,
        poll: Duration = "30s",
        storage_options: Mapping[str, Any] | None = None,
        loader: Callable[[Any], Any] | None = None,
        freshness: Freshness | None = None,
    ) -> None:
        super().__init__(key, partitions, freshness)
        self.kind = "object"
        if not isinstance(url, str) or not url.startswith("s3://") or len(url) <= len("s3://"):
            raise DefinitionError(f"source {key!r}: url {url!r} must look like s3://bucket/key")
        self.url = url
        self.bucket, _, self.template = url[len("s3://") :].partition("/")
        if not self.bucket:
            raise DefinitionError(f"source {key!r}: url {url!r} names no bucket")
        try:
            self.poll = parse_duration(poll, what=f"source {key!r} poll")
        except ValueError as exc:
            raise DefinitionError(str(exc)) from exc
        self.storage_options = dict(storage_options or {})
        self.loader = loader
        _check_template(key, self.template, partitions)

    def __repr__(self) -> str:
        return f"ObjectSource({self.key!r}, {self.url!r})"
