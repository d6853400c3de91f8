"""Loading a source's value: files by extension or a user ``loader``, with the version read.

A run records the version of the bytes it actually read, not the one observed before it
started: a file replaced meanwhile is recorded with its new version. With the built-in loaders
the file is read once, hashed and parsed from memory; a user ``loader`` reads it itself, so the
file is hashed before and after and read again if it changed in between.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from headwater import _s3
from headwater._files import FileCache, Found, Skipped, SymlinkPolicy, examine, read_bytes
from headwater.definitions import FileSource, ObjectSource
from headwater.sensors._scan import scan_file_source
from headwater.versions import bytes_version

__all__ = [
    "SourceFileGone",
    "file_source_version",
    "load_bytes",
    "load_file_source",
    "load_object_source",
    "matching_keys",
]

_ATTEMPTS = 3


class SourceFileGone(FileNotFoundError):
    """The source's own file or object is not there (as opposed to a file a user's loader
    looks for)."""


def load_bytes(name: str, data: bytes) -> Any:
    """csv and parquet load as DataFrames, json as the parsed value."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(io.BytesIO(data))
    if suffix in (".parquet", ".pq"):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    if suffix == ".json":
        return json.loads(data)
    raise ValueError(
        f"no built-in loader for {name!r} (csv, parquet and json are built in); "
        "pass loader= to the source"
    )


def load_file_source(
    source: FileSource,
    base_dir: Path,
    partition: str | None,
    cache: FileCache,
    private: tuple[str, ...] = (),
) -> tuple[Any, str]:
    """The value of one partition of a file source, and the version of what was read."""
    if source.is_glob:
        listing = scan_file_source(source, base_dir, cache, private)
        if not listing.complete:  # not a part of its files, as if they were all
            raise ValueError(
                f"source {source.key!r}: folder {listing.unlisted[0]} cannot be listed"
            )
        if None not in listing.found:
            raise SourceFileGone(f"source {source.key!r}: no file matches {source.template!r}")
        paths = [Path(p) for p in sorted(str(k) for k in listing.files)]
        value = source.loader(paths) if source.loader is not None else paths
        return value, listing.found[None]
    path = source.resolve(base_dir, partition)
    gone = SourceFileGone(f"source {source.key!r}: file {path} does not exist")
    for _ in range(_ATTEMPTS):
        try:
            found = _examine_partition(source, base_dir, path, private)
            if found is None:
                raise gone
            if source.loader is None:
                try:
                    data = read_bytes(found)
                except FileNotFoundError:  # deleted between the look and the read
                    raise gone from None
                return load_bytes(path.name, data), bytes_version(data)
            before = cache.version(found)
            value = source.loader(path)
            after = _examine_partition(source, base_dir, path, private)
            if after is not None and cache.version(after) == before:
                return value, before
        except Skipped as skipped:
            raise ValueError(f"source {source.key!r}: {path} is not read: {skipped}") from None
    raise RuntimeError(f"source {source.key!r}: {path} kept changing while it was read")


def file_source_version(
    source: FileSource,
    base_dir: Path,
    partition: str | None,
    cache: FileCache,
    private: tuple[str, ...] = (),
) -> str | None:
    """The version of one partition of a file source as it is on disk now (None: no file).
    Raises :class:`Skipped` for a file no sensor would observe (a FIFO, a link not followed)."""
    if source.is_glob:
        return scan_file_source(source, base_dir, cache, private).found.get(None)
    found = _examine_partition(source, base_dir, source.resolve(base_dir, partition), private)
    return None if found is None else cache.version(found)


def _examine_partition(
    source: FileSource, base_dir: Path, path: Path, private: tuple[str, ...]
) -> Found | None:
    """:func:`examine` one partition's file under the source's symlink policy."""
    policy: SymlinkPolicy = source.symlinks  # type: ignore[assignment]
    root = os.path.realpath(source.root(base_dir))  # a link loop names no folder: no error
    return examine(str(path), policy=policy, root=root, private=private)


def matching_keys(source: ObjectSource, keys: list[str]) -> list[str]:
    """The keys an unpartitioned glob source covers (``*`` also crosses ``/``), sorted: not a
    folder's marker (``in/sub/``, an empty object consoles make), and the template itself
    where it is a key (``reports[2026]/latest.json`` names one object, not a class of them)."""
    template = source.template
    return sorted(
        k
        for k in keys
        if not k.endswith("/") and (k == template or fnmatch.fnmatchcase(k, template))
    )


def load_object_source(source: ObjectSource, partition: str | None) -> tuple[Any, str | None]:
    """One object loads by extension (or ``loader(bytes)``), versioned by the ETag of what was
    fetched; a glob gives its sorted s3:// URLs (versioned by the next observation)."""
    if source.is_glob:
        keys = matching_keys(source, list(_s3.list_objects(source)))
        urls = [f"s3://{source.bucket}/{k}" for k in keys]
        return (source.loader(urls) if source.loader is not None else urls), None
    key = source.render(partition)
    try:
        data, etag = _s3.get_object(source, key)
    except Exception as exc:
        if _s3.is_missing(exc):
            raise SourceFileGone(
                f"source {source.key!r}: object s3://{source.bucket}/{key} does not exist"
            ) from None
        raise
    return (source.loader(data) if source.loader is not None else load_bytes(key, data)), etag
