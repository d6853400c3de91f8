"""Which keys exist when: time windows up to the last complete one, static, dynamic, multi."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

import headwater as hw
from headwater.definitions import PartitionContext


def ctx(now: str, **dynamic: list[str]) -> PartitionContext:
    return PartitionContext(
        now=datetime.fromisoformat(now).astimezone(UTC), dynamic_keys=lambda n: dynamic.get(n, [])
    )


def test_daily_keys_stop_at_the_last_complete_day() -> None:
    daily = hw.DailyPartitions(start="2026-01-01")
    assert daily.keys(ctx("2026-01-04T10:00:00+00:00")) == [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    assert daily.keys(ctx("2026-01-01T23:59:59+00:00")) == []
    assert daily.newest_keys(ctx("2026-01-04T00:00:00+00:00")) == ["2026-01-03"]
    assert not daily.has_key("2026-01-04", ctx("2026-01-04T10:00:00+00:00"))


def test_daily_windows_follow_the_timezone() -> None:
    """In UTC+9 the 2nd of January is complete at 15:00 UTC on the 2nd."""
    tokyo = hw.DailyPartitions(start="2026-01-01", tz="Asia/Tokyo")
    assert tokyo.keys(ctx("2026-01-02T14:59:00+00:00")) == ["2026-01-01"]
    assert tokyo.keys(ctx("2026-01-02T15:00:00+00:00")) == ["2026-01-01", "2026-01-02"]
    assert tokyo.next_window_end(datetime(2026, 1, 2, 10, tzinfo=UTC)) == datetime(
        2026, 1, 2, 15, tzinfo=UTC
    )


def test_daily_end_is_exclusive() -> None:
    jan = hw.DailyPartitions(start="2026-01-01", end="2026-01-04")
    assert jan.keys(ctx("2026-06-01T00:00:00+00:00")) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    with pytest.raises(hw.PartitionKeyError):
        jan.check_key("2026-01-04")


def test_hourly_keys_skip_the_hour_that_does_not_exist_in_a_dst_gap() -> None:
    """On the spring-forward day in Berlin, 02:00 local does not exist."""
    hourly = hw.HourlyPartitions(start="2026-03-29", tz="Europe/Berlin")
    keys = hourly.keys(ctx("2026-03-30T00:00:00+02:00"))
    assert len(keys) == 23
    assert "2026-03-29T02:00" not in keys
    assert keys[:3] == ["2026-03-29T00:00", "2026-03-29T01:00", "2026-03-29T03:00"]


def test_daily_partition_on_a_dst_day_is_one_key() -> None:
    daily = hw.DailyPartitions(start="2026-10-24", tz="Europe/Berlin")
    assert daily.keys(ctx("2026-10-26T00:00:00+01:00")) == ["2026-10-24", "2026-10-25"]


def test_static_dynamic_and_multi_keys() -> None:
    regions = hw.StaticPartitions(["eu", "us"])
    inbox = hw.DynamicPartitions("inbox")
    now = "2026-01-03T00:00:00+00:00"
    assert list(regions.keys(ctx(now))) == ["eu", "us"]
    assert inbox.keys(ctx(now, inbox=["a.csv"])) == ["a.csv"]
    multi = hw.MultiPartitions({"date": hw.DailyPartitions(start="2026-01-01"), "region": regions})
    assert multi.keys(ctx(now)) == [
        "2026-01-01|eu",
        "2026-01-01|us",
        "2026-01-02|eu",
        "2026-01-02|us",
    ]
    assert multi.newest_keys(ctx(now)) == ["2026-01-02|eu", "2026-01-02|us"]
    assert multi.has_key("2026-01-02|us", ctx(now))
    assert not multi.has_key("2026-01-02|mars", ctx(now))


def test_equality_is_by_kind_and_parameters() -> None:
    assert hw.DailyPartitions(start="2026-01-01") == hw.DailyPartitions(start="2026-01-01")
    assert hw.DailyPartitions(start="2026-01-01") != hw.DailyPartitions(start="2026-01-02")
    assert hw.DailyPartitions(start="2026-01-01") != hw.HourlyPartitions(start="2026-01-01")
    assert hw.DynamicPartitions("x") == hw.DynamicPartitions("x")
    assert hw.StaticPartitions(["a"]) != hw.StaticPartitions(["b"])


def test_bad_definitions_are_rejected() -> None:
    with pytest.raises(hw.DefinitionError, match="unknown timezone"):
        hw.DailyPartitions(start="2026-01-01", tz="Mars/Olympus")
    with pytest.raises(hw.DefinitionError, match="not a date"):
        hw.DailyPartitions(start="yesterday")
    with pytest.raises(hw.DefinitionError, match="duplicate keys"):
        hw.StaticPartitions(["a", "a"])
    with pytest.raises(hw.DefinitionError, match=re.escape("must not contain '|' or '/'")):
        hw.StaticPartitions(["a|b"])


def test_durations_parse_and_reject() -> None:
    from datetime import timedelta

    assert hw.parse_duration("90s") == timedelta(seconds=90)
    assert hw.parse_duration("1h30m") == timedelta(minutes=90)
    assert hw.parse_duration("1d") == timedelta(days=1)
    with pytest.raises(ValueError, match="not a duration"):
        hw.parse_duration("soon")


def test_the_windows_that_ended_between_two_instants() -> None:
    """What a clock that jumped forward passed over: each window whose end lies in the span,
    once, in the zone's own hours (the fall-back day has 25), and none outside the range."""
    hours = hw.HourlyPartitions(start="2026-10-24", end="2026-10-26", tz="Europe/Berlin")
    now = ctx("2026-12-01T00:00:00+00:00")
    ended = hours.ended_between(
        datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 26, tzinfo=UTC), now
    )
    # the ends at 22:00 and 23:00 UTC on the 24th, and 24 on the 25th: 26 windows, once each
    assert ended is not None and len(ended) == len(set(ended)) == 26
    assert ended[0] == "2026-10-24T23:00" and ended[-1] == "2026-10-25T23:00"  # the range's end
    assert "2026-10-25T02:00" in ended and "2026-10-25T02:00+01:00" in ended  # the hour twice
    before_start = hours.ended_between(
        datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 23, 23, tzinfo=UTC), now
    )
    assert before_start == []
    not_yet = hours.ended_between(
        datetime(2026, 10, 24, 22, tzinfo=UTC),
        datetime(2026, 10, 26, tzinfo=UTC),
        ctx("2026-10-24T23:30:00+00:00"),
    )
    assert not_yet == ["2026-10-24T23:00", "2026-10-25T00:00"]  # only what exists at ctx.now
    multi = hw.MultiPartitions(
        {"day": hw.DailyPartitions(start="2026-01-01"), "region": hw.StaticPartitions(["eu", "us"])}
    )
    spanned = multi.ended_between(
        datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC), now
    )
    assert spanned == ["2026-01-01|eu", "2026-01-01|us", "2026-01-02|eu", "2026-01-02|us"]
    assert hw.StaticPartitions(["a"]).ended_between(datetime(2026, 1, 1, tzinfo=UTC),
                                                    datetime(2026, 1, 2, tzinfo=UTC), now) is None  # fmt: skip


def test_two_placeholders_in_one_name_are_split_where_the_keys_are() -> None:
    """``{region}-{date}``: the regex split ``eu-2026-01-02`` as eu-2026-01 and 02, and the
    file (an object of an ObjectSource alike) was ignored as naming no key. Every split is
    tried; the one the partitions have is the partition, and two are named as ambiguous."""
    daily = hw.DailyPartitions(start="2026-01-01")
    regions = hw.StaticPartitions(["eu", "us", "us-east"])
    both = hw.MultiPartitions({"region": regions, "date": daily})
    source = hw.FileSource("s", "in/{region}-{date}.csv", partitions=both)
    for region in ("eu", "us-east"):
        key = f"{region}|2026-01-02"
        assert source.partition_of(source.render(key)) == key
    objects = hw.ObjectSource("o", "s3://b/in/{date}-{region}.csv", partitions=both)
    assert objects.partition_of("in/2026-01-02-us-east.csv") == "us-east|2026-01-02"
    halves = hw.StaticPartitions(["x", "x_y", "y", "y_z", "z"])
    pairs = hw.MultiPartitions({"a": halves, "b": halves})
    ambiguous = hw.FileSource("p", "in/{a}_{b}.csv", partitions=pairs)
    with pytest.raises(hw.PartitionKeyError, match="more than one partition"):
        ambiguous.partition_of("in/x_y_z.csv")


def test_a_static_set_of_many_keys_is_named_in_a_line_not_listed() -> None:
    """100k keys: an unknown key's error and the set's description (which `why` prints)
    listed every key, a megabyte of text; a typo still gets its suggestion."""
    many = hw.StaticPartitions([f"k{i:06d}" for i in range(100_000)])
    with pytest.raises(hw.PartitionKeyError) as raised:
        many.check_key("k00001x")
    assert len(str(raised.value)) < 300 and "did you mean" in str(raised.value)
    assert many.describe().startswith("StaticPartitions of 100000 keys")
    assert len(many.describe()) < 200


def test_a_string_is_not_a_list_of_static_keys() -> None:
    """StaticPartitions("eu") made the keys 'e' and 'u'."""
    with pytest.raises(hw.DefinitionError, match=r"a list of keys, not the string 'eu'"):
        hw.StaticPartitions("eu")
