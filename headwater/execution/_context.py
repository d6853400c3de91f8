"""What an asset function receives in a parameter named ``context``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The run: its asset, partition, run id, the (possibly virtual) time, a bound logger."""

    asset: str
    partition: str | None
    run_id: str
    now: datetime
    log: Any
    """A structlog logger bound to ``asset``, ``partition`` and ``run_id``."""
