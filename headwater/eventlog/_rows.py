"""Conversions between events/records and SQLite rows, shared by the writer and the readers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from headwater._events import Event, format_timestamp, parse_timestamp
from headwater.planning import NodeKey, NodeRecord, Schedule, State

__all__ = [
    "EVENT_COLUMNS",
    "event_from_row",
    "event_row",
    "record_rows",
    "schedule_rows",
    "state_from_rows",
]

EVENT_COLUMNS = "id, timestamp, kind, asset, partition, run_id, data_version, payload"


def event_row(event: Event) -> tuple[Any, ...]:
    return (
        format_timestamp(event.timestamp),
        str(event.kind),
        event.asset,
        event.partition,
        event.run_id,
        event.data_version,
        json.dumps(dict(event.payload), separators=(",", ":"), default=str),
    )


def event_from_row(row: tuple[Any, ...]) -> Event:
    id_, ts, kind, asset, partition, run_id, version, payload = row
    return Event(
        id=id_,
        timestamp=parse_timestamp(ts),
        kind=kind,
        asset=asset,
        partition=partition,
        run_id=run_id,
        data_version=version,
        payload=json.loads(payload),
    )


def record_rows(records: Mapping[NodeKey, NodeRecord]) -> list[tuple[str, str, str]]:
    return [(a, "" if p is None else p, r.to_json()) for (a, p), r in records.items()]


def schedule_rows(schedules: Mapping[str, Schedule]) -> list[tuple[str, str, str]]:
    return [
        (asset, format_timestamp(s.first_seen), format_timestamp(s.handled_through))
        for asset, s in schedules.items()
    ]


def state_from_rows(
    records: Iterable[tuple[str, str, str]],
    dynamic: Iterable[tuple[str, str]],
    schedules: Iterable[tuple[str, str, str]] = (),
) -> State:
    state = State()
    for asset, first_seen, handled in schedules:
        state.schedules[asset] = Schedule(parse_timestamp(first_seen), parse_timestamp(handled))
    for name, key in dynamic:
        state.add_dynamic(name, [key])
    for asset, partition, record in records:
        state.put((asset, partition or None), NodeRecord.from_json(record))
    return state
