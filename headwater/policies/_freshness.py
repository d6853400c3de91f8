"""Freshness SLAs as declared on assets and sources (their evaluation lives beside the policies)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from headwater._durations import Duration, parse_duration

__all__ = ["Freshness"]


@dataclass(frozen=True, slots=True, init=False)
class Freshness:
    """``max_lag``: stale or missing for longer than this; ``max_age``: last change older than this."""

    max_lag: timedelta | None
    max_age: timedelta | None

    def __init__(self, max_lag: Duration | None = None, max_age: Duration | None = None) -> None:
        if max_lag is None and max_age is None:
            raise ValueError("Freshness needs max_lag, max_age or both")
        lag = None if max_lag is None else parse_duration(max_lag, what="Freshness max_lag")
        age = None if max_age is None else parse_duration(max_age, what="Freshness max_age")
        object.__setattr__(self, "max_lag", lag)
        object.__setattr__(self, "max_age", age)
