"""The SQLite event log: the single source of truth (WAL, one writer, group commit)."""

from headwater.eventlog._reader import EventLogReader, NoEventLog
from headwater.eventlog._rows import SmallValue
from headwater.eventlog._writer import (
    DB_NAME,
    KEEP_KINDS,
    EventLog,
    Pruned,
    open_event_log,
    unreadable,
)

__all__ = [
    "DB_NAME",
    "KEEP_KINDS",
    "EventLog",
    "EventLogReader",
    "NoEventLog",
    "Pruned",
    "SmallValue",
    "open_event_log",
    "unreadable",
]
