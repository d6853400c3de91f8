"""Loading a source's value: files by extension or a user ``loader``."""

from __future__ import annotations

import fnmatch
import io
import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from headwater import _s3
from headwater.definitions import FileSource, ObjectSource

__all__ = ["glob_paths", "load_file", "load_file_source", "load_object_source", "matching_keys"]


def load_file(path: Path) -> Any:
    """csv and parquet load as DataFrames, json as the parsed value."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    raise ValueError(
        f"no built-in loader for {path.name!r} (csv, parquet and json are built in); "
        "pass loader= to the source"
    )


def _load_bytes(name: str, data: bytes) -> Any:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(io.BytesIO(data))
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(io.BytesIO(data))
    if suffix == ".json":
        return json.loads(data)
    raise ValueError(
        f"no built-in loader for {name!r} (csv, parquet and json are built in); "
        "pass loader= to the source"
    )


def glob_paths(source: FileSource, base_dir: Path) -> list[Path]:
    pattern = source.scan_glob
    root = Path(pattern)
    if root.is_absolute():
        anchor = Path(root.anchor)
        return sorted(p for p in anchor.glob(str(root.relative_to(anchor))) if p.is_file())
    return sorted(p for p in base_dir.glob(pattern) if p.is_file())


def load_file_source(source: FileSource, base_dir: Path, partition: str | None) -> Any:
    if source.is_glob:
        paths = glob_paths(source, base_dir)
        return source.loader(paths) if source.loader is not None else paths
    path = source.resolve(base_dir, partition)
    if not path.exists():
        raise FileNotFoundError(f"source {source.key!r}: file {path} does not exist")
    return source.loader(path) if source.loader is not None else load_file(path)


def matching_keys(source: ObjectSource, keys: list[str]) -> list[str]:
    """The keys an unpartitioned glob source covers (``*`` also crosses ``/``), sorted."""
    return sorted(k for k in keys if fnmatch.fnmatchcase(k, source.template))


def load_object_source(source: ObjectSource, partition: str | None) -> Any:
    """One object loads by extension (or ``loader(bytes)``); a glob gives its sorted s3:// URLs."""
    if source.is_glob:
        keys = matching_keys(source, list(_s3.list_objects(source)))
        urls = [f"s3://{source.bucket}/{k}" for k in keys]
        return source.loader(urls) if source.loader is not None else urls
    key = source.render(partition)
    data = _s3.get_object(source, key)
    return source.loader(data) if source.loader is not None else _load_bytes(key, data)
