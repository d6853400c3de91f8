"""Events: frozen values with a UTC timestamp. The event log stores them; the state reduces them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["EVENT_KINDS", "Event", "EventKind", "format_timestamp", "parse_timestamp"]


class EventKind(StrEnum):
    OBSERVATION = "observation"
    RUN_STARTED = "run_started"
    MATERIALIZATION = "materialization"
    RUN_FAILED = "run_failed"
    RUN_ABANDONED = "run_abandoned"
    VALUE_LOST = "value_lost"
    DECISION = "decision"
    PARTITIONS_ADDED = "partitions_added"
    CHECK = "check"
    FRESHNESS_VIOLATED = "freshness_violated"
    FRESHNESS_RECOVERED = "freshness_recovered"
    DAEMON_STARTED = "daemon_started"
    DAEMON_STOPPED = "daemon_stopped"
    RELOADED = "reloaded"
    RELOAD_FAILED = "reload_failed"
    STORAGE_RECOVERED = "storage_recovered"


EVENT_KINDS = [str(k) for k in EventKind]
"""What ``--kind`` and ``/events?kind=`` accept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened. ``id`` is assigned by the event log when it is written."""

    kind: str
    timestamp: datetime
    asset: str | None = None
    partition: str | None = None
    run_id: str | None = None
    data_version: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": format_timestamp(self.timestamp),
            "kind": self.kind,
            "asset": self.asset,
            "partition": self.partition,
            "run_id": self.run_id,
            "data_version": self.data_version,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`as_json` (events the daemon sends over its socket)."""
        return cls(
            id=raw.get("id"),
            timestamp=parse_timestamp(str(raw["timestamp"])),
            kind=str(raw["kind"]),
            asset=raw.get("asset"),
            partition=raw.get("partition"),
            run_id=raw.get("run_id"),
            data_version=raw.get("data_version"),
            payload=dict(raw.get("payload") or {}),
        )


_last_formatted: tuple[datetime | None, str] = (None, "")
"""The last moment formatted, and its text: a run's event, its journal line and its record's
times are mostly one moment, formatted three or four times over (~3% of a trivial run). One
tuple, replaced whole: threads that format too read a consistent pair. Held, the moment
cannot be freed and another take its identity."""


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds: fixed width, so text order is time order."""
    global _last_formatted
    last = _last_formatted
    if moment is last[0]:
        return last[1]
    if moment.tzinfo is not UTC:  # the clocks' own zone needs no conversion (once per event)
        if moment.tzinfo is None:
            raise ValueError(f"timestamp {moment!r} has no timezone")
        text = format_timestamp(moment.astimezone(UTC))
    else:
        text = moment.isoformat(timespec="microseconds")[:-6] + "Z"
    _last_formatted = (moment, text)
    return text


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
