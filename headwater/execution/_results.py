"""What a tick reports: to its caller, and to a progress callback as it goes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NOT_RECORDED", "NOT_STARTED", "Observed", "StepCallback", "TickResult"]


@dataclass(frozen=True, slots=True)
class Observed:
    """What a source holds now: a version, or None when the partition is gone."""

    key: str
    partition: str | None
    version: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)


NOT_STARTED = "not started: "
NOT_RECORDED = "not recorded: "
"""Reasons of skipped partitions that the daemon or its disk kept from running (stopping,
degraded), not a policy: the partition was not carried out."""

StepCallback = Callable[[tuple[str, str | None], str], None]
"""Called as each planned partition finishes: ``(node, "materialized" | "failed" | "skipped")``.
A requested run abandoned because an input was replaced while it read it is made again:
its partition is reported once for each attempt ("skipped", then how the next one ended)."""


@dataclass(slots=True)
class TickResult:
    """What one evaluation-and-run cycle did."""

    materialized: list[tuple[str, str | None]] = field(default_factory=list)
    """``(asset, partition)`` in completion order."""
    skipped: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """Partitions a policy held back (waiting, manual, ...) with the reason."""
    failed: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """Partitions whose run failed, with the error message."""
    decided: int = 0
    """Partitions the tick decided (ran or not): the work a change reached. A change that
    early cutoff stops reaches nothing below the partition that produced the same version."""

    @property
    def refused(self) -> list[tuple[str, str | None]]:
        """Skipped partitions whose run the daemon or the disk refused (stopping, degraded):
        asked for, they count as not carried out, as failures do."""
        return [n for n, why in self.skipped.items() if why.startswith((NOT_STARTED, NOT_RECORDED))]

    @property
    def assets(self) -> set[str]:
        return {asset for asset, _ in self.materialized}

    def merge(self, other: TickResult) -> None:
        for node in other.materialized:
            self.skipped.pop(node, None)
            self.failed.pop(node, None)
        self.materialized.extend(other.materialized)
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        self.decided += other.decided
