"""How often a failed run is tried again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from headwater._durations import Duration, parse_duration

__all__ = ["Retry"]


@dataclass(frozen=True, slots=True, init=False)
class Retry:
    """Try up to ``max_attempts`` times in all, waiting ``delay * backoff**(n-1)`` before try n+1."""

    max_attempts: int
    delay: timedelta
    backoff: float

    def __init__(
        self, max_attempts: int = 3, delay: Duration = "30s", backoff: float = 2.0
    ) -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(
                f"Retry max_attempts must be a whole number >= 1, not {max_attempts!r}"
            )
        if backoff < 1:
            raise ValueError(f"Retry backoff must be >= 1, not {backoff!r}")
        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "delay", parse_duration(delay, what="Retry delay"))
        object.__setattr__(self, "backoff", float(backoff))

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before attempt number ``attempt`` (2 for the first retry)."""
        return self.delay * self.backoff ** max(0, attempt - 2)
