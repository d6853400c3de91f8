"""on_cron on the virtual clock: once per tick, after the tick, DST-correct, caught up once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import headwater as hw
from headwater.testing import Harness


def _downstream_cron(expr: str = "0 6 * * *") -> hw.Definitions:
    src = hw.source("src")

    @hw.asset(policy=hw.on_cron(expr))
    def report(src: Any) -> Any:
        return src

    return hw.Definitions([src, report])


def _root_cron(expr: str, tz: str = "UTC") -> hw.Definitions:
    @hw.asset(policy=hw.on_cron(expr, tz=tz))
    def snapshot(context: hw.Context) -> str:
        return context.now.isoformat()

    return hw.Definitions([snapshot])


def test_changes_wait_for_the_tick_and_run_once_after_it() -> None:
    """A stale cron asset waits between ticks, then runs exactly once at the tick."""
    with Harness(_downstream_cron(), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        first = h.tick()
        assert first.materialized == []
        assert first.skipped == {("report", None): "missing; waiting for the next cron tick"}
        assert h.advance(hours=5, minutes=59).materialized == []
        at_tick = h.advance(minutes=1)
        assert at_tick.materialized == [("report", None)]
        assert h.now == datetime.fromisoformat("2026-01-05T06:00:00+00:00")
        h.observe("src", value=2)
        assert h.tick().materialized == []  # between ticks, changes wait
        h.observe("src", value=3)
        tick = h.advance("1d")
        assert tick.materialized == [("report", None)]  # once per tick, not once per change
        assert h.value("report") == 3
        assert h.advance("2d").materialized == []  # fresh: ticks with nothing to do


def test_waiting_between_ticks_is_recorded_once() -> None:
    """The same waiting reason over many ticks is one decision event, not one per tick."""
    src = hw.source("src")
    other = hw.source("other")

    @hw.asset(policy=hw.on_cron("0 * * * *"))
    def joined(src: Any, other: Any) -> Any:
        return (src, other)

    with Harness(hw.Definitions([src, other, joined]), now="2026-01-05T00:30:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        result = h.advance(hours=5)  # five ticks, each finding the same missing input
        assert result.skipped == {
            ("joined", None): "cron tick due, but waiting: input other is missing"
        }
        decisions = h.events(kind="decision", asset="joined")
        assert [(d.payload["decision"], d.timestamp.hour) for d in decisions] == [
            ("idle", 0),
            ("wait", 1),
        ]
        h.observe("other", value=2)
        assert h.advance(hours=1).materialized == [("joined", None)]


def test_a_root_cron_asset_runs_every_tick() -> None:
    with Harness(_root_cron("0 6 * * *"), now="2026-01-05T00:00:00Z") as h:
        result = h.advance("3d")
        assert result.materialized == [("snapshot", None)] * 3
        runs = h.events(kind="materialization", asset="snapshot")
        assert [e.timestamp.isoformat() for e in runs] == [
            "2026-01-05T06:00:00+00:00",
            "2026-01-06T06:00:00+00:00",
            "2026-01-07T06:00:00+00:00",
        ]


def test_ticks_count_from_the_first_evaluation() -> None:
    """A harness started after today's tick does not run for it."""
    with Harness(_root_cron("0 6 * * *"), now="2026-01-05T10:00:00Z") as h:
        assert h.tick().materialized == []
        assert h.engine.next_wakeup() == datetime.fromisoformat("2026-01-06T06:00:00+00:00")


def test_ticks_missed_while_down_are_caught_up_once(tmp_path: Path) -> None:
    with Harness(_root_cron("0 6 * * *"), now="2026-01-05T07:00:00Z", state_dir=tmp_path) as h:
        h.tick()
    with Harness(_root_cron("0 6 * * *"), now="2026-01-09T12:00:00Z", state_dir=tmp_path) as h:
        assert h.tick().materialized == [("snapshot", None)]  # four missed ticks, one run
        assert h.tick().materialized == []
        assert h.advance("1d").materialized == [("snapshot", None)]


@pytest.mark.parametrize(
    ("start", "day", "local_run"),
    [
        # spring forward: 02:00 does not exist in Berlin on 2026-03-29; the job runs at 03:00
        ("2026-03-28T12:00:00Z", "2026-03-29", "03:00:00+02:00"),
        # fall back: 02:00 happens twice on 2026-10-25; the job runs once
        ("2026-10-24T12:00:00Z", "2026-10-25", "02:00:00+02:00"),
    ],
)
def test_a_dst_day_runs_exactly_once(start: str, day: str, local_run: str) -> None:
    with Harness(_root_cron("0 2 * * *", tz="Europe/Berlin"), now=start) as h:
        h.advance("3d")
        berlin = [
            e.timestamp.astimezone(ZoneInfo("Europe/Berlin")).isoformat()
            for e in h.events(kind="materialization")
        ]
        on_day = [t for t in berlin if t.startswith(day)]
        assert on_day == [f"{day}T{local_run}"]
        assert len(berlin) == 3


def test_bad_cron_expressions_and_zones_are_definition_errors() -> None:
    with pytest.raises(hw.DefinitionError, match="not a cron expression"):
        hw.on_cron("61 * * * *")
    with pytest.raises(hw.DefinitionError, match="unknown timezone"):
        hw.on_cron("0 6 * * *", tz="Mars/Olympus")


def test_a_tick_missed_while_down_is_caught_up_in_the_repeated_hour(tmp_path: Path) -> None:
    """Down over 01:30 EDT on the fall-back day, back at 01:10 EST (the hour's second pass,
    40 minutes after the tick): the tick is caught up once (hostile27 bug1: it was lost)."""
    defs = _root_cron("30 1 * * *", tz="America/New_York")
    with Harness(defs, now="2026-10-31T12:00:00Z", state_dir=tmp_path) as h:
        h.tick()
    with Harness(defs, now="2026-11-01T06:10:00Z", state_dir=tmp_path) as h:
        assert h.tick().materialized == [("snapshot", None)]
        assert h.tick().materialized == []  # once
        h.advance(hours=24)
        assert len(h.events(kind="materialization", asset="snapshot")) == 1  # next: 11-02 06:30Z
        h.advance(minutes=20)
        assert len(h.events(kind="materialization", asset="snapshot")) == 2


@pytest.mark.parametrize("tz", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expr", ["30 1 * * *", "15 2 * * *", "*/20 * * * *"])
def test_the_last_and_next_ticks_agree_with_the_ticks_one_after_another(tz: str, expr: str) -> None:
    """Every minute of the days around both DST changes of 2026: the last tick at or before a
    moment is the last of the ticks walked forward, and the next one the first after it."""
    import bisect
    from datetime import UTC, timedelta

    zone = ZoneInfo(tz)
    hour = datetime(2026, 1, 1, tzinfo=UTC)
    changes = []
    while hour.year < 2027:
        if (hour + timedelta(hours=1)).astimezone(zone).utcoffset() != hour.astimezone(
            zone
        ).utcoffset():
            changes.append(hour)
        hour += timedelta(hours=1)
    assert len(changes) == 2
    policy = hw.on_cron(expr, tz=tz)
    for change in changes:
        at = change - timedelta(hours=20)
        ticks = [policy.last_tick(at)]
        while ticks[-1] is not None and ticks[-1] < change + timedelta(hours=30):
            ticks.append(policy.next_tick(ticks[-1]))
        for _ in range(40 * 60):
            last = ticks[bisect.bisect_right(ticks, at) - 1]
            assert policy.last_tick(at) == last, at
            assert policy.next_tick(at) == ticks[bisect.bisect_right(ticks, at)], at
            at += timedelta(minutes=1)
