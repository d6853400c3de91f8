"""The event log's one writer: an aiosqlite connection with group commit.

Concurrent ``write`` calls are gathered: the first caller becomes the leader and commits every
batch queued so far in one transaction, again and again until the queue is empty; the others
wait for the commit that holds their batch. Events and the ``current_state`` rows they lead to
are written in the same transaction, so the table never disagrees with the log.

A transaction that fails is rolled back and every caller whose batch it held learns it failed
(a full disk is a :class:`StorageFailure`): nothing a caller was told is committed is ever lost,
and nothing it was told failed is half-written. Pruning takes the same transaction lock, in
batches short enough to hold back other writes for at most a few milliseconds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import anyio

from headwater._errors import StateDirError
from headwater._events import Event
from headwater._storage import StorageFailure, storage_failure
from headwater.eventlog._rows import event_row, record_rows, schedule_rows, state_from_rows
from headwater.eventlog._schema import MIGRATIONS, PRAGMAS
from headwater.planning import NodeKey, NodeRecord, Schedule, State

__all__ = ["DB_NAME", "EventLog", "StorageFailure", "open_event_log", "unreadable"]

DB_NAME = "events.db"


def unreadable(path: Path, exc: BaseException) -> StateDirError:
    """The error for an event log SQLite cannot read: what is wrong and how to recover."""
    path = path.absolute()
    return StateDirError(
        f"the event log {path} is unreadable: {exc}. If the disk is healthy, recover what "
        f"SQLite can still read with headwater stopped: `sqlite3 {path} .recover | sqlite3 "
        f"{path}.recovered`, then move {path}.recovered into its place; or move {path} and its "
        "-wal and -shm files aside to start afresh (every asset is then materialized again)"
    )


@dataclass(slots=True)
class _Batch:
    events: Sequence[Event]
    records: Mapping[NodeKey, NodeRecord]
    dynamic: Sequence[tuple[str, str]]
    schedules: Mapping[str, Schedule]
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class EventLog:
    """Append events (and the state rows they lead to) with group commit."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._pending: list[_Batch] = []
        self._leading = False
        self._txn = anyio.Lock()
        """Held for each transaction: commits and prune batches never interleave."""
        self._dynamic_seq = 0
        self.commits = 0

    async def _migrate(self) -> None:
        async with self._conn.execute("SELECT count(*) FROM sqlite_master") as cur:
            row = await cur.fetchone()
        if row is not None and row[0] == 0:
            # A new log hands freed pages back to the filesystem as retention prunes; this
            # must be set before the first table exists (an older log converts with a VACUUM).
            await self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        for pragma in PRAGMAS:
            await self._conn.execute(pragma)
        await self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        async with self._conn.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            await self._conn.executescript(
                f"BEGIN; {script}; INSERT INTO schema_version VALUES ({version}); COMMIT;"
            )
        await self._conn.commit()
        async with self._conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM dynamic_partitions"
        ) as cur:
            row = await cur.fetchone()
        self._dynamic_seq = int(row[0]) if row else 0

    async def load_state(self) -> State:
        """The state as of the last commit, from the ``current_state`` table."""
        try:
            return await self._load_state()
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc

    async def _load_state(self) -> State:
        async with self._conn.execute("SELECT asset, partition, record FROM current_state") as cur:
            records = await cur.fetchall()
        async with self._conn.execute(
            "SELECT name, key FROM dynamic_partitions ORDER BY seq"
        ) as cur:
            dynamic = await cur.fetchall()
        async with self._conn.execute(
            "SELECT asset, first_seen, handled_through FROM schedules"
        ) as cur:
            schedules = await cur.fetchall()
        return state_from_rows(
            [(r[0], r[1], r[2]) for r in records],
            [(d[0], d[1]) for d in dynamic],
            [(s[0], s[1], s[2]) for s in schedules],
        )

    async def write(
        self,
        events: Sequence[Event],
        records: Mapping[NodeKey, NodeRecord] | None = None,
        dynamic: Sequence[tuple[str, str]] = (),
        schedules: Mapping[str, Schedule] | None = None,
    ) -> None:
        """Return once ``events``, ``records``, ``dynamic`` keys and ``schedules`` are committed
        together."""
        batch = _Batch(events, records or {}, dynamic, schedules or {})
        self._pending.append(batch)
        if self._leading:
            await batch.done.wait()
        else:
            self._leading = True
            try:
                while self._pending:
                    batches, self._pending = self._pending, []
                    # A cancelled caller must not leave a transaction half-written: the commit
                    # was handed to the connection's thread and completes regardless.
                    with anyio.CancelScope(shield=True):
                        await self._commit(batches)
            finally:
                self._leading = False
        if batch.error is not None:
            raise batch.error

    async def _commit(self, batches: list[_Batch]) -> None:
        async with self._txn:
            await self._commit_locked(batches)

    async def _commit_locked(self, batches: list[_Batch]) -> None:
        events = [event_row(e) for b in batches for e in b.events]
        records: dict[NodeKey, NodeRecord] = {}
        schedules: dict[str, Schedule] = {}
        dynamic: list[tuple[str, str, int]] = []
        for b in batches:
            records.update(b.records)
            schedules.update(b.schedules)
            for name, key in b.dynamic:
                self._dynamic_seq += 1
                dynamic.append((name, key, self._dynamic_seq))
        try:
            if events:
                await self._conn.executemany(
                    "INSERT INTO events (timestamp, kind, asset, partition, run_id, data_version,"
                    " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    events,
                )
            if records:
                await self._conn.executemany(
                    "INSERT INTO current_state (asset, partition, record) VALUES (?, ?, ?)"
                    " ON CONFLICT (asset, partition) DO UPDATE SET record = excluded.record",
                    record_rows(records),
                )
            if dynamic:
                await self._conn.executemany(
                    "INSERT OR IGNORE INTO dynamic_partitions (name, key, seq) VALUES (?, ?, ?)",
                    dynamic,
                )
            if schedules:
                await self._conn.executemany(
                    "INSERT OR REPLACE INTO schedules (asset, first_seen, handled_through)"
                    " VALUES (?, ?, ?)",
                    schedule_rows(schedules),
                )
            await self._conn.commit()
            self.commits += 1
        except Exception as exc:
            # Every batch in the failed transaction learns of it; the leader goes on with the
            # batches queued meanwhile, so no waiter is left behind.
            with contextlib.suppress(sqlite3.Error):
                await self._conn.rollback()
            error: BaseException = storage_failure(exc, self.path) or exc
            for b in batches:
                b.error = error
        finally:
            for b in batches:
                b.done.set()

    async def probe(self) -> None:
        """Write and remove a row: raises :class:`StorageFailure` while the disk refuses."""
        async with self._txn:
            try:
                await self._conn.execute("INSERT INTO write_probe VALUES (1)")
                await self._conn.execute("DELETE FROM write_probe")
                await self._conn.commit()
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.rollback()
                raise storage_failure(exc, self.path) or exc from None


@asynccontextmanager
async def open_event_log(state_dir: Path) -> AsyncIterator[EventLog]:
    """Open (creating and migrating) ``state_dir/events.db``; close it on exit."""
    await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
    path = state_dir / DB_NAME
    conn = await aiosqlite.connect(path)
    try:
        log = EventLog(conn, path)
        try:
            await log._migrate()
        except sqlite3.DatabaseError as exc:
            raise (storage_failure(exc, path) or unreadable(path, exc)) from exc
        yield log
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()
