"""Freshness SLAs on the virtual clock: exactly one violated and one recovered event each."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

import headwater as hw
from headwater.testing import Harness


def _kinds(h: Harness, asset: str) -> list[str]:
    return [
        e.kind
        for e in h.events(asset=asset)
        if e.kind in ("freshness_violated", "freshness_recovered")
    ]


def test_max_lag_on_an_unpartitioned_asset() -> None:
    """Stale for longer than max_lag since the first unreflected change: late, once; then recovered once."""
    src = hw.source("src")

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="15m"))
    def report(src: Any) -> Any:
        return src

    with Harness(hw.Definitions([src, report]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.advance(minutes=10)
        h.observe("src", value=2)  # a second change does not restart the clock
        h.advance(minutes=4, seconds=59)
        assert h.freshness("report").late is False
        assert h.freshness("report").lag == timedelta(minutes=14, seconds=59)
        with structlog.testing.capture_logs() as logs:
            h.advance(seconds=1)
        assert h.freshness("report").late is True
        assert {"event": "freshness_violated", "log_level": "warning"}.items() <= logs[0].items()
        h.advance("1h")
        assert _kinds(h, "report") == ["freshness_violated"]
        violated = h.events(kind="freshness_violated")[0]
        assert violated.timestamp.isoformat() == "2026-01-05T00:15:00+00:00"
        h.materialize("report")
        assert h.freshness("report").late is False
        assert h.freshness("report").lag == timedelta(0)  # it reflects everything upstream
        h.advance("1d")
        assert _kinds(h, "report") == ["freshness_violated", "freshness_recovered"]


def test_a_sub_second_sla_reads_in_milliseconds() -> None:
    """A 500 ms max_lag's reason says so, not "more than max_lag 0s"."""
    src = hw.source("src")

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="500ms"))
    def report(src: Any) -> Any:
        return src

    with Harness(hw.Definitions([src, report]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.advance(seconds=1)
        assert h.freshness("report").late is True
        assert "missing for 1s, more than max_lag 500ms" in h.freshness("report").reasons


def test_max_lag_counts_from_the_original_upstream_change() -> None:
    """Below an eager middle asset, the lag counts from the source change, not the middle run."""
    src = hw.source("src")

    @hw.asset(freshness=hw.Freshness(max_lag="1h"))
    def middle(src: Any) -> Any:
        return src

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="1h"))
    def leaf(middle: Any) -> Any:
        return middle

    with Harness(hw.Definitions([src, middle, leaf]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.materialize("leaf")
        h.advance(minutes=30)
        h.observe("src", value=2)
        h.advance(minutes=20)  # middle re-ran at 00:30, leaf is behind since 00:30
        assert h.freshness("leaf").lag == timedelta(minutes=20)
        h.advance(minutes=40)
        assert h.freshness("leaf").late
        assert h.events(kind="freshness_violated", asset="leaf")[0].timestamp.isoformat() == (
            "2026-01-05T01:30:00+00:00"
        )
        assert h.freshness("middle").late is False


def test_max_lag_on_partitions_is_per_partition() -> None:
    daily = hw.DailyPartitions(start="2026-01-01")
    raw = hw.source("raw", partitions=daily)

    @hw.asset(partitions=daily, policy=hw.manual(), freshness=hw.Freshness(max_lag="2h"))
    def clean(raw: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, clean]), now="2026-01-05T00:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-03")
        h.advance(hours=1)
        h.observe("raw", value=2, partition="2026-01-04")
        h.advance(hours=1)
        assert h.freshness("clean", partition="2026-01-03").late
        assert not h.freshness("clean", partition="2026-01-04").late
        assert not h.freshness("clean", partition="2026-01-02").late  # nothing upstream changed
        h.advance(hours=1)
        h.materialize("clean", partition=["2026-01-03", "2026-01-04"])
        h.advance("1d")
        for day in ("2026-01-03", "2026-01-04"):
            assert _partition_kinds(h, "clean", day) == [
                "freshness_violated",
                "freshness_recovered",
            ]
        assert _partition_kinds(h, "clean", "2026-01-02") == []


def _partition_kinds(h: Harness, asset: str, partition: str) -> list[str]:
    return [
        e.kind
        for e in h.events(asset=asset, partition=partition)
        if e.kind.startswith("freshness_")
    ]


def test_max_age_on_an_unpartitioned_asset() -> None:
    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def snapshot() -> int:
        return 1

    with Harness(hw.Definitions([snapshot]), now="2026-01-05T00:00:00Z") as h:
        h.materialize("snapshot")
        h.advance(minutes=59)
        assert not h.freshness("snapshot").late
        h.advance(minutes=1)
        assert h.freshness("snapshot").late
        assert h.freshness("snapshot").age == timedelta(hours=1)
        h.advance(hours=5)
        h.materialize("snapshot", force=True)
        h.advance(minutes=30)
        assert _kinds(h, "snapshot") == ["freshness_violated", "freshness_recovered"]


def test_max_age_on_a_daily_source_expects_each_day_to_arrive() -> None:
    """SPEC §1's sales_raw: a day's file is late once max_age has passed since the day closed."""
    daily = hw.DailyPartitions(start="2026-01-01")
    raw = hw.FileSource(
        "raw", "data/{partition}.csv", partitions=daily, freshness=hw.Freshness(max_age="1d")
    )

    with Harness(hw.Definitions([raw]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        assert not h.freshness("raw", partition="2026-01-04").late
        assert not h.freshness("raw", partition="2026-01-02").late  # closed before first seen
        h.advance("1d")
        assert h.freshness("raw", partition="2026-01-04").late
        assert not h.freshness("raw", partition="2026-01-05").late
        h.observe("raw", "v1", partition="2026-01-04")
        assert not h.freshness("raw", partition="2026-01-04").late
        assert _partition_kinds(h, "raw", "2026-01-04") == [
            "freshness_violated",
            "freshness_recovered",
        ]


def test_status_shows_lateness() -> None:
    from headwater._report import status_rows
    from headwater.eventlog import EventLogReader

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def snapshot() -> int:
        return 1

    defs = hw.Definitions([snapshot])
    with Harness(defs, now="2026-01-05T00:00:00Z") as h:
        h.materialize("snapshot")
        h.advance(hours=2)
        (row,) = status_rows(defs, EventLogReader(h.state_dir).load_state(), h.now)
        assert row.late is True
        assert "max_age 1h" in row.reason


def test_a_source_cannot_declare_max_lag_without_inputs_mattering() -> None:
    """A source has no upstream, so only its max_age can make it late."""
    src = hw.source("src", freshness=hw.Freshness(max_lag="1m"))
    with Harness(hw.Definitions([src]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", "v1")
        h.advance("1d")
        assert not h.freshness("src").late


def test_a_violation_no_sla_covers_any_more_is_closed_at_the_next_start(tmp_path: Any) -> None:
    """The SLA is removed (or its asset) while late: nothing would ever recover it, and
    retention keeps open violations for ever, so the next start closes it, saying why."""

    def defs(with_sla: bool, with_asset: bool = True) -> hw.Definitions:
        sla = hw.Freshness(max_age="1h") if with_sla else None

        @hw.asset(policy=hw.manual(), freshness=sla)
        def snapshot() -> int:
            return 1

        @hw.asset(policy=hw.manual())
        def other() -> int:
            return 2

        return hw.Definitions([snapshot, other] if with_asset else [other])

    for with_asset in (True, False):
        state_dir = tmp_path / str(with_asset)
        with Harness(defs(True), now="2026-01-05T00:00:00Z", state_dir=state_dir) as h:
            h.materialize("snapshot")
            h.advance(hours=2)
            assert _kinds(h, "snapshot") == ["freshness_violated"]
        edited = defs(False, with_asset)
        with (
            structlog.testing.capture_logs() as logs,
            Harness(edited, now="2026-01-05T03:00:00Z", state_dir=state_dir) as h,
        ):
            h.tick()
            assert _kinds(h, "snapshot") == ["freshness_violated", "freshness_recovered"]
            said = [e for e in logs if e["event"] == "freshness_recovered"]
            assert [(e["asset"], e["log_level"]) for e in said] == [("snapshot", "warning")]
            (closed,) = h.events(kind="freshness_recovered")
            assert (
                closed.payload["reason"] == "no freshness SLA of the definitions covers it any more"
            )
            h.tick()
            assert _kinds(h, "snapshot") == ["freshness_violated", "freshness_recovered"]
