"""SPEC §4 in its corners, on the virtual clock: lag never counts from before the inputs
existed, a new partition does not inherit older changes, the original change is carried
through assets without an SLA of their own, and the harness runs what is due at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import headwater as hw
from headwater.planning._dryrun import dry_run
from headwater.planning._freshness import behind_upstream
from headwater.testing import Harness

daily = hw.DailyPartitions(start="2026-01-01")


def _violations(h: Harness, asset: str) -> list[tuple[str | None, str]]:
    return [
        (e.partition, e.timestamp.isoformat())
        for e in h.events(kind="freshness_violated", asset=asset)
    ]


def test_a_partition_whose_input_never_arrived_is_not_late_by_max_lag() -> None:
    """An unpartitioned input seen, the partitioned one never: no alarm that cannot clear.
    Once the missing input arrives, the lag counts from its arrival."""
    raw = hw.source("raw", partitions=daily)
    config = hw.source("config")

    @hw.asset(partitions=daily, policy=hw.manual(), freshness=hw.Freshness(max_lag="15m"))
    def clean(raw: Any, config: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, config, clean]), now="2026-01-03T00:00:00Z") as h:
        h.observe("config", value={"x": 1})
        h.advance("1d")
        assert _violations(h, "clean") == []
        assert h.freshness("clean", partition="2026-01-02").lag is None  # cannot start yet
        h.observe("raw", value=1, partition="2026-01-02")  # at 2026-01-04T00:00
        assert h.freshness("clean", partition="2026-01-02").deadline is not None
        assert h.freshness("clean", partition="2026-01-02").deadline.isoformat() == (
            "2026-01-04T00:15:00+00:00"
        )
        h.advance("15m")
        assert _violations(h, "clean") == [("2026-01-02", "2026-01-04T00:15:00+00:00")]


def test_a_partition_whose_input_was_deleted_is_late_by_max_lag() -> None:
    """The input arrived, then was deleted: the reader cannot reflect that change until the
    input comes back, so it is late ``max_lag`` after the deletion. Only an input that never
    arrived holds the lag back (hostile34c bug16: "on time" for hours, and never recorded)."""
    raw = hw.source("raw", partitions=daily)

    @hw.asset(partitions=daily, freshness=hw.Freshness(max_lag="10m"))
    def clean(raw: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, clean]), now="2026-01-03T00:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-02")
        h.tick()
        h.advance("1h")
        h.observe("raw", partition="2026-01-02", deleted=True)  # at 01:00
        assert h.freshness("clean", partition="2026-01-02").deadline.isoformat() == (
            "2026-01-03T01:10:00+00:00"
        )
        h.advance("3h")
        assert h.freshness("clean", partition="2026-01-02").late
        assert _violations(h, "clean") == [("2026-01-02", "2026-01-03T01:10:00+00:00")]


def test_a_new_partition_does_not_carry_older_changes_into_its_readers() -> None:
    """A reader of all partitions, up to date, is not late the moment a partition appears:
    it could not reflect that partition before it existed."""
    raw = hw.source("raw", partitions=daily)

    @hw.asset(partitions=daily, policy=hw.manual())
    def clean(raw: Any) -> Any:
        return raw

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="15m"))
    def total(clean: dict[str, Any]) -> int:
        return len(clean)

    with Harness(hw.Definitions([raw, clean, total]), now="2026-01-03T01:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-01")
        h.materialize("clean", partition="2026-01-01")
        h.materialize("total")
        h.advance(hours=1, minutes=1)  # 02:01
        h.observe("raw", value=2, partition="2026-01-02")
        h.advance(minutes=19, seconds=11)  # 02:20:11: the new partition is materialized late
        h.materialize("clean", partition="2026-01-02")
        h.advance(seconds=1)
        status = h.freshness("total")
        assert not status.late and status.lag == timedelta(seconds=1)
        h.advance(minutes=15)
        assert _violations(h, "total") == [(None, "2026-01-03T02:35:11+00:00")]


def test_max_lag_through_a_cron_intermediate_counts_from_the_original_change() -> None:
    """The leaf is behind the change of 01:05 from then, though the cron asset between
    produces it only at its 02:00 tick: late at 01:35, saying what it waits on (it went late
    only at 02:00, when the tick carried the change down: hostile34c bug2)."""
    src = hw.source("src")

    @hw.asset(policy=hw.on_cron("0 * * * *"))
    def hourly(src: Any) -> Any:
        return src

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="30m"))
    def leaf(hourly: Any) -> Any:
        return hourly

    with Harness(hw.Definitions([src, hourly, leaf]), now="2026-01-05T00:30:00Z") as h:
        h.observe("src", value=1)
        h.advance(minutes=30)  # 01:00: hourly runs
        h.materialize("leaf")
        h.advance(minutes=5)
        h.observe("src", value=2)  # 01:05
        h.advance(minutes=29)
        assert not h.freshness("leaf").late
        h.advance(minutes=1)
        assert h.freshness("leaf").reasons == (
            "behind hourly (stale) for 30m, more than max_lag 30m",
        )
        h.advance(minutes=25)  # 02:00: hourly runs; leaf is stale itself now
        assert h.freshness("leaf").late
        assert _violations(h, "leaf") == [(None, "2026-01-05T01:35:00+00:00")]


def test_max_lag_through_a_retrying_intermediate_counts_from_the_original_change() -> None:
    src = hw.source("src")
    calls: list[int] = []

    @hw.asset(retries=hw.Retry(max_attempts=2, delay="10m"))
    def flaky(src: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("not yet")
        return src

    @hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_lag="15m"))
    def leaf(flaky: Any) -> Any:
        return flaky

    with Harness(hw.Definitions([src, flaky, leaf]), now="2026-01-05T00:30:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.materialize("leaf")
        h.advance(minutes=30)
        h.observe("src", value=2)  # 01:00; flaky fails, retries at 01:10
        h.advance(minutes=10)
        assert h.state("flaky") == "fresh"
        assert h.freshness("leaf").deadline is not None
        assert h.freshness("leaf").deadline.isoformat() == "2026-01-05T01:15:00+00:00"


def test_advance_runs_what_is_due_now_first() -> None:
    """observe() at 00:00 then advance("10m"): the eager reader runs at 00:00, so a one-minute
    SLA is never breached."""
    src = hw.source("src")

    @hw.asset(freshness=hw.Freshness(max_lag="1m"))
    def quick(src: Any) -> Any:
        return src

    with Harness(hw.Definitions([src, quick]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        result = h.advance("10m")
        assert result.materialized == [("quick", None)]
        (event,) = h.events(kind="materialization", asset="quick")
        assert event.timestamp.isoformat() == "2026-01-05T00:00:00+00:00"
        assert _violations(h, "quick") == []


def test_a_deleted_partition_reaches_readers_of_all_partitions() -> None:
    """Readers of every partition see the dict without it (stale, run again); the
    partition-wise reader waits, saying the input was deleted."""
    parts = hw.StaticPartitions(["a", "b"])
    src = hw.source("src", partitions=parts)

    @hw.asset(partitions=parts)
    def clean(src: int) -> int:
        return src

    @hw.asset
    def total(src: dict[str, int]) -> int:
        return sum(src.values())

    with Harness(hw.Definitions([src, clean, total])) as h:
        h.observe("src", value=1, partition="a")
        h.observe("src", value=2, partition="b")
        h.tick()
        assert h.value("total") == 3
        h.observe("src", partition="b", deleted=True)
        tick = h.tick()
        assert tick.materialized == [("total", None)]
        assert h.value("total") == 1
        reason = tick.skipped[("clean", "b")]
        assert reason.startswith("waiting: input src[b] was deleted at"), reason
        assert "no input has arrived" not in " ".join(h.why("clean", partition="b"))


def test_a_window_with_no_data_by_its_max_age_is_recorded_late() -> None:
    """The deadline starts when the window closes, with no event of its own: the clock alone
    must record the violation (once), so that logs and `status --check` see it."""
    days = hw.DailyPartitions(start="2026-01-05")
    raw = hw.source("raw", partitions=days)

    @hw.asset(partitions=days, policy=hw.manual(), freshness=hw.Freshness(max_age="2h"))
    def report(raw: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, report]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        h.advance("1d")
        h.observe("raw", value=1, partition="2026-01-05")
        h.advance("6h")
        assert h.freshness("report", partition="2026-01-05").late
        (event,) = h.events(kind="freshness_violated", asset="report")
        assert event.partition == "2026-01-05"
        assert event.timestamp == datetime(2026, 1, 6, 2, tzinfo=UTC)


def test_max_age_of_a_new_dynamic_key_counts_from_its_addition() -> None:
    """A key added hours after the asset's first evaluation is not late at once (it did not
    exist), and is recorded late ``max_age`` after its addition, for a holder partitioned by
    the dynamic set and one with it as a dimension of a multi-partition alike: the clock alone
    records it (no record of theirs changed), so logs, alerts and /metrics see it."""
    customers = hw.DynamicPartitions("customers")
    multi = hw.MultiPartitions({"c": customers, "r": hw.StaticPartitions(["eu", "us"])})
    src = hw.source("src", partitions=customers)
    msrc = hw.source("msrc", partitions=multi)

    @hw.asset(partitions=customers, policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def plain(src: Any) -> Any:
        return src

    @hw.asset(partitions=multi, policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def m(msrc: Any) -> Any:
        return msrc

    holders = [("plain", "k1"), ("m", "k1|eu"), ("m", "k1|us")]
    with Harness(hw.Definitions([src, plain, msrc, m]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        h.advance("2h")
        h.add_partitions("customers", ["k1"])
        h.advance("30m")
        assert [h.freshness(*n).late for n in holders] == [False, False, False]
        assert h.events(kind="freshness_violated") == []
        h.advance("31m")
        assert [h.freshness(*n).late for n in holders] == [True, True, True]
        violations = h.events(kind="freshness_violated")
        assert sorted((e.asset, e.partition) for e in violations) == sorted(holders)
        assert {e.timestamp for e in violations} == {datetime(2026, 1, 5, 3, tzinfo=UTC)}
        assert "'k1' was added to 'customers' 1h ago" in violations[0].payload["reason"]


def test_a_file_processed_as_it_lands_is_no_sla_breach() -> None:
    """The key of a file landing in an inbox is added as it is observed; its reader runs at
    once, within its ``max_age`` of the key's existence: no violation, no recovery."""
    inbox = hw.DynamicPartitions("inbox")
    src = hw.source("src", partitions=inbox)

    @hw.asset(partitions=inbox, freshness=hw.Freshness(max_age="1h"))
    def parsed(src: Any) -> Any:
        return src

    with Harness(hw.Definitions([src, parsed]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        h.advance("2h")
        h.observe("src", value=1, partition="new-file")
        assert h.tick().materialized == [("parsed", "new-file")]
        h.advance("59m")
        assert not h.freshness("parsed", "new-file").late
        assert [e.kind for e in h.events() if e.kind.startswith("freshness")] == []


def test_a_dynamic_key_keeps_its_time_of_addition_across_a_restart(tmp_path: Path) -> None:
    """The time is in the state directory, not in memory: reopened 50 minutes after the
    addition, the partition goes late 10 minutes later, not an hour after the reopening (nor
    at once, as if it had existed since the asset's first evaluation)."""
    keys = hw.DynamicPartitions("keys")
    s = hw.source("s", partitions=keys, freshness=hw.Freshness(max_age="1h"))
    defs = hw.Definitions([s])
    with Harness(defs, now="2026-01-05T00:00:00Z", state_dir=tmp_path) as h:
        h.tick()
        h.advance("2h")
        h.add_partitions("keys", ["y"])
    with Harness(defs, now="2026-01-05T02:50:00Z", state_dir=tmp_path) as h:
        h.tick()
        assert not h.freshness("s", "y").late
        assert h.freshness("s", "y").deadline == datetime(2026, 1, 5, 3, tzinfo=UTC)
        h.advance("11m")
        (event,) = h.events(kind="freshness_violated")
        assert (event.partition, event.timestamp) == ("y", datetime(2026, 1, 5, 3, tzinfo=UTC))


def test_a_new_key_of_a_set_that_is_two_dimensions_sets_every_new_partitions_deadline() -> None:
    """One dynamic set as both dimensions: key ``q`` after ``p`` makes ``p|q``, ``q|p`` and
    ``q|q``, each recorded late ``max_age`` after the addition (only ``q|q`` was:
    hostile36a bug1)."""
    x = hw.DynamicPartitions("x")
    both = hw.MultiPartitions({"a": x, "b": hw.DynamicPartitions("x")})

    @hw.asset(partitions=both, policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def m() -> int:
        return 1

    with Harness(hw.Definitions([m]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        h.add_partitions("x", ["p"])
        h.advance("10m")
        h.add_partitions("x", ["q"])
        h.advance("2h")
        late = {e.partition: e.timestamp for e in h.events(kind="freshness_violated")}
        at_q = datetime(2026, 1, 5, 1, 10, tzinfo=UTC)
        assert late == {
            "p|p": datetime(2026, 1, 5, 1, tzinfo=UTC), "p|q": at_q, "q|p": at_q, "q|q": at_q
        }  # fmt: skip


def test_a_key_stamped_by_a_clock_that_was_ahead_counts_from_the_first_evaluation() -> None:
    """Added while the clock was a day ahead, then stepped back: the key's time is to come,
    so it is ignored (it kept the key on time for a day: hostile36a bug2)."""
    c = hw.DynamicPartitions("c")

    @hw.asset(partitions=c, policy=hw.manual(), freshness=hw.Freshness(max_age="1h"))
    def a() -> int:
        return 1

    with Harness(hw.Definitions([a]), now="2026-01-05T00:00:00Z") as h:
        h.tick()
        h.clock.step(datetime(2026, 1, 6, tzinfo=UTC))
        h.add_partitions("c", ["k"])
        h.clock.step(datetime(2026, 1, 5, 0, 1, tzinfo=UTC))
        h.tick()
        h.advance("3h")
        assert h.freshness("a", "k").late
        assert [e.partition for e in h.events(kind="freshness_violated")] == ["k"]


def test_a_new_key_of_a_time_and_dynamic_holder_is_late_by_its_windows_only() -> None:
    """Dynamic by hourly since a year ago: a key added mid-window owes nothing for the windows
    that closed before it existed, and its partition of the window open at its addition is
    recorded late ``max_age`` after that window closes (by the window timer: the addition
    itself checks none of its thousands of past windows)."""
    hourly = hw.HourlyPartitions("2025-01-01")
    keys = hw.DynamicPartitions("c")

    @hw.asset(
        partitions=hw.MultiPartitions({"t": hourly, "c": keys}),
        policy=hw.manual(),
        freshness=hw.Freshness(max_age="1h"),
    )
    def dm() -> int:
        return 1

    with Harness(hw.Definitions([dm]), now="2026-01-05T00:30:00Z") as h:
        h.tick()
        h.add_partitions("c", ["a", "b"])
        h.advance("2h")
        late = sorted((e.partition, e.timestamp) for e in h.events(kind="freshness_violated"))
        at = datetime(2026, 1, 5, 2, tzinfo=UTC)
        assert late == [("2026-01-05T00:00|a", at), ("2026-01-05T00:00|b", at)]


def test_max_lag_through_a_failing_intermediate_is_late_while_it_fails() -> None:
    """Two assets below one whose runs fail and retry: the reader of a reader of it is behind
    the change since it came, not from when the failing asset finally succeeds; it is recorded
    late at its ``max_lag`` and recovers once the change reached it (hostile34c bug7)."""
    src = hw.source("src")
    calls: list[int] = []

    @hw.asset(retries=hw.Retry(max_attempts=3, delay="15m", backoff=1.0))
    def flaky(src: Any) -> Any:
        if src == 2:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("flaky")
        return src

    @hw.asset
    def middle(flaky: Any) -> Any:
        return flaky

    @hw.asset(freshness=hw.Freshness(max_lag="10m"))
    def leaf(middle: Any) -> Any:
        return middle

    with Harness(hw.Definitions([src, flaky, middle, leaf]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=2)  # flaky fails; retries at 00:15 (fails) and 00:30
        h.tick()
        h.advance(minutes=9)
        assert not h.freshness("leaf").late
        h.advance(minutes=1)
        assert h.freshness("leaf").late
        assert h.freshness("leaf").reasons == (
            "behind flaky (failed) for 10m, more than max_lag 10m",
        )
        assert _violations(h, "leaf") == [(None, "2026-01-05T00:10:00+00:00")]
        h.advance(minutes=20)  # 00:30: flaky succeeds, middle and leaf run
        assert h.value("leaf") == 2
        assert not h.freshness("leaf").late
        (recovered,) = h.events(kind="freshness_recovered", asset="leaf")
        assert recovered.timestamp == datetime(2026, 1, 5, 0, 30, tzinfo=UTC)


def test_a_stuck_asset_that_produces_the_same_version_releases_the_assets_below() -> None:
    """A manual asset holds back a change: its readers below are late by ``max_lag``; run at
    last, it produces the version it had (early cutoff), so nothing below runs, and they are
    on time again, their violation closed, without a run of theirs."""
    src = hw.source("src")

    @hw.asset(policy=hw.manual())
    def parity(src: int) -> int:
        return src % 2

    @hw.asset
    def middle(parity: int) -> int:
        return parity

    @hw.asset(freshness=hw.Freshness(max_lag="1h"))
    def top(middle: int) -> int:
        return middle

    with Harness(hw.Definitions([src, parity, middle, top]), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        h.materialize("parity")
        h.tick()
        h.observe("src", value=3)
        h.tick()
        h.advance("2h")
        assert h.freshness("top").late
        assert _violations(h, "top") == [(None, "2026-01-05T01:00:00+00:00")]
        assert h.materialize("parity").materialized == [("parity", None)]
        h.tick()
        assert not h.freshness("top").late
        assert len(h.events(kind="materialization", asset="top")) == 1
        (recovered,) = h.events(kind="freshness_recovered", asset="top")
        assert recovered.timestamp == datetime(2026, 1, 5, 2, tzinfo=UTC)
        h.observe("src", value=4)  # a new change: counted from now, not from the old one
        h.advance("59m")
        assert not h.freshness("top").late
        h.advance("1m")
        assert _violations(h, "top")[-1] == (None, "2026-01-05T03:00:00+00:00")


def test_an_asset_stuck_across_a_restart_still_makes_the_assets_below_late(
    tmp_path: Path,
) -> None:
    """The timer that watches a stuck asset lives in memory: reopened, the owner sets it
    again from the state, and the reader below is recorded late at its instant."""
    src = hw.source("src")

    @hw.asset(policy=hw.manual())
    def held(src: int) -> int:
        return src

    @hw.asset(freshness=hw.Freshness(max_lag="1h"))
    def top(held: int) -> int:
        return held

    defs = hw.Definitions([src, held, top])
    with Harness(defs, now="2026-01-05T00:00:00Z", state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.materialize("held")
        h.tick()
        h.observe("src", value=2)
        h.tick()
        h.advance("10m")
    with Harness(defs, now="2026-01-05T00:20:00Z", state_dir=tmp_path) as h:
        h.tick()
        assert not h.freshness("top").late
        h.advance("50m")
        assert _violations(h, "top") == [(None, "2026-01-05T01:00:00+00:00")]


def _failing_on_two() -> Any:
    """An asset that fails (and retries every 30 minutes) while its input is 2."""

    @hw.asset(retries=hw.Retry(max_attempts=1000, delay="30m", backoff=1.0))
    def a0(src: int) -> int:
        if src == 2:
            raise ConnectionError("flaky")
        return src

    return a0


def test_a_run_for_another_input_does_not_clear_a_lateness_through_a_stuck_asset() -> None:
    """``a2`` reads the stuck chain and ``side``: a change of ``side`` runs it and ``a3``,
    which still do not reflect the change ``a0`` holds back: ``a3`` stays late (it was
    recorded recovered, and on time for hours: hostile36b bug2)."""
    src, side = hw.source("src"), hw.source("side")
    a0 = _failing_on_two()
    a1 = hw.asset("a1", deps=[a0])(lambda: 1)

    @hw.asset
    def a2(a1: int, side: int) -> int:
        return side

    @hw.asset(freshness=hw.Freshness(max_lag="10m"))
    def a3(a2: int) -> int:
        return a2

    with Harness(hw.Definitions([src, side, a0, a1, a2, a3]), now="2026-01-05T01:00Z") as h:
        h.observe("src", value=1)
        h.observe("side", value=1)
        h.tick()
        h.observe("src", value=2)
        h.tick()
        h.advance("11m")
        assert h.freshness("a3").late
        h.observe("side", value=2)
        assert ("a3", None) in h.tick().materialized
        h.advance("3h")
        assert h.freshness("a3").late
        assert h.events(kind="freshness_recovered") == []


def test_a_stuck_asset_up_to_date_again_without_a_run_releases_the_assets_below() -> None:
    """The input of the stuck asset changes back: it is up to date without running, and the
    reader below it is recorded on time again (the violation stayed open: hostile36b bug1)."""
    src = hw.source("src")
    a0 = _failing_on_two()
    a1 = hw.asset("a1", deps=[a0])(lambda: 1)
    a2 = hw.asset("a2", deps=[a1], freshness=hw.Freshness(max_lag="10m"))(lambda: 1)
    with Harness(hw.Definitions([src, a0, a1, a2]), now="2026-01-05T00:00Z") as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=2)
        h.tick()
        h.advance("11m")
        assert _violations(h, "a2") == [(None, "2026-01-05T00:10:00+00:00")]
        h.observe("src", value=1)
        h.tick()
        assert not h.freshness("a2").late
        (recovered,) = h.events(kind="freshness_recovered", asset="a2")
        assert recovered.timestamp == datetime(2026, 1, 5, 0, 11, tzinfo=UTC)


def test_plan_names_the_readers_a_failing_asset_leaves_behind_and_none_of_a_never_run_one(
    tmp_path: Path,
) -> None:
    """``plan`` agrees with ``status``: the reader below a failing asset is late (plan listed
    no SLA: hostile36b bug5); the reader of a manual asset that never ran is not late by
    ``max_lag`` (plan said it was: bug6)."""
    from headwater.planning._dryrun import dry_run

    src = hw.source("src")
    a0 = _failing_on_two()
    top = hw.asset("top", deps=[a0], freshness=hw.Freshness(max_lag="10m"))(lambda: 1)
    never = hw.asset("never", deps=[src], policy=hw.manual())(lambda: 1)
    reader = hw.asset("reader", deps=[never], freshness=hw.Freshness(max_lag="10m"))(lambda: 1)
    defs = hw.Definitions([src, a0, top, never, reader])
    with Harness(defs, now="2026-01-05T00:00Z", state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=2)
        h.tick()
        h.advance("15m")
        assert h.freshness("top").late and not h.freshness("reader").late
        risks = h._call(
            lambda: dry_run(defs, h.engine.state, h.engine.clock.now(), changed=None)
        ).risks
        assert [(r.asset, r.late) for r in risks] == [("top", True)]


def test_a_new_partition_does_not_take_away_a_lateness_held_back_above() -> None:
    """A reader of every partition, late behind one that fails: a file for a new key lands
    and its partition materializes; the reader, still waiting on the failing one, stays late
    from the first change (it was recorded recovered, its lag restarting at 0 with every new
    key: hostile36d bug6)."""
    keys = hw.DynamicPartitions("keys")
    s = hw.source("s", partitions=keys)

    @hw.asset(partitions=keys, retries=hw.Retry(max_attempts=1000, delay="30m", backoff=1.0))
    def a(s: int) -> int:
        if s == 2:
            raise ValueError("a")
        return s

    @hw.asset(freshness=hw.Freshness(max_lag="10m"))
    def c(a: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(a.items())

    with Harness(hw.Definitions([s, a, c]), now="2026-01-03T00:00:00Z") as h:
        h.observe("s", partition="k1", value=1)
        h.tick()
        h.advance("1h")
        h.observe("s", partition="k1", value=2)
        h.tick()
        h.advance("11m")
        h.observe("s", partition="k2", value=5)
        assert ("a", "k2") in h.tick().materialized
        status = h.freshness("c")
        assert status.late and status.lag == timedelta(minutes=11)
        assert [e.kind for e in h.events() if e.kind.startswith("freshness")] == [
            "freshness_violated"
        ]


def test_a_max_lag_added_to_an_asset_already_behind_counts_from_the_change(
    tmp_path: Path,
) -> None:
    """The SLA is added (a restart with new definitions) while ``m`` is behind a change of
    01:00 and ``c`` is behind ``a``, which fails on it: both are late at once, counted from
    01:00 (neither was ever late: the change came while nothing tracked it: hostile36d
    bug1)."""

    def defs(lag: hw.Freshness | None) -> hw.Definitions:
        s1 = hw.source("s1")
        a = _failing_on_two()
        m = hw.asset("m", deps=[s1], policy=hw.manual(), freshness=lag)(lambda: 1)
        b = hw.asset("b", deps=[a])(lambda: 1)
        c = hw.asset("c", deps=[b], freshness=lag)(lambda: 1)
        return hw.Definitions([s1, hw.source("src"), a, m, b, c])

    with Harness(defs(None), now="2026-01-05T00:00:00Z", state_dir=tmp_path) as h:
        h.observe("s1", value=1)
        h.observe("src", value=1)
        h.materialize("m")
        h.tick()
        h.advance("1h")
        h.observe("s1", value=2)
        h.observe("src", value=2)
        h.tick()
    with Harness(
        defs(hw.Freshness(max_lag="10m")), now="2026-01-05T01:30:00Z", state_dir=tmp_path
    ) as h:
        h.tick()
        assert h.freshness("m").lag == h.freshness("c").lag == timedelta(minutes=30)
        late = {e.asset: e.timestamp for e in h.events(kind="freshness_violated")}
        at = datetime(2026, 1, 5, 1, 30, tzinfo=UTC)
        assert late == {"m": at, "c": at}


def _left_behind() -> hw.Definitions:
    """``stuck`` (manual) above ``a1``, a lazy ``a2`` below it, pulled by ``a3``'s max_lag."""
    held, s = hw.source("held"), hw.source("s")

    @hw.asset(ins={"held": "held"}, policy=hw.manual())
    def stuck(held: Any) -> Any:
        return held

    @hw.asset(ins={"stuck": "stuck", "s": "s"})
    def a1(stuck: Any, s: Any) -> Any:
        return stuck, s

    @hw.asset(ins={"a1": "a1"}, policy=hw.lazy())
    def a2(a1: Any) -> Any:
        return a1

    @hw.asset(ins={"a2": "a2"}, freshness=hw.Freshness(max_lag="1h"))
    def a3(a2: Any) -> Any:
        return a2

    return hw.Definitions([held, s, stuck, a1, a2, a3])


def _released_then_changed(h: Harness) -> None:
    """``stuck`` holds a change back from 01:00 (pushed below at 02:00), its input changes
    back at 02:10 (released: ``a2`` keeps the change it remembered, which nothing holds back
    any more), and ``s`` changes at 02:40 (``a1`` about to run for it)."""
    h.observe("held", "1")
    h.observe("s", "1")
    h.materialize("stuck")
    h.materialize("a2")
    h.tick()
    h.advance(hours=1)
    h.observe("held", "2")
    h.tick()
    h.advance(minutes=70)
    h.observe("held", "1")
    h.tick()
    h.advance(minutes=30)
    h.observe("s", "2")


def test_a_change_left_from_a_released_stuck_asset_is_not_revived_by_a_later_one() -> None:
    """``a2`` remembers 01:00 from a stuck asset that has since been released; ``a1`` above
    it is stale now only for a change at 02:40. That is not why ``a2`` is behind since 01:00:
    the engine does not pull the lazy ``a2`` at once, and `plan` must not either (it found
    ``a1`` stale and took 01:00 for still held back: ``a2`` late since 02:00, run now)."""
    with Harness(_left_behind(), now="2026-01-05T00:00:00Z") as h:
        _released_then_changed(h)
        planned = dry_run(h.engine.defs, h.engine.state, h.now)
        ran = h.tick().materialized
    assert ran == [("a1", None)]
    assert [(s.asset, s.partition) for s in planned.steps] == ran
    assert "late at 2026-01-05T03:40:00+00:00" in planned.held[("a2", None)]


def test_what_is_stuck_above_a_partition_does_not_depend_on_what_was_asked_first() -> None:
    """``behind_upstream`` remembers, per partition, the stuck asset above it. Asked first of
    ``a1`` (nothing stuck above it), then of ``a2`` below: the walk from ``a2`` met ``a1`` in
    the memo and skipped ``a1``'s own state, so the answer for ``a2`` was None in one order
    and ``a1`` in the other (the engine and `plan` ask in different orders)."""
    with Harness(_left_behind(), now="2026-01-05T00:00:00Z") as h:
        _released_then_changed(h)
        alone = behind_upstream(h.engine.evaluator(), ("a2", None))
        ev = h.engine.evaluator()
        assert behind_upstream(ev, ("a1", None)) is None
        after = behind_upstream(ev, ("a2", None))
    assert alone == after == ("a1", None)
