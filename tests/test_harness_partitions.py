"""Partition-level staleness and the partition mappings of SPEC §1, through the Harness."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

import headwater as hw
from headwater._report import status_rows
from headwater.testing import Harness

daily = hw.DailyPartitions(start="2026-01-01")


def _daily_pipeline() -> hw.Definitions:
    raw = hw.source("raw", partitions=daily)

    @hw.asset(partitions=daily)
    def clean(raw: Any, context: hw.Context) -> Any:
        return (context.partition, raw)

    @hw.asset
    def total(clean: dict[str, Any]) -> Any:
        return sorted(clean)

    return hw.Definitions([raw, clean, total])


def test_one_partition_changes_only_it_reruns() -> None:
    """A new version of one day re-runs that day (and the roll-up), not the other days."""
    with Harness(_daily_pipeline(), now="2026-01-10T00:00:00Z") as h:
        for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
            h.observe("raw", value=day, partition=day)
        tick = h.tick()
        assert sorted(p for a, p in tick.materialized if a == "clean") == [
            "2026-01-01",
            "2026-01-02",
            "2026-01-03",
        ]
        h.observe("raw", value="new", partition="2026-01-02")
        tick = h.tick()
        assert tick.materialized == [("clean", "2026-01-02"), ("total", None)]
        assert h.state("clean", partition="2026-01-01") == "fresh"
        assert h.value("clean", partition="2026-01-02") == ("2026-01-02", "new")


def test_fifty_partitions_landing_at_once_give_fifty_downstream_runs() -> None:
    """50 partitions observed together -> 50 downstream partition runs, then one roll-up."""
    with Harness(_daily_pipeline(), now="2026-03-01T00:00:00Z") as h:
        keys = [f"2026-01-{d:02d}" for d in range(1, 32)] + [
            f"2026-02-{d:02d}" for d in range(1, 20)
        ]
        assert len(keys) == 50
        for key in keys:
            h.observe("raw", value=key, partition=key)
        tick = h.tick()
        cleaned = [p for a, p in tick.materialized if a == "clean"]
        assert sorted(cleaned) == keys
        assert tick.materialized[-1] == ("total", None)
        assert len(tick.materialized) == 51


def test_context_carries_the_partition_and_run() -> None:
    """The context parameter gets the asset, partition, run id and the virtual time."""
    seen: list[hw.Context] = []
    raw = hw.source("raw", partitions=daily)

    @hw.asset(partitions=daily)
    def clean(raw: Any, context: hw.Context) -> Any:
        seen.append(context)
        context.log.info("inside", rows=1)
        return raw

    with Harness(hw.Definitions([raw, clean]), now="2026-01-05T12:00:00Z") as h:
        h.observe("raw", "v1", partition="2026-01-03")
        h.tick()
        (ctx,) = seen
        assert (ctx.asset, ctx.partition) == ("clean", "2026-01-03")
        assert ctx.now == h.now
        (event,) = h.events(kind="materialization", asset="clean")
        assert ctx.run_id == event.run_id


def test_partitioned_to_unpartitioned_passes_a_dict_of_existing_partitions() -> None:
    """The roll-up receives {partition: value} of the partitions that exist, and re-runs when one appears."""
    with Harness(_daily_pipeline(), now="2026-01-10T00:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-01")
        h.tick()
        assert h.value("total") == ["2026-01-01"]
        h.observe("raw", value=2, partition="2026-01-04")
        tick = h.tick()
        assert tick.materialized == [("clean", "2026-01-04"), ("total", None)]
        assert h.value("total") == ["2026-01-01", "2026-01-04"]


@pytest.mark.parametrize(
    ("before", "after", "gone"),
    [
        (hw.StaticPartitions(["a", "b", "c"]), hw.StaticPartitions(["a", "b"]), "c"),
        (daily, hw.DailyPartitions(start="2026-01-02"), "2026-01-01"),
    ],
    ids=["static key removed", "time range starts later"],
)
def test_a_partition_dropped_from_the_definition_is_no_longer_read_by_a_roll_up(
    tmp_path: Any, before: hw.PartitionsDefinition, after: hw.PartitionsDefinition, gone: str
) -> None:
    """Definitions change between runs of the daemon: a partition the new one does not have
    no longer exists, and the roll-up of all partitions runs again without it (as without a
    deleted one), saying why. Its data stays in the log: ``status`` shows it as removed (not
    fresh, never late), and ``why`` explains it rather than refusing the key ``status``
    shows; a key the log never knew is still refused."""

    def pipeline(parts: hw.PartitionsDefinition) -> hw.Definitions:
        @hw.asset(partitions=parts)
        def clean(raw: Any, context: hw.Context) -> Any:
            return context.partition

        @hw.asset
        def total(clean: dict[str, Any]) -> Any:
            return sorted(clean)

        return hw.Definitions([hw.source("raw", partitions=parts), clean, total])

    keys = (
        ["a", "b", "c"] if isinstance(before, hw.StaticPartitions) else ["2026-01-01", "2026-01-02"]
    )
    with Harness(pipeline(before), now="2026-01-10T00:00:00Z", state_dir=tmp_path) as h:
        for key in keys:
            h.observe("raw", value=key, partition=key)
        h.tick()
        assert h.value("total") == keys
    with Harness(pipeline(after), now="2026-01-10T00:00:00Z", state_dir=tmp_path) as h:
        assert h.state("total") == "stale"
        assert f"input clean[{gone}] disappeared" in h.why("total")
        assert h.tick().materialized == [("total", None)]
        assert h.value("total") == [k for k in keys if k != gone]
        assert h.tick().materialized == []
        rows = {(r.asset, r.partition): r for r in status_rows(h.defs, h.engine.state, h.now)}
        for key in ("raw", "clean"):
            assert (rows[(key, gone)].state, rows[(key, gone)].late) == ("removed", False)
            assert rows[(key, gone)].data_version is not None
            assert {rows[(key, k)].state for k in keys if k != gone} == {"fresh"}
        why = h.why("clean", gone)
        assert why[:2] == [
            f"clean[{gone}] is removed",
            f"no longer a partition of clean ({after.describe()}): nothing is decided for it; "
            "its history is kept",
        ]
        assert why[2].startswith("last materialized at "), why
        assert h.why("raw", gone)[2].startswith("last observed change at ")
        with pytest.raises(hw.PartitionKeyError):
            h.why("clean", "2025-01-01" if gone.startswith("2026") else "zz")


def test_a_renamed_dynamic_partition_set_is_a_new_set_for_a_roll_up(tmp_path: Any) -> None:
    """``DynamicPartitions("inbox")`` renamed ``"inbox2"``: the keys of the old set are not
    the new one's, so the roll-up of all partitions no longer reads them."""

    def pipeline(name: str) -> hw.Definitions:
        parts = hw.DynamicPartitions(name)

        @hw.asset(partitions=parts)
        def clean(raw: Any) -> Any:
            return raw

        @hw.asset
        def total(clean: dict[str, Any]) -> Any:
            return sorted(clean.items())

        return hw.Definitions([hw.source("raw", partitions=parts), clean, total])

    with Harness(pipeline("inbox"), state_dir=tmp_path) as h:
        h.observe("raw", value=1, partition="x")
        h.tick()
        assert h.value("total") == [("x", 1)]
    with Harness(pipeline("inbox2"), state_dir=tmp_path) as h:
        assert h.state("total") == "stale"
        assert "input clean[x] disappeared" in h.why("total")
        h.observe("raw", value=5, partition="z")
        assert h.tick().materialized == [("clean", "z"), ("total", None)]
        assert h.value("total") == [("z", 5)]


def test_a_roll_up_reads_a_source_partition_observed_before_its_window_closed() -> None:
    """A file for today lands during the day: the source has today's data now, and a reader
    of all its partitions reads it (only a key its definition cannot have is left out)."""
    raw = hw.source("raw", partitions=daily)

    @hw.asset
    def roll(raw: dict[str, Any]) -> Any:
        return sorted(raw.items())

    with Harness(hw.Definitions([raw, roll]), now="2026-01-05T12:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-04")
        h.observe("raw", value=2, partition="2026-01-05")
        assert h.tick().materialized == [("roll", None)]
        assert h.value("roll") == [("2026-01-04", 1), ("2026-01-05", 2)]
        h.advance("13h")
        assert h.state("roll") == "fresh"


def test_unpartitioned_upstream_fans_out_to_static_partitions() -> None:
    """Every partition of a statically partitioned asset depends on an unpartitioned input."""
    regions = hw.StaticPartitions(["eu", "us"])
    rates = hw.source("rates")

    @hw.asset(partitions=regions)
    def priced(rates: Any, context: hw.Context) -> Any:
        return f"{context.partition}:{rates}"

    with Harness(hw.Definitions([rates, priced])) as h:
        h.observe("rates", value=1)
        assert sorted(h.tick().materialized) == [("priced", "eu"), ("priced", "us")]
        h.observe("rates", value=2)
        assert sorted(h.tick().materialized) == [("priced", "eu"), ("priced", "us")]
        assert h.value("priced", partition="us") == "us:2"


def test_time_partitions_without_partitioned_inputs_fill_only_the_newest_window() -> None:
    """History is a backfill: an eager daily root fills yesterday, then each new day as it completes."""
    src = hw.source("src")

    @hw.asset(partitions=daily)
    def snapshot(src: Any, context: hw.Context) -> Any:
        return context.partition

    with Harness(hw.Definitions([src, snapshot]), now="2026-01-05T10:00:00Z") as h:
        h.observe("src", "v1")
        assert h.tick().materialized == [("snapshot", "2026-01-04")]
        assert h.state("snapshot", partition="2026-01-02") == "missing"
        tick = h.advance("1d")
        assert tick.materialized == [("snapshot", "2026-01-05")]
        assert h.materialize("snapshot", partition="2026-01-02").materialized == [
            ("snapshot", "2026-01-02")
        ]


def test_a_partition_becomes_runnable_when_its_window_completes() -> None:
    """A file for today waits until today is over; the clock then makes it run."""
    with Harness(_daily_pipeline(), now="2026-01-05T10:00:00Z") as h:
        h.observe("raw", value="early", partition="2026-01-05")
        assert [a for a, _ in h.tick().materialized] == []
        tick = h.advance(hours=14)
        assert ("clean", "2026-01-05") in tick.materialized


def test_dynamic_partitions_appear_with_observations() -> None:
    """A dynamic source's keys appear as they are observed, and downstream partitions follow."""
    inbox = hw.DynamicPartitions("inbox")
    files = hw.source("files", partitions=inbox)

    @hw.asset(partitions=inbox)
    def parsed(files: Any, context: hw.Context) -> Any:
        return context.partition

    with Harness(hw.Definitions([files, parsed])) as h:
        h.observe("files", "v1", partition="a.csv")
        h.observe("files", "v1", partition="b.csv")
        assert sorted(h.tick().materialized) == [("parsed", "a.csv"), ("parsed", "b.csv")]
        assert h.add_partitions("inbox", ["c.csv", "a.csv"]) == ["c.csv"]
        tick = h.tick()
        assert tick.skipped == {}  # its file has not arrived: idle, not waiting on anything
        assert h.state("parsed", partition="c.csv") == "missing"
        assert "waiting: input files[c.csv] is missing" in h.why("parsed", partition="c.csv")
        assert len(h.events(kind="partitions_added")) == 3


def test_multi_partitions_key_by_each_dimension() -> None:
    """Multi partitions are keyed 'date|region' and map identically."""
    multi = hw.MultiPartitions({"date": daily, "region": hw.StaticPartitions(["eu", "us"])})
    raw = hw.source("raw", partitions=multi)

    @hw.asset(partitions=multi)
    def clean(raw: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, clean]), now="2026-01-03T00:00:00Z") as h:
        h.observe("raw", value=1, partition="2026-01-01|eu")
        assert h.tick().materialized == [("clean", "2026-01-01|eu")]
        assert h.state("clean", partition="2026-01-02|us") == "missing"
        with pytest.raises(hw.PartitionKeyError, match=re.escape("'2026-01-01|mars'")):
            h.observe("raw", value=1, partition="2026-01-01|mars")


def test_partition_keys_that_do_not_exist_are_named() -> None:
    """A bad or future partition key is an error naming the asset and the key."""
    with Harness(_daily_pipeline(), now="2026-01-05T00:00:00Z") as h:
        with pytest.raises(hw.PartitionKeyError, match="'2026-13-01'"):
            h.observe("raw", "v1", partition="2026-13-01")
        with pytest.raises(
            hw.PartitionKeyError, match="asset 'clean': partition '2026-02-01' does not exist"
        ):
            h.materialize("clean", partition="2026-02-01")
        with pytest.raises(hw.PartitionKeyError, match="is partitioned"):
            h.state("clean")


def test_a_change_through_every_mapping_runs_each_partition_once_after_its_inputs() -> None:
    """identity -> identity -> all -> fan-out: ten partitions change at once, more than there
    are slots, one of them slow;
    the roll-up waits for all ten (it reads them all), runs once, and only then do the
    fanned-out partitions run, once each; the partitions that did not change run nothing."""
    keys = [f"r{i:02}" for i in range(12)]
    changed = keys[:10]
    regions = hw.StaticPartitions(keys)
    orders = hw.source("orders", partitions=regions)

    @hw.asset(partitions=regions)
    def staged(orders: Any, context: hw.Context) -> Any:
        if context.partition == changed[-1]:
            time.sleep(0.3)  # a slow partition: the others get far ahead of it
        return orders

    @hw.asset(partitions=regions)
    def cleaned(staged: Any, context: hw.Context) -> Any:
        return (context.partition, staged)

    @hw.asset
    def volume(cleaned: dict[str, Any]) -> Any:
        return sum(v for _, v in cleaned.values())

    @hw.asset(partitions=regions)
    def share(volume: Any, cleaned: Any) -> Any:
        return cleaned[1] / volume

    with Harness(hw.Definitions([orders, staged, cleaned, volume, share])) as h:
        for region in keys:
            h.observe("orders", value=1, partition=region)
        h.tick()
        for region in changed:
            h.observe("orders", value=2, partition=region)
        done = h.tick().materialized
        assert len(done) == len(set(done)) == 2 * len(changed) + 1 + len(keys), done
        rolled_up = done.index(("volume", None))
        assert rolled_up > max(done.index(("cleaned", r)) for r in changed)
        assert all(done.index(("share", r)) > rolled_up for r in keys)
        assert h.value("volume") == 22
        assert h.value("share", partition=keys[-1]) == 1 / 22


def test_a_reason_names_ten_changed_inputs_and_counts_the_rest() -> None:
    """A roll-up of 30 partitions that all changed: its reason named all 30 (500 made one of
    28,000 characters, in every event, `plan`, `why` and `status`: hostile34c bug17)."""
    keys = [f"k{i:02d}" for i in range(30)]
    raw = hw.source("raw", partitions=hw.StaticPartitions(keys))

    @hw.asset
    def total(raw: dict[str, int]) -> int:
        return sum(raw.values())

    with Harness(hw.Definitions([raw, total])) as h:
        for key in keys:
            h.observe("raw", value=1, partition=key)
        h.tick()
        for key in keys:
            h.observe("raw", value=2, partition=key)
        reasons = h.why("total")
        assert any("input raw[k09] changed" in r for r in reasons), reasons
        assert not any("raw[k10]" in r for r in reasons), reasons
        assert any("and 20 more inputs changed" in r for r in reasons), reasons
        h.tick()
        started = h.events(kind="run_started", asset="total")[-1]
        assert "and 20 more inputs changed" in started.payload["reason"]
        assert len(started.payload["reason"]) < 1000


def test_an_observation_of_a_multi_partition_adds_the_key_of_its_dynamic_dimension() -> None:
    """A source partitioned by customer (dynamic) by region: observing ``k1|eu`` adds ``k1`` to
    the customers, as observing a plain dynamic partition adds its key, and its reader runs
    (the observation was recorded, the key never added, and the partition shown as removed:
    hostile35b bug4)."""
    customers = hw.DynamicPartitions("cust")
    by_region = hw.MultiPartitions({"c": customers, "r": hw.StaticPartitions(["eu", "us"])})
    m = hw.source("m", partitions=by_region)

    @hw.asset(partitions=by_region)
    def ma(m: int) -> int:
        return m

    with Harness(hw.Definitions([m, ma]), now="2026-01-05T00:00:00Z") as h:
        h.observe("m", value=1, partition="k1|eu")
        assert h.tick().materialized == [("ma", "k1|eu")]
        assert list(h.engine.state.dynamic_keys("cust")) == ["k1"]
        assert h.state("ma", "k1|us") == "missing"  # the key's other partitions exist now
