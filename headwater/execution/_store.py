"""Where materialized values live. The default store writes files atomically under the state dir.

DataFrames and Arrow tables are stored as Parquet; any other value is pickled (the documented
fallback: fine for plain Python objects, not meant to be read by other programs).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["TEMP_PREFIX", "FilesystemStore", "IOManager", "NoValueError", "table_metadata"]

TEMP_PREFIX = ".tmp-"
_FORMATS = ("frame.parquet", "arrow.parquet", "pickle")


class NoValueError(LookupError):
    """No value is stored for an asset partition."""


@runtime_checkable
class IOManager(Protocol):
    """Stores and loads asset values. ``save`` must be atomic: a reader sees old or new."""

    def save(self, asset: str, partition: str | None, value: Any) -> None: ...

    def load(self, asset: str, partition: str | None) -> Any: ...


def table_metadata(value: Any) -> dict[str, Any]:
    """Row count and schema for tables; nothing for other values."""
    if isinstance(value, pd.DataFrame):
        return {"rows": len(value), "schema": {str(c): str(t) for c, t in value.dtypes.items()}}
    if isinstance(value, pa.Table):
        return {"rows": value.num_rows, "schema": {f.name: str(f.type) for f in value.schema}}
    return {}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temp file in the same folder, fsync, rename over ``target``, fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TEMP_PREFIX}{target.name}-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


class FilesystemStore:
    """``root/<asset key>/<partition>.<format>``; the default :class:`IOManager`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _base(self, asset: str, partition: str | None) -> Path:
        name = "value" if partition is None else "p=" + quote(partition, safe="-_.:")
        return self.root.joinpath(*asset.split("/"), name)

    def _path(self, asset: str, partition: str | None, fmt: str) -> Path:
        base = self._base(asset, partition)
        return base.with_name(f"{base.name}.{fmt}")

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        if isinstance(value, pd.DataFrame):
            fmt = "frame.parquet"
            table = pa.Table.from_pandas(value, preserve_index=True)
            write_atomically(self._path(asset, partition, fmt), lambda f: pq.write_table(table, f))
        elif isinstance(value, pa.Table):
            fmt = "arrow.parquet"
            write_atomically(self._path(asset, partition, fmt), lambda f: pq.write_table(value, f))
        else:
            fmt = "pickle"
            data = pickle.dumps(value, protocol=5)

            def write_pickle(f: IO[bytes]) -> None:
                f.write(data)

            write_atomically(self._path(asset, partition, fmt), write_pickle)
        for other in _FORMATS:
            if other != fmt:
                with contextlib.suppress(FileNotFoundError):
                    self._path(asset, partition, other).unlink()

    def load(self, asset: str, partition: str | None) -> Any:
        for fmt in _FORMATS:
            path = self._path(asset, partition, fmt)
            if not path.exists():
                continue
            if fmt == "frame.parquet":
                return pq.read_table(path).to_pandas()
            if fmt == "arrow.parquet":
                return pq.read_table(path)
            with open(path, "rb") as f:
                return pickle.load(f)
        label = asset if partition is None else f"{asset}[{partition}]"
        raise NoValueError(f"no stored value for {label} under {self.root}")

    def absent(self, nodes: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """The asset partitions among ``nodes`` that have no stored value (one listing per
        folder, not one stat per value)."""
        listings: dict[Path, set[str]] = {}
        gone: list[tuple[str, str | None]] = []
        for asset, partition in nodes:
            base = self._base(asset, partition)
            names = listings.get(base.parent)
            if names is None:
                try:
                    names = {
                        e.name for e in os.scandir(base.parent) if e.is_file(follow_symlinks=False)
                    }
                except (FileNotFoundError, NotADirectoryError):
                    names = set()
                listings[base.parent] = names
            if not any(f"{base.name}.{fmt}" in names for fmt in _FORMATS):
                gone.append((asset, partition))
        return gone

    def remove_temp_files(self) -> int:
        """Delete temp files a crash left behind; return how many."""
        count = 0
        if self.root.exists():
            for path in self.root.rglob(f"{TEMP_PREFIX}*"):
                path.unlink(missing_ok=True)
                count += 1
        return count
