"""What an asset function receives in a parameter named ``context``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
    input_versions: Mapping[tuple[str, str | None], str] = field(default_factory=dict)
    """The data version of every input partition this run reads, by ``(key, partition)``:
    what its materialization records as its inputs."""
