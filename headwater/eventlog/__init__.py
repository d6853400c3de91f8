"""The SQLite event log: the single source of truth (WAL, one writer, group commit)."""

from headwater.eventlog._reader import EventLogReader
from headwater.eventlog._writer import DB_NAME, EventLog, open_event_log

__all__ = ["DB_NAME", "EventLog", "EventLogReader", "open_event_log"]
