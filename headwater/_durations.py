"""Durations as users write them: ``timedelta`` or strings such as ``"90s"``, ``"15m"``, ``"1d"``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["Duration", "parse_duration"]

Duration = timedelta | str

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Duration, *, what: str = "duration") -> timedelta:
    """Return ``value`` as a timedelta; compound strings like ``"1h30m"`` are accepted."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _PART.findall(text)
        if text and "".join(n + u for n, u in parts) == text:
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(
        f"{what}: {value!r} is not a duration; use a timedelta or a string such as "
        '"90s", "15m", "2h", "1d" or "1h30m"'
    )
