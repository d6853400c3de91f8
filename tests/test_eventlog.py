"""The SQLite event log: WAL, migrations, group commit, state table, concurrent readers."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater._errors import StateDirError
from headwater._events import Event, EventKind, format_timestamp
from headwater.eventlog import EventLogReader, open_event_log
from headwater.eventlog._schema import MIGRATIONS
from headwater.eventlog._writer import CHECKPOINT_PAGES, ON_LOOP_ROWS
from headwater.planning import CheckRecord, Failure, Memo, NodeRecord
from headwater.planning._state import record_class, replace

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _observation(i: int, asset: str = "src") -> Event:
    return Event(
        kind=EventKind.OBSERVATION,
        timestamp=T0 + timedelta(seconds=i),
        asset=asset,
        data_version=f"v{i}",
        payload={"i": i},
    )


@pytest.mark.asyncio
async def test_opens_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    """A new log is a WAL database at the newest schema version; reopening migrates nothing."""
    async with open_event_log(tmp_path):
        pass
    async with open_event_log(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = conn.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    conn.close()


@pytest.mark.asyncio
async def test_an_old_log_is_migrated_in_place(tmp_path: Path) -> None:
    """A schema-1 log with events and a dynamic key opens at the newest schema with its events
    and keys intact (a key from before schema 6 has no time of addition)."""
    conn = sqlite3.connect(tmp_path / "events.db")
    conn.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        + MIGRATIONS[0]
        + "; INSERT INTO schema_version VALUES (1);"
        "INSERT INTO events (timestamp, kind, asset) VALUES ('2026-01-01T00:00:00.000000Z', 'observation', 'src');"
        "INSERT INTO dynamic_partitions (name, key, seq) VALUES ('files', 'a.csv', 1);"
    )
    conn.close()
    before = await anyio.to_thread.run_sync(EventLogReader(tmp_path).load_state)
    assert before.schedules == {}  # readable before migration
    assert before.dynamic == {"files": {"a.csv": None}}
    async with open_event_log(tmp_path) as log:
        state = await log.load_state()
        assert state.schedules == {}
        assert state.dynamic == {"files": {"a.csv": None}}
        await log.write([], dynamic=[("files", "b.csv", T0)])
    assert (await anyio.to_thread.run_sync(EventLogReader(tmp_path).load_state)).dynamic == {
        "files": {"a.csv": None, "b.csv": T0}
    }
    after = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
    assert [e.asset for e in after] == ["src"]
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (len(MIGRATIONS),)
    assert conn.execute("SELECT COUNT(*) FROM schedules").fetchone() == (0,)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_by_node" not in indexes  # migration 5: each event updates one index less
    assert "events_by_run" not in indexes  # migration 7: nor by run
    assert "events_by_node_kind" in indexes
    conn.close()


@pytest.mark.asyncio
async def test_the_newest_events_of_a_partition_come_in_order_among_many(tmp_path: Path) -> None:
    """What ``why`` and the web page show: the newest events of one asset partition, of any
    kind, in id order, picked out of events of other partitions, assets and kinds."""
    kinds = [EventKind.RUN_STARTED, EventKind.MATERIALIZATION, EventKind.OBSERVATION]
    written: list[tuple[str, str | None, str]] = []
    events: list[Event] = []
    for i in range(300):
        asset, partition = ("a", f"p{i % 3}") if i % 2 else ("b", None)
        kind = kinds[i % 7 % 3]
        events.append(Event(kind=kind, timestamp=T0 + timedelta(seconds=i), asset=asset,
                            partition=partition, data_version=f"v{i}"))  # fmt: skip
        written.append((asset, partition or "", f"v{i}"))
    async with open_event_log(tmp_path) as log:
        await log.write(events)
    reader = EventLogReader(tmp_path)

    def versions(**query: Any) -> list[str | None]:
        return [e.data_version for e in reader.events(**query)]

    def check() -> None:
        of_p1 = [v for a, p, v in written if (a, p) == ("a", "p1")]
        assert versions(asset="a", partition="p1", newest_first=True, limit=5) == of_p1[::-1][:5]
        assert versions(asset="a", partition="p1", limit=4) == of_p1[:4]
        assert versions(asset="a", partition="p1") == of_p1
        of_b = [v for a, _, v in written if a == "b"]
        assert versions(asset="b", newest_first=True, limit=7) == of_b[::-1][:7]
        assert [e.data_version for e in reader.newest("b", None, 7)] == of_b[::-1][:7]
        assert [e.data_version for e in reader.newest("a", "p2", 3)] == [
            v for a, p, v in written[::-1] if (a, p) == ("a", "p2")
        ][:3]
        assert reader.newest("a", None, 5) == []  # no event of "a" without a partition
        runs = [e.data_version for e in events if e.asset == "a" and e.kind == kinds[0]]
        assert versions(kind=kinds[0], asset="a", newest_first=True, limit=3) == runs[::-1][:3]

    await anyio.to_thread.run_sync(check)


@pytest.mark.asyncio
async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    """200 concurrent writers all land; batches too large to commit on the loop go to a
    thread, and the writers that arrive meanwhile share its next commit (group commit)."""
    big = ON_LOOP_ROWS + 1
    async with open_event_log(tmp_path) as log:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(log.write, [_observation(i * big + j) for j in range(big)])
        assert log.commits < 200
    events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
    assert len(events) == 200 * big
    assert [e.id for e in events] == sorted(e.id for e in events if e.id is not None)
    assert {e.data_version for e in events} == {f"v{i}" for i in range(200 * big)}


@pytest.mark.asyncio
async def test_prunes_and_vacuums_at_once_take_turns(tmp_path: Path) -> None:
    """The daily retention, a `headwater prune --older-than` and a `prune --vacuum` at once:
    they shared the pruner's connection from threads together, and failed with "database
    table is locked" or "cannot VACUUM - SQL statements in progress" (hostile33b bug2)."""
    cutoff = datetime(2100, 1, 1, tzinfo=UTC)
    async with open_event_log(tmp_path) as log:
        for n in range(4):
            first = n * 20_000
            for start in range(first, first + 20_000, 2000):
                await log.write([_observation(i, f"s{i % 50}") for i in range(start, start + 2000)])
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for _ in range(2):
                        tg.start_soon(log.prune, cutoff)
                        tg.start_soon(log.vacuum)
    events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
    assert len(events) == 50  # the newest of each partition


@pytest.mark.asyncio
async def test_gathered_writes_of_one_turn_share_a_commit(tmp_path: Path) -> None:
    """Small writes started in one turn of the event loop (runs that ended together) with
    ``gather`` commit once, together; without it each commits on its own at once."""
    async with open_event_log(tmp_path) as log:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(partial(log.write, [_observation(i)], gather=True))
        assert log.commits == 1
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(3, 6):
                    tg.start_soon(log.write, [_observation(i)])
        assert log.commits == 4
    events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
    assert [e.data_version for e in events] == [f"v{i}" for i in range(6)]


@pytest.mark.asyncio
async def test_small_commits_are_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """Thousands of small commits (on the loop, where they never checkpoint) in a tight loop:
    everything is readable, and the WAL stays bounded (it would hold every page written
    without the checkpoints, or with passive ones only)."""
    async with open_event_log(tmp_path) as log:
        for i in range(3000):
            await log.write([_observation(i)])
        assert log.commits == 3000
        # Without checkpoints: ~6 pages of 4 KiB a commit, 3000 commits, ~70 MB. Commits this
        # close together never let a passive checkpoint catch up (the WAL starts afresh only
        # then): one with no commit under way bounds it at about 4 * CHECKPOINT_PAGES.
        wal = (tmp_path / "events.db-wal").stat().st_size
        assert wal < 5 * CHECKPOINT_PAGES * 4096, wal
    events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
    assert len(events) == 3000


@pytest.mark.asyncio
async def test_a_forced_checkpoint_counts_the_wal_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint with no commit under way starts the WAL afresh: the next one is forced
    only once the WAL is that long again, never at the next commit (a background checkpoint
    that looked before the WAL was reset found it as long as before), and the frames a
    background checkpoint finds replace the estimate of the pages committed before it looked:
    a WAL that started afresh by itself is not forced for being long. A WAL bounded at 64
    frames, 600 one-event commits (4 or 5 frames each)."""
    from headwater.eventlog import _writer

    monkeypatch.setattr(_writer, "_force_at", lambda path: 64)
    kinds: list[bool] = []
    write = _writer._write_transaction

    def counted(conn: sqlite3.Connection, *rows: Any) -> int:
        kinds.append(len(rows) > 5 and bool(rows[5]))
        return write(conn, *rows)

    monkeypatch.setattr(_writer, "_write_transaction", counted)
    async with open_event_log(tmp_path) as log:
        for i in range(600):
            await log.write([_observation(i)])
            if log._checkpointer is not None:  # each one's count is taken before the next
                await anyio.to_thread.run_sync(log._checkpointer.join)
        wal = (tmp_path / "events.db-wal").stat().st_size
    forced = [i for i, checkpoint in enumerate(kinds) if checkpoint]
    gaps = [b - a for a, b in itertools.pairwise(forced)]
    assert all(gap >= 64 // 6 for gap in gaps), gaps
    # The estimate alone (6 pages a commit) forced one every 12 commits, 50 in all, though
    # each background checkpoint caught up and the WAL started afresh by itself.
    assert len(forced) <= 25, forced
    assert wal < 2 * 64 * (4096 + 24), wal


@pytest.mark.asyncio
@pytest.mark.parametrize("waits", [True, False])
async def test_only_a_commit_that_waited_long_sends_the_next_ones_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits: bool
) -> None:
    """A commit on the loop that waited 30 ms (for another writer's lock here; for the disk
    under writeback pressure in life) sends the next ones to a thread; one that took as long
    on the processor (what a preempted one looks like: no wait of its own) does not."""
    from headwater.eventlog import _writer

    write = _writer._write_transaction
    spin = [not waits]
    thread: list[bool] = []
    began = time.perf_counter()
    sum(range(100_000))
    # One call into C that holds the interpreter's lock for ~60 ms (a loop in Python would
    # hand it to another thread now and then, and wait to get it back: a wait)
    spin_for = 100_000 * max(1, int(0.06 / max(time.perf_counter() - began, 1e-6)))
    spun: list[float] = []

    def _write_transaction(conn: sqlite3.Connection, *rows: Any) -> int:  # a name the
        # blocking-call guard allows
        thread.append(threading.current_thread() is not threading.main_thread())
        if spin.pop() if spin else False:
            began = time.perf_counter()
            sum(range(spin_for))
            spun.append(time.perf_counter() - began)
        return write(conn, *rows)

    def hold_the_lock() -> threading.Timer:
        other = sqlite3.connect(
            tmp_path / "events.db", isolation_level=None, check_same_thread=False
        )
        other.execute("BEGIN IMMEDIATE")

        def release() -> None:
            other.execute("COMMIT")  # nothing written: the writer's snapshot stands
            other.close()

        timer = threading.Timer(0.03, release)
        timer.start()
        return timer

    monkeypatch.setattr(_writer, "_write_transaction", _write_transaction)
    async with open_event_log(tmp_path) as log:
        timer = await anyio.to_thread.run_sync(hold_the_lock) if waits else None
        for i in range(3):
            await log.write([_observation(i)])
    if timer is not None:
        await anyio.to_thread.run_sync(timer.join)
    assert thread == [False, waits, waits]
    assert all(s > _writer.SLOW_COMMIT_S for s in spun), spun


@pytest.mark.asyncio
async def test_state_rows_are_written_with_their_events(tmp_path: Path) -> None:
    """Records written with events come back from the state table, also after reopening."""
    record = NodeRecord(version="v7", changed_at=T0)
    async with open_event_log(tmp_path) as log:
        await log.write(
            [_observation(7)], {("src", None): record}, dynamic=[("inbox", "a.csv", T0)]
        )
    async with open_event_log(tmp_path) as log:
        state = await log.load_state()
    assert state.record(("src", None)) == record
    assert list(state.dynamic_keys("inbox")) == ["a.csv"]
    assert state.dynamic_added_at("inbox", "a.csv") == T0
    reread = await anyio.to_thread.run_sync(EventLogReader(tmp_path).load_state)
    assert reread.record(("src", None)) == record


@pytest.mark.asyncio
async def test_readers_read_while_the_writer_is_open(tmp_path: Path) -> None:
    """A separate read-only connection sees committed events while the writer holds the log."""
    async with open_event_log(tmp_path) as log:
        await log.write([_observation(1)])
        reader = EventLogReader(tmp_path)

        async def read(**query: Any) -> list[Event]:
            return await anyio.to_thread.run_sync(lambda: reader.events(**query))

        assert [e.data_version for e in await read()] == ["v1"]
        await log.write([_observation(2, asset="other")])
        assert [e.asset for e in await read(asset="other")] == ["other"]
        assert len(await read(since=T0 + timedelta(seconds=2))) == 1
        assert [e.data_version for e in await read(after_id=1)] == ["v2"]


@pytest.mark.asyncio
async def test_a_log_of_a_newer_schema_is_refused_by_writer_and_readers(tmp_path: Path) -> None:
    """A newer headwater migrated it past what this one knows (after a downgrade): neither
    the owner nor a reader uses it, each says why, and nothing is written."""
    async with open_event_log(tmp_path) as log:
        await log.write([_observation(1)])
    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute(f"INSERT INTO schema_version VALUES ({len(MIGRATIONS) + 1})")
    conn.close()
    newer = f"schema version {len(MIGRATIONS) + 1}, written by a newer headwater"
    with pytest.raises(StateDirError, match=newer):
        async with open_event_log(tmp_path):
            pass
    with pytest.raises(StateDirError, match=newer):
        await anyio.to_thread.run_sync(EventLogReader(tmp_path).load_state)
    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
    conn.close()


def test_an_absent_log_reads_as_empty(tmp_path: Path) -> None:
    reader = EventLogReader(tmp_path / "nowhere")
    assert reader.events() == []
    assert reader.load_state().records == {}


def test_event_json_shape() -> None:
    """Events serialise with the fields SPEC §7 names for `logs --json`."""
    event = _observation(3)
    assert set(event.as_json()) == {
        "id",
        "timestamp",
        "kind",
        "asset",
        "partition",
        "run_id",
        "data_version",
        "payload",
    }
    assert event.as_json()["timestamp"] == "2026-01-01T00:00:03.000000Z"


def test_timestamps_in_any_zone_are_stored_as_utc(tmp_path: Path) -> None:
    """The log holds fixed-width UTC text whatever zone an event's time was given in, so text
    order is time order; a time without a zone is refused."""
    from zoneinfo import ZoneInfo

    plus_two = datetime(2026, 1, 1, 2, 0, 3, 5, tzinfo=timezone(timedelta(hours=2)))
    named = datetime(2026, 1, 1, 0, 0, 4, tzinfo=ZoneInfo("UTC"))

    async def write() -> None:
        async with open_event_log(tmp_path) as log:
            events = [
                Event(kind=EventKind.OBSERVATION, timestamp=t, asset="src")
                for t in (plus_two, named)
            ]
            await log.write(events)

    anyio.run(write)
    stored = sqlite3.connect(tmp_path / "events.db").execute("SELECT timestamp FROM events")
    assert [t for (t,) in stored] == ["2026-01-01T00:00:03.000005Z", "2026-01-01T00:00:04.000000Z"]
    assert [e.timestamp for e in EventLogReader(tmp_path).events()] == [plus_two, named]
    with pytest.raises(ValueError, match="no timezone"):
        format_timestamp(datetime(2026, 1, 1))


_texts = st.text(min_size=1, max_size=12)  # ids and versions are never empty
_instants = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_inputs = st.lists(st.tuples(_texts, st.none() | _texts, _texts), max_size=3).map(
    # an asset is partitioned or not: its inputs never mix None and keys
    lambda xs: tuple(sorted((a if p is None else f"{a}[p]", p, v) for a, p, v in xs))
)


_RECORD_FIELDS = [f.name for f in dataclasses.fields(NodeRecord)]
_records = st.builds(
    NodeRecord,
    version=st.none() | _texts,
    changed_at=_instants,
    materialized_at=_instants,
    run_id=st.none() | _texts,
    code_version=st.none() | _texts,
    inputs=_inputs,
    failure=st.none()
    | st.builds(
        Failure,
        at=_instants.filter(lambda t: t is not None),
        run_id=_texts,
        error=_texts,
        code_version=st.none() | _texts,
        inputs=_inputs,
        attempts=st.integers(1, 9),
        where=st.none() | _texts,
        final=st.booleans(),
    ),
    running=st.none() | _texts,
    decision=st.none() | st.tuples(_texts, _texts),
    checks=st.lists(
        st.builds(
            CheckRecord,
            _texts,
            st.booleans(),
            st.booleans(),
            st.none() | _texts,
            st.none() | _texts,
        ),
        max_size=2,
    ).map(tuple),
    pending_since=_instants,
    late=st.booleans(),
    lost_at=_instants,
    appeared_at=_instants,
    crashes=st.integers(0, 5),
)


@settings(max_examples=200, deadline=None)
@given(record=_records)
def test_a_state_record_reads_back_as_written(record: NodeRecord) -> None:
    """Every field survives the compact JSON (the decoder builds records positionally, for
    speed: a field out of order would land in another's place)."""
    assert NodeRecord.from_json(record.to_json(), Memo()) == record


@settings(max_examples=100, deadline=None)
@given(record=_records, other=_records, which=st.sets(st.sampled_from(_RECORD_FIELDS)))
def test_a_record_copied_with_changes_is_what_dataclasses_replace_gives(
    record: NodeRecord, other: NodeRecord, which: set[str]
) -> None:
    """The planner's ``replace`` (a record's generated copier) changes exactly the fields
    named, and refuses a name that is not a field."""
    changes = {name: getattr(other, name) for name in which}
    assert replace(record, **changes) == dataclasses.replace(record, **changes)
    with pytest.raises(TypeError):
        replace(record, **{"no_such_field": 1})


def test_a_record_class_copies_fields_named_like_anything() -> None:
    """Fields named as the copier's own names might be, and one outside ``__init__``."""

    @record_class
    class Odd:
        keep: int = 0
        record: int = 0
        cls: int = 0

    @record_class
    class Derived:
        base: int = 0
        derived: int = dataclasses.field(default=5, init=False)

    odd = Odd(1, 2, 3)
    for change in ({"keep": 9}, {"record": 9}, {"cls": 9}, {}):
        assert replace(odd, **change) == dataclasses.replace(odd, **change)
    assert replace(Derived(1), base=2) == Derived(2)


@pytest.mark.asyncio
async def test_a_partitions_newest_events_cost_the_same_however_long_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``why`` asks for the newest five events of a partition, a ``--follow`` poll for those
    after an id: the work (SQLite's steps, counted) must not grow with the partition's
    history (a month of it, under retention), only with what is asked for."""
    kinds = [EventKind.OBSERVATION, EventKind.RUN_STARTED, EventKind.MATERIALIZATION]
    n = 30_000
    events = [
        Event(kind=kinds[i % 3], timestamp=T0 + timedelta(milliseconds=i), asset="a",
              partition="quiet" if i % 50 == 0 else "busy", data_version=f"v{i}")
        for i in range(n)
    ]  # fmt: skip
    events += [
        Event(kind=kinds[i % 3], timestamp=T0 + timedelta(milliseconds=i),
              asset="short" if i % 50 == 0 else "long", data_version=f"u{i}")
        for i in range(n)
    ]  # fmt: skip
    async with open_event_log(tmp_path) as log:
        await log.write(events)
    steps = [0]
    connect = sqlite3.connect

    def counted(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 100)
        return conn

    reader = EventLogReader(tmp_path)

    def cost(**query: Any) -> tuple[int, list[str | None]]:
        steps[0] = 0
        got = [e.data_version for e in reader.events(asset="a", **query)]
        return steps[0], got

    def check() -> None:
        monkeypatch.setattr(sqlite3, "connect", counted)
        for part in ("quiet", "busy"):
            mine = [f"v{i}" for i in range(n) if (i % 50 == 0) == (part == "quiet")]
            newest = cost(partition=part, newest_first=True, limit=5)
            assert newest[1] == mine[::-1][:5]
            sixth = int(mine[-6][1:]) + 1  # its id: ids count from 1
            after = cost(partition=part, after_id=sixth)  # the five after it
            assert after[1] == mine[-5:]
            costs[part] = (newest[0], after[0])
        # 49 times the history costs no more than twice the work (a few steps of noise)
        assert costs["busy"][0] <= 2 * costs["quiet"][0] + 5, costs
        assert costs["busy"][1] <= 2 * costs["quiet"][1] + 5, costs
        # ``why`` of an unpartitioned asset: its events have no partition
        for asset in ("long", "short"):
            steps[0] = 0
            assert [e.data_version for e in reader.newest(asset, None, 5)] == [
                e.data_version for e in events[::-1] if e.asset == asset
            ][:5]
            costs[asset] = (steps[0], 0)
        assert costs["long"][0] <= 2 * costs["short"][0] + 5, costs
        # ``logs --asset A --follow`` polls for what came after the last event it printed
        for asset in ("long", "short"):
            mine = [e for e in events if e.asset == asset]
            last = events.index(mine[-3]) + 1  # its id
            steps[0] = 0
            got = [e.data_version for e in reader.events(asset=asset, after_id=last)]
            assert got == [e.data_version for e in mine[-2:]]
            costs[asset] = (steps[0], 0)
        assert costs["long"][0] <= 2 * costs["short"][0] + 5, costs

    costs: dict[str, tuple[int, int]] = {}
    await anyio.to_thread.run_sync(check)


@pytest.mark.asyncio
async def test_the_oldest_event_is_the_earliest_in_time_not_the_first_written(
    tmp_path: Path,
) -> None:
    """What ``health`` reports as the log's oldest event: after the wall clock stepped back,
    an event written later tells of an earlier moment."""
    assert await anyio.to_thread.run_sync(EventLogReader(tmp_path).oldest) is None  # no log
    async with open_event_log(tmp_path) as log:
        await log.write([_observation(60)])
        await log.write([_observation(5)])  # the clock stepped back 55 s
        await log.write([_observation(90)])
    oldest = await anyio.to_thread.run_sync(EventLogReader(tmp_path).oldest)
    assert oldest == T0 + timedelta(seconds=5)
