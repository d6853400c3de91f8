"""What ``/metrics`` and the web page count per asset is counted again only where something
may have changed (the assets written about, their readers, the clock's partitions), and
always agrees with a count of every partition: through runs, failures, failed checks, SLAs
going late, deleted sources, windows the clock opens and dynamic keys."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

import headwater as hw
from headwater.daemon import _summary
from headwater.daemon._summary import StateSummary, Summary
from headwater.testing import Harness

DAILY = hw.DailyPartitions(start="2026-01-01")
KEYS = hw.DynamicPartitions("keys")


def _definitions() -> hw.Definitions:
    left = hw.source("left", freshness=hw.Freshness(max_age="1h"))
    right = hw.source("right")
    nodes: list[Any] = [left, right]
    for side in ("left", "right"):
        upstream = side
        for i in range(5):
            nodes.append(hw.asset(f"{side}{i}", ins={"x": upstream})(_step))
            upstream = f"{side}{i}"

    @hw.asset(partitions=DAILY, ins={"x": "right4"})
    def day(x: int) -> int:
        return x

    @hw.asset(partitions=KEYS, ins={"x": "right"})
    def keyed(x: int) -> int:
        return x

    @hw.check("left0", blocking=True)
    def positive(left0: int) -> bool:
        return left0 > 0

    return hw.Definitions([*nodes, day, keyed], checks=[positive])


def _step(x: int) -> int:
    if x == 13:
        raise ValueError("unlucky")
    return x + 1


@pytest.fixture
def defs() -> hw.Definitions:
    return _definitions()


def test_a_change_recounts_what_it_touches_and_agrees_with_a_full_count(
    defs: hw.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    recounted: list[set[str]] = []
    real = _summary._recount

    def watched(ev: Any, before: Summary, keys: Collection[str]) -> Summary:
        recounted.append(set(keys))
        return real(ev, before, keys)

    monkeypatch.setattr(_summary, "_recount", watched)
    summary = StateSummary()
    with Harness(defs, now="2026-01-05T12:00:00Z") as h:
        h.engine.observers.append(summary)

        def agrees() -> Summary:
            counted: Summary = h._call(summary.of, h.engine)
            full: Summary = h._call(StateSummary().of, h.engine)
            assert counted == full
            return counted

        first = agrees()
        assert recounted[0] == set(defs.nodes)  # the first count: everything
        clock_moved = {"day", "keyed"}  # their partitions come with no event of theirs

        recounted.clear()
        h.observe("left", value=1)
        h.tick()
        after = agrees()
        assert recounted[0] == {"left", *(f"left{i}" for i in range(5))} | clock_moved
        assert after.states["right3"] is first.states["right3"]  # not counted: same dict
        assert after.states["left4"] == {"fresh": 1}

        h.observe("right", value=13)  # right0 fails on it
        h.add_partitions("keys", ["k1", "k2"])
        h.tick()
        failed = agrees()
        assert failed.states["right0"] == {"failed": 1}
        assert failed.states["keyed"] == {"fresh": 2}

        h.observe("left", value=-2)  # left0 = -1: its blocking check fails
        h.tick()
        assert agrees().held["left0"] == 1

        h.advance(hours=2)  # left is late by its SLA; a new daily window opened
        late = agrees()
        assert late.late["left"] == 1

        h.observe("left", deleted=True)
        h.observe("right", value=1)
        h.tick()
        final = agrees()
        assert final.states["left"] == {"missing": 1}
        assert final.states["right0"] == {"fresh": 1}
        assert sum(final.states["day"].values()) == len(DAILY.keys(h.engine.evaluator().pctx))


def test_nothing_written_counts_nothing_again(defs: hw.Definitions) -> None:
    summary = StateSummary()
    with Harness(defs, now="2026-01-05T12:00:00Z") as h:
        h.engine.observers.append(summary)
        first = h._call(summary.of, h.engine)
        assert h._call(summary.of, h.engine) is first


def test_windows_the_clock_opens_are_counted_by_the_engines_clock() -> None:
    """Nothing written, the clock two days on: the summary is counted again (the age of the
    last count is the engine's clock's, so the Harness's virtual one moves it too)."""
    daily = hw.source("daily", partitions=DAILY)
    summary = StateSummary()
    with Harness(hw.Definitions([daily]), now="2026-01-05T12:00:00Z") as h:
        h.engine.observers.append(summary)
        assert h._call(summary.of, h.engine).states["daily"] == {"missing": 4}
        h.advance(days=2)
        assert h._call(summary.of, h.engine).states["daily"] == {"missing": 6}


def test_the_page_is_joined_off_the_event_loop_and_reused_until_a_value_changes(
    defs: hw.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100k assets /metrics is tens of megabytes: it is joined in a worker thread, and a
    family no value of which changed since is served as joined then."""
    import threading

    from headwater.daemon import _metrics
    from headwater.daemon._metrics import Metrics

    threads: list[int] = []
    real = _metrics._page

    def watched(registry: Any, families: list[Any], states: Any, summary: Any) -> Any:
        threads.append(threading.get_ident())
        return real(registry, families, states, summary)

    monkeypatch.setattr(_metrics, "_page", watched)
    with Harness(defs, now="2026-01-05T12:00:00Z") as h:
        metrics = Metrics(h.state_dir)
        metrics.serve(h.engine, lambda: ())
        h.observe("left", value=1)
        h.tick()
        first = h._call(metrics.render).decode()
        assert 'headwater_runs_started_total{asset="left4"} 1.0' in first
        loop: int = h._call(_thread_id)
        assert threads and loop not in threads
        started = metrics.runs_started
        kept = started.taken()[1]
        assert isinstance(kept, str)  # joined once, kept
        h.observe("left", value=2)
        h.tick()
        assert not isinstance(started.taken()[1], str)  # a value changed: joined again
        assert 'headwater_runs_started_total{asset="left4"} 2.0' in h._call(metrics.render).decode()


async def _thread_id() -> int:
    import threading

    return threading.get_ident()
