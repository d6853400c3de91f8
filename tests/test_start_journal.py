"""Starts of runs are on disk before their functions start, in a journal ahead of the log.

A run's start enters the log with its end (one commit per short run), or alone once the run
has gone on for a while; until then only the journal holds it. The owner that opens the state
directory next records what the journal holds and the log does not, and abandons those runs.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_process import hw as hw_cli

import headwater as hw
from headwater._clock import SystemClock
from headwater._errors import StateDirError
from headwater._events import Event
from headwater._storage import StorageFailure
from headwater.eventlog import EventLogReader
from headwater.eventlog._starts import JOURNAL_NAME, RING_BYTES, StartJournal
from headwater.execution import Engine
from headwater.testing import Harness


def _defs() -> hw.Definitions:
    @hw.asset
    def slow(src: Any) -> Any:
        return src

    return hw.Definitions([hw.source("src"), slow])


def _start(h: Harness, run_id: str, asset: str = "slow", **payload: Any) -> Event:
    return hw.Event(
        kind="run_started", timestamp=h.now, asset=asset, run_id=run_id,
        payload={"code_version": "c", "inputs": [], "attempt": 1, "reason": "test", **payload},
    )  # fmt: skip


def test_a_start_only_the_journal_holds_is_recorded_and_abandoned_at_the_next_open(
    tmp_path: Path,
) -> None:
    """What the death of the owner in a run's first moments leaves: its start in the journal,
    nothing in the log. The next owner records the start, abandons the run, plans it again."""
    defs = _defs()
    with Harness(defs, state_dir=tmp_path) as h:
        h.observe("src", value=1)
        cut_off = _start(h, "r-cut")
    journal = StartJournal(tmp_path)
    journal.read()
    journal.write(cut_off)  # and the process died here
    journal.close()
    with Harness(defs, state_dir=tmp_path) as h2:
        (started,) = h2.events(kind="run_started", asset="slow")
        assert (started.run_id, started.timestamp, started.payload) == (
            "r-cut", cut_off.timestamp, cut_off.payload,
        )  # fmt: skip
        assert [e.run_id for e in h2.events(kind="run_abandoned")] == ["r-cut"]
        assert h2.tick().materialized == [("slow", None)]
    with Harness(defs, state_dir=tmp_path) as h3:  # recorded once, not at every open
        assert len(h3.events(kind="run_started")) == 2
        assert len(h3.events(kind="run_abandoned")) == 1
    assert StartJournal(tmp_path).read() == []


def test_a_journaled_start_the_log_already_holds_is_not_recorded_again(tmp_path: Path) -> None:
    defs = _defs()
    with Harness(defs, state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.tick()
        (done,) = h.events(kind="run_started", asset="slow")
    journal = StartJournal(tmp_path)
    journal.read()
    journal.write(done)  # a line whose commit went through just before the owner died
    journal.close()
    with Harness(defs, state_dir=tmp_path) as h2:
        assert [e.run_id for e in h2.events(kind="run_started")] == [done.run_id]
        assert h2.events(kind="run_abandoned") == []


def test_runs_that_ended_leave_the_journal_reading_empty(tmp_path: Path) -> None:
    """Each short run commits its start with its end, and the journal then holds nothing:
    every run_started is in the log, right before its end."""
    nodes: list[Any] = [hw.source("src")]
    nodes += [hw.asset(f"a{i}", ins={"x": "src"})(lambda x: x) for i in range(20)]
    with Harness(hw.Definitions(nodes), state_dir=tmp_path) as h:
        h.observe("src", value=1)
        assert len(h.tick().materialized) == 20
        assert StartJournal(tmp_path).read() == []
        events = h.events()
        for e in events:
            if e.kind == "materialization":
                before = events[events.index(e) - 1]
                assert (before.kind, before.run_id) == ("run_started", e.run_id)


def test_the_journal_reads_up_to_the_first_damage(tmp_path: Path) -> None:
    """A torn line (a power loss), or bytes that are no journal at all: what comes before is
    read, the rest ignored, and an owner opens the state directory all the same."""
    defs = _defs()
    with Harness(defs, state_dir=tmp_path) as h:
        first, second, third = (_start(h, f"r{i}") for i in range(3))
    journal = StartJournal(tmp_path)
    journal.read()
    for start in (first, second, third):
        journal.write(start)
    journal.close()
    path = tmp_path / JOURNAL_NAME
    data = path.read_bytes()
    cut = data.index(b"\n", data.index(b"\n") + 1) + 20  # the third line, torn
    path.write_bytes(data[:cut])
    assert [e.run_id for e in StartJournal(tmp_path).read()] == ["r0", "r1"]
    path.write_bytes(b"\x00" * 100 + b"garbage\n[1,2,3]\n")
    assert StartJournal(tmp_path).read() == []
    with Harness(defs, state_dir=tmp_path) as h2:
        assert h2.events(kind="run_abandoned") == []


def test_a_new_generation_hides_the_lines_of_the_last_one(tmp_path: Path) -> None:
    """Once every start is in the log the next ones overwrite the file from its start: the
    longer lines of the generation before never read as waiting starts."""
    with Harness(_defs(), state_dir=tmp_path) as h:
        long = [_start(h, f"old{i}", note="x" * 300) for i in range(5)]
        short = _start(h, "new")
    journal = StartJournal(tmp_path)
    journal.read()
    for start in long:
        journal.write(start)
    journal.settle(s.run_id or "" for s in long)
    assert StartJournal(tmp_path).read() == []  # nothing waits
    journal.write(short)
    assert [e.run_id for e in StartJournal(tmp_path).read()] == ["new"]
    journal.settle(["new"])
    # Lines of one length: the next generation's first line ends where the second line of
    # the last one begins, whole. Its generation tells it apart.
    with Harness(_defs(), state_dir=tmp_path) as h:
        same = [_start(h, f"s{i}") for i in range(3)]
        again = _start(h, "t0")
    for start in same:
        journal.write(start)
    journal.settle(s.run_id or "" for s in same)
    journal.write(again)
    assert [e.run_id for e in StartJournal(tmp_path).read()] == ["t0"]
    journal.close()


def test_starts_that_never_all_end_at_once_keep_the_journal_bounded(tmp_path: Path) -> None:
    """Runs overlapping without end: past RING_BYTES, the waiting starts are written again
    as a new generation at the start of the file, which stops growing."""
    with Harness(_defs(), state_dir=tmp_path) as h:
        starts = [_start(h, f"r{i}", note="y" * 1000) for i in range(3 * RING_BYTES // 1000)]
    journal = StartJournal(tmp_path)
    journal.read()
    waiting: list[str] = []
    for start in starts:
        journal.write(start)
        waiting.append(start.run_id or "")
        if len(waiting) > 3:  # the oldest ends: three always wait
            journal.settle([waiting.pop(0)])
    # the generation under way, ended starts included (the log holds those: skipped)
    read = [e.run_id for e in StartJournal(tmp_path).read()]
    assert set(waiting) <= set(read) and len(read) < RING_BYTES // 1000 + 10
    assert (tmp_path / JOURNAL_NAME).stat().st_size < RING_BYTES + 10 * 1100
    journal.settle(waiting)
    assert StartJournal(tmp_path).read() == []
    journal.close()


def test_a_fifo_or_a_folder_at_the_journal_is_refused_by_name(tmp_path: Path) -> None:
    defs = _defs()
    with Harness(defs, state_dir=tmp_path):
        pass
    path = tmp_path / JOURNAL_NAME
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(StateDirError, match=f"{path} is not a regular file"):
        Harness(defs, state_dir=tmp_path)
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")
    with pytest.raises(StateDirError, match="Remove it"):
        Harness(defs, state_dir=tmp_path)
    (tmp_path / "defs.py").write_text(DEFS)
    done = hw_cli("materialize", "slow", "--state-dir", ".", "-d", "defs.py", cwd=tmp_path)
    assert done.returncode != 0
    assert "starts.journal is not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


DEFS = """
import headwater as hw

@hw.asset
def slow(src):
    return src

defs = hw.Definitions([hw.source("src"), slow])
"""


class _Seen:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.event = anyio.Event()

    def written(self, events: Sequence[Event]) -> None:
        if any(e.kind == self.kind for e in events):
            self.event.set()

    def planned(self, seconds: float) -> None:
        pass


@pytest.mark.asyncio
async def test_a_long_run_is_in_the_log_while_it_runs(tmp_path: Path) -> None:
    """Its start is committed alone once it has run for a moment, not held until its end."""
    release = threading.Event()

    @hw.asset
    def long(src: Any) -> Any:
        release.wait(timeout=20)
        return src

    defs = hw.Definitions([hw.source("src"), long])
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        seen = _Seen("run_started")
        engine.observers.append(seen)
        await engine.observe("src", value=1)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(engine.tick)
                await seen.event.wait()
                events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
                assert [e.kind for e in events if e.asset == "long"] == ["run_started"]
                assert engine.state.record(("long", None)).running  # type: ignore[union-attr]
                release.set()
        events = await anyio.to_thread.run_sync(EventLogReader(tmp_path).events)
        assert [e.kind for e in events if e.asset == "long"] == ["run_started", "materialization"]


class _FullDisk:
    """A value store on a disk that is full until it is not."""

    def __init__(self) -> None:
        self.full = True
        self.values: dict[tuple[str, str | None], Any] = {}

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        if self.full:
            raise StorageFailure(Path("/full"), "No space left on device")
        self.values[(asset, partition)] = value

    def load(self, asset: str, partition: str | None) -> Any:
        return self.values[(asset, partition)]


def test_a_run_cut_off_by_a_full_disk_is_recorded_and_abandoned_once_it_takes_writes(
    tmp_path: Path,
) -> None:
    """Its start and end could not be committed: the start waits with the engine, and goes
    into the log, its run abandoned for the outage, when the disk takes writes again."""
    disk = _FullDisk()

    @hw.asset(io=disk)
    def kept(src: Any) -> Any:
        return src

    with Harness(hw.Definitions([hw.source("src"), kept]), state_dir=tmp_path) as h:
        h.observe("src", value=1)
        assert ("kept", None) in h.tick().failed
        assert h.engine.degraded is not None
        assert h.events(kind="run_started") == []  # nothing could say it ran yet
        disk.full = False
        h._call(h.engine.recover)
        (started,) = h.events(kind="run_started", asset="kept")
        (abandoned,) = h.events(kind="run_abandoned", asset="kept")
        assert abandoned.run_id == started.run_id
        assert "No space left on device" in abandoned.payload["reason"]
        assert h.tick().materialized == [("kept", None)]
    assert StartJournal(tmp_path).read() == []


def test_a_new_owner_continues_the_generations_the_file_holds(tmp_path: Path) -> None:
    """The lines a dead owner's last generation left deeper in the file are never read as
    the next owner's: its generations come after every one the file holds (and opening
    empties the file once what it held is in the log)."""
    with Harness(_defs(), state_dir=tmp_path) as h:
        olds = [_start(h, f"o{i}") for i in range(3)]
        mine = _start(h, "m0")
    path = tmp_path / JOURNAL_NAME
    before = StartJournal(tmp_path)
    before.read()
    for start in olds:
        before.write(start)
    before.settle(s.run_id or "" for s in olds)  # all in the log: the file reads as empty
    before.close()
    after = StartJournal(tmp_path)
    assert after.read() == []
    after.write(mine)  # as long as o0: it ends where o1 begins, whole
    assert [e.run_id for e in StartJournal(tmp_path).read()] == ["m0"]
    after.close()
    with Harness(_defs(), state_dir=tmp_path):
        assert path.stat().st_size == 0


@pytest.mark.parametrize("seconds", [0, 0.2])  # its start committed with its end, or alone
def test_a_clean_stop_while_the_disk_refuses_writes_counts_no_crash(
    tmp_path: Path, seconds: float
) -> None:
    """The run's end could not be recorded, and the engine closed while still degraded: the
    next owner abandons the run for the outage, not as one the daemon died in (which three
    times over would fail it for good under threads)."""
    disk = _FullDisk()

    @hw.asset(io=disk)
    def kept(src: Any) -> Any:
        threading.Event().wait(seconds)  # a run that lasts
        return src

    defs = hw.Definitions([hw.source("src"), kept])
    for _ in range(3):
        with Harness(defs, state_dir=tmp_path) as h:
            h.observe("src", value=len(h.events()))
            assert ("kept", None) in h.tick().failed
            assert h.engine.degraded is not None
    disk.full = False
    with Harness(defs, state_dir=tmp_path) as h2:
        abandoned = h2.events(kind="run_abandoned", asset="kept")
        assert len(abandoned) == 3
        for event in abandoned:
            assert "No space left on device" in event.payload["reason"]
            assert not event.payload.get("crash")
        started = h2.events(kind="run_started", asset="kept")
        assert {e.run_id for e in started} == {e.run_id for e in abandoned}
        assert all("headwater.cut_off" not in e.payload for e in started)
        assert h2.tick().materialized == [("kept", None)]


def test_a_huge_or_deeply_nested_journal_opens_quickly_and_is_emptied(tmp_path: Path) -> None:
    defs = _defs()
    with Harness(defs, state_dir=tmp_path):
        pass
    path = tmp_path / JOURNAL_NAME
    deep = "[" * 100_000 + "]" * 100_000
    row = ["2026-01-01T00:00:00.000000Z", "run_started", "slow", None, "r", None, deep]
    path.write_bytes(b"[0," + json.dumps(row)[1:].encode() + b"\n")
    assert StartJournal(tmp_path).read() == []
    with open(path, "r+b") as f:
        f.truncate(50 * 2**30)  # sparse: 50 GB of zeros after that line
    with Harness(defs, state_dir=tmp_path) as h:
        assert h.events(kind="run_started") == []
    assert path.stat().st_size == 0


def test_the_crash_guards_failure_keeps_the_binding_so_a_swap_runs_it_again(
    tmp_path: Path,
) -> None:
    """The third death of the owner in one asset's run fails it for good with what its start
    recorded, the binding of its parameters included. Binding them otherwise is a change that
    fault did not see: the asset runs again (as after a code change), not "failed" for ever."""

    def build(swapped: bool) -> hw.Definitions:
        def diff(x: int, y: int) -> int:
            return x - y

        ins = {"x": "low", "y": "high"} if swapped else {"x": "high", "y": "low"}
        return hw.Definitions([hw.source("high"), hw.source("low"),
                               hw.asset("diff", ins=ins)(diff)])  # fmt: skip

    defs = build(False)
    binding = defs.binding("diff")
    assert binding == "x=high y=low"
    with Harness(defs, state_dir=tmp_path) as h:
        h.observe("high", value=10)
        h.observe("low", value=3)
        code = defs.code_version("diff")
        inputs = [[e.asset, None, e.data_version] for e in h.events(kind="observation")]
    for attempt in range(3):  # the owner dies in the run's first moments, three times
        with Harness(defs, state_dir=tmp_path) as h:
            start = _start(h, f"r{attempt}", asset="diff", code_version=code,
                           inputs=sorted(inputs), binding=binding)  # fmt: skip
        journal = StartJournal(tmp_path)
        journal.read()
        journal.write(start)
        journal.close()
    with Harness(defs, state_dir=tmp_path) as h:
        (failed,) = h.events(kind="run_failed", asset="diff")
        assert failed.payload["final"] and failed.payload["binding"] == binding
        assert h.state("diff") == "failed"
        assert h.tick().materialized == []  # no retry: it failed for good
    with Harness(build(True), state_dir=tmp_path) as h:
        assert h.state("diff") == "missing"
        assert h.tick().materialized == [("diff", None)]
        assert h.value("diff") == -7
