"""The file sensor in process: real watchdog observer, real engine, real SQLite."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import structlog.testing

import headwater as hw
from headwater._clock import SystemClock
from headwater._files import FileCache, examine
from headwater.eventlog import EventLogReader
from headwater.execution import Engine
from headwater.sensors._scan import match_path
from headwater.sensors.files import FileSensor, watch_roots


def _defs(tmp_path: Path) -> hw.Definitions:
    inbox = hw.DynamicPartitions("inbox")
    files = hw.FileSource("files", str(tmp_path / "inbox" / "{partition}.csv"), partitions=inbox)
    return hw.Definitions([files])


@pytest.mark.asyncio
async def test_an_inotify_overflow_triggers_a_rescan(tmp_path: Path) -> None:
    """A file no event reported is found because watchdog logged a queue overflow."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "unseen.csv").write_text("a\n1\n")  # before the watch: no event
    changed = anyio.Event()
    async with Engine.open(_defs(tmp_path), tmp_path / "state", SystemClock()) as engine:
        sensor = FileSensor(engine, changed.set, rescan_interval=3600)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(sensor.run)
                assert engine.state.version(("files", "unseen")) is None
                # what watchdog 7 does on IN_Q_OVERFLOW, from its own thread
                await anyio.to_thread.run_sync(
                    logging.getLogger("watchdog.observers.inotify_c").warning,
                    "Inotify queue overflowed; filesystem events were lost",
                )
                await changed.wait()
                tg.cancel_scope.cancel()
        assert engine.state.version(("files", "unseen")) is not None


@pytest.mark.asyncio
async def test_periodic_reconciliation_records_a_deletion_no_event_reported(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    target = tmp_path / "inbox" / "gone.csv"
    target.write_text("a\n1\n")
    async with Engine.open(_defs(tmp_path), tmp_path / "state", SystemClock()) as engine:
        await FileSensor(engine, lambda: None).scan()
        assert engine.state.version(("files", "gone")) is not None
        target.unlink()  # before any watch exists: only a rescan can notice
        changed = anyio.Event()
        sensor = FileSensor(engine, changed.set, rescan_interval=0.1)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(sensor.run)
                await changed.wait()
                tg.cancel_scope.cancel()
        assert engine.state.version(("files", "gone")) is None
        assert engine.state.record(("files", "gone")) is not None  # recorded, not forgotten


def test_paths_map_to_sources_and_partitions(tmp_path: Path) -> None:
    """Templates map paths to partitions; other paths match nothing; a path that matches a
    template but names no key is an error that says so (the sensor logs it once)."""
    daily = hw.DailyPartitions(start="2026-01-01")
    raw = hw.FileSource("raw", "data/{partition}.csv", partitions=daily)
    every = hw.FileSource("every", "logs/**/*.log")
    single = hw.FileSource("single", "config.json")
    assert match_path(raw, tmp_path, str(tmp_path / "data" / "2026-01-02.csv")) == (
        True,
        "2026-01-02",
    )
    with pytest.raises(hw.PartitionKeyError, match="did you mean '2026-01-05'"):
        match_path(raw, tmp_path, str(tmp_path / "data" / "2026-1-5.csv"))
    with pytest.raises(hw.PartitionKeyError, match="not-a-date"):
        match_path(raw, tmp_path, str(tmp_path / "data" / "not-a-date.csv"))
    assert match_path(every, tmp_path, str(tmp_path / "logs" / "a" / "b.log")) == (True, None)
    assert match_path(every, tmp_path, str(tmp_path / "logs" / "b.log")) == (True, None)
    assert match_path(every, tmp_path, str(tmp_path / "logs" / "b.txt")) == (False, None)
    assert match_path(single, tmp_path, str(tmp_path / "config.json")) == (True, None)
    for source in (raw, every, single):
        assert match_path(source, tmp_path, str(tmp_path / "elsewhere.csv"))[0] is False

    (tmp_path / "data").mkdir()
    assert watch_roots([raw], tmp_path) == [(tmp_path / "data").resolve()]
    assert watch_roots([raw, single], tmp_path) == [tmp_path.resolve()]  # nested roots fold
    assert watch_roots([every], tmp_path) == [tmp_path.resolve()]  # logs/ absent: nearest parent


def test_hidden_names_are_staging_not_data(tmp_path: Path) -> None:
    """A name starting with a dot where the pattern has a placeholder or wildcard is a
    staging folder or a temporary file (``mkdir inbox/.t; ...; mv inbox/.t inbox/k2``), as
    a shell's ``*`` leaves it out: no partition ``.t`` is made, no glob reads it half-written.
    A pattern that names dot files itself takes them."""
    folders = hw.FileSource("folders", "inbox/{partition}/data.csv",
                            partitions=hw.DynamicPartitions("k"))  # fmt: skip
    every = hw.FileSource("every", "logs/**/*.log")
    marked = hw.FileSource("marked", "done/{partition}/.ready",
                           partitions=hw.DynamicPartitions("m"))  # fmt: skip
    cases = [
        (folders, "inbox/.t/data.csv", (False, None)),
        (folders, "inbox/k2/data.csv", (True, "k2")),
        (folders, "inbox/k.v2/data.csv", (True, "k.v2")),
        (every, "logs/a/.b/c.log", (False, None)),
        (every, "logs/a/.c.log", (False, None)),
        (every, "logs/a/b/c.log", (True, None)),
        (marked, "done/d1/.ready", (True, "d1")),
        (marked, "done/.d1/.ready", (False, None)),
    ]
    for source, path, expected in cases:
        assert match_path(source, tmp_path, str(tmp_path / path)) == expected, path


def test_a_pattern_written_with_dot_segments_matches_its_files(tmp_path: Path) -> None:
    """``./inbox/{partition}.csv`` is ``inbox/{partition}.csv``: paths are compared with the
    pattern as written, so it matched no file, at start or from events, with nothing said."""
    keyed = hw.FileSource("keyed", "./inbox/{partition}.csv", partitions=hw.DynamicPartitions("k"))
    glob_ = hw.FileSource("glob", "./data//*.csv")
    exact = hw.FileSource("exact", "./data/reports[2026].csv")
    assert (keyed.template, glob_.template) == ("inbox/{partition}.csv", "data/*.csv")
    assert match_path(keyed, tmp_path, str(tmp_path / "inbox" / "k1.csv")) == (True, "k1")
    assert match_path(glob_, tmp_path, str(tmp_path / "data" / "a.csv")) == (True, None)
    assert match_path(exact, tmp_path, str(tmp_path / "data" / "reports[2026].csv")) == (True, None)


def test_a_glob_pattern_names_a_file_with_brackets_in_its_name(tmp_path: Path) -> None:
    """``[2026]`` in a pattern is a set of characters, so no file named as the pattern itself
    matched it: ``reports[2026].csv`` was never observed, with nothing said. The pattern
    itself counts (as an object source takes such a key), and the set still works."""
    reports = hw.FileSource("reports", "data/reports[2026].csv")
    assert reports.is_glob
    for name, expected in [("reports[2026].csv", True), ("reports2.csv", True),
                           ("reports[2027].csv", False), ("reports7.csv", False)]:  # fmt: skip
        assert match_path(reports, tmp_path, str(tmp_path / "data" / name)) == (expected, None)
    (tmp_path / "data").mkdir()
    anyio.run(_a_bracketed_name_lands, reports, tmp_path, backend="asyncio")


async def _a_bracketed_name_lands(reports: hw.FileSource, tmp_path: Path) -> None:
    @hw.asset
    def names(reports: list[Path]) -> list[str]:
        return [p.name for p in reports]

    defs = hw.Definitions([reports, names])
    defs.base_dir = tmp_path
    async with Engine.open(defs, tmp_path / "state", SystemClock()) as engine:
        async with _sensing(engine) as changes:
            landed = tmp_path / "data" / "reports[2026].csv"
            await anyio.to_thread.run_sync(landed.write_text, "a\n1\n")
            await changes.until(lambda: engine.state.version(("reports", None)) is not None)
        result = await engine.tick()
        assert result.materialized == [("names", None)]
        value = await anyio.to_thread.run_sync(engine.runner.load, "names", None)
        assert value == ["reports[2026].csv"]


@asynccontextmanager
async def _sensing(engine: Engine) -> AsyncIterator[_Changes]:
    """A sensor (rescans an hour apart: what it sees, events showed) running while the block
    runs, which has 15 s; what it reports as changed."""
    changes = _Changes()
    sensor = FileSensor(engine, changes.set, rescan_interval=3600)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            await tg.start(sensor.run)
            yield changes
            tg.cancel_scope.cancel()


class _Changes:
    """What the sensor reports as changed, waited on until a condition holds."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._event.wait()
            self._event = anyio.Event()


@pytest.mark.asyncio
@pytest.mark.parametrize("recreate", ["at_once", "after_the_deletion_is_seen", "moved_away"])
async def test_an_inbox_removed_and_made_again_is_watched_again(
    tmp_path: Path, recreate: str
) -> None:
    """``rm -rf inbox && mkdir inbox`` ends inotify's watch on it for good, and after
    ``mv inbox inbox.old && mkdir inbox`` it follows the old folder; the sensor must watch the
    new folder, not wait for a rescan an hour away, and never take the old one's files."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_text("a\n1\n")
    async with Engine.open(_defs(tmp_path), tmp_path / "state", SystemClock()) as engine:
        await FileSensor(engine, lambda: None).scan()
        state = engine.state
        async with _sensing(engine) as changes:
            if recreate == "moved_away":
                inbox.rename(tmp_path / "inbox.old")
            else:
                shutil.rmtree(inbox)
            if recreate == "after_the_deletion_is_seen":
                await changes.until(lambda: state.version(("files", "old")) is None)
            inbox.mkdir()
            (inbox / "new.csv").write_text("a\n2\n")
            await changes.until(lambda: state.version(("files", "new")) is not None)
            # and it stays watched: a later file is seen as well
            (inbox / "later.csv").write_text("a\n3\n")
            await changes.until(lambda: state.version(("files", "later")) is not None)
            if recreate == "moved_away":  # a file beside the old one is not the inbox's
                (tmp_path / "inbox.old" / "stray.csv").write_text("a\n4\n")
            (inbox / "last.csv").write_text("a\n5\n")
            await changes.until(lambda: state.version(("files", "last")) is not None)
        assert state.version(("files", "old")) is None
        assert state.version(("files", "stray")) is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("below", "through"),
    [("", "current"), ("inbox", "current/inbox"), ("inbox", "inbox")],
    ids=["link_is_the_folder", "link_above_it", "link_to_a_link"],
)
async def test_a_source_folder_link_pointed_elsewhere_is_watched_there_at_once(
    tmp_path: Path, below: str, through: str
) -> None:
    """The source's folder is (or lies under, or is a link to a path through) ``current``, a
    link to a release folder: files landed there count as they land (inotify names them where
    they are, not through the link). ``ln -sfn`` points it at the next release (the usual
    atomic switch): the source's files are the new folder's from then on, seen at once, not
    at a rescan an hour away; the old folder's files are gone from it and what is written
    there afterwards never counts."""
    folders = {release: tmp_path / release / below for release in ("r1", "r2")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["r1"] / "old.csv").write_text("a\n1\n")
    (folders["r2"] / "kept.csv").write_text("a\n2\n")
    (tmp_path / "current").symlink_to("r1")
    if through == "inbox":  # inbox -> current/inbox, current -> r1
        (tmp_path / "inbox").symlink_to("current/inbox")
    pattern = str(tmp_path / through / "{partition}.csv")
    files = hw.FileSource("files", pattern, partitions=hw.DynamicPartitions("inbox"))
    async with Engine.open(hw.Definitions([files]), tmp_path / "state", SystemClock()) as engine:
        await FileSensor(engine, lambda: None).scan()
        state = engine.state
        assert state.version(("files", "old")) is not None
        async with _sensing(engine) as changes:
            (folders["r1"] / "first.csv").write_text("a\n0\n")  # through the link
            await changes.until(lambda: state.version(("files", "first")) is not None)
            with structlog.testing.capture_logs() as logs:
                await anyio.run_process(["ln", "-sfn", "r2", str(tmp_path / "current")])
                await changes.until(
                    lambda: (
                        state.version(("files", "kept")) is not None
                        and state.version(("files", "old")) is None
                        and state.version(("files", "first")) is None
                    )
                )
            # what the switch changed is in the log, as any other change
            told = {(e["event"], e.get("partition")) for e in logs}
            assert {("file_observed", "kept"), ("file_deleted", "old")} <= told, logs
            assert ("file_deleted", "first") in told, logs
            (folders["r1"] / "stray.csv").write_text("a\n3\n")
            (folders["r2"] / "new.csv").write_text("a\n4\n")
            await changes.until(lambda: state.version(("files", "new")) is not None)
        assert state.version(("files", "stray")) is None


@pytest.mark.asyncio
async def test_a_source_folder_link_that_loops_stops_nothing(tmp_path: Path) -> None:
    """``ln -sfn inbox inbox`` (a slip of the fingers) makes the source's folder a link to
    itself: it names no folder, so nothing is there, and the sensor goes on; once the link is
    fixed, files count again, at once."""
    (tmp_path / "r1").mkdir()
    (tmp_path / "inbox").symlink_to("r1")
    async with Engine.open(_defs(tmp_path), tmp_path / "state", SystemClock()) as engine:
        state = engine.state
        async with _sensing(engine) as changes:
            (tmp_path / "r1" / "a.csv").write_text("a\n1\n")
            await changes.until(lambda: state.version(("files", "a")) is not None)
            await anyio.run_process(["ln", "-sfn", "inbox", str(tmp_path / "inbox")])
            await changes.until(lambda: state.version(("files", "a")) is None)
            await anyio.run_process(["ln", "-sfn", "r1", str(tmp_path / "inbox")])
            (tmp_path / "r1" / "b.csv").write_text("a\n2\n")
            await changes.until(lambda: state.version(("files", "b")) is not None)
        # a sensor started on the loop starts, and sees nothing there
        await anyio.run_process(["ln", "-sfn", "inbox", str(tmp_path / "inbox")])
        await FileSensor(engine, lambda: None).scan()
        assert state.version(("files", "b")) is None


@pytest.mark.asyncio
async def test_a_source_folder_link_to_a_folder_not_made_yet_counts_once_it_is(
    tmp_path: Path,
) -> None:
    """``inbox`` points into another tree at a folder that does not exist yet: that folder's
    nearest existing parent is watched (not the link's), so once it is made, files landed
    through the link count as they land."""
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "project" / "inbox").symlink_to(tmp_path / "elsewhere" / "r3")
    inbox = hw.DynamicPartitions("inbox")
    pattern = str(tmp_path / "project" / "inbox" / "{partition}.csv")
    defs = hw.Definitions([hw.FileSource("files", pattern, partitions=inbox)])
    async with Engine.open(defs, tmp_path / "state", SystemClock()) as engine:
        state = engine.state
        async with _sensing(engine) as changes:
            (tmp_path / "elsewhere" / "r3").mkdir()
            (tmp_path / "project" / "inbox" / "b.csv").write_text("a\n1\n")
            await changes.until(lambda: state.version(("files", "b")) is not None)


@pytest.mark.asyncio
async def test_a_staging_folder_renamed_into_place_counts_without_a_rescan(
    tmp_path: Path,
) -> None:
    """``mkdir inbox/.t``, write, ``mv inbox/.t inbox/k2`` (the usual publish): k2 counts at
    once and ``.t`` never does; nothing counted was under ``.t``, so no folder is rescanned.
    Renaming a counted folder (k2 -> k3) moves its partition: that needs the rescan."""
    folders = hw.FileSource("folders", str(tmp_path / "inbox" / "{partition}" / "data.csv"),
                            partitions=hw.DynamicPartitions("k"))  # fmt: skip
    (tmp_path / "inbox").mkdir()
    async with Engine.open(hw.Definitions([folders]), tmp_path / "state", SystemClock()) as engine:
        state = engine.state
        with structlog.testing.capture_logs() as logs:
            async with _sensing(engine) as changes:
                staging = tmp_path / "inbox" / ".t"
                staging.mkdir()
                (staging / "data.csv").write_text("a\n1\n")
                staging.rename(tmp_path / "inbox" / "k2")
                await changes.until(lambda: state.version(("folders", "k2")) is not None)
                assert [e for e in logs if e["event"] == "rescan"] == []
                (tmp_path / "inbox" / "k2").rename(tmp_path / "inbox" / "k3")
                await changes.until(
                    lambda: (
                        state.version(("folders", "k3")) is not None
                        and state.version(("folders", "k2")) is None
                    )
                )
        assert state.version(("folders", ".t")) is None
        assert [e["reason"] for e in logs if e["event"] == "rescan"] == [
            f"folder {tmp_path / 'inbox' / 'k2'} was moved to {tmp_path / 'inbox' / 'k3'}"
        ]


def _write_pausing(path: Path, cache: FileCache) -> str | None:
    """Make ``path``'s folder, write half the file, pause five times ``settle``, write the rest;
    return the version of what was written."""
    path.parent.mkdir()
    with open(path, "w") as writer:
        writer.write("a\n1\n")
        writer.flush()
        time.sleep(1.0)  # the writer's pause, not a wait on the sensor
        writer.write("2\n")
    found = examine(str(path), policy="inside", root=str(path.parent.parent.resolve()))
    return cache.version(found) if found else None


@pytest.mark.asyncio
async def test_a_file_held_open_in_a_new_folder_is_read_at_its_close_only(tmp_path: Path) -> None:
    """In a folder made a moment ago a file may show no close event, so it counts once it
    stands still; but while a writer holds it open (here pausing well past ``settle``), /proc
    says so, and the sensor waits for the close instead of reading half of it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    nested = hw.FileSource(
        "nested", str(inbox / "{partition}" / "data.csv"), partitions=hw.DynamicPartitions("n")
    )
    async with Engine.open(hw.Definitions([nested]), tmp_path / "state", SystemClock()) as engine:
        changes = _Changes()
        sensor = FileSensor(engine, changes.set, settle=0.2, rescan_interval=3600)
        path = inbox / "p1" / "data.csv"
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                await tg.start(sensor.run)
                final = await anyio.to_thread.run_sync(_write_pausing, path, sensor.cache)
                await changes.until(lambda: engine.state.version(("nested", "p1")) == final)
                tg.cancel_scope.cancel()
    reader = EventLogReader(tmp_path / "state")
    observed = await anyio.to_thread.run_sync(
        lambda: reader.events(kind="observation", asset="nested", partition="p1")
    )
    assert [e.data_version for e in observed] == [final]


_COUNTING = """
import anyio

def counting(engine):
    \"\"\"``counted(node)`` waits until the node has a version; the sensor calls ``wake`` when
    it changed the state.\"\"\"
    changed = [anyio.Event()]

    async def counted(node):
        while engine.state.version(node) is None:
            await changed[0].wait()
            changed[0] = anyio.Event()

    return counted, lambda: changed[0].set()
"""


UNREADABLE_LANDS = (
    _COUNTING
    + """
import os, sys
import anyio, structlog
import headwater as hw
from pathlib import Path
from typing import Any
from headwater._clock import SystemClock
from headwater.eventlog import EventLogReader
from headwater.execution import Engine
from headwater.sensors.files import FileSensor

async def main(tmp: Path) -> None:
    inbox = hw.DynamicPartitions("inbox")
    files = hw.FileSource("files", str(tmp / "inbox" / "{partition}.csv"), partitions=inbox)
    path = tmp / "inbox" / "a.csv"
    warnings = []
    warned = anyio.Event()

    def seen(_logger, _method, event):
        if event.get("event") == "file_ignored" and event.get("path") == str(path):
            warnings.append(event)
            warned.set()
        return event

    async with Engine.open(hw.Definitions([files]), tmp / "state", SystemClock()) as engine:
        counted, wake = counting(engine)
        with structlog.testing.capture_logs(processors=[seen]):
            sensor = FileSensor(engine, wake, rescan_interval=3600)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    await tg.start(sensor.run)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o000)  # as sftp may leave it
                    os.write(fd, b"x\\n1\\n")
                    os.close(fd)
                    await warned.wait()
                    for _ in range(20):  # touches of a file that stays unreadable
                        os.utime(path)
                    os.chmod(path, 0o200)  # still unreadable: the upload goes on
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    os.write(fd, b"2\\n")
                    os.chmod(path, 0o644)  # readable while still being written
                    (tmp / "inbox" / "marker.csv").write_text("x\\n0\\n")
                    await counted(("files", "marker"))  # the events before it are handled
                    assert engine.state.version(("files", "a")) is None, "counted mid-write"
                    os.write(fd, b"3\\n")
                    os.close(fd)
                    await counted(("files", "a"))
                    tg.cancel_scope.cancel()
    assert len(warnings) == 1, warnings
    seen_a = EventLogReader(tmp / "state").events(kind="observation", asset="files", partition="a")
    assert len(seen_a) == 1, seen_a
    print("counted")

anyio.run(main, Path(sys.argv[1]), backend="asyncio")
"""
)


UNLISTED_FOLDER = """
import os, sys
import anyio
import headwater as hw
from pathlib import Path
from typing import Any
from headwater._clock import SystemClock
from headwater.execution import Engine
from headwater.sensors.files import sync_file_sources

async def main(tmp: Path) -> None:
    every = hw.FileSource("every", str(tmp / "inbox" / "**" / "*.csv"))
    keyed = hw.FileSource("keyed", str(tmp / "inbox" / "{partition}" / "x.csv"),
                          partitions=hw.DynamicPartitions("k"))
    for name in ("keep", "other"):
        (tmp / "inbox" / name).mkdir(parents=True)
        (tmp / "inbox" / name / "x.csv").write_text(f"a\\n{name}\\n")
    async with Engine.open(hw.Definitions([every, keyed]), tmp / "state", SystemClock()) as engine:
        await sync_file_sources(engine)
        before = dict(engine.state.records)
        os.chmod(tmp / "inbox" / "keep", 0o000)  # for a moment: a deploy, a wrong umask
        changed, ignored = await sync_file_sources(engine)
        assert changed == [], changed
        assert str(tmp / "inbox" / "keep") in [path for path, _ in ignored], ignored
        assert engine.state.version(("keyed", "keep")) == before[("keyed", "keep")].version
        os.chmod(tmp / "inbox" / "keep", 0o755)
        changed, ignored = await sync_file_sources(engine)
        assert (changed, ignored) == ([], [])
    print("kept")

anyio.run(main, Path(sys.argv[1]), backend="asyncio")
"""


BLIND_FOLDER = (
    _COUNTING
    + """
import os, sys
import anyio, structlog
import headwater as hw
from pathlib import Path
from typing import Any
from headwater._clock import SystemClock
from headwater.execution import Engine
from headwater.sensors.files import FileSensor

async def main(tmp: Path) -> None:
    keys = hw.DynamicPartitions("k")
    first = hw.FileSource("first", str(tmp / "inbox" / "{partition}" / "first.csv"), partitions=keys)
    later = hw.FileSource("later", str(tmp / "inbox" / "{partition}" / "later.csv"), partitions=keys)
    marker = hw.FileSource("marker", str(tmp / "inbox" / "{partition}.csv"), partitions=keys)
    folder = tmp / "inbox" / "up"
    warnings = []

    def seen(_logger, _method, event):
        if event.get("event") == "file_ignored":
            warnings.append(event)
        return event

    defs = hw.Definitions([first, later, marker])
    async with Engine.open(defs, tmp / "state", SystemClock()) as engine:
        counted, wake = counting(engine)
        with structlog.testing.capture_logs(processors=[seen]):
            sensor = FileSensor(engine, wake, rescan_interval=3600)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    await tg.start(sensor.run)
                    # An upload that makes its folder readable last: write and search only,
                    # so inotify cannot watch it (nor the sensor list it) while it fills.
                    os.mkdir(folder, 0o300)
                    (folder / "first.csv").write_text("x\\n1\\n")
                    (tmp / "inbox" / "m1.csv").write_text("x\\n0\\n")
                    await counted(("marker", "m1"))  # the folder's creation is handled
                    assert engine.state.version(("first", "up")) is None
                    os.chmod(folder, 0o755)
                    await counted(("first", "up"))  # at once, not at the rescan an hour away
                    (folder / "later.csv").write_text("x\\n2\\n")  # its own watch sees it
                    await counted(("later", "up"))
                    os.rename(folder, tmp / "inbox" / "moved")  # the watch goes with it...
                    await counted(("first", "moved"))
                    (tmp / "inbox" / "moved" / "later.csv").write_text("x\\n3\\n")
                    await counted(("later", "moved"))  # ...and the parent's watch takes over
                    assert sensor._late_watches == {}, sensor._late_watches
                    tg.cancel_scope.cancel()
    named = [w["path"] for w in warnings]
    assert named == [str(folder)], warnings
    print("counted")

anyio.run(main, Path(sys.argv[1]), backend="asyncio")
"""
)


def test_a_folder_that_could_not_be_listed_counts_once_chmod_makes_it_readable(
    tmp_path: Path,
) -> None:
    """A folder created without read permission (an upload that sets its mode last) cannot
    be watched: inotify refuses, and watchdog drops the refusal for good. Its files counted
    only at the next rescan, and what landed in it later too. Now it is named, and ``chmod``
    makes it watched and its files counted at once."""
    (tmp_path / "inbox").mkdir()
    assert _without_dac(tmp_path, BLIND_FOLDER) == "counted"


def test_a_folder_that_cannot_be_listed_deletes_nothing(tmp_path: Path) -> None:
    """A folder unreadable for a moment: os.walk passed over it in silence, so the rescan
    recorded its files as deleted, and a glob over it took a version of the others only
    (its readers ran on part of the data). Now it is named, and what it holds is kept."""
    assert _without_dac(tmp_path, UNLISTED_FOLDER) == "kept"


def _without_dac(tmp_path: Path, script: str) -> str:
    """Run ``script`` (with ``tmp_path`` as its argument) as a user that permissions hold
    back: root drops the capabilities that read anything."""
    import os
    import subprocess
    import sys

    (tmp_path / "child.py").write_text(script)
    command = [sys.executable, str(tmp_path / "child.py"), str(tmp_path)]
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", drop, "--inh-caps", drop, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_file_that_could_not_be_read_counts_once_chmod_makes_it_readable(
    tmp_path: Path,
) -> None:
    """Landed with mode 000 (an upload that sets the mode last): it cannot be read, and is
    named once, however often it is touched; ``chmod 644`` then makes it count at once, not
    at the next rescan an hour away, but not while a writer still holds it (then at its
    close, once, whole). Root reads anything, so root runs the sensor without the capability
    to."""
    (tmp_path / "inbox").mkdir()
    assert _without_dac(tmp_path, UNREADABLE_LANDS) == "counted"


def _watched(
    engine: Engine,
) -> tuple[Callable[[tuple[str, str | None], str | None], Awaitable[None]], Callable[[], None]]:
    """``counted(node, version)`` waits until the node's version is no longer ``version``;
    ``on_change`` is the sensor's callback that wakes it."""
    changed = [anyio.Event()]

    async def counted(node: tuple[str, str | None], version: str | None) -> None:
        while engine.state.version(node) == version:
            await changed[0].wait()
            changed[0] = anyio.Event()

    def on_change() -> None:
        changed[0].set()

    return counted, on_change


def _clean_and_total(folder: Path, parts: hw.PartitionsDefinition) -> hw.Definitions:
    """A file source of ``{partition}.json`` files, a partitioned copy of it, and a reader
    of all partitions that lists the keys it was given."""
    src = hw.FileSource("src", str(folder / "{partition}.json"), partitions=parts)

    @hw.asset(partitions=parts)
    def clean(src: Any) -> Any:
        return src

    @hw.asset
    def total(clean: dict[str, Any]) -> list[str]:
        return sorted(clean)

    return hw.Definitions([src, clean, total])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("before", "after", "gone"),
    [
        (["apac", "eu", "us"], ["eu", "us"], "apac"),
        ("2026-01-01", "2026-01-02", "2026-01-01"),
    ],
    ids=["static key removed", "time range starts later"],
)
async def test_a_listing_leaves_a_partition_the_definitions_dropped_as_it_was(
    tmp_path: Path, before: list[str] | str, after: list[str] | str, gone: str
) -> None:
    """A file source's partition removed from the definitions: the listing of its folder
    recorded a deletion of it, which the definitions refuse, so the daemon died at reload
    and could not start again (hostile32b bug1). Its file there or not, it is now left as
    it was (shown as removed), and the reader of all partitions runs without it."""
    from headwater.sensors.files import sync_file_sources

    def pipeline(keys: list[str] | str) -> hw.Definitions:
        parts: hw.PartitionsDefinition = (
            hw.StaticPartitions(keys)
            if isinstance(keys, list)
            else hw.DailyPartitions(start=keys, end="2026-01-04")
        )
        return _clean_and_total(tmp_path / "in", parts)

    keys = before if isinstance(before, list) else ["2026-01-01", "2026-01-02", "2026-01-03"]
    (tmp_path / "in").mkdir()
    for key in keys:
        (tmp_path / "in" / f"{key}.json").write_text("1")
    state = tmp_path / "state"
    first, then = [await anyio.to_thread.run_sync(pipeline, k) for k in (before, after)]
    async with Engine.open(first, state, SystemClock()) as engine:
        await sync_file_sources(engine)
        await engine.tick()
        assert await anyio.to_thread.run_sync(engine.runner.load, "total", None) == keys
    for deleted in (False, True):
        if deleted:
            (tmp_path / "in" / f"{gone}.json").unlink()
        async with Engine.open(then, state, SystemClock()) as engine:
            kept = engine.state.version(("src", gone))
            assert kept is not None
            changed, _ = await sync_file_sources(engine)
            assert changed == []
            assert engine.state.version(("src", gone)) == kept
            await engine.tick()
            total = await anyio.to_thread.run_sync(engine.runner.load, "total", None)
            assert total == [k for k in keys if k != gone]


@pytest.mark.asyncio
async def test_files_still_there_become_keys_of_a_renamed_dynamic_set(tmp_path: Path) -> None:
    """``DynamicPartitions("inbox")`` renamed ``"inbox_v2"``: the new set starts empty, and
    the listing at start found its files unchanged, so it recorded nothing and added no key;
    only a file landed later became one, and the reader of all partitions read it alone
    (hostile32b bug2). A key is added when a source holds it, changed or not: the set is
    what is on disk, as a fresh state directory would make it."""
    from headwater.sensors.files import sync_file_sources

    def pipeline(name: str) -> hw.Definitions:
        return _clean_and_total(tmp_path / "in", hw.DynamicPartitions(name))

    (tmp_path / "in").mkdir()
    for key in ("a", "b"):
        (tmp_path / "in" / f"{key}.json").write_text(f'"{key}"')
    state = tmp_path / "state"
    for name, expected in (("inbox", ["a", "b"]), ("inbox_v2", ["a", "b", "c"])):
        async with Engine.open(pipeline(name), state, SystemClock()) as engine:
            await sync_file_sources(engine)
            await engine.tick()
            assert await anyio.to_thread.run_sync(engine.runner.load, "total", None) == expected
        (tmp_path / "in" / "c.json").write_text('"c"')
    added = await anyio.to_thread.run_sync(
        lambda: EventLogReader(state).events(kind="partitions_added")
    )
    assert [(e.payload["name"], e.payload["keys"]) for e in added] == [
        ("inbox", ["a", "b"]),
        ("inbox_v2", ["a", "b", "c"]),
    ]


@pytest.mark.asyncio
async def test_names_of_ignored_files_are_forgotten_with_the_files(tmp_path: Path) -> None:
    """An uploader lands files under temporary names that match the pattern but are no key,
    then deletes them: each is named once, and forgotten once deleted, so the sensor's
    memory does not grow with every name ever ignored (hostile32a bug3: 0.67 KB each, for
    the process's life). A name that comes back is a new file, named again."""
    (tmp_path / "inbox").mkdir()
    regions = hw.StaticPartitions(["eu", "us"])
    src = hw.FileSource("src", str(tmp_path / "inbox" / "{partition}.csv"), partitions=regions)
    ignored: list[str] = []

    def seen(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") == "file_ignored":
            ignored.append(event["path"])
        return event

    async with Engine.open(hw.Definitions([src]), tmp_path / "state", SystemClock()) as engine:
        counted, on_change = _watched(engine)
        with structlog.testing.capture_logs(processors=[seen]):  # type: ignore[list-item]
            sensor = FileSensor(engine, on_change, rescan_interval=3600)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    await tg.start(sensor.run)
                    for n in range(3):
                        upload = tmp_path / "inbox" / f"upload-{n}.csv"
                        upload.write_text("a\n1\n")
                        upload.unlink()
                    (tmp_path / "inbox" / "eu.csv").write_text("a\n1\n")
                    await counted(("src", "eu"), None)  # the events before it are handled
                    assert sensor._warned == {}
                    before = engine.state.version(("src", "eu"))
                    (tmp_path / "inbox" / "upload-0.csv").write_text("a\n2\n")
                    (tmp_path / "inbox" / "eu.csv").write_text("a\n2\n")
                    await counted(("src", "eu"), before)
                    tg.cancel_scope.cancel()
    names = [str(tmp_path / "inbox" / f"upload-{n}.csv") for n in (0, 1, 2, 0)]
    assert ignored == names, ignored


@pytest.mark.asyncio
async def test_a_glob_lists_its_folder_again_at_a_pace_its_size_sets(tmp_path: Path) -> None:
    """A glob's version covers all its files, so each change lists them all again: over a
    folder of 80,000 files, a file a second took 70 % of a core (hostile32a bug8). The next
    listing now waits a few times as long as the last took, and what lands meanwhile is
    counted together. Here the wait is held long, and two files landed apart (each one's
    event handled, as a marker elsewhere shows) are one observation."""
    (tmp_path / "archive").mkdir()
    (tmp_path / "marks").mkdir()
    logs = hw.FileSource("logs", str(tmp_path / "archive" / "*.log"))
    marks = hw.FileSource(
        "marks", str(tmp_path / "marks" / "{partition}.txt"), partitions=hw.DynamicPartitions("m")
    )
    async with Engine.open(
        hw.Definitions([logs, marks]), tmp_path / "state", SystemClock()
    ) as engine:
        counted, on_change = _watched(engine)

        def observations() -> int:
            return len(EventLogReader(tmp_path / "state").events(kind="observation", asset="logs"))

        sensor = FileSensor(engine, on_change, rescan_interval=3600)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(sensor.run)
                (tmp_path / "archive" / "a0.log").write_text("0\n")
                await counted(("logs", None), None)
                assert sensor._glob_next["logs"] > time.monotonic() - 1  # the pace is kept
                sensor._glob_next["logs"] = time.monotonic() + 3  # as after a long listing
                before = engine.state.version(("logs", None))
                seen = await anyio.to_thread.run_sync(observations)
                for n in (1, 2):
                    (tmp_path / "archive" / f"a{n}.log").write_text(f"{n}\n")
                    (tmp_path / "marks" / f"m{n}.txt").write_text("x")
                    await counted(("marks", f"m{n}"), None)  # a{n}.log's event is handled
                await counted(("logs", None), before)
                tg.cancel_scope.cancel()
        assert await anyio.to_thread.run_sync(observations) == seen + 1
