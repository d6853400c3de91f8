"""Data versions: fingerprints of content that are equal in any process for equal content.

Tables hash their canonical content (column names, dtypes, index and values through pandas'
fixed-key row hashing), never pickle bytes, whose layout varies with memory and library versions.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

__all__ = ["data_version", "file_version", "files_version"]

_DIGEST_SIZE = 16
_CHUNK = 1 << 20


def _hasher(kind: bytes) -> hashlib.blake2b:
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    h.update(kind + b"\0")
    return h


def _hash_frame(h: hashlib.blake2b, df: pd.DataFrame) -> None:
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(json.dumps([str(t) for t in df.dtypes]).encode())
    h.update(json.dumps([str(n) for n in df.index.names]).encode())
    h.update(str(df.index.dtype).encode())
    h.update(str(len(df)).encode())
    rows = pd.util.hash_pandas_object(df, index=True, categorize=True)
    h.update(rows.to_numpy().tobytes())


def data_version(value: Any) -> str:
    """A hex fingerprint of ``value``'s content.

    DataFrames, Series and Arrow tables hash their canonical content; bytes and str their bytes;
    JSON-serialisable values their sorted-key JSON; anything else its pickle (stable for plain
    objects, but not promised across Python versions).
    """
    if isinstance(value, pd.DataFrame):
        h = _hasher(b"dataframe")
        _hash_frame(h, value)
    elif isinstance(value, pd.Series):
        h = _hasher(b"series")
        _hash_frame(h, value.to_frame(name=str(value.name)))
    elif isinstance(value, pa.Table | pa.RecordBatch):
        h = _hasher(b"arrow")
        h.update(str(value.schema).encode())
        _hash_frame(h, value.to_pandas())
    elif isinstance(value, bytes | bytearray | memoryview):
        h = _hasher(b"bytes")
        h.update(bytes(value))
    elif isinstance(value, str):
        h = _hasher(b"str")
        h.update(value.encode())
    else:
        try:
            encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
        except (TypeError, ValueError):
            h = _hasher(b"pickle")
            h.update(pickle.dumps(value, protocol=5))
        else:
            h = _hasher(b"json")
            h.update(encoded.encode())
    return h.hexdigest()


def file_version(path: Path) -> str:
    """The content hash of one file, read in chunks so large files stay out of memory."""
    h = _hasher(b"file")
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_version(paths: Iterable[tuple[str, str]]) -> str:
    """The version of a set of files from ``(relative path, content hash)`` pairs."""
    h = _hasher(b"files")
    for rel, version in sorted(paths):
        h.update(f"{rel}\0{version}\n".encode())
    return h.hexdigest()
