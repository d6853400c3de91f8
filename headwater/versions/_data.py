"""Data versions: fingerprints of *typed* content, equal in any process for equal content.

Every value is fed to the hash as a canonical, type-tagged encoding: ``1``, ``1.0``, ``True``
and ``"1"`` differ, as do ``(1, 2)`` and ``[1, 2]``; dicts, sets and frozensets are encoded in
an order that depends neither on insertion nor on hash order (so not on ``PYTHONHASHSEED``).
Tables hash their full typed schema (column labels as typed values, every dtype in full, index
names) and their values column by column; object columns are encoded value by value, with a
fast path for columns holding only strings. Only values of types this module does not know fall
back to their pickle, which is stable for plain objects but not promised across Python versions.

pandas and pyarrow are imported only when a table is hashed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import math
import pickle
import struct
import threading
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any

__all__ = ["bytes_version", "chunks_version", "data_version", "file_version", "files_version"]

_DIGEST_SIZE = 16
_CHUNK = 1 << 20
_NAN = struct.pack("<d", math.nan)

Hasher = Any  # hashlib's blake2b object


def _hasher(kind: bytes) -> Hasher:
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    h.update(kind + b"\0")
    return h


def _tag(h: Hasher, tag: str, payload: bytes = b"") -> None:
    h.update(f"{tag}:{len(payload)}:".encode())
    h.update(payload)


def _float_bytes(x: float) -> bytes:
    if x != x:
        return _NAN  # every NaN is the same content
    return struct.pack("<d", x + 0.0)  # -0.0 == 0.0


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _digest(value: Any) -> bytes:
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    _encode(h, value)
    return h.digest()


def _unordered(h: Hasher, tag: str, digests: Iterable[bytes]) -> None:
    """A collection whose order carries no meaning: its members' digests, sorted."""
    ordered = sorted(digests)
    _tag(h, tag, str(len(ordered)).encode())
    for d in ordered:
        h.update(d)


def _sequence(h: Hasher, tag: str, items: Iterable[Any], n: int) -> None:
    _tag(h, tag, str(n).encode())
    for item in items:
        _encode(h, item)


def _encode_builtin(h: Hasher, value: Any, cls: type) -> bool:
    """Encode exact builtin types; False if ``value`` is not one."""
    if value is None:
        _tag(h, "none")
    elif cls is bool:
        _tag(h, "bool", b"1" if value else b"0")
    elif cls is int:
        _tag(h, "int", str(value).encode())
    elif cls is float:
        _tag(h, "float", _float_bytes(value))
    elif cls is complex:
        _tag(h, "complex", _float_bytes(value.real) + _float_bytes(value.imag))
    elif cls is str:
        _tag(h, "str", value.encode("utf-8", "surrogatepass"))
    elif cls in (bytes, bytearray):
        _tag(h, cls.__name__, bytes(value))
    elif cls is memoryview:
        _tag(h, "memoryview", value.tobytes())
    elif cls in (list, tuple):
        _sequence(h, cls.__name__, value, len(value))
    elif cls is dict:
        _unordered(h, "dict", (_digest((k, v)) for k, v in value.items()))
    elif cls in (set, frozenset):
        _unordered(h, cls.__name__, (_digest(v) for v in value))
    else:
        return False
    return True


def _encode_stdlib(h: Hasher, value: Any) -> bool:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        _tag(h, _type_name(value), value.isoformat().encode())
    elif isinstance(value, dt.timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        _tag(h, "timedelta", str(us).encode())
    elif isinstance(value, decimal.Decimal):
        _tag(h, "decimal", str(value).encode())
    elif isinstance(value, uuid.UUID):
        _tag(h, "uuid", value.bytes)
    elif isinstance(value, PurePath):
        _tag(h, _type_name(value), str(value).encode())
    elif isinstance(value, enum.Enum):
        _tag(h, _type_name(value))
        _encode(h, value.value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value)]
        _tag(h, _type_name(value), str(len(fields)).encode())
        for name in fields:
            _encode(h, name)
            _encode(h, getattr(value, name))
    else:
        return False
    return True


_BUILTINS = (tuple, list, dict, set, frozenset, bool, int, float, str, bytes)


def _encode(h: Hasher, value: Any) -> None:
    cls = type(value)
    if _encode_builtin(h, value, cls):
        return
    if (table := _table_encoder(value)) is not None:
        table(h, value)
        return
    if _encode_stdlib(h, value):
        return
    if isinstance(value, OrderedDict):
        # its order is content: two OrderedDicts with the same items in another order differ
        _tag(h, _type_name(value))
        _sequence(h, "ordered", value.items(), len(value))
        return
    if isinstance(value, _BUILTINS):
        # a subclass (a namedtuple, a defaultdict...): its own type, then the same rules
        _tag(h, _type_name(value))
        base: Any = next(b for b in cls.__mro__ if b in _BUILTINS)
        plain = dict(value.items()) if isinstance(value, dict) else base(value)
        _encode_builtin(h, plain, base)
        return
    if (state := _plain_state(value, cls)) is not None:
        # A plain object pickles its attributes in their order, and a set among them in
        # its hash order: by its type and its attributes, as a dict, any PYTHONHASHSEED.
        within = _within.__dict__.setdefault("objects", set())
        if id(value) in within:  # it holds itself, through its attributes
            _tag(h, "object-again:" + _type_name(value))
            return
        within.add(id(value))
        try:
            _tag(h, "object:" + _type_name(value))
            _encode_builtin(h, state, dict)
        finally:
            within.discard(id(value))
        return
    _tag(h, "pickle:" + _type_name(value), pickle.dumps(value, protocol=5))


_within = threading.local()
"""The plain objects being encoded on this thread, outermost first (see :func:`_encode`)."""


def _plain_state(value: Any, cls: type) -> dict[str, Any] | None:
    """The attributes of an object that pickles as nothing but them (a ``SimpleNamespace``, an
    instance of a class that does not customize pickling), else None."""
    if cls is types.SimpleNamespace:
        return dict(vars(value))
    kind: Any = cls  # its pickling hooks, compared with object's own
    custom = (
        kind.__reduce_ex__ is not object.__reduce_ex__
        or kind.__reduce__ is not object.__reduce__
        or kind.__getstate__ is not object.__getstate__
        or "__slots__" in cls.__dict__
    )
    state = getattr(value, "__dict__", None)
    return None if custom or not isinstance(state, dict) else dict(state)


def _table_encoder(value: Any) -> Callable[[Hasher, Any], None] | None:
    """The encoder for pandas, numpy and Arrow values, if ``value`` is one (a value of theirs
    means the library is loaded already, so importing the encoders costs nothing more)."""
    module = type(value).__module__.split(".")[0]
    if module not in ("pandas", "numpy", "pyarrow"):
        return None
    from headwater.versions import _tables  # pandas loads only when a table is hashed

    return _tables.encoder_for(value, _encode)


def data_version(value: Any) -> str:
    """A hex fingerprint of ``value``'s typed content (see the module documentation)."""
    if type(value) is bytes:  # the common raw payload
        h = _hasher(b"bytes")
        h.update(value)
        return str(h.hexdigest())
    h = _hasher(b"typed")
    _encode(h, value)
    return str(h.hexdigest())


def file_version(path: Path) -> str:
    """The content hash of one file, read in chunks so large files stay out of memory."""
    h = _hasher(b"file")
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


def bytes_version(data: bytes) -> str:
    """The same hash as :func:`file_version` for a file holding ``data``."""
    return chunks_version([data])


def chunks_version(chunks: Iterable[bytes]) -> str:
    """The same hash as :func:`file_version` for a file read as ``chunks``."""
    h = _hasher(b"file")
    for chunk in chunks:
        h.update(chunk)
    return str(h.hexdigest())


def files_version(paths: Iterable[tuple[str, str]]) -> str:
    """The version of a set of files from ``(relative path, content hash)`` pairs."""
    h = _hasher(b"files")
    for rel, version in sorted(paths):
        h.update(f"{rel}\0{version}\n".encode())
    return str(h.hexdigest())
