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


def test_a_root_cron_asset_that_failed_runs_again_at_its_next_tick() -> None:
    """An hourly poller whose retries ran out during a short outage: it has no input to
    change, so its next tick is what runs it again; it stayed failed for good, while `why`
    said it waited for the next tick (hostile32a bug2)."""
    outage = [True]

    @hw.asset(policy=hw.on_cron("0 * * * *"), retries=hw.Retry(max_attempts=2, delay="1m"))
    def poll() -> int:
        if outage[0]:
            raise ConnectionError("the API is down")
        return 1

    with Harness(hw.Definitions([poll]), now="2026-01-05T00:30:00Z") as h:
        assert ("poll", None) in h.advance("40m").failed  # 01:00 and its retry at 01:01
        assert h.state("poll") == "failed"
        outage[0] = False
        assert h.advance("1h").materialized == [("poll", None)]  # at 02:00


def test_a_failed_cron_asset_with_inputs_waits_for_one_to_change() -> None:
    """As any policy's: its tick does not run it again on the same inputs, and `why` says
    what will."""
    outage = [True]

    @hw.asset(policy=hw.on_cron("0 * * * *"))
    def report(src: int) -> int:
        if outage[0]:
            raise ConnectionError("the API is down")
        return src

    with Harness(hw.Definitions([hw.source("src"), report]), now="2026-01-05T00:30:00Z") as h:
        h.observe("src", value=1)
        assert ("report", None) in h.advance("40m").failed
        outage[0] = False
        assert h.advance("1h").materialized == []
        assert any("it runs again once an input or its code changes" in w for w in h.why("report"))
        h.observe("src", value=2)
        assert h.advance("1h").materialized == [("report", None)]


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


def _ticks_by_definition(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """The ticks in [start, end), by the rule of CronPolicy's docstring read minute by minute
    in UTC, independently of its walks (5-field expressions, offsets changing on a minute)."""
    from datetime import UTC, timedelta

    from cronsim import CronSim

    def matches(wall: datetime) -> bool:
        return next(CronSim(expr, wall - timedelta(seconds=1))) == wall

    zone, minute = ZoneInfo(tz), timedelta(minutes=1)
    minute_field, hour_field = expr.split()[:2]
    fixed_time = not minute_field.startswith("*") and not hour_field.startswith("*")
    ticks, at = [], start
    while at < end:
        offset, before = at.astimezone(zone).utcoffset(), (at - minute).astimezone(zone).utcoffset()
        assert offset is not None and before is not None
        wall = (at + offset).replace(tzinfo=None)
        if fixed_time:
            first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == at
            skipped = wall - (offset - before)  # the clock jumped forward from it to ``wall``
            jumped = any(matches(skipped + k * minute) for k in range((offset - before) // minute))
            tick = (matches(wall) and first) or jumped
        else:
            tick = matches(wall)
        if tick:
            ticks.append(at)
        at += minute
    return ticks


def _local(ticks: list[datetime], tz: str) -> list[str]:
    return [t.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M%z") for t in ticks]


def test_a_half_hour_dst_change_ticks_every_wall_time_of_the_hour() -> None:
    """Lord Howe falls back half an hour (02:00 +11:00 becomes 01:30 +10:30, 01:30-01:59 are
    read twice) and springs forward half an hour (02:00-02:29 skipped): */5 2 * * * ticks at
    each 02:xx the clock reads, 12 on the fall-back day (cronsim's walk skipped 02:00-02:25)
    and 6 on the spring-forward day."""
    from datetime import UTC, timedelta

    policy = hw.on_cron("*/5 2 * * *", tz="Australia/Lord_Howe")
    days = {
        "04-05": datetime(2026, 4, 4, 12, tzinfo=UTC),  # first Sunday of April: fall back
        "10-04": datetime(2026, 10, 3, 12, tzinfo=UTC),  # first Sunday of October: forward
    }
    for day, start in days.items():
        ticks = [policy.next_tick(start)]
        while ticks[-1] < start + timedelta(days=1):
            ticks.append(policy.next_tick(ticks[-1]))
        on_day = [t for t in _local(ticks, "Australia/Lord_Howe") if t.startswith(day)]
        offset = "+1030" if day == "04-05" else "+1100"
        minutes = range(0, 60, 5) if day == "04-05" else range(30, 60, 5)
        assert on_day == [f"{day} 02:{m:02}{offset}" for m in minutes]
        assert len(set(on_day)) == len(on_day)
        assert [policy.last_tick(t) for t in ticks] == ticks


@pytest.mark.parametrize(
    ("expr", "local_ticks"),
    [
        ("45 23 * * *", ["08-14 23:45+0900"]),  # a fixed time: once, at its first reading
        ("45 * * * *", ["08-14 23:45+0900", "08-14 23:45+0830"]),  # hourly: on, each hour
        (  # every 10 minutes goes on across the change: 23:30-23:50 at both offsets
            "*/10 * * * *",
            [
                *("08-14 23:30+0900", "08-14 23:40+0900", "08-14 23:50+0900"),
                *("08-14 23:30+0830", "08-14 23:40+0830", "08-14 23:50+0830", "08-15 00:00+0830"),
            ],
        ),
    ],
)
def test_a_permanent_offset_change_ticks_once_per_tick(expr: str, local_ticks: list[str]) -> None:
    """Pyongyang went from +09:00 to +08:30 at 2015-08-15 00:00 +09:00 for good: 23:30-23:59
    of 08-14 were read twice. Every minute around it, the last and the next tick are the
    ticks of the definition, each once (45 * * * *: next_tick jumped from 23:45 +09:00 to
    00:45 +08:30 over 23:45 +08:30, which last_tick gave, so a restart ran it and a daemon
    up throughout did not)."""
    import bisect
    from datetime import UTC, timedelta

    tz = "Asia/Pyongyang"
    change = datetime(2015, 8, 14, 15, tzinfo=UTC)
    start, end = change - timedelta(hours=26), change + timedelta(hours=26)
    ticks = _ticks_by_definition(expr, tz, start, end)
    around = [t for t in ticks if abs(t - change) <= timedelta(minutes=30)]
    assert _local(around, tz) == local_ticks
    policy = hw.on_cron(expr, tz=tz)
    at = change - timedelta(hours=3)
    while at < change + timedelta(hours=3):
        i = bisect.bisect_right(ticks, at)
        assert (policy.last_tick(at), policy.next_tick(at)) == (ticks[i - 1], ticks[i]), at
        at += timedelta(minutes=1)


@pytest.mark.parametrize(
    ("expr", "tz", "change"),
    [
        ("*/5 2 * * *", "Australia/Lord_Howe", "2026-04-04T15:00:00Z"),  # back half an hour
        ("*/5 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:30:00Z"),  # forward half an hour
        ("45 23 * * *", "Asia/Pyongyang", "2015-08-14T15:00:00Z"),  # back for good
        ("45 * * * *", "Asia/Pyongyang", "2015-08-14T15:00:00Z"),
        ("0 * * * *", "Asia/Pyongyang", "2018-05-04T14:30:00Z"),  # forward for good
    ],
)
def test_a_restart_runs_no_tick_twice_and_loses_none(expr: str, tz: str, change: str) -> None:
    """A daemon that handled the last tick at m1, restarted at m2 (m1 every minute of the 12
    hours around an offset change, down 1 minute to 5 hours): it runs the last tick at m2 if
    that is after the one it handled (the ticks between are caught up once), then each next
    tick in turn; together, the ticks of the definition, each once, none skipped."""
    from datetime import timedelta

    moment = datetime.fromisoformat(change)
    start, end = moment - timedelta(hours=30), moment + timedelta(hours=60)
    ticks = _ticks_by_definition(expr, tz, start, end)
    policy = hw.on_cron(expr, tz=tz)
    m1 = moment - timedelta(hours=6)
    while m1 < moment + timedelta(hours=6):
        handled = policy.last_tick(m1)
        assert handled == max(t for t in ticks if t <= m1), m1
        for down in (timedelta(minutes=1), timedelta(minutes=47), timedelta(hours=5)):
            m2 = m1 + down
            missed = [t for t in ticks if handled < t <= m2]
            due = policy.last_tick(m2)
            assert due is not None
            run = [due] if due > handled else []
            assert run == missed[-1:], (m1, m2)  # once, the latest, if any was missed
            after = [policy.next_tick(m2)]
            after.append(policy.next_tick(after[-1]))
            assert after == [t for t in ticks if t > m2][:2], (m1, m2)
        m1 += timedelta(minutes=1)


def test_an_asset_switched_back_to_cron_counts_its_ticks_from_the_switch(tmp_path: Path) -> None:
    """on_cron, then eager for days, then on_cron again at 12:00: the 06:00 tick passed while
    it had no cron, so it is no tick missed; it ran at once at 12:00 (hostile32b bug8).
    Users switch to cron precisely to stop runs during the day."""

    def defs(policy: Any) -> hw.Definitions:
        @hw.asset(policy=policy)
        def report(src: int) -> int:
            return src

        return hw.Definitions([hw.source("src"), report])

    cron = hw.on_cron("0 6 * * *")
    with Harness(defs(cron), state_dir=tmp_path, now="2026-01-01T00:00:00Z") as h:
        h.observe("src", value=1)
        assert h.advance("7h").materialized == [("report", None)]  # the 06:00 tick
    with Harness(defs(hw.eager()), state_dir=tmp_path, now="2026-01-01T08:00:00Z") as h:
        h.observe("src", value=2)
        assert h.tick().materialized == [("report", None)]
        h.advance("4d")
    with Harness(defs(cron), state_dir=tmp_path, now="2026-01-05T12:00:00Z") as h:
        h.observe("src", value=3)
        assert h.tick().materialized == []
        assert "next cron tick at 2026-01-06T06:00:00+00:00" in h.why("report")
        assert h.advance("18h").materialized == [("report", None)]  # at 06:00 the next day
