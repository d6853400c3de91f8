"""Asset keys: ``name`` or ``prefix/name``, each segment letters, digits, ``_``, ``-``, ``.``."""

from __future__ import annotations

import re

from headwater._errors import DefinitionError

__all__ = ["check_key"]

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_key(key: object, what: str = "asset") -> str:
    if not isinstance(key, str) or not all(_SEGMENT.fullmatch(s) for s in key.split("/")):
        raise DefinitionError(
            f"{what} key {key!r} is not valid: use names of letters, digits, '_', '-' and '.', "
            "optionally with '/' prefixes such as 'sales/clean'"
        )
    return key
