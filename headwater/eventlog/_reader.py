"""Read-only access for the CLI and tests: its own connection, so it reads while the daemon writes."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from headwater._collector import collector_paused
from headwater._errors import HeadwaterError
from headwater._events import Event, format_timestamp, parse_timestamp
from headwater._statedir import PRIVATE_FILES, linked
from headwater.eventlog._rows import EVENT_COLUMNS, MalformedRow, event_from_row, state_from_rows
from headwater.eventlog._writer import DB_NAME, check_schema, malformed, unreadable
from headwater.planning import State

__all__ = ["EventLogReader", "NoEventLog"]


_SCHEMA = "SELECT MAX(version) FROM schema_version"


class NoEventLog(HeadwaterError):
    """A reading command found no event log: it must say so, never report an empty "all OK"."""


class EventLogReader:
    """Queries over ``state_dir/events.db``; an absent log reads as empty."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME

    def require(self) -> None:
        """Raise :class:`NoEventLog`, saying where it looked, if there is no log to read."""
        if not self.path.exists():
            raise NoEventLog(
                f"no event log at {self.path.absolute()}: nothing has run with this state "
                "directory. Name the right one with --state-dir (or HEADWATER_STATE_DIR, or "
                "state_dir under [tool.headwater]); relative paths count from the working "
                "directory"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        for name in PRIVATE_FILES:
            if (self.path.parent / name).is_symlink():
                raise linked(self.path.parent / name)
        # On a read-only filesystem SQLite cannot make the WAL index: nobody writes there, so
        # the log is read as immutable.
        immutable = "" if os.access(self.path.parent, os.W_OK) else "&immutable=1"
        uri = f"{self.path.resolve().as_uri()}?mode=ro{immutable}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=10)
            with closing(conn):
                # a log being created this instant has no tables yet: nothing to read
                made = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'current_state'")
                if not made.fetchone():
                    yield None
                    return
                check_schema(self.path, conn.execute(_SCHEMA).fetchone()[0])
                yield conn
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc

    def load_state(self, *, long_lived: bool = False) -> State:
        """The state as of the last commit. ``long_lived``: the process keeps it for the rest
        of its life (a command that loads it, prints and exits), as ``EventLog.load_state``."""
        with collector_paused(then_freeze=long_lived), self._connect() as conn:
            if conn is None:
                return State()
            records = conn.execute("SELECT asset, partition, record FROM current_state").fetchall()
            try:
                dynamic = conn.execute(
                    "SELECT name, key, added_at FROM dynamic_partitions ORDER BY seq"
                ).fetchall()
            except sqlite3.OperationalError:  # a log written before schema 6, not yet migrated
                dynamic = conn.execute(
                    "SELECT name, key, NULL FROM dynamic_partitions ORDER BY seq"
                ).fetchall()
            try:
                schedules = conn.execute(
                    "SELECT asset, first_seen, handled_through FROM schedules"
                ).fetchall()
            except sqlite3.OperationalError:  # a log written before schema 2, not yet migrated
                schedules = []
            try:
                return state_from_rows(records, dynamic, schedules)
            except MalformedRow as exc:
                raise malformed(self.path, exc) from None

    def assets(self) -> set[str]:
        """Every asset or source key the log holds a record of."""
        with self._connect() as conn:
            if conn is None:
                return set()
            rows = conn.execute("SELECT DISTINCT asset FROM current_state")
            return {str(r[0]) for r in rows}

    def events(
        self,
        *,
        kind: str | None = None,
        asset: str | None = None,
        partition: str | None = None,
        run_id: str | None = None,
        since: datetime | None = None,
        after_id: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Event]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("kind", kind),
            ("asset", asset),
            ("partition", partition),
            ("run_id", run_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("timestamp >= ?")
            params.append(format_timestamp(since))
        if after_id is not None:
            clauses.append("id > ?")
            params.append(after_id)
        order = " ORDER BY id DESC" if newest_first else " ORDER BY id"
        cap = "" if limit is None else " LIMIT ?"
        capped: list[object] = [] if limit is None else [limit]
        with self._connect() as conn:
            if conn is None:
                return []
            if asset is not None and partition is not None and kind is None:
                rows = _node_rows(conn, (asset, partition), clauses, params, order, cap, capped)
            else:
                if asset is not None and after_id is not None and _recent(conn, after_id):
                    # a --follow poll: the few events after the last one seen, in id order,
                    # not every event of the asset (the index on it orders by kind first)
                    clauses[clauses.index("asset = ?")] = "+asset = ?"
                where = " WHERE " + " AND ".join(clauses) if clauses else ""
                # With a limit, the ids are picked first: from an index only, where one serves.
                sql = (
                    f"SELECT {EVENT_COLUMNS} FROM events{where}{order}"
                    if limit is None
                    else f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN"
                    f" (SELECT id FROM events{where}{order}{cap}){order}"
                )
                rows = conn.execute(sql, params + capped).fetchall()
        return self._decoded(rows)

    def oldest(self) -> datetime | None:
        """When the oldest event the log keeps happened (by its time, not its id: after the
        wall clock stepped back, a later event may tell of an earlier moment)."""
        with self._connect() as conn:
            row = None if conn is None else conn.execute("SELECT MIN(timestamp) FROM events")
            found = None if row is None else row.fetchone()[0]
        return None if found is None else parse_timestamp(found)

    def first_since(self, moment: datetime) -> datetime | None:
        """When the earliest event at or after ``moment`` happened (by its time)."""
        with self._connect() as conn:
            if conn is None:
                return None
            at = format_timestamp(moment)
            found = conn.execute(
                "SELECT MIN(timestamp) FROM events WHERE timestamp >= ?", (at,)
            ).fetchone()[0]
        return None if found is None else parse_timestamp(found)

    def newest(self, asset: str, partition: str | None, limit: int) -> list[Event]:
        """The newest events of one asset partition (None: the unpartitioned asset), newest
        first: what ``why`` shows. They cost the same whatever the partition's history."""
        with self._connect() as conn:
            if conn is None:
                return []
            rows = _node_rows(
                conn, (asset, partition), ["asset = ?", "partition IS ?"], [asset, partition],
                " ORDER BY id DESC", " LIMIT ?", [limit],
            )  # fmt: skip
        return self._decoded(rows)

    def last_failure(self, asset: str, partition: str | None) -> dict[str, Any] | None:
        """The payload of the asset partition's latest ``run_failed`` (its error, traceback,
        the tail of its worker's stderr), or None."""
        with self._connect() as conn:
            if conn is None:
                return None
            row = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE asset = ? AND partition IS ?"
                " AND kind = 'run_failed' ORDER BY id DESC LIMIT 1",
                (asset, partition),
            ).fetchone()
        return None if row is None else dict(self._decoded([row])[0].payload)

    def _decoded(self, rows: list[Any]) -> list[Event]:
        try:
            return [event_from_row(tuple(r)) for r in rows]
        except MalformedRow as exc:
            raise malformed(self.path, exc) from None


RECENT_IDS = 20_000
"""Events after an id this close to the newest are read in id order, whatever else they must
match: fewer than the asset's history, if it has one."""


def _recent(conn: sqlite3.Connection, after_id: int) -> bool:
    newest = conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
    return newest is None or newest - after_id <= RECENT_IDS


_NODE_KINDS = """
WITH RECURSIVE k(kind) AS (
    SELECT MIN(kind) FROM events WHERE asset = :asset AND partition IS :partition
    UNION ALL
    SELECT (SELECT MIN(kind) FROM events
            WHERE asset = :asset AND partition IS :partition AND kind > k.kind)
    FROM k WHERE k.kind IS NOT NULL
)
SELECT kind FROM k WHERE kind IS NOT NULL
"""
"""The kinds of one partition's events: one seek in events_by_node_kind per kind."""


def _node_rows(
    conn: sqlite3.Connection,
    node: tuple[str, str | None],
    clauses: list[str],
    params: list[object],
    order: str,
    cap: str,
    capped: list[object],
) -> list[Any]:
    """The events of one asset partition (``clauses`` name it, first), in id order: one
    ordered walk of events_by_node_kind per kind the partition has, merged. The index has
    the kind before the id, so one query over all kinds would sort every event the partition
    ever had (``why``, asking for the newest five, would read months of history), and a
    ``--follow`` poll for the events after an id would scan them all each time."""
    conn.execute("BEGIN")  # the kinds and their events from one snapshot
    try:
        kinds = [r[0] for r in conn.execute(_NODE_KINDS, {"asset": node[0], "partition": node[1]})]
        if not kinds:
            return []
        where = " WHERE " + " AND ".join([*clauses, "kind = ?"])
        arm = f"SELECT id FROM (SELECT id FROM events{where}{order}{cap})"
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN"
            f" ({' UNION ALL '.join([arm] * len(kinds))}){order}{cap}"
        )
        arguments = [a for k in kinds for a in (*params, k, *capped)] + capped
        return conn.execute(sql, arguments).fetchall()
    finally:
        conn.rollback()
