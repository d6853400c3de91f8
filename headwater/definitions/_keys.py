"""Asset keys: ``name`` or ``prefix/name``, each segment letters, digits, ``_``, ``-``, ``.``."""

from __future__ import annotations

import re

from headwater._errors import DefinitionError

__all__ = ["check_key"]

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
SEGMENT_MAX = 200
"""The longest segment: a folder's name, with room for what the value store adds to it."""


def check_key(key: object, what: str = "asset") -> str:
    if not isinstance(key, str) or not all(_SEGMENT.fullmatch(s) for s in key.split("/")):
        raise DefinitionError(
            f"{what} key {key!r} is not valid: use names of letters, digits, '_', '-' and '.', "
            "optionally with '/' prefixes such as 'sales/clean'"
        )
    if longest := max((s for s in key.split("/") if len(s) > SEGMENT_MAX), key=len, default=""):
        raise DefinitionError(  # each segment names a folder of the value store
            f"{what} key {key!r}: {longest[:40]!r}... is {len(longest)} characters; a segment "
            f"may have at most {SEGMENT_MAX} (it names a folder, and file names stop at 255 bytes)"
        )
    segments = key.split("/")
    if taken := next((s for s in segments[1:] if s in _STORE_FILES), None):
        raise DefinitionError(
            f"{what} key {key!r}: {taken!r} names the file that holds the value of "
            f"{'/'.join(segments[: segments.index(taken, 1)])!r} in the value store, so the "
            "two would overwrite each other; name it otherwise"
        )
    return key


_STORE_FILES = frozenset({"value.pickle", "value.frame.parquet", "value.arrow.parquet"})
"""What the filesystem store names an unpartitioned value in its key's folder
(``execution/_store.py``): a key that continues with one of them is that file's path."""
