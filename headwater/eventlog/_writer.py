"""The event log's one writer: a connection of its own with group commit.

Concurrent ``write`` calls are gathered: the first caller becomes the leader and commits every
batch queued so far in one transaction, again and again until the queue is empty; the others
wait for the commit that holds their batch. Events and the ``current_state`` rows they lead to
are written in the same transaction, so the table never disagrees with the log.

Where a commit runs: with ``synchronous=NORMAL`` in WAL mode a commit is a write to the page
cache, ~25-50 µs here, while handing it to a thread and back costs ~100-150 µs (two
wake-ups). So a small transaction (``ON_LOOP_ROWS``) commits on the event loop's own thread;
a large one always goes to a thread (group commit), and a commit that ever takes longer than
``SLOW_COMMIT_S`` (a disk under writeback pressure) sends the next ones there for
``SLOW_FOR_S``: the loop is never held for long. A commit that was slow only because the
machine gave its processor to others (no wait of its own: a busy machine preempts a commit
for 20-70 ms now and then) does not: a thread would wait as long for a processor, and the
next ten seconds of commits would each pay the hop.

Checkpoints never run inside a commit on the loop (``wal_autocheckpoint=0``: a checkpoint
syncs the disk). Every ``CHECKPOINT_PAGES`` pages a thread of its own checkpoints passively
(commits go on meanwhile) and reads how many frames the WAL holds. The WAL starts afresh
only once a checkpoint has caught up, which commits (or readers) may keep one from doing: at
``4 * CHECKPOINT_PAGES`` (less on a disk with little room, see ``_force_at``) one commit goes
to a thread and then checkpoints with no other commit under way (``RESTART``, waiting at
most 200 ms for readers). A disk that filled up gets the WAL cut to nothing (``TRUNCATE``)
before each probe of the recovery.

A transaction that fails is rolled back and every caller whose batch it held learns it failed
(a full disk is a :class:`StorageFailure`): nothing a caller was told is committed is ever lost,
and nothing it was told failed is half-written. Pruning takes the same transaction lock, in
batches short enough to hold back other writes for at most a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiosqlite
import anyio

from headwater._collector import collector_paused
from headwater._errors import StateDirError
from headwater._events import Event, format_timestamp
from headwater._statedir import linked
from headwater._storage import StorageFailure, storage_failure
from headwater.eventlog._rows import (
    EVENT_COLUMNS,
    MalformedRow,
    SmallValue,
    event_from_row,
    event_row,
    record_rows,
    schedule_rows,
    state_from_rows,
)
from headwater.eventlog._schema import MIGRATIONS, PRAGMAS
from headwater.planning import NodeKey, NodeRecord, Schedule, State

__all__ = [
    "DB_NAME",
    "KEEP_KINDS",
    "EventLog",
    "Pruned",
    "StorageFailure",
    "malformed",
    "open_event_log",
    "unreadable",
]

DB_NAME = "events.db"
ON_LOOP_ROWS = 64
"""Transactions of at most this many rows commit on the event loop's thread."""
SLOW_COMMIT_S = 0.02
"""Longer than a preempted commit on a busy machine; what a disk under writeback pressure takes."""
SLOW_FOR_S = 10.0
CHECKPOINT_PAGES = 1000
"""SQLite's own default for ``wal_autocheckpoint``."""


def malformed(path: Path, exc: MalformedRow) -> StateDirError:
    """The error for a row that does not parse: which row of which file, and what to do."""
    path = path.absolute()
    return StateDirError(
        f"the event log {path} has a malformed row ({exc.where}: {exc.problem}). With "
        "headwater stopped, restore the state directory from a backup (headwater backup), or "
        f"repair or delete that row with sqlite3 {path}"
    )


def check_schema(path: Path, found: int | None) -> None:
    """A log migrated past the schemas this version knows was written by a newer headwater:
    its rows may mean what this one cannot read (or would misread, and write back)."""
    if found is not None and found > len(MIGRATIONS):
        from headwater import __version__  # the package imports this module

        raise StateDirError(
            f"the event log {path.absolute()} is at schema version {found}, written by a newer "
            f"headwater; this one ({__version__}) knows schema {len(MIGRATIONS)} and does not "
            "use it. Run the headwater that wrote it (or a newer one); nothing was changed"
        )


def unreadable(path: Path, exc: BaseException) -> StateDirError:
    """The error for an event log SQLite cannot read: what is wrong and how to recover."""
    path = path.absolute()
    name = getattr(exc, "sqlite_errorname", "") or ""
    if not name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StateDirError(
            f"the event log {path} cannot be opened: {exc}. Check that this user may read "
            "and write the state directory and that its disk is mounted; the log itself "
            "may be fine"
        )
    return StateDirError(
        f"the event log {path} is unreadable: {exc}. If the disk is healthy, recover what "
        f"SQLite can still read with headwater stopped: `sqlite3 {path} .recover | sqlite3 "
        f"{path}.recovered`, then move {path}.recovered into its place; or move {path} and its "
        "-wal and -shm files aside to start afresh (every asset is then materialized again)"
    )


KEEP_KINDS = (
    "observation", "materialization", "run_started", "run_failed", "run_abandoned",
    "freshness_violated", "freshness_recovered", "value_lost",
)  # fmt: skip
"""Retention keeps the newest event of each of these kinds per asset partition, so that `status`
and `why` explain everything after any retention."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning pass removed, and what it cost the writers."""

    events: int
    batches: int
    longest_batch_s: float
    bytes_freed: int


@dataclass(slots=True)
class _Batch:
    events: Sequence[Event]
    records: Mapping[NodeKey, NodeRecord]
    dynamic: Sequence[tuple[str, str, datetime]]
    schedules: Mapping[str, Schedule]
    values: Mapping[NodeKey, SmallValue | None]
    done: asyncio.Event | None = None
    """Made by a caller that waits for a leader's commit (asyncio's: anyio's looks its
    backend up at each creation, a few µs of each gathered commit)."""
    error: BaseException | None = None


def _done(batches: list[_Batch]) -> None:
    for b in batches:
        if b.done is not None:
            b.done.set()


class EventLog:
    """Append events (and the state rows they lead to) with group commit."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
    ) -> None:
        self._conn = conn
        self._reader = reader
        """For reads and the schema; every event goes through ``_writer``."""
        self._writer = writer
        self.path = path
        self._pending: list[_Batch] = []
        self._slow_until = 0.0
        """Monotonic time until which commits go to a thread (a commit was slow)."""
        self._one_thread = anyio.CapacityLimiter(1)
        self._unchecked_pages = 0
        """WAL pages since the last checkpoint began."""
        self._wal_pages = 0
        """About how many pages the WAL holds: counted since the last checkpoint with no
        commit under way (after it, the next commit starts the WAL afresh), or since the last
        background checkpoint began, added to the frames that one found (see ``_count``)."""
        self._checkpointer: threading.Thread | None = None
        self._wal_seen = [-1, 4 * CHECKPOINT_PAGES, 0]
        """Frames in the WAL as the last background checkpoint found them, until ``_count``
        takes them (-1: none since); the WAL length at which to force a checkpoint (see
        ``_force_at``); ``_wal_pages`` just before it looked. Its thread writes here."""
        self._leading = False
        self._txn = anyio.Lock(fast_acquire=True)
        """Held for each transaction: commits and prune batches never interleave. Taken
        without a turn of the event loop when free: a leader that yielded there committed
        what it had gathered, and the callers that came meanwhile in a second transaction."""
        self._dynamic_seq = 0
        self._pruner: sqlite3.Connection | None = None
        self._pruning = anyio.Lock()
        """One prune or vacuum at a time on the pruner's connection: two at once (the daily
        retention and a `headwater prune`, two CLIs) used it from two threads together."""
        self.commits = 0

    async def _read_dynamic_seq(self) -> None:
        async with self._conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM dynamic_partitions"
        ) as cur:
            row = await cur.fetchone()
        self._dynamic_seq = int(row[0]) if row else 0

    async def load_state(self, *, long_lived: bool = False) -> State:
        """The state as of the last commit, from the ``current_state`` table. ``long_lived``:
        the process keeps it for its life (the daemon): what is alive once it is loaded is
        moved out of the collector's walks for good (``gc.freeze``)."""
        try:
            return await self._load_state(long_lived)
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from exc
        except MalformedRow as exc:
            raise malformed(self.path, exc) from None

    async def _load_state(self, long_lived: bool) -> State:
        # Paused for the rows too (a tuple per partition, garbage once its record is built):
        # at 100k a hundred collections walked them as they came, and one more after.
        with collector_paused(then_freeze=long_lived):
            async with self._conn.execute(
                "SELECT asset, partition, record FROM current_state"
            ) as cur:
                records = await cur.fetchall()
            async with self._conn.execute(
                "SELECT name, key, added_at FROM dynamic_partitions ORDER BY seq"
            ) as cur:
                dynamic = await cur.fetchall()
            async with self._conn.execute(
                "SELECT asset, first_seen, handled_through FROM schedules"
            ) as cur:
                schedules = await cur.fetchall()
            # the rows are tuples already (no row factory): no copy of 100k of them
            return state_from_rows(
                cast("list[tuple[str, str, str]]", records),
                cast("list[tuple[str, str, str | None]]", dynamic),
                cast("list[tuple[str, str, str]]", schedules),
            )

    def small_value(self, node: NodeKey) -> SmallValue | None:
        """The partition's value if the log keeps it (one indexed read on a connection of
        its own: tens of microseconds, on the caller's thread)."""
        try:
            row = self._reader.execute(
                "SELECT version, data FROM small_values WHERE asset = ? AND partition = ?",
                (node[0], node[1] or ""),
            ).fetchone()
        except sqlite3.Error as exc:  # an outage of the disk, as for a write
            raise storage_failure(exc, self.path) or unreadable(self.path, exc) from exc
        return None if row is None else SmallValue(row[0], row[1])

    async def small_values(self, nodes: Sequence[NodeKey]) -> dict[NodeKey, SmallValue]:
        """The values the log keeps among ``nodes``: one query per asset, in a thread (an
        asset that reads thousands of partitions must not hold the loop)."""
        by_asset: dict[str, list[str]] = {}
        for asset, partition in nodes:
            by_asset.setdefault(asset, []).append(partition or "")
        found = await anyio.to_thread.run_sync(_read_small, self.path, by_asset)
        return {(a, p or None): SmallValue(v, d) for (a, p), (v, d) in found.items()}

    async def small_value_nodes(self) -> set[NodeKey]:
        """Every partition whose value the log keeps."""
        async with self._conn.execute("SELECT asset, partition FROM small_values") as cur:
            rows = await cur.fetchall()
        return {(a, p or None) for a, p in rows}

    async def prune_small_values(self, keep: Callable[[], set[NodeKey]]) -> list[NodeKey]:
        """Delete the small values of partitions not in ``keep()``; return them. ``keep`` is
        asked once the values are listed: one recorded meanwhile is then among those kept."""
        found = await self.small_value_nodes()
        gone = sorted(found - keep(), key=lambda n: (n[0], n[1] or ""))
        if gone:
            async with self._txn:
                await anyio.to_thread.run_sync(_delete_small, self._writer, gone)
        return gone

    async def run_started(self, node: NodeKey, run_id: str) -> Event | None:
        """The ``run_started`` event of a run of ``node`` (what it was to read, with which
        code): the partition's starts through events_by_node_kind, newest first (a run asked
        for is a recent one), not an index of every event by run (see migration 7)."""
        async with self._conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE asset = ? AND partition IS ?"
            " AND kind = 'run_started' AND run_id = ? ORDER BY id DESC LIMIT 1",
            (node[0], node[1], run_id),
        ) as cur:
            row = await cur.fetchone()
        try:
            return None if row is None else event_from_row(tuple(row))
        except MalformedRow as exc:
            raise malformed(self.path, exc) from None

    async def write(
        self,
        events: Sequence[Event],
        records: Mapping[NodeKey, NodeRecord] | None = None,
        dynamic: Sequence[tuple[str, str, datetime]] = (),
        schedules: Mapping[str, Schedule] | None = None,
        values: Mapping[NodeKey, SmallValue | None] | None = None,
        *,
        gather: bool = False,
    ) -> None:
        """Return once ``events``, ``records``, ``dynamic`` keys (name, key, added at),
        ``schedules`` and small
        ``values`` (None: the partition's value is no longer small) are committed together.

        ``gather``: other writes are likely in this turn of the event loop (runs that ended
        together): wait for them, to commit them all in one transaction."""
        batch = _Batch(events, records or {}, dynamic, schedules or {}, values or {})
        if self._leading:
            self._pending.append(batch)
            batch.done = asyncio.Event()
            # shielded: the leader commits this batch whatever happens to its caller, who
            # must then take what was committed (or memory and disk disagree)
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        elif not gather and not self._txn.locked() and self._small([batch]):
            self._commit_here([batch])  # nothing else is writing: no await at all
        else:
            self._pending.append(batch)
            self._leading = True
            try:
                # Shielded, the gathering too: a cancelled caller must not leave batches
                # queued behind it uncommitted, nor a transaction half-written (a commit
                # handed to a thread completes regardless).
                with anyio.CancelScope(shield=True):
                    if gather:
                        # The callers woken with this one run before it resumes: their
                        # writes join this batch. Two trivial runs ending together commit
                        # once, not twice (~80 µs of a ~0.4 ms run).
                        await asyncio.sleep(0)
                    while self._pending:
                        batches, self._pending = self._pending, []
                        async with self._txn:
                            if self._small(batches):
                                self._commit_here(batches)
                            else:
                                await self._commit_in_thread(batches)
            finally:
                self._leading = False
        if batch.error is not None:
            raise batch.error

    def _small(self, batches: list[_Batch]) -> bool:
        """Whether these batches commit on the loop's thread (see the module's docstring)."""
        rows = 0
        for b in batches:
            rows += len(b.events) + len(b.records) + len(b.dynamic) + len(b.values)
        return (
            rows <= ON_LOOP_ROWS and not self._wal_long() and time.monotonic() >= self._slow_until
        )

    def _rows(self, batches: list[_Batch]) -> _Rows:
        events = [event_row(e) for b in batches for e in b.events]
        dynamic: list[tuple[str, str, int, str]] = []
        if len(batches) == 1:  # most commits: nothing to merge
            records, schedules, values = batches[0].records, batches[0].schedules, batches[0].values
        else:
            records, schedules, values = {}, {}, {}
            for b in batches:
                records.update(b.records)
                schedules.update(b.schedules)
                values.update(b.values)
        for b in batches:
            for name, key, at in b.dynamic:
                self._dynamic_seq += 1
                dynamic.append((name, key, self._dynamic_seq, format_timestamp(at)))
        rows = record_rows(records) if records else []
        small = [(a, p or "", v.version if v else None, v.data if v else None)
                 for (a, p), v in values.items()]  # fmt: skip
        return events, rows, dynamic, schedule_rows(schedules) if schedules else [], small

    def _commit_here(self, batches: list[_Batch]) -> None:
        try:
            rows = self._rows(batches)
            waits = _waits()
            began = time.perf_counter()
            pages = _write_transaction(self._writer, *rows)
            if time.perf_counter() - began > SLOW_COMMIT_S and _waits() != waits:
                self._slow_until = time.monotonic() + SLOW_FOR_S
            self._committed(pages)
        except Exception as exc:
            self._failed(batches, exc)
        finally:
            _done(batches)

    async def _commit_in_thread(self, batches: list[_Batch]) -> None:
        try:
            rows = self._rows(batches)
            checkpoint = self._wal_long()
            if checkpoint and self._checkpointer is not None:  # or it would find it busy
                await anyio.to_thread.run_sync(self._checkpointer.join)
            pages = await anyio.to_thread.run_sync(
                _write_transaction, self._writer, *rows, checkpoint, limiter=self._one_thread
            )
            if checkpoint:
                # Its pages are in the database now, and the WAL starts afresh at the next
                # commit: a checkpointer started now would find the old length (not reset
                # until then) and send the next commit to a thread to force another.
                self._unchecked_pages = self._wal_pages = pages = 0
                self._wal_seen[0] = -1
            self._committed(pages)
        except Exception as exc:
            self._failed(batches, exc)
        finally:
            _done(batches)

    def _wal_long(self) -> bool:
        """Whether the WAL is long enough for a checkpoint with no commit under way."""
        self._count()
        return self._wal_pages >= self._wal_seen[1]

    def _count(self) -> None:
        """Take the frames the last background checkpoint found in the WAL, exact when it
        looked, for the estimate of what was committed before it began. The estimate alone
        missed a WAL that started afresh by itself (that checkpoint caught up) and counts 6
        pages for a one-event commit that writes 4 or 5; an event with a large payload
        writes more: 10,000 one-event appends forced 14 checkpoints (each holding the writer
        for the 5-13 ms of its fsyncs), and now 12-13, on a WAL as long."""
        seen = self._wal_seen
        if seen[0] >= 0:  # its thread has ended: nothing writes here until the next begins
            # Commits between its reading the count and the WAL count twice: an excess.
            self._wal_pages = seen[0] + self._wal_pages - seen[2]
            seen[0] = -1

    def _committed(self, pages: int) -> None:
        self.commits += 1
        self._unchecked_pages += pages
        self._wal_pages += pages
        if self._unchecked_pages < min(CHECKPOINT_PAGES, self._wal_seen[1] // 2):
            return
        if self._checkpointer is None or not self._checkpointer.is_alive():
            self._count()
            self._unchecked_pages = 0
            self._checkpointer = threading.Thread(
                target=_checkpoint_alone,
                args=(self.path, self._wal_seen, lambda: self._wal_pages),
                name="headwater checkpoint",
            )
            self._checkpointer.start()

    def _failed(self, batches: list[_Batch], exc: Exception) -> None:
        """Every batch in the failed transaction learns of it; a leader goes on with the
        batches queued meanwhile, so no waiter is left behind."""
        with contextlib.suppress(sqlite3.Error):
            self._writer.rollback()
        error: BaseException = storage_failure(exc, self.path) or exc
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            error = unreadable(self.path, exc)  # corrupt under us: the owner stops, exit 3
        for b in batches:
            b.error = error

    async def prune(self, cutoff: datetime, *, budget_s: float = 0.004) -> Pruned:
        """Delete events older than ``cutoff`` but the newest of each kept kind per asset
        partition, in transactions of about ``budget_s`` each (other writers wait at most that
        long), then hand freed pages back to the filesystem where the log allows it.

        The batches run on a connection of their own in a worker thread (one hop per batch,
        not one per statement), always under the writer's transaction lock.
        """
        async with self._pruning:
            return await self._prune(cutoff, budget_s)

    async def _pruner_connection(self) -> sqlite3.Connection:
        if self._pruner is None:
            self._pruner = await anyio.to_thread.run_sync(_connect_sync, self.path)
        return self._pruner

    async def _prune(self, cutoff: datetime, budget_s: float) -> Pruned:
        pruner = await self._pruner_connection()
        before = await anyio.to_thread.run_sync(_bytes, pruner)
        stamp = format_timestamp(cutoff)
        after: tuple[str, int] | None = ("", 0)
        size, deleted, batches, longest = 256, 0, 0, 0.0
        while after is not None:
            async with self._txn:
                found, after, took = await anyio.to_thread.run_sync(
                    _prune_batch, pruner, stamp, after, size
                )
            deleted += found
            batches += 1
            longest = max(longest, took)
            # aim each transaction at the budget, whatever the machine; grow slowly, since a
            # batch of keepers is cheap and the next one, deleting, may not be
            size = max(16, min(size * 2, 20_000, int(size * budget_s / max(took, 1e-4))))
            # outside the lock, after every batch: the WAL never piles up pages that a
            # writer's commit would then have to checkpoint while others wait
            await anyio.to_thread.run_sync(_checkpoint, pruner)
        pages = 64
        while True:  # with incremental auto-vacuum, free pages go back to the filesystem
            async with self._txn:
                more, took = await anyio.to_thread.run_sync(_vacuum_step, pruner, pages)
            longest = max(longest, took)
            pages = max(8, min(4096, int(pages * budget_s / max(took, 1e-4))))
            if not more:
                break
        await anyio.to_thread.run_sync(_checkpoint, pruner)
        after_bytes = await anyio.to_thread.run_sync(_bytes, pruner)
        return Pruned(deleted, batches, longest, max(0, before - after_bytes))

    async def vacuum(self) -> int:
        """Convert an older log to incremental auto-vacuum (a full VACUUM: it needs free space
        about the size of the log). Returns the bytes freed."""
        async with self._pruning:
            pruner = await self._pruner_connection()
            async with self._txn:
                return await anyio.to_thread.run_sync(_full_vacuum, pruner)

    async def close(self) -> None:
        if self._checkpointer is not None:
            await anyio.to_thread.run_sync(self._checkpointer.join)
            self._checkpointer = None
        if self._pruner is not None:
            await anyio.to_thread.run_sync(self._pruner.close)
            self._pruner = None
        await anyio.to_thread.run_sync(self._writer.close)
        await anyio.to_thread.run_sync(self._reader.close)

    async def probe(self) -> None:
        """Write and remove a row: raises :class:`StorageFailure` while the disk refuses.
        First the WAL is cut to nothing (once its pages are in the database): on a disk the
        WAL itself filled, that is what frees the space to go on."""
        async with self._txn:
            with contextlib.suppress(sqlite3.Error):
                await anyio.to_thread.run_sync(
                    _restart_wal, self._writer, "TRUNCATE", limiter=self._one_thread
                )
                self._unchecked_pages = self._wal_pages = 0
                self._wal_seen[0] = -1
            try:
                await self._conn.execute("INSERT INTO write_probe VALUES (1)")
                await self._conn.execute("DELETE FROM write_probe")
                await self._conn.commit()
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.rollback()
                raise storage_failure(exc, self.path) or exc from None


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    async with conn.execute("SELECT count(*) FROM sqlite_master") as cur:
        row = await cur.fetchone()
    if row is not None and row[0] == 0:
        # A new log hands freed pages back to the filesystem as retention prunes; this
        # must be set before the first table exists (an older log converts with a VACUUM).
        await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    for pragma in PRAGMAS:
        await conn.execute(pragma)
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with conn.execute("SELECT MAX(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    current = (row[0] if row else None) or 0
    check_schema(path, current)
    for version, script in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        await conn.executescript(
            f"BEGIN; {script}; INSERT INTO schema_version VALUES ({version}); COMMIT;"
        )
    await conn.commit()


def _create_private(path: Path) -> None:
    """Create the log 0600 before SQLite does (it gives the -wal and -shm files the log's
    mode), whatever the umask; never through a link."""
    if path.is_symlink():
        raise linked(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


_Rows = tuple[
    list[tuple[Any, ...]], list[tuple[str, str, str]], list[tuple[str, str, int, str]],
    list[tuple[str, str, str]], list[tuple[str, str, str | None, bytes | None]],
]  # fmt: skip


def _write_transaction(
    conn: sqlite3.Connection,
    events: list[tuple[Any, ...]],
    records: list[tuple[str, str, str]],
    dynamic: list[tuple[str, str, int, str]],
    schedules: list[tuple[str, str, str]],
    values: list[tuple[str, str, str | None, bytes | None]],
    checkpoint: bool = False,
) -> int:
    """One transaction (then a checkpoint, if asked); rolled back by the caller if it raises.
    Returns about how many pages it added to the WAL."""
    conn.execute("BEGIN")
    if events:
        conn.executemany(
            "INSERT INTO events (timestamp, kind, asset, partition, run_id, data_version,"
            " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            events,
        )
    if records:
        conn.executemany(
            "INSERT INTO current_state (asset, partition, record) VALUES (?, ?, ?)"
            " ON CONFLICT (asset, partition) DO UPDATE SET record = excluded.record",
            records,
        )
    if dynamic:
        conn.executemany(
            "INSERT OR IGNORE INTO dynamic_partitions (name, key, seq, added_at)"
            " VALUES (?, ?, ?, ?)",
            dynamic,
        )
    if schedules:
        conn.executemany(
            "INSERT OR REPLACE INTO schedules (asset, first_seen, handled_through)"
            " VALUES (?, ?, ?)",
            schedules,
        )
    if values:
        if kept := [v for v in values if v[3] is not None]:
            conn.executemany(
                "INSERT INTO small_values (asset, partition, version, data) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (asset, partition) DO UPDATE SET version = excluded.version,"
                " data = excluded.data",
                kept,
            )
        if gone := [(a, p) for a, p, _, data in values if data is None]:
            conn.executemany("DELETE FROM small_values WHERE asset = ? AND partition = ?", gone)
    conn.execute("COMMIT")
    if checkpoint:
        _restart_wal(conn)
    # An event touches the table and its four indexes, a record its table: a few pages each,
    # shared within a transaction.
    return 6 + (len(events) + len(records) + len(dynamic) + len(schedules) + len(values)) // 8


def _read_small(
    path: Path, by_asset: Mapping[str, list[str]]
) -> dict[tuple[str, str], tuple[str, bytes]]:
    conn = _connect_sync(path)
    try:
        found: dict[tuple[str, str], tuple[str, bytes]] = {}
        for asset, partitions in by_asset.items():
            wanted = set(partitions)
            rows = conn.execute(
                "SELECT partition, version, data FROM small_values WHERE asset = ?", (asset,)
            )
            found.update({(asset, p): (v, d) for p, v, d in rows if p in wanted})
        return found
    finally:
        conn.close()


def _delete_small(conn: sqlite3.Connection, nodes: list[NodeKey]) -> None:
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "DELETE FROM small_values WHERE asset = ? AND partition = ?",
            [(a, p or "") for a, p in nodes],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect_sync(path: Path) -> sqlite3.Connection:
    """A connection whose commits never stop to checkpoint (the checkpointer and prune do it
    passively, off the writer): used from one thread at a time, not always the same one."""
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def _waits() -> int:
    """How many times this thread has waited (a read or write of the disk, a lock): not
    when it was preempted. Where the system does not tell, every call differs."""
    if _RUSAGE_THREAD is None:
        return time.perf_counter_ns()
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)


def _bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


_KEEPER = (
    f"e.kind IN ({', '.join(repr(k) for k in KEEP_KINDS)}) AND e.asset IS NOT NULL AND e.id = ("
    "SELECT MAX(k.id) FROM events k"
    " WHERE k.asset = e.asset AND k.partition IS e.partition AND k.kind = e.kind)"
)


def _prune_batch(
    conn: sqlite3.Connection, cutoff: str, after: tuple[str, int], size: int
) -> tuple[int, tuple[str, int] | None, float]:
    """One transaction, two statements (the work stays in SQLite, out of Python's lock): the
    next ``size`` events older than the cutoff (in time order, from ``after``), less the
    newest of each kept kind per asset partition. Returns how many were deleted, where to go
    on (None once the cutoff is reached) and how long it held the writer lock."""
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute(
            "SELECT timestamp, id FROM events WHERE timestamp >= ? AND timestamp < ?"
            " AND (timestamp, id) > (?, ?) ORDER BY timestamp, id LIMIT 1 OFFSET ?",
            (after[0], cutoff, after[0], after[1], size - 1),
        ).fetchone()
        bound = (str(last[0]), int(last[1])) if last else (cutoff, 0)
        # The plain range on timestamp is what the index uses; the row values refine it.
        deleted = conn.execute(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
            " WHERE e.timestamp >= ? AND e.timestamp <= ? AND e.timestamp < ?"
            " AND (e.timestamp, e.id) > (?, ?) AND (e.timestamp, e.id) <= (?, ?)"
            f" AND NOT ({_KEEPER}))",
            (after[0], bound[0], cutoff, after[0], after[1], bound[0],
             bound[1] if last else 1 << 62),
        ).rowcount  # fmt: skip
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted, bound if last else None, time.perf_counter() - started


def _checkpoint(conn: sqlite3.Connection) -> int:
    """Passive: never waits for, nor blocks, a writer. Returns the frames in the WAL."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[1]) if row else 0


def _force_at(path: Path) -> int:
    """``4 * CHECKPOINT_PAGES``, less on a disk with little room: the WAL must never be what
    fills it (copying a long WAL into the database needs room too, so a full disk could not
    get it back). A sixteenth of the free space, 64 pages at least; background checkpoints
    come twice as often."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return CHECKPOINT_PAGES
    return max(64, min(4 * CHECKPOINT_PAGES, free // (16 * 4096)))


def _checkpoint_alone(path: Path, seen: list[int], pages: Callable[[], int]) -> None:
    """A passive checkpoint on a connection of its own (the writer's commits go on): how many
    frames the WAL holds goes to ``seen[0]``, when to force one to ``seen[1]``, the writer's
    ``pages()`` just before it looked to ``seen[2]``. A failure (a full disk) is left for the
    next one, and for the commits to report."""
    with contextlib.suppress(sqlite3.Error):
        conn = _connect_sync(path)
        try:
            before = pages()
            seen[:] = [_checkpoint(conn), _force_at(path), before]
        finally:
            conn.close()


def _restart_wal(conn: sqlite3.Connection, mode: str = "RESTART") -> None:
    """Copy the WAL into the database so that the next commit writes it from its start
    (``TRUNCATE``: and cut the file to nothing), waiting a moment at most for readers (a CLI
    reading in a loop would otherwise keep the WAL growing for ever)."""
    conn.execute("PRAGMA busy_timeout=200")
    try:
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    finally:
        conn.execute("PRAGMA busy_timeout=10000")


def _vacuum_step(conn: sqlite3.Connection, pages: int) -> tuple[bool, float]:
    """Return up to ``pages`` free pages to the filesystem; whether more remain, and how long
    it took."""
    started = time.perf_counter()
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: incremental
        return False, 0.0  # a log without it reuses free pages instead
    if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
        return False, 0.0
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})")
    return True, time.perf_counter() - started


def _full_vacuum(conn: sqlite3.Connection) -> int:
    before = _bytes(conn)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    return max(0, before - _bytes(conn))


@asynccontextmanager
async def open_event_log(state_dir: Path) -> AsyncIterator[EventLog]:
    """Open (creating and migrating) ``state_dir/events.db``; close it on exit."""
    await anyio.Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / DB_NAME
    await anyio.to_thread.run_sync(_create_private, path)
    conn = await aiosqlite.connect(path)
    try:
        try:
            await _migrate(conn, path)
            writer = await anyio.to_thread.run_sync(_connect_sync, path)
            reader = await anyio.to_thread.run_sync(_connect_sync, path)
        except sqlite3.DatabaseError as exc:
            raise (storage_failure(exc, path) or unreadable(path, exc)) from exc
        log = EventLog(conn, path, writer, reader)
        log._wal_seen[1] = await anyio.to_thread.run_sync(_force_at, path)
        try:
            await log._read_dynamic_seq()
            yield log
        finally:
            with anyio.CancelScope(shield=True):
                await log.close()
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()
