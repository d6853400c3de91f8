"""A wall clock that jumps (resume from suspend, an NTP step): due cron ticks, SLA deadlines and
retries fire within seconds; a tick skipped over is caught up once; a backward step never
repeats a tick already handled. Fast on the harness's clock, and once for real under
libfaketime, with the monotonic clock left alone."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from daemon_process import DaemonProcess

import headwater as hw
from headwater.testing import Harness

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _hourly() -> tuple[hw.Definitions, list[int]]:
    calls: list[int] = []

    @hw.asset(policy=hw.on_cron("0 * * * *"))
    def stamp() -> int:
        calls.append(1)
        return len(calls)

    return hw.Definitions([stamp]), calls


def test_a_forward_step_runs_the_skipped_tick_once() -> None:
    defs, calls = _hourly()
    with Harness(defs, now="2026-11-30T10:30:00Z") as h:
        assert h.tick().materialized == []  # the first evaluation: ticks count from here
        result = h.step_clock("2026-11-30T13:05:00Z")  # 11:00, 12:00 and 13:00 skipped over
        assert result.materialized == [("stamp", None)]
        assert h.tick().materialized == []
        assert len(calls) == 1


def test_a_backward_step_never_repeats_a_handled_tick() -> None:
    defs, calls = _hourly()
    with Harness(defs, now="2026-11-30T10:30:00Z") as h:
        h.tick()
        assert h.advance("35m").materialized == [("stamp", None)]  # the 11:00 tick, at 11:00
        assert h.step_clock("2026-11-30T10:40:00Z").materialized == []  # back before 11:00
        why = h.why("stamp")
        assert "next cron tick at 2026-11-30T12:00:00+00:00" in why, why  # never a false 11:00
        assert any("stepped back" in line for line in why), why
        assert h.advance("25m").materialized == []  # 11:05 again: 11:00 was handled
        assert h.advance("1h").materialized == [("stamp", None)]  # 12:00 is new
        assert len(calls) == 2


def test_after_a_step_back_of_hours_the_ticks_count_from_the_clock() -> None:
    """A clock three days ahead, set right by NTP: ticks it handled in the future it had
    are not ticks the asset had. As Debian's cron after a step back past 3 hours, they count
    from the clock again, rather than an hourly asset staying silent for three days
    (hostile32a bug1)."""
    defs, calls = _hourly()
    with Harness(defs, now="2026-11-30T10:30:00Z") as h:
        h.tick()
        assert h.advance("35m").materialized == [("stamp", None)]  # the 11:00 tick
        assert h.step_clock("2026-11-27T11:05:00Z").materialized == []
        assert "next cron tick at 2026-11-27T12:00:00+00:00" in h.why("stamp")
        assert h.advance("1h").materialized == [("stamp", None)]  # 12:00, three days early
        assert h.advance("1h").materialized == [("stamp", None)]
        assert len(calls) == 3


def test_a_forward_step_fires_sla_deadlines_and_retries() -> None:
    src = hw.source("src")
    attempts: list[int] = []

    @hw.asset(retries=hw.Retry(max_attempts=2, delay="10m"))
    def fragile(src: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 2:
            raise ConnectionError("later")
        return src

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="15m"))
    def report(fragile: Any) -> Any:
        return fragile

    with Harness(hw.Definitions([src, fragile, report]), now="2026-11-30T09:00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.materialize("report")
        h.step_clock("2026-11-30T10:00:00Z")
        h.observe("src", value=2)
        assert h.tick().failed  # the retry is due at 10:10, the SLA deadline at 10:15
        result = h.step_clock("2026-11-30T11:00:00Z")
        assert result.materialized == [("fragile", None)]  # the retry was due: it ran
        assert h.freshness("report").late  # the deadline passed during the jump
        (violated,) = h.events(kind="freshness_violated", asset="report")
        assert violated.timestamp.isoformat() == "2026-11-30T11:00:00+00:00"


DEFS = textwrap.dedent(
    """
    import headwater as hw

    marker = hw.FileSource("marker", "marker.txt", loader=lambda path: path.read_text())

    @hw.asset(policy=hw.on_cron("0 * * * *"))
    def hourly() -> int:
        return 1

    @hw.asset
    def seen(marker: str) -> str:
        return marker

    defs = hw.Definitions([marker, hourly, seen])
    """
)


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="Debian's faketime (libfaketime) is needed")
def test_every_window_that_closed_during_a_forward_step_is_recorded_late() -> None:
    """A laptop asleep for four hours: each hourly window that closed meanwhile and got no
    data is late by max_age, and recorded so (hostile27 bug2: only the newest window was)."""
    hours = hw.HourlyPartitions(start="2026-01-05", tz="Europe/Berlin")
    readings = hw.source("readings", partitions=hours, freshness=hw.Freshness(max_age="30m"))
    with Harness(hw.Definitions([readings]), now="2026-01-05T12:00:00Z") as h:
        h.tick()
        h.step_clock("2026-01-05T16:10:00Z")
        h.advance(minutes=30)
        closed = ["2026-01-05T13:00", "2026-01-05T14:00", "2026-01-05T15:00", "2026-01-05T16:00"]
        assert all(h.freshness("readings", k).late for k in closed)
        recorded = [e.partition for e in h.events(kind="freshness_violated", asset="readings")]
        assert sorted(set(recorded)) == sorted(set(recorded) | set(closed))
        assert len(recorded) == len(set(recorded))  # each once


def test_windows_of_a_multi_partitioned_source_closed_over_weeks_are_each_recorded_once() -> None:
    """Three weeks asleep over a day-by-region source: every (day, region) window that closed
    meanwhile is recorded late once, and none is recorded twice as time goes on."""
    parts = hw.MultiPartitions(
        {"day": hw.DailyPartitions(start="2026-01-01"), "region": hw.StaticPartitions(["eu", "us"])}
    )
    sales = hw.source("sales", partitions=parts, freshness=hw.Freshness(max_age="1h"))
    with Harness(hw.Definitions([sales]), now="2026-01-03T00:30:00Z") as h:
        h.tick()
        h.step_clock("2026-01-24T00:30:00Z")
        h.advance(hours=3)
        recorded = [e.partition for e in h.events(kind="freshness_violated", asset="sales")]
        days = [f"2026-01-{d:02d}" for d in range(3, 24)]  # closed before first seen: not late
        assert sorted(recorded) == sorted(f"{d}|{r}" for d in days for r in ("eu", "us"))


def test_the_daemon_notices_a_real_wall_clock_step_within_seconds(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Started at 10:30 (faked), the wall clock stepped to 11:05 while the monotonic clock
    runs on: the 11:00 tick runs within a few seconds, not half an hour late."""
    project = tmp_path / "project"  # libfaketime reads its file at every clock read: not here
    project.mkdir()
    (project / "defs.py").write_text(DEFS)
    clock = tmp_path / "faketime"
    clock.write_text("@2026-11-30 10:30:00\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    daemon = DaemonProcess(project, project / "defs.py", tmp_path / "state", env=env)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    (project / "marker.txt").write_text("the first evaluation is over once this is seen")
    daemon.wait_event("materialized", asset="seen")
    assert not any(ln.get("asset") == "hourly" for ln in daemon.lines)  # 11:00 is ahead
    since = daemon.mark()
    clock.write_text("@2026-11-30 11:05:00\n")
    os.utime(clock)
    line = daemon.wait_event("materialized", asset="hourly", since=since, timeout=15)
    assert line["timestamp"].startswith("2026-11-30T11:05")
    assert daemon.terminate() == 0


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="Debian's faketime (libfaketime) is needed")
def test_retention_catches_up_with_a_wall_clock_stepped_forward(
    tmp_path: Path, daemons: list[object]
) -> None:
    """A host that booted with its clock a month behind, set right by NTP once the daemon
    runs: the cutoff may not pass events faster than the monotonic clock (a wrong step must
    not prune early), so it stayed a month behind for the process's life, and nothing new
    was ever pruned (hostile32a bug7). It now leaps over the month no event tells of."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "defs.py").write_text(DEFS)
    clock = tmp_path / "faketime"
    clock.write_text("@2026-10-30 10:30:00\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    args = ("--settle", "0.2", "--retention", "2s")
    daemon = DaemonProcess(project, project / "defs.py", tmp_path / "state", env=env, args=args)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    (project / "marker.txt").write_text("before the step")
    daemon.wait_event("materialized", asset="seen")
    daemon.wait_event("pruned")
    since = daemon.mark()
    clock.write_text("@2026-11-30 10:30:00\n")
    os.utime(clock)
    (project / "marker.txt").write_text("after the step")
    daemon.wait_event("materialized", asset="seen", since=since)
    line = daemon.wait_log(
        lambda ln: ln.get("event") == "pruned" and ln["before"] >= "2026-11-30T10:30",
        timeout=20,
        since=since,
    )
    assert line["before"] < "2026-11-30T10:31", line  # retention, not the whole step, later
    assert daemon.terminate() == 0
