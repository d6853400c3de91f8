"""Values as JSON holds them, whatever a user put in them (metadata)."""

from __future__ import annotations

from typing import Any

__all__ = ["plain_json"]

_DEEPEST = 64
_BIGGEST_BITS = 10_000
"""Past this an int is written as its size: Python refuses to print one of 4,300 digits."""


def _text(value: Any) -> str:
    """``str(value)``, or what it is if that raises (a user's ``__str__``, a proxy whose
    object is gone)."""
    try:
        return str(value)
    except Exception as exc:
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"


def _plain(value: Any, depth: int, path: set[int]) -> Any:
    """``value`` as what JSON holds, never raising: keys as text, a container met again on
    its own path as "<circular>", nesting past ``_DEEPEST`` levels and ints past
    ``_BIGGEST_BITS`` as what they are, numbers that are not finite as null (as orjson writes
    them), anything else as its ``str``."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        return int(value) if bits <= _BIGGEST_BITS else f"<int of {bits} bits>"
    if isinstance(value, float):
        finite = value == value and value not in (float("inf"), float("-inf"))
        return float(value) if finite else None
    if not isinstance(value, (dict, list, tuple)):
        return _text(value)
    if id(value) in path:
        return "<circular>"
    if depth >= _DEEPEST:
        return f"<{type(value).__name__} nested past {_DEEPEST} levels>"
    path.add(id(value))
    try:
        if isinstance(value, dict):
            return {
                k if isinstance(k, str) else _text(k): _plain(v, depth + 1, path)
                for k, v in value.items()
            }
        return [_plain(v, depth + 1, path) for v in value]
    finally:
        path.discard(id(value))


def plain_json(value: Any) -> Any:
    """``value`` as JSON holds it (see :func:`_plain`), never raising."""
    return _plain(value, 0, set())
