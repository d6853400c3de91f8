"""Time-window mappings between different partitionings (issue 10), on the virtual clock.

Hourly into daily (23/24/25 hours in Europe/Berlin), daily into weekly and monthly, a finer
partition reading the coarser one that holds it, day-over-day offsets (and the first day,
which has no day before), multi-partitioned assets mapped per dimension, backfill and
freshness through a mapping, and the pairs that stay definition errors.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import headwater as hw
from headwater.definitions import PartitionContext
from headwater.definitions._mappings import resolve_mapping
from headwater.testing import Harness

UTC_HOURS = hw.HourlyPartitions(start="2026-01-01")
UTC_DAYS = hw.DailyPartitions(start="2026-01-01")


def hours_of(
    day: str, hourly: hw.HourlyPartitions = UTC_HOURS, now: str = "2027-01-01"
) -> list[str]:
    """Every hourly key whose window starts on local ``day``."""
    ctx = PartitionContext(now=datetime.fromisoformat(now).replace(tzinfo=UTC))
    return [k for k in hourly.keys(ctx) if k.startswith(day)]


def _hours_into_days(hourly: hw.HourlyPartitions, daily: hw.DailyPartitions) -> hw.Definitions:
    raw = hw.source("raw", partitions=hourly)

    @hw.asset(partitions=daily)
    def day(raw: dict[str, Any]) -> list[str]:
        return sorted(raw)

    return hw.Definitions([raw, day])


def test_a_day_runs_once_all_of_its_hours_exist_and_why_names_the_missing_ones() -> None:
    with Harness(_hours_into_days(UTC_HOURS, UTC_DAYS), now="2026-01-03T00:00:00Z") as h:
        hours = hours_of("2026-01-01")
        assert len(hours) == 24
        for hour in hours[:5] + hours[8:]:
            h.observe("raw", data_version=hour, partition=hour)
        assert ("day", "2026-01-01") not in h.tick().materialized
        why = " ".join(h.why("day", partition="2026-01-01"))
        assert (
            "input raw: waiting for 3 of 24 hours: "
            "2026-01-01T05:00, 2026-01-01T06:00, 2026-01-01T07:00" in why
        )
        for hour in hours[5:8]:
            h.observe("raw", data_version=hour, partition=hour)
        assert h.tick().materialized == [("day", "2026-01-01")]
        assert h.value("day", partition="2026-01-01") == hours


@pytest.mark.parametrize(
    ("day", "count"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-10-26", 24)]
)
def test_dst_days_in_berlin_wait_for_their_23_or_25_hours(day: str, count: int) -> None:
    hourly = hw.HourlyPartitions(start="2026-01-01", tz="Europe/Berlin")
    daily = hw.DailyPartitions(start="2026-01-01", tz="Europe/Berlin")
    hours = hours_of(day, hourly)
    assert len(hours) == count
    with Harness(_hours_into_days(hourly, daily), now="2026-12-01T00:00:00Z") as h:
        for hour in hours[:-1]:
            h.observe("raw", data_version=hour, partition=hour)
        assert h.tick().materialized == []
        assert f"waiting for 1 of {count} hours: {hours[-1]}" in " ".join(
            h.why("day", partition=day)
        )
        h.observe("raw", data_version="last", partition=hours[-1])
        assert h.tick().materialized == [("day", day)]
        assert h.value("day", partition=day) == sorted(hours)


def test_the_repeated_hour_of_a_fall_back_day_is_two_partitions_with_distinct_windows() -> None:
    hourly = hw.HourlyPartitions(start="2026-10-25", tz="Europe/Berlin")
    first, second = hourly.window("2026-10-25T02:00"), hourly.window("2026-10-25T02:00+01:00")
    assert first == (datetime(2026, 10, 25, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC))
    assert second == (datetime(2026, 10, 25, 1, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC))
    with pytest.raises(hw.PartitionKeyError, match="did you mean '2026-10-25T02:00'"):
        hourly.check_key("2026-10-25T02:00+02:00")
    with pytest.raises(hw.PartitionKeyError, match="the clocks skip it"):
        hourly.check_key("2026-03-29T02:00")


def test_weekly_and_monthly_keys_start_at_the_first_whole_window() -> None:
    weekly = hw.WeeklyPartitions(start="2026-01-01")
    monthly = hw.MonthlyPartitions(start="2026-01-15", tz="America/New_York")
    ctx = PartitionContext(now=datetime(2026, 4, 1, 5, tzinfo=UTC))
    assert list(weekly.keys(ctx))[:2] == ["2026-01-05", "2026-01-12"]
    assert list(monthly.keys(ctx)) == ["2026-02", "2026-03"]  # March ends 04:00 UTC in New York
    sunday = hw.WeeklyPartitions(start="2026-01-01", week_start="sunday")
    assert sunday.keys(ctx)[0] == "2026-01-04"
    with pytest.raises(hw.PartitionKeyError, match="not the start of a week"):
        weekly.check_key("2026-01-06")
    with pytest.raises(hw.PartitionKeyError, match="did you mean '2026-02'"):
        monthly.check_key("2026-2")
    with pytest.raises(hw.DefinitionError, match="week_start='mon'"):
        hw.WeeklyPartitions(start="2026-01-01", week_start="mon")


def test_days_roll_up_into_weeks_and_months() -> None:
    raw = hw.source("raw", partitions=UTC_DAYS)

    @hw.asset(partitions=UTC_DAYS)
    def day(raw: Any, context: hw.Context) -> str:
        return str(context.partition)

    @hw.asset(partitions=hw.WeeklyPartitions(start="2026-01-01"))
    def week(day: dict[str, str]) -> list[str]:
        return sorted(day.values())

    @hw.asset(partitions=hw.MonthlyPartitions(start="2026-01-01"))
    def month(day: dict[str, str]) -> int:
        return len(day)

    with Harness(hw.Definitions([raw, day, week, month]), now="2026-02-02T00:00:00Z") as h:
        for n in range(1, 32):
            h.observe("raw", data_version="v", partition=f"2026-01-{n:02d}")
        tick = h.tick()
        assert sorted(p for a, p in tick.materialized if a == "week") == [
            "2026-01-05",
            "2026-01-12",
            "2026-01-19",
        ]  # the week of the 26th needs February's first day
        assert [p for a, p in tick.materialized if a == "month"] == ["2026-01"]
        assert h.value("week", partition="2026-01-12") == [f"2026-01-{n}" for n in range(12, 19)]
        assert h.value("month", partition="2026-01") == 31
        assert "waiting for 1 of 7 days: 2026-02-01" in " ".join(
            h.why("week", partition="2026-01-26")
        )
        h.observe("raw", data_version="v2", partition="2026-01-13")
        tick = h.tick()
        assert tick.materialized == [
            ("day", "2026-01-13")
        ]  # same value: early cutoff stops the roll-ups


def test_an_hour_reads_the_day_that_holds_it_and_a_new_day_reaches_its_hours() -> None:
    reference = hw.source("reference", partitions=UTC_DAYS)

    @hw.asset(partitions=UTC_HOURS)
    def priced(reference: Any, context: hw.Context) -> Any:
        return (context.partition, reference)

    with Harness(hw.Definitions([reference, priced]), now="2026-01-03T00:00:00Z") as h:
        h.observe("reference", value="rates-2", partition="2026-01-02")
        tick = h.tick()
        assert sorted(p for _, p in tick.materialized) == hours_of("2026-01-02")
        assert h.value("priced", partition="2026-01-02T05:00") == ("2026-01-02T05:00", "rates-2")
        assert "input reference[2026-01-01] is missing" in " ".join(
            h.why("priced", partition="2026-01-01T05:00")
        )
        h.observe("reference", value="rates-2b", partition="2026-01-02")
        assert len(h.tick().materialized) == 24


def _day_over_day(optional: bool) -> hw.Definitions:
    raw = hw.source("raw", partitions=UTC_DAYS)

    @hw.asset(partitions=UTC_DAYS)
    def total(raw: Any) -> Any:
        return raw

    @hw.asset(
        partitions=UTC_DAYS,
        ins={"yesterday": hw.Input("total", mapping=hw.TimeWindow(offset=-1), optional=optional)},
    )
    def change(total: int, yesterday: int | None) -> int | None:
        return None if yesterday is None else total - yesterday

    return hw.Definitions([raw, total, change])


def test_day_over_day_reads_the_day_before() -> None:
    with Harness(_day_over_day(optional=False), now="2026-01-04T00:00:00Z") as h:
        for n, value in ((1, 10), (2, 15), (3, 11)):
            h.observe("raw", value=value, partition=f"2026-01-0{n}")
        h.tick()
        assert h.value("change", partition="2026-01-02") == 5
        assert h.value("change", partition="2026-01-03") == -4
        assert h.state("change", partition="2026-01-01") == "missing"
        assert (
            "input total: window 2025-12-31 is before the first partition of "
            "DailyPartitions(start='2026-01-01', tz='UTC')"
        ) in " ".join(h.why("change", partition="2026-01-01"))
        h.observe("raw", value=20, partition="2026-01-02")
        tick = h.tick()
        assert set(tick.materialized) == {
            ("total", "2026-01-02"),
            ("change", "2026-01-02"),
            ("change", "2026-01-03"),
        }  # the 2nd is both today for one day and yesterday for the next
        assert h.value("change", partition="2026-01-03") == -9


def test_an_optional_previous_window_reads_none_before_the_first_day() -> None:
    with Harness(_day_over_day(optional=True), now="2026-01-03T00:00:00Z") as h:
        h.observe("raw", value=10, partition="2026-01-01")
        h.observe("raw", value=12, partition="2026-01-02")
        h.tick()
        assert h.state("change", partition="2026-01-01") == "fresh"
        assert h.value("change", partition="2026-01-01") is None
        assert h.value("change", partition="2026-01-02") == 2


def test_a_multi_partitioned_asset_maps_time_by_window_and_region_by_identity() -> None:
    regions = hw.StaticPartitions(["eu", "us"])
    raw = hw.source("raw", partitions=hw.MultiPartitions({"date": UTC_HOURS, "region": regions}))

    @hw.asset(partitions=hw.MultiPartitions({"date": UTC_DAYS, "region": regions}))
    def daily(raw: dict[str, Any]) -> list[str]:
        return sorted(raw)

    @hw.asset(
        partitions=hw.MultiPartitions({"date": UTC_DAYS, "region": regions}),
        ins={"raw": hw.Input(mapping={"date": hw.TimeWindow(), "region": hw.Identity()})},
    )
    def declared(raw: dict[str, Any]) -> int:
        return len(raw)

    with Harness(hw.Definitions([raw, daily, declared]), now="2026-01-02T00:00:00Z") as h:
        for hour in hours_of("2026-01-01"):
            h.observe("raw", data_version="v", partition=f"{hour}|eu")
        tick = h.tick()
        assert sorted(tick.materialized) == [
            ("daily", "2026-01-01|eu"),
            ("declared", "2026-01-01|eu"),
        ]
        assert h.value("daily", partition="2026-01-01|eu") == [
            f"{hour}|eu" for hour in hours_of("2026-01-01")
        ]
        assert "input raw: waiting for 24 of 24 partitions: 2026-01-01T00:00|us" in " ".join(
            h.why("daily", partition="2026-01-01|us")
        )


def test_a_coarse_window_runs_once_after_all_its_fine_partitions_in_one_tick() -> None:
    raw = hw.source("raw", partitions=UTC_HOURS)

    @hw.asset(partitions=UTC_HOURS)
    def clean(raw: Any) -> Any:
        return raw

    @hw.asset(partitions=UTC_DAYS)
    def day(clean: dict[str, Any]) -> int:
        return len(clean)

    with Harness(hw.Definitions([raw, clean, day]), now="2026-01-02T00:00:00Z") as h:
        for hour in hours_of("2026-01-01"):
            h.observe("raw", value=hour, partition=hour)
        done = h.tick().materialized
        assert done[-1] == ("day", "2026-01-01")
        assert [n for n in done if n[0] == "day"] == [("day", "2026-01-01")]
        assert len(done) == 25


def test_backfill_of_days_fills_the_hours_they_read_first() -> None:
    raw = hw.source("raw", partitions=UTC_HOURS)

    @hw.asset(partitions=UTC_HOURS, policy=hw.manual())
    def clean(raw: Any) -> Any:
        return raw

    @hw.asset(partitions=UTC_DAYS)
    def day(clean: dict[str, Any]) -> int:
        return len(clean)

    with Harness(hw.Definitions([raw, clean, day]), now="2026-01-04T00:00:00Z") as h:
        for day_key in ("2026-01-01", "2026-01-02", "2026-01-03"):
            for hour in hours_of(day_key):
                h.observe("raw", value=hour, partition=hour)
        assert h.tick().materialized == []  # manual hours: nothing runs on its own
        tick = h.backfill("day", "2026-01-01", "2026-01-02")
        cleaned = [p for a, p in tick.materialized if a == "clean"]
        assert sorted(cleaned) == hours_of("2026-01-01") + hours_of("2026-01-02")
        done = tick.materialized
        for day_key in ("2026-01-01", "2026-01-02"):  # each day after every hour it reads
            last_hour = max(done.index(("clean", hour)) for hour in hours_of(day_key))
            assert done.index(("day", day_key)) > last_hour
        assert len(done) == 48 + 2
        assert h.state("clean", partition="2026-01-03T05:00") == "missing"  # not asked for
        assert h.value("day", partition="2026-01-02") == 24


def test_max_lag_counts_from_the_hour_that_changed_through_the_mapping() -> None:
    raw = hw.source("raw", partitions=UTC_HOURS)

    @hw.asset(partitions=UTC_HOURS)
    def clean(raw: Any) -> Any:
        return raw

    @hw.asset(
        partitions=UTC_DAYS,
        policy=hw.on_cron("0 6 * * *"),
        freshness=hw.Freshness(max_lag="1h"),
    )
    def day(clean: dict[str, Any]) -> int:
        return sum(clean.values())

    with Harness(hw.Definitions([raw, clean, day]), now="2026-01-02T05:00:00Z") as h:
        for hour in hours_of("2026-01-01"):
            h.observe("raw", value=1, partition=hour)
        h.tick()
        assert h.state("day", partition="2026-01-01") == "missing"  # waits for its cron tick
        h.advance("1h")
        assert h.value("day", partition="2026-01-01") == 24
        h.advance("1h")  # 07:00
        h.observe("raw", value=2, partition="2026-01-01T05:00")
        h.tick()
        assert h.state("day", partition="2026-01-01") == "stale"
        assert not h.freshness("day", partition="2026-01-01").late
        h.advance("61m")
        status = h.freshness("day", partition="2026-01-01")
        assert status.late and status.lag is not None and status.lag.total_seconds() == 61 * 60
        assert h.events(kind="freshness_violated", asset="day")
        h.advance("1d")  # the 06:00 tick runs it
        assert h.value("day", partition="2026-01-01") == 25
        assert not h.freshness("day", partition="2026-01-01").late


def test_pairs_with_no_time_mapping_are_definition_errors_naming_both_assets() -> None:
    regions = hw.StaticPartitions(["eu", "us"])
    raw = hw.source("raw", partitions=regions)

    @hw.asset(partitions=UTC_DAYS)
    def clean(raw: Any) -> Any:
        return raw

    with pytest.raises(hw.DefinitionError, match=r"asset 'clean' .* depends on 'raw'"):
        hw.Definitions([raw, clean])

    @hw.asset(partitions=regions, ins={"raw": hw.Input(mapping=hw.TimeWindow(offset=-1))})
    def shifted(raw: Any) -> Any:
        return raw

    with pytest.raises(
        hw.DefinitionError,
        match=r"asset 'shifted' .* depends on 'raw' .*: TimeWindow maps between time partitions",
    ):
        hw.Definitions([raw, shifted])

    @hw.asset(partitions=UTC_DAYS, ins={"raw": hw.Input(mapping=hw.AllPartitions())})
    def every(raw: dict[str, Any]) -> Any:
        return sorted(raw)

    with Harness(hw.Definitions([raw, every]), now="2026-01-03T00:00:00Z") as h:
        h.observe("raw", data_version="1", partition="eu")
        h.observe("raw", data_version="1", partition="us")
        h.tick()
        assert h.value("every", partition="2026-01-02") == ["eu", "us"]

    with pytest.raises(hw.DefinitionError, match=re.escape("is neither hw.Identity()")):

        @hw.asset(partitions=UTC_DAYS, ins={"raw": hw.Input(mapping="daily")})  # type: ignore[arg-type]
        def wrong(raw: Any) -> Any:
            return raw


def test_lineage_names_the_mapping_of_an_edge() -> None:
    from headwater._lineage import render_lineage

    defs = _day_over_day(optional=True)
    text = render_lineage(defs, "text")
    assert "change (asset, eager) <- total [Identity() + TimeWindow(offset=-1)]" in text
    assert 'label="Identity() + TimeWindow(offset=-1)"' in render_lineage(defs, "dot")


_TIME_KINDS = st.sampled_from(
    [
        lambda tz: hw.HourlyPartitions(start="2026-01-01", tz=tz),
        lambda tz: hw.DailyPartitions(start="2026-01-01", tz=tz),
        lambda tz: hw.WeeklyPartitions(start="2026-01-01", tz=tz),
        lambda tz: hw.MonthlyPartitions(start="2026-01-01", tz=tz),
    ]
)
_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])


@settings(max_examples=40, deadline=None)
@given(
    reader=_TIME_KINDS,
    upstream=_TIME_KINDS,
    reader_tz=_ZONES,
    upstream_tz=_ZONES,
    offset=st.integers(-2, 2),
    pick=st.integers(0, 10_000),
)
def test_a_time_window_reads_exactly_the_partitions_that_list_it_as_a_reader(
    reader: Any, upstream: Any, reader_tz: str, upstream_tz: str, offset: int, pick: int
) -> None:
    """up() and down() are inverse: p reads u exactly when u is read by p (what the planner
    follows downstream is what the status reads upstream)."""
    r, u = reader(reader_tz), upstream(upstream_tz)
    if r == u:
        return
    mapping = resolve_mapping(hw.TimeWindow(offset=offset), r, u, "test")
    assert mapping is not None
    ctx = PartitionContext(now=datetime(2026, 12, 31, tzinfo=UTC))
    keys = list(r.keys(ctx))
    key = keys[pick % len(keys)]
    read, _ = mapping.upstream(key, ctx)
    for up in read:
        assert key in mapping.downstream(up, ctx), (key, up)
        assert mapping.covers(key, up)
    ups = list(u.keys(ctx))
    up = ups[pick % len(ups)]
    for reader_key in mapping.downstream(up, ctx):
        assert up in mapping.upstream(reader_key, ctx)[0], (reader_key, up)


def test_where_clocks_move_by_half_an_hour_that_hour_is_a_half_hour_window() -> None:
    """Lord Howe Island: 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05."""
    hourly = hw.HourlyPartitions(start="2026-01-01", tz="Australia/Lord_Howe")
    spring, autumn = hours_of("2026-10-04", hourly), hours_of("2026-04-05", hourly)
    assert spring[1:4] == ["2026-10-04T01:00", "2026-10-04T02:30", "2026-10-04T03:00"]
    assert autumn[1:4] == ["2026-04-05T01:00", "2026-04-05T01:30+10:30", "2026-04-05T02:00"]
    for key in spring + autumn + hours_of("2026-10-05", hourly):
        hourly.check_key(key)  # every listed key is accepted: the window it names starts there
        start, end = hourly.window(key)
        assert hourly.label(start) == key and end > start
    start, end = hourly.window("2026-10-04T02:30")
    assert end - start == timedelta(minutes=30)
    spans = [hourly.window(k) for k in spring]
    assert sum((e - s for s, e in spans), timedelta(0)) == timedelta(hours=23, minutes=30)
    with Harness(
        _hours_into_days(hourly, hw.DailyPartitions(start="2026-01-01", tz="Australia/Lord_Howe")),
        now="2026-10-06T00:00:00Z",
    ) as h:
        for hour in spring:
            h.observe("raw", data_version=hour, partition=hour)
        assert h.tick().materialized == [("day", "2026-10-04")]


def test_windows_of_the_same_length_read_the_one_holding_their_start() -> None:
    """A Monday week reads the Sunday week holding its Monday; a UTC day reads the Kolkata
    day holding its midnight (05:30 there), not a window that ends after it."""
    monday = hw.WeeklyPartitions(start="2026-01-01")
    sunday = hw.WeeklyPartitions(start="2026-01-01", week_start="sunday")
    ctx = PartitionContext(now=datetime(2026, 3, 1, tzinfo=UTC))
    weeks = resolve_mapping(None, monday, sunday, "test")
    assert weeks is not None and weeks.upstream("2026-01-05", ctx) == (["2026-01-04"], None)
    kolkata = hw.DailyPartitions(start="2026-01-01", tz="Asia/Kolkata")
    days = resolve_mapping(None, UTC_DAYS, kolkata, "test")
    assert days is not None and days.upstream("2026-01-10", ctx) == (["2026-01-10"], None)
    new_york = hw.DailyPartitions(start="2026-01-01", tz="America/New_York")
    west = resolve_mapping(None, UTC_DAYS, new_york, "test")
    assert west is not None and west.upstream("2026-01-10", ctx) == (["2026-01-09"], None)


def test_an_optional_input_alone_reads_none_outside_the_upstream_partitions() -> None:
    raw = hw.source("raw", partitions=UTC_DAYS)

    @hw.asset(
        partitions=UTC_DAYS,
        ins={"past": hw.Input("raw", mapping=hw.TimeWindow(offset=-2), optional=True)},
    )
    def lagged(past: Any) -> Any:
        return past

    with Harness(hw.Definitions([raw, lagged]), now="2026-01-05T00:00:00Z") as h:
        for n in range(1, 5):
            h.observe("raw", value=n, partition=f"2026-01-0{n}")
        h.tick()
        assert h.value("lagged", partition="2026-01-01") is None
        assert h.value("lagged", partition="2026-01-02") is None
        assert h.value("lagged", partition="2026-01-04") == 2


def test_offsets_far_away_cost_no_more_than_near_ones() -> None:
    """An offset is arithmetic, not a walk: a year back in hours, a century in days."""
    hourly = hw.HourlyPartitions(start="2020-01-01", tz="Europe/Berlin")
    start = hourly.window_start("2026-07-01T12:00")
    assert hourly.label(hourly.shift(start, -24 * 365)) == "2025-07-01T12:00"
    assert (
        UTC_DAYS.label(UTC_DAYS.shift(UTC_DAYS.window_start("2026-01-01"), 36524)) == "2126-01-01"
    )
    monthly = hw.MonthlyPartitions(start="2026-01-01")
    assert monthly.label(monthly.shift(monthly.window_start("2026-11"), 14)) == "2028-01"
