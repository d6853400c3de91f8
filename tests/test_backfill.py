"""Backfills: a range of partitions, fresh ones skipped, failures reported per partition."""

from __future__ import annotations

from typing import Any

import headwater as hw
from headwater.testing import Harness

daily = hw.DailyPartitions(start="2026-01-01")


def _defs() -> hw.Definitions:
    src = hw.source("src")

    @hw.asset(partitions=daily)
    def snapshot(src: Any, context: hw.Context) -> Any:
        if context.partition == "2026-01-13":
            raise ValueError("bad day")
        return context.partition

    @hw.asset(partitions=daily)
    def after(snapshot: Any) -> Any:
        return snapshot

    return hw.Definitions([src, snapshot, after])


def test_backfill_of_31_days_skips_fresh_partitions_and_reports_failures() -> None:
    with Harness(_defs(), now="2026-02-10T00:00:00Z") as h:
        h.observe("src", "v1")
        assert h.tick().materialized == [("snapshot", "2026-02-09"), ("after", "2026-02-09")]
        h.materialize("snapshot", partition=["2026-01-05", "2026-01-06"])
        result = h.backfill("snapshot", "2026-01-01", "2026-01-31")
        done = [p for a, p in result.materialized if a == "snapshot"]
        assert len(done) == 31 - 2 - 1
        assert "2026-01-05" not in done and "2026-01-06" not in done
        assert result.failed == {("snapshot", "2026-01-13"): "ValueError: bad day"}
        assert ("after", "2026-01-20") in result.materialized  # eager dependents follow
        assert result.skipped[("after", "2026-01-13")].startswith(
            "waiting: input snapshot[2026-01-13] failed"
        )
        assert h.backfill("snapshot", "2026-01-01", "2026-01-31").materialized == []
        forced = h.backfill("snapshot", "2026-01-01", "2026-01-03", force=True)
        assert sorted(p for a, p in forced.materialized if a == "snapshot") == [
            "2026-01-01",
            "2026-01-02",
            "2026-01-03",
        ]


def test_backfill_range_errors_name_the_problem() -> None:
    import pytest

    with Harness(_defs(), now="2026-02-10T00:00:00Z") as h:
        with pytest.raises(hw.PartitionKeyError, match="comes after"):
            h.backfill("snapshot", "2026-01-10", "2026-01-01")
        with pytest.raises(hw.PartitionKeyError, match="does not exist"):
            h.backfill("snapshot", "2026-01-01", "2026-03-01")
        with pytest.raises(hw.SelectionError, match="is a source"):
            h.backfill("src", "2026-01-01", "2026-01-02")
