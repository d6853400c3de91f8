"""``replay``: the recorded history re-decided under other definitions, on the virtual clock.

Under the same definitions it must reproduce the recorded runs exactly (a property over random
DAGs, policies and change schedules); under a cron policy instead of eager it gives fewer runs
and the lateness an SLA would then have had. The CLI prints it and writes nothing.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from cli_process import hw as run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headwater as hw
from headwater._replay import replay
from headwater.testing import Harness

RESOURCES = Path(__file__).parent / "resources"


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[int, list[tuple[tuple[int, ...], str, bool]]]:
    """Sources, then assets: (parents, policy, echoes its inputs)."""
    sources = draw(st.integers(1, 2))
    assets = []
    for i in range(draw(st.integers(1, 5))):
        parents = draw(
            st.lists(st.integers(0, sources + i - 1), min_size=1, max_size=2, unique=True)
        )
        policy = draw(st.sampled_from(["eager", "eager", "cron"]))
        assets.append((tuple(sorted(parents)), policy, draw(st.booleans())))
    return sources, assets


def _defs(spec: tuple[int, list[tuple[tuple[int, ...], str, bool]]]) -> hw.Definitions:
    sources, assets = spec
    name = lambda i: f"s{i}" if i < sources else f"a{i - sources}"  # noqa: E731
    nodes: list[Any] = [hw.source(name(i)) for i in range(sources)]
    for j, (parents, policy, echo) in enumerate(assets):
        params = [f"x{k}" for k in range(len(parents))]
        body = f"({', '.join(params)},)" if echo else "0"
        namespace: dict[str, Any] = {}
        exec(f"def fn({', '.join(params)}):\n    return {body}\n", namespace)
        chosen = hw.on_cron("0 * * * *") if policy == "cron" else hw.eager()
        ins = {p: name(u) for p, u in zip(params, parents, strict=True)}
        nodes.append(
            hw.asset(
                name(sources + j),
                ins=ins,
                policy=chosen,
                freshness=hw.Freshness(max_lag="20m"),
            )(namespace["fn"])
        )
    return hw.Definitions(nodes)


def _runs(events: list[hw.Event]) -> list[tuple[str | None, str | None, Any]]:
    return sorted((e.asset, e.partition, e.timestamp) for e in events if e.kind == "run_started")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=pipelines(),
    schedule=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 90)), min_size=1, max_size=8
    ),
)
def test_replaying_under_the_same_definitions_reproduces_the_recorded_runs(
    spec: tuple[int, list[tuple[tuple[int, ...], str, bool]]],
    schedule: list[tuple[int, int, int]],
) -> None:
    defs = _defs(spec)
    sources = spec[0]
    with Harness(defs, now="2026-01-05T00:00:00Z") as h:
        for i in range(sources):
            h.observe(f"s{i}", value=("start", i))
        h.tick()
        for source, value, minutes in schedule:
            h.advance(f"{minutes}m") if minutes else None
            h.observe(f"s{source % sources}", value=("edit", value))
            h.tick()
        h.advance("2h")
        recorded = h.events()
    report = replay(recorded, defs)
    assert _runs(recorded) == sorted(report.runs_would)
    for row in report.assets.values():
        assert (row.runs_would, row.violations_would, row.late_would) == (
            row.runs_did,
            row.violations_did,
            row.late_did,
        ), row


def _hourly_report(policy: hw.Policy) -> hw.Definitions:
    raw = hw.source("raw")

    @hw.asset(policy=policy, freshness=hw.Freshness(max_lag="30m"))
    def report(raw: Any) -> Any:
        return raw

    return hw.Definitions([raw, report])


def test_a_daily_cron_instead_of_eager_gives_fewer_runs_and_the_lateness_it_would_cost() -> None:
    with Harness(_hourly_report(hw.eager()), now="2026-01-05T00:00:00Z") as h:
        for n in range(48):  # a new version every hour for two days
            h.observe("raw", value=n)
            h.advance("1h")
        recorded = h.events()
    report = replay(recorded, _hourly_report(hw.on_cron("0 6 * * *")))
    row = report.assets["report"]
    assert (row.runs_did, row.violations_did, row.late_did) == (48, 0, timedelta(0))
    assert row.runs_would == 2  # 06:00 on each day
    assert row.violations_would >= 2
    # late from 30 minutes after each unreflected change until the next 06:00 run
    assert row.late_would > timedelta(hours=30)


def test_the_replay_command_compares_did_and_would_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copy(RESOURCES / "pipeline.py", tmp_path / "pipeline.py")
    data = tmp_path / "data"
    data.mkdir()
    (data / "2026-01-01.csv").write_text("region,amount\neu,1.5\n")
    (data / "2026-01-02.csv").write_text("region,amount\neu,3.0\n")
    assert (
        run_cli(
            "materialize", "orders_clean", "totals", "-d", "pipeline.py", cwd=tmp_path
        ).returncode
        == 0
    )
    text = (tmp_path / "pipeline.py").read_text()
    manual = text.replace("@hw.asset\ndef totals", "@hw.asset(policy=hw.manual())\ndef totals")
    assert manual != text
    (tmp_path / "manual.py").write_text(manual)
    log = tmp_path / ".headwater" / "events.db"
    size = log.stat().st_size
    result = run_cli("replay", "-d", "manual.py", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["asset"]: r for r in json.loads(result.stdout)["assets"]}
    assert rows["orders_clean"]["runs_did"] == rows["orders_clean"]["runs_would"] == 2
    assert rows["totals"]["runs_did"] == rows["totals"]["runs_would"] == 1  # it was requested
    same = run_cli("replay", "-d", "pipeline.py", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[0].startswith("replay of ")
    assert "orders_clean" in same.stdout
    assert log.stat().st_size == size


def test_history_the_new_definitions_cannot_take_is_counted_not_lost() -> None:
    days = hw.DailyPartitions(start="2026-01-01")
    raw = hw.source("raw", partitions=days)

    @hw.asset(partitions=days)
    def cleaned(raw: Any) -> Any:
        return raw

    with Harness(hw.Definitions([raw, cleaned]), now="2026-01-05T00:00:00Z") as h:
        for n in range(1, 5):
            h.observe("raw", value=n, partition=f"2026-01-0{n}")
        h.tick()
        recorded = h.events()
    hours = hw.HourlyPartitions(start="2026-01-01")
    hourly_raw = hw.source("raw", partitions=hours)

    @hw.asset("renamed", partitions=hours)
    def renamed(raw: Any) -> Any:
        return raw

    report = replay(recorded, hw.Definitions([hourly_raw, renamed]))
    count, why = report.skipped["raw"]
    assert count == 4 and "'2026-01-01' is not a key of HourlyPartitions" in why
    assert report.dropped == ["cleaned"]
    row = report.assets["cleaned"]
    assert (row.runs_did, row.runs_would) == (4, 0)


def _difference(swapped: bool) -> hw.Definitions:
    def diff(x: int, y: int) -> int:
        return x - y

    @hw.asset
    def report(diff: int) -> str:
        return f"{diff:+}"

    ins = {"x": "low", "y": "high"} if swapped else {"x": "high", "y": "low"}
    nodes = [hw.source("high"), hw.source("low"), hw.asset("diff", ins=ins)(diff), report]
    return hw.Definitions(nodes)


def test_a_recorded_outcome_is_not_lent_to_a_run_whose_parameters_get_other_values() -> None:
    """History: 10 - 3, then 13 - 6: the same difference, so early cutoff spared the report.
    Replayed with x and y swapped, the recorded differences are not those runs' outcomes:
    each gets a new version, and the report would have run twice."""
    with Harness(_difference(False), now="2026-01-05T00:00:00Z") as h:
        for high, low in ((10, 3), (13, 6)):
            h.observe("high", value=high)
            h.observe("low", value=low)
            h.tick()
        recorded = h.events()
    same = replay(recorded, _difference(False))
    assert (same.assets["report"].runs_did, same.assets["report"].runs_would) == (1, 1)
    swapped = replay(recorded, _difference(True))
    assert swapped.assets["diff"].runs_would == 2
    assert swapped.assets["report"].runs_would == 2
