"""Conversions between events/records and SQLite rows, shared by the writer and the readers.

Rows are checked where they are read (not by a scan at open, which must stay fast): a row
that does not parse raises :class:`MalformedRow` naming the table and the row, which the
reader and the writer turn into one message naming the log file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from headwater._collector import collector_paused
from headwater._events import Event, EventKind, format_timestamp, parse_timestamp
from headwater._jsonsafe import plain_json
from headwater.planning import Memo, NodeKey, NodeRecord, Schedule, State

__all__ = [
    "EVENT_COLUMNS",
    "MalformedRow",
    "SmallValue",
    "event_from_row",
    "event_row",
    "record_rows",
    "schedule_rows",
    "state_from_rows",
]

EVENT_COLUMNS = "id, timestamp, kind, asset, partition, run_id, data_version, payload"


class SmallValue(NamedTuple):
    """A value kept in the event log (``small_values``): its data version and its pickle."""

    version: str
    data: bytes


def event_row(event: Event) -> tuple[Any, ...]:
    return (
        format_timestamp(event.timestamp),
        str(event.kind),
        event.asset,
        event.partition,
        event.run_id,
        event.data_version,
        _payload_json(event.payload),
    )


_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _payload_json(payload: Mapping[str, Any]) -> str:
    """Compact JSON; what JSON cannot hold (a user's metadata) as its ``str``. Never raises:
    a payload that cannot be written would fail its transaction, and with it the ends of
    the other runs committed together, and take the daemon down (at every start, for the
    run planned again)."""
    if not payload:  # most observations
        return "{}"
    try:
        return orjson.dumps(payload, default=str, option=_ORJSON).decode()
    except (orjson.JSONEncodeError, TypeError, ValueError):  # a key orjson cannot write, an
        # int beyond 64 bits, a circular value, nesting past orjson's limit
        return json.dumps(plain_json(payload), separators=(",", ":"), allow_nan=False)


class MalformedRow(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


_KINDS = frozenset(str(k) for k in EventKind)


def event_from_row(row: tuple[Any, ...]) -> Event:
    id_, ts, kind, asset, partition, run_id, version, payload = row
    try:
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        for name, text in (("asset", asset), ("partition", partition), ("run_id", run_id),
                           ("data_version", version)):  # fmt: skip
            if text is not None and not isinstance(text, str):
                raise ValueError(f"{name} is {type(text).__name__}, not text")
        parsed = json.loads(payload)
        if not isinstance(parsed, dict):
            raise ValueError("payload is not a JSON object")
        return Event(
            id=id_,
            timestamp=parse_timestamp(ts),
            kind=kind,
            asset=asset,
            partition=partition,
            run_id=run_id,
            data_version=version,
            payload=parsed,
        )
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # deep JSON too
        raise MalformedRow(f"events row id {id_}", str(exc)) from None


def record_rows(records: Mapping[NodeKey, NodeRecord]) -> list[tuple[str, str, str]]:
    return [(a, "" if p is None else p, r.to_json()) for (a, p), r in records.items()]


def schedule_rows(schedules: Mapping[str, Schedule]) -> list[tuple[str, str, str]]:
    return [
        (asset, format_timestamp(s.first_seen), format_timestamp(s.handled_through))
        for asset, s in schedules.items()
    ]


def state_from_rows(
    records: Iterable[tuple[str, str, str]],
    dynamic: Iterable[tuple[str, str, str | None]],
    schedules: Iterable[tuple[str, str, str]] = (),
) -> State:
    state = State()
    for asset, first_seen, handled in schedules:
        try:
            state.schedules[asset] = Schedule(parse_timestamp(first_seen), parse_timestamp(handled))
        except (ValueError, TypeError, AttributeError) as exc:
            raise MalformedRow(f"schedules row of asset {asset!r}", str(exc)) from None
    for name, key, added_at in dynamic:
        try:
            at = None if added_at is None else parse_timestamp(added_at)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MalformedRow(f"dynamic_partitions row {name!r}/{key!r}", str(exc)) from None
        state.add_dynamic(name, [key], at)
    memo = Memo()
    with collector_paused():  # hundreds of thousands of records, none of them in a cycle
        for asset, partition, record in records:
            try:
                node = (memo.text(asset), partition or None)
                state.put(node, NodeRecord.from_json(record, memo))
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
                where = f"current_state row of asset {asset!r}, partition {partition!r}"
                raise MalformedRow(where, f"{type(exc).__name__}: {exc}") from None
    return state
