"""Durations as users write them: ``timedelta`` or strings such as ``"90s"``, ``"15m"``, ``"1d"``.

A duration is finite and fits a ``timedelta`` (under 999,999,999 days): ``nan``, ``inf`` and
``99999999999d`` are mistakes named as such, never an ``OverflowError``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from headwater._errors import HeadwaterError

__all__ = [
    "FOREVER",
    "Duration",
    "DurationError",
    "format_duration",
    "parse_duration",
    "parse_retention",
]

Duration = timedelta | str


class DurationError(HeadwaterError, ValueError):
    """A value that is not a usable duration; the message names where it came from."""


FOREVER = "forever"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_MAX_SECONDS = timedelta.max.total_seconds()


def parse_duration(value: Duration, *, what: str = "duration", positive: bool = False) -> timedelta:
    """Return ``value`` as a timedelta; compound strings like ``"1h30m"`` are accepted.

    ``positive`` refuses zero and negative durations. Errors name ``what``.
    """
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, str) and (delta_or_none := _parse_text(value, what)) is not None:
        delta = delta_or_none
    else:
        raise DurationError(
            f"{what}: {value!r} is not a duration; use a timedelta or a string such as "
            '"90s", "15m", "2h", "1d" or "1h30m"'
        )
    if positive and delta <= timedelta(0):
        raise DurationError(f"{what}: {value!r} must be longer than zero")
    return delta


def _parse_text(value: str, what: str) -> timedelta | None:
    text = value.strip().lower().replace(" ", "")
    parts = _PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        return None
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds <= _MAX_SECONDS:  # also catches nan and inf
        raise DurationError(f"{what}: {value!r} is too long to be a duration")
    return timedelta(seconds=seconds)


def parse_retention(value: Duration | None, *, what: str = "retention") -> timedelta | None:
    """A retention: a duration longer than zero, or ``"forever"`` (None: keep every event)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == FOREVER):
        return None
    return parse_duration(value, what=what, positive=True)


def format_duration(delta: timedelta) -> str:
    """``delta`` the way users write durations: ``"10m"``, ``"1h30m"``, ``"2.5s"``, ``"40ms"``."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
