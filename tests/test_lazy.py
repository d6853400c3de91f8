"""``hw.lazy()``: runs only when a downstream freshness SLA needs it, just early enough.

On the virtual clock: the lazy asset starts exactly its lead before the deadline it protects,
the SLA holder is never late, and with no SLA downstream (only eager or cron readers) it never
runs at all. The lead itself (run durations along the way) is checked on the pure planner.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import headwater as hw
from headwater.planning import Evaluator
from headwater.planning._dryrun import dry_run
from headwater.planning._lazy import HEADROOM, MARGIN, pull
from headwater.testing import Harness

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _pipeline(freshness: hw.Freshness | None, *, reader_policy: hw.Policy | None = None) -> Any:
    raw = hw.source("raw")

    @hw.asset(policy=hw.lazy())
    def prepared(raw: Any) -> Any:
        return raw

    @hw.asset(freshness=freshness, policy=reader_policy)
    def report(prepared: Any) -> Any:
        return prepared

    return hw.Definitions([raw, prepared, report])


def _starts(h: Harness, asset: str) -> list[datetime]:
    return [e.timestamp for e in h.events(kind="run_started", asset=asset)]


def test_a_lazy_asset_runs_just_before_the_downstream_max_lag_would_be_missed() -> None:
    with Harness(_pipeline(hw.Freshness(max_lag="1h")), now=T0.isoformat()) as h:
        h.observe("raw", value=1)
        assert h.tick().materialized == []
        why = " ".join(h.why("prepared"))
        assert "lazy: pulled by report's max_lag 1h (late at 2026-01-05T01:00:00+00:00)" in why
        assert "runs at 2026-01-05T00:59:5" in why
        assert h.advance("59m").materialized == []
        assert h.advance("1m").materialized == [("prepared", None), ("report", None)]
        (start,) = _starts(h, "prepared")
        assert T0 + timedelta(hours=1) - timedelta(seconds=5) < start < T0 + timedelta(hours=1)
        assert h.events(kind="freshness_violated") == []

        h.advance("3h")
        h.observe("raw", value=2)  # a second change: pulled again, once, an hour later
        assert h.tick().materialized == []
        assert h.advance("59m").materialized == []
        assert h.advance("2h").materialized == [("prepared", None), ("report", None)]
        assert len(_starts(h, "prepared")) == 2
        assert h.events(kind="freshness_violated") == []
        assert h.value("report") == 2


def test_a_lazy_asset_with_only_eager_or_cron_readers_never_runs() -> None:
    for policy in (hw.eager(), hw.on_cron("0 * * * *")):
        with Harness(_pipeline(None, reader_policy=policy), now=T0.isoformat()) as h:
            h.observe("raw", value=1)
            h.tick()
            h.advance("3d")
            h.observe("raw", value=2)
            h.advance("3d")
            assert _starts(h, "prepared") == []
            assert _starts(h, "report") == []
            assert h.state("prepared") == "missing"
            assert "lazy: no downstream freshness SLA needs it" in " ".join(h.why("prepared"))
            h.materialize("prepared")  # asked for, it runs like any other
            assert h.state("prepared") == "fresh"


def test_max_age_downstream_pulls_a_stale_lazy_asset_before_the_holder_gets_too_old() -> None:
    with Harness(_pipeline(hw.Freshness(max_age="1d")), now=T0.isoformat()) as h:
        h.observe("raw", value=1)
        h.materialize(["prepared"])
        h.tick()
        assert h.value("report") == 1
        made = h.events(kind="materialization", asset="report")[-1].timestamp
        h.advance("1h")
        h.observe("raw", value=2)
        h.advance("22h")
        assert h.state("prepared") == "stale"  # not needed yet
        h.advance("2h")
        starts = _starts(h, "prepared")
        assert len(starts) == 2
        assert (
            made + timedelta(days=1) - timedelta(seconds=5) < starts[-1] < made + timedelta(days=1)
        )
        assert h.value("report") == 2
        assert h.events(kind="freshness_violated") == []


def test_two_lazy_assets_in_a_row_are_both_pulled_in_time() -> None:
    raw = hw.source("raw")

    @hw.asset(policy=hw.lazy())
    def first(raw: Any) -> Any:
        return raw

    @hw.asset(policy=hw.lazy())
    def second(first: Any) -> Any:
        return first

    @hw.asset(freshness=hw.Freshness(max_lag="30m"))
    def report(second: Any) -> Any:
        return second

    with Harness(hw.Definitions([raw, first, second, report]), now=T0.isoformat()) as h:
        h.observe("raw", value=1)
        h.materialize(["first", "second"])
        h.tick()
        assert h.value("report") == 1
        h.advance("1h")
        h.observe("raw", value=2)  # the lag of all three counts from here
        assert h.advance("29m").materialized == []
        assert h.advance("1m").materialized == [("first", None), ("second", None), ("report", None)]
        assert h.value("report") == 2
        assert h.events(kind="freshness_violated") == []


def test_the_lead_is_the_run_durations_along_the_way_with_headroom() -> None:
    """Pure planner: a lazy asset that takes a minute, read by one that takes half a minute,
    starts 1.5 x 90 s + 1 s before the SLA's deadline."""
    defs = _pipeline(hw.Freshness(max_lag="1h"))
    with Harness(defs, now=T0.isoformat()) as h:
        h.observe("raw", value=1)
        h.tick()
        state = h.engine.state
    ev = Evaluator(defs, state, T0, durations={"prepared": 60.0, "report": 30.0})
    found = pull(ev, ("prepared", None), ev.status("prepared", None))
    assert found is not None
    assert found.holder == "report" and found.reason == "max_lag 1h"
    assert found.deadline == T0 + timedelta(hours=1)
    assert found.run_at == found.deadline - timedelta(seconds=HEADROOM * 90) - MARGIN


def test_a_max_age_holder_that_never_materialized_pulls_its_lazy_input() -> None:
    days = hw.DailyPartitions(start="2026-01-05")
    raw = hw.source("raw", partitions=days)

    @hw.asset(partitions=days, policy=hw.lazy())
    def staging(raw: Any) -> Any:
        return raw

    @hw.asset(partitions=days, freshness=hw.Freshness(max_age="2h"))
    def report(staging: Any) -> Any:
        return staging

    with Harness(hw.Definitions([raw, staging, report]), now=T0.isoformat()) as h:
        h.tick()
        h.advance("1d")  # the 5th closes at midnight: report[5th] is due by 02:00
        h.observe("raw", value=1, partition="2026-01-05")
        h.advance("6h")
        (start,) = _starts(h, "staging")
        due = T0 + timedelta(days=1, hours=2)
        assert due - timedelta(seconds=5) < start < due
        assert not h.freshness("report", partition="2026-01-05").late
        assert h.events(kind="freshness_violated") == []


def test_a_dry_run_of_a_change_shows_the_lazy_pull_and_the_sla_it_puts_at_risk() -> None:
    from headwater.planning._dryrun import dry_run

    defs = _pipeline(hw.Freshness(max_lag="2h"))
    with Harness(defs, now=T0.isoformat()) as h:
        h.observe("raw", value=1)
        h.materialize(["prepared", "report"])
        planned = dry_run(defs, h.engine.state, T0, changed=[("raw", None)])
    assert planned.steps == []
    assert "lazy: pulled by report's max_lag 2h" in planned.held[("prepared", None)]
    (risk,) = planned.risks
    assert (risk.asset, risk.late, risk.deadline) == ("report", False, T0 + timedelta(hours=2))


def test_plan_after_a_stop_pulls_a_lazy_asset_as_late_as_the_restarted_daemon_finds_it(
    tmp_path: Path,
) -> None:
    """A manual asset holds back a change (01:00); the daemon stops before that change makes
    the SLA holder below it late through it (02:00: its max_lag). At the next start the
    daemon's first tick finds the holder behind since 01:00 and runs the lazy asset it needs
    at once; `headwater plan` (a dry run of a starting daemon) must say the same, not count
    the holder's lag from a later change of the lazy asset's other input (01:30)."""

    def defs() -> hw.Definitions:
        held = hw.source("held")
        other = hw.source("other")

        @hw.asset(ins={"held": "held"}, policy=hw.manual())
        def stuck(held: Any) -> Any:
            return held

        @hw.asset(ins={"stuck": "stuck", "other": "other"}, policy=hw.lazy())
        def prepared(stuck: Any, other: Any) -> Any:
            return stuck, other

        @hw.asset(ins={"prepared": "prepared"}, freshness=hw.Freshness(max_lag="1h"))
        def report(prepared: Any) -> Any:
            return prepared

        return hw.Definitions([held, other, stuck, prepared, report])

    with Harness(defs(), now=T0.isoformat(), state_dir=tmp_path) as h:
        h.observe("held", "1")
        h.observe("other", "1")
        h.materialize("stuck")
        h.materialize("prepared")
        h.tick()
        h.advance(hours=1)
        h.observe("held", "2")  # what `stuck` holds back from 01:00
        h.tick()
        h.advance(minutes=30)
        h.observe("other", "2")  # the daemon stops before its next tick
    with Harness(defs(), now=(T0 + timedelta(hours=2, minutes=10)).isoformat(),
                 state_dir=tmp_path) as h:  # fmt: skip
        planned = dry_run(h.engine.defs, h.engine.state, h.now)
        ran = h.tick().materialized
    assert ("prepared", None) in ran
    assert [(s.asset, s.partition) for s in planned.steps if s.asset == "prepared"] == [
        ("prepared", None)
    ]


def test_plan_keeps_an_asset_behind_a_stuck_one_when_it_runs_for_another_input() -> None:
    """``mid`` is behind a change that the manual ``stuck`` holds back (01:00), and runs for a
    change of its other input: it is still behind that change (the engine keeps its
    ``pending_since``), so the lazy asset below, whose own new input partition appeared only
    now, is late through it, and runs at once. The plan must not count from the new
    partition, as if ``mid``'s run had caught up with everything above it."""
    held, other = hw.source("held"), hw.source("other")
    files = hw.source("files", partitions=hw.StaticPartitions(["a", "b"]))

    @hw.asset(ins={"held": "held"}, policy=hw.manual())
    def stuck(held: Any) -> Any:
        return held

    @hw.asset(ins={"stuck": "stuck", "other": "other"})
    def mid(stuck: Any, other: Any) -> Any:
        return stuck, other

    @hw.asset(ins={"mid": "mid", "files": "files"}, policy=hw.lazy())
    def prepared(mid: Any, files: Any) -> Any:
        return mid, sorted(files)

    @hw.asset(ins={"prepared": "prepared"}, freshness=hw.Freshness(max_lag="1h"))
    def report(prepared: Any) -> Any:
        return prepared

    defs = hw.Definitions([held, other, files, stuck, mid, prepared, report])
    with Harness(defs, now=T0.isoformat()) as h:
        h.observe("held", "1")
        h.observe("other", "1")
        h.observe("files", "1", partition="a")
        h.materialize("stuck")
        h.materialize("prepared")
        h.tick()
        h.advance(hours=1)
        h.observe("held", "2")  # held back by `stuck` from 01:00
        h.advance(minutes=70)
        h.observe("files", "1", partition="b")  # a new input partition of `prepared`
        h.observe("other", "2")  # `mid` runs for this one
        planned = dry_run(h.engine.defs, h.engine.state, h.now)
        ran = h.tick().materialized
    assert ("prepared", None) in ran
    assert ("prepared", None) not in planned.held
    assert [s.asset for s in planned.steps] == ["mid", "prepared", "report"]
