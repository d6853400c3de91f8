"""The reactive core through the Harness: chains, diamonds, branches, cutoff, waiting, manual."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import headwater as hw
from headwater.planning._dryrun import dry_run
from headwater.testing import Harness


def _chain() -> hw.Definitions:
    raw = hw.source("raw")

    @hw.asset
    def a(raw: Any) -> int:
        return 1 if raw is None else len(raw)

    @hw.asset
    def b(a: int) -> int:
        return a * 2

    @hw.asset
    def c(b: int) -> int:
        return b + 1

    return hw.Definitions([raw, a, b, c])


def test_chain_runs_in_order_once_the_source_is_observed() -> None:
    """A source observation materializes the whole chain, upstream first."""
    with Harness(_chain(), now="2026-01-05T00:00:00Z") as h:
        first = h.tick()
        assert first.materialized == []
        assert first.skipped == {}  # nothing has arrived: idle, not waiting on anything
        assert "policy eager: idle: missing; no input has arrived yet" in h.why("a")
        assert h.events(kind="decision") == []
        h.observe("raw", value="hello")
        tick = h.tick()
        assert tick.materialized == [("a", None), ("b", None), ("c", None)]
        assert tick.assets == {"a", "b", "c"}
        assert h.value("c") == 11
        assert all(h.state(k) == "fresh" for k in "abc")


def test_same_version_observed_again_changes_nothing() -> None:
    """An observation that does not change the version writes no event and runs nothing."""
    with Harness(_chain()) as h:
        assert h.observe("raw", "v1") is True
        h.tick()
        count = len(h.events())
        assert h.observe("raw", "v1") is False
        assert h.tick().materialized == []
        assert len(h.events()) == count


def test_early_cutoff_stops_the_cascade_when_data_is_unchanged() -> None:
    """a re-runs on a new source version, produces the same value, so b and c stay fresh."""
    with Harness(_chain()) as h:
        h.observe("raw", value="abc")
        h.tick()
        h.observe("raw", value="xyz")  # same length -> a produces the same value
        tick = h.tick()
        assert tick.materialized == [("a", None)]
        assert h.state("b") == "fresh"
        assert h.state("c") == "fresh"
        h.observe("raw", value="longer")
        assert h.tick().materialized == [("a", None), ("b", None), ("c", None)]


def test_diamond_runs_the_join_once_after_both_sides() -> None:
    """In a diamond the bottom runs once, after both branches."""
    top = hw.source("top")

    @hw.asset
    def left(top: Any) -> str:
        return f"L{top}"

    @hw.asset
    def right(top: Any) -> str:
        return f"R{top}"

    @hw.asset
    def bottom(left: str, right: str) -> str:
        return left + right

    with Harness(hw.Definitions([top, left, right, bottom])) as h:
        h.observe("top", value=1)
        tick = h.tick()
        assert sorted(tick.materialized[:2]) == [("left", None), ("right", None)]
        assert tick.materialized[2] == ("bottom", None)
        assert h.value("bottom") == "L1R1"
        assert len(h.events(kind="materialization", asset="bottom")) == 1


def test_independent_branches_run_in_parallel() -> None:
    """Two branches with no dependency between them run at the same time."""
    both_running = threading.Barrier(2, timeout=10)
    src = hw.source("src")

    @hw.asset
    def one(src: Any) -> int:
        both_running.wait()  # raises BrokenBarrierError unless the other branch runs meanwhile
        return 1

    @hw.asset
    def two(src: Any) -> int:
        both_running.wait()
        return 2

    with Harness(hw.Definitions([src, one, two], max_concurrency=2)) as h:
        h.observe("src", "v1")
        tick = h.tick()
        assert tick.failed == {}
        assert sorted(tick.materialized) == [("one", None), ("two", None)]


def test_only_the_changed_branch_reruns() -> None:
    """A change on one source leaves the other source's descendants alone."""
    s1, s2 = hw.source("s1"), hw.source("s2")

    @hw.asset
    def from1(s1: Any) -> Any:
        return s1

    @hw.asset
    def from2(s2: Any) -> Any:
        return s2

    with Harness(hw.Definitions([s1, s2, from1, from2])) as h:
        h.observe("s1", value=1)
        h.observe("s2", value=2)
        h.tick()
        h.observe("s1", value=10)
        assert h.tick().materialized == [("from1", None)]


def test_waiting_on_a_missing_input_is_recorded_once() -> None:
    """A partition with a missing input waits, says why, and logs the decision once."""
    s1, s2 = hw.source("s1"), hw.source("s2")

    @hw.asset
    def joined(s1: Any, s2: Any) -> Any:
        return (s1, s2)

    with Harness(hw.Definitions([s1, s2, joined])) as h:
        h.observe("s1", value=1)
        tick = h.tick()
        assert tick.materialized == []
        assert tick.skipped == {("joined", None): "waiting: input s2 is missing"}
        assert h.state("joined") == "missing"
        assert any("input s2 is missing" in line for line in h.why("joined"))
        h.observe("s1", value=2)
        h.tick()
        decisions = h.events(kind="decision", asset="joined")
        assert len(decisions) == 1
        assert decisions[0].payload == {
            "decision": "wait",
            "reason": "waiting: input s2 is missing",
        }
        h.observe("s2", value=3)
        assert h.tick().materialized == [("joined", None)]
        assert h.value("joined") == (2, 3)


def test_manual_assets_run_only_when_asked() -> None:
    """A manual asset stays stale until materialize() asks for it."""
    src = hw.source("src")

    @hw.asset(policy=hw.manual())
    def report(src: Any) -> Any:
        return src

    @hw.asset
    def after(report: Any) -> Any:
        return report

    with Harness(hw.Definitions([src, report, after])) as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert tick.materialized == []
        assert "manual policy" in tick.skipped[("report", None)]
        assert h.state("report") == "missing"
        tick = h.materialize("report")
        assert tick.materialized == [("report", None), ("after", None)]
        h.observe("src", value=2)
        h.tick()
        assert h.state("report") == "stale"
        assert h.materialize("report").materialized == [("report", None), ("after", None)]
        assert h.materialize("report").materialized == []  # fresh: nothing to do
        # forced, it runs; its value is the same, so `after` stays fresh (early cutoff)
        assert h.materialize("report", force=True).materialized == [("report", None)]


def test_code_version_change_makes_the_asset_stale(tmp_path: Path) -> None:
    """A new function body (not formatting) re-runs the asset and, if its value changes, below."""
    src = hw.source("src")

    def build(body_doubles: bool) -> hw.Definitions:
        if body_doubles:

            @hw.asset
            def a(src: Any) -> Any:
                return src * 2
        else:

            @hw.asset
            def a(src: Any) -> Any:
                return src

        @hw.asset
        def b(a: Any) -> Any:
            return a

        return hw.Definitions([src, a, b])

    with Harness(build(False), state_dir=tmp_path) as h:
        h.observe("src", value=2)
        h.tick()
    with Harness(build(False), state_dir=tmp_path) as h:
        assert h.state("a") == "fresh"
        assert h.tick().materialized == []
    with Harness(build(True), state_dir=tmp_path) as h:
        assert h.state("a") == "stale"
        assert any("code version changed" in line for line in h.why("a"))
        assert h.tick().materialized == [("a", None), ("b", None)]
        assert h.value("b") == 4


def test_explicit_code_version_overrides_the_fingerprint(tmp_path: Path) -> None:
    """With code_version= the function body may change without making the data stale."""
    src = hw.source("src")

    def build(factor: int) -> hw.Definitions:
        @hw.asset(code_version="1")
        def a(src: Any) -> Any:
            return src * factor

        return hw.Definitions([src, a])

    with Harness(build(1), state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.tick()
    with Harness(build(3), state_dir=tmp_path) as h:
        assert h.state("a") == "fresh"


def _difference(swapped: bool, *, fails: bool = False, **options: Any) -> hw.Definitions:
    """``high - low`` over two sources, with the parameters bound one way or the other."""
    sources = [hw.source("high"), hw.source("low")]

    def diff(x: int, y: int) -> int:
        if fails:
            raise ValueError("not yet")
        return x - y

    ins = {"x": "low", "y": "high"} if swapped else {"x": "high", "y": "low"}
    return hw.Definitions([*sources, hw.asset("diff", ins=ins, **options)(diff)])


@pytest.mark.parametrize("options", [{}, {"code_version": "1"}], ids=["fingerprint", "explicit"])
def test_inputs_swapped_between_parameters_make_the_asset_stale(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """The same inputs, the same function, but each parameter now reads the other input: the
    function gets other values, so the asset is stale (whatever its code version says)."""
    with Harness(_difference(False, **options), state_dir=tmp_path) as h:
        h.observe("high", value=10)
        h.observe("low", value=3)
        assert h.tick().materialized == [("diff", None)]
        assert h.value("diff") == 7
    with Harness(_difference(False, **options), state_dir=tmp_path) as h:
        assert h.state("diff") == "fresh"  # bound as before: nothing to do
    with Harness(_difference(True, **options), state_dir=tmp_path) as h:
        assert h.state("diff") == "stale"
        why = h.why("diff")
        assert "parameter x reads low (was high)" in why
        assert "parameter y reads high (was low)" in why
        planned = dry_run(h.engine.defs, h.engine.state, h.now)  # what `headwater plan` shows
        assert [(s.asset, s.may_stop) for s in planned.steps] == [("diff", False)]
        assert h.tick().materialized == [("diff", None)]
        assert h.value("diff") == -7
        assert h.state("diff") == "fresh"


def test_an_input_and_a_dependency_trading_places_make_the_asset_stale(tmp_path: Path) -> None:
    """``ins={"x": "a"}, deps=["b"]`` becomes ``ins={"x": "b"}, deps=["a"]``: the same
    upstream keys, the same function, one input, but x now gets b's value."""

    def build(traded: bool) -> hw.Definitions:
        def pick(x: str) -> str:
            return x

        read, after = ("b", "a") if traded else ("a", "b")
        picked = hw.asset("picked", ins={"x": read}, deps=[after])(pick)
        return hw.Definitions([hw.source("a"), hw.source("b"), picked])

    with Harness(build(False), state_dir=tmp_path) as h:
        h.observe("a", value="from a")
        h.observe("b", value="from b")
        h.tick()
        assert h.value("picked") == "from a"
    with Harness(build(True), state_dir=tmp_path) as h:
        assert h.state("picked") == "stale"
        assert h.tick().materialized == [("picked", None)]
        assert h.value("picked") == "from b"


def test_a_new_loader_makes_the_readers_of_its_source_stale(tmp_path: Path) -> None:
    """The file did not change, so neither did the source's version, but its readers get
    other values: a new ``loader=`` makes them stale; the same loader, defined again (as at
    every start), does not. A source given a loader for the first time counts too."""
    from headwater.versions import bytes_version

    data = tmp_path / "data.csv"
    data.write_text("a;b\n1;2\n")

    def build(sep: str | None) -> hw.Definitions:
        loader = None if sep is None else functools.partial(pd.read_csv, sep=sep)
        raw = hw.FileSource("raw", str(data), loader=loader)

        @hw.asset
        def columns(raw: pd.DataFrame) -> int:
            return len(raw.columns)

        return hw.Definitions([raw, columns])

    state = tmp_path / "state"
    with Harness(build(None), state_dir=state) as h:  # by extension: a comma-separated csv
        h.observe("raw", bytes_version(data.read_bytes()))
        assert h.tick().materialized == [("columns", None)]
        assert h.value("columns") == 1
    for sep, columns in ((",", 1), (";", 2)):
        with Harness(build(sep), state_dir=state) as h:
            assert h.state("columns") == "stale"
            assert "input raw is loaded by another loader= than in its last run" in h.why("columns")
            assert h.tick().materialized == [("columns", None)]
            assert h.value("columns") == columns
        with Harness(build(sep), state_dir=state) as h:
            assert h.state("columns") == "fresh"


_DAYS = hw.DailyPartitions(start="2026-01-01")
_YESTERDAY = hw.Input("sales", mapping=hw.TimeWindow(offset=-1))


def _day_over_day(ins: dict[str, Any], deps: list[Any]) -> hw.Definitions:
    """A daily asset over a daily source, ``sales[01-01] = 10``, ``sales[01-02] = 25``."""

    def change(today: int, yesterday: int) -> int:
        return today - yesterday

    def pick(today: int) -> int:
        return today

    fn = change if "yesterday" in ins else pick
    asset = hw.asset("change", partitions=_DAYS, ins=ins, deps=deps)(fn)
    return hw.Definitions([hw.source("sales", partitions=_DAYS), asset])


@pytest.mark.parametrize(
    ("before", "after", "values", "reason"),
    [
        (  # two parameters swap their mappings of one key
            ({"today": hw.Input("sales"), "yesterday": _YESTERDAY}, []),
            ({"today": _YESTERDAY, "yesterday": hw.Input("sales")}, []),
            (15, -15),
            "parameter today reads sales[TimeWindow(offset=-1)] (was sales)",
        ),
        (  # an input and a deps entry of one key trade mappings
            ({"today": _YESTERDAY}, [hw.Input("sales")]),
            ({"today": hw.Input("sales")}, [_YESTERDAY]),
            (10, 25),
            "parameter today reads sales (was sales[TimeWindow(offset=-1)])",
        ),
    ],
    ids=["parameters", "deps"],
)
def test_mappings_swapped_on_one_key_make_the_asset_stale(
    tmp_path: Path, before: Any, after: Any, values: tuple[int, int], reason: str
) -> None:
    """The same key, the same partitions read (so the same recorded inputs), the same
    function; but each parameter gets another day's value."""
    with Harness(_day_over_day(*before), state_dir=tmp_path, now="2026-01-03T00:00:00Z") as h:
        h.observe("sales", value=10, partition="2026-01-01")
        h.observe("sales", value=25, partition="2026-01-02")
        h.tick()
        assert h.value("change", partition="2026-01-02") == values[0]
    with Harness(_day_over_day(*after), state_dir=tmp_path, now="2026-01-03T00:00:00Z") as h:
        assert h.state("change", partition="2026-01-02") == "stale"
        assert reason in h.why("change", partition="2026-01-02")
        assert ("change", "2026-01-02") in h.tick().materialized
        assert h.value("change", partition="2026-01-02") == values[1]


def test_writing_out_the_identity_mapping_is_no_binding_change(tmp_path: Path) -> None:
    """``hw.Input("sales", mapping=hw.Identity())`` where the default was the same: the same
    partitions, the same values, nothing to run again."""
    before = {"today": hw.Input("sales"), "yesterday": _YESTERDAY}
    after = {"today": hw.Input("sales", mapping=hw.Identity()), "yesterday": _YESTERDAY}
    with Harness(_day_over_day(before, []), state_dir=tmp_path, now="2026-01-03T00:00:00Z") as h:
        h.observe("sales", value=10, partition="2026-01-01")
        h.observe("sales", value=25, partition="2026-01-02")
        assert ("change", "2026-01-02") in h.tick().materialized
    with Harness(_day_over_day(after, []), state_dir=tmp_path, now="2026-01-03T00:00:00Z") as h:
        assert h.state("change", partition="2026-01-02") == "fresh"
        assert h.tick().materialized == []


def _rollups(declare: bool) -> hw.Definitions:
    """An unpartitioned roll-up of a region-partitioned source, days over an hourly source,
    and days over a daily one, each with a second input (so each has a binding), the mapping
    declared or left out."""
    regions = hw.StaticPartitions(["eu", "us"])
    hours = hw.HourlyPartitions(start="2026-01-01")
    whole = {"src": hw.Input("src", mapping=hw.AllPartitions())} if declare else {}
    windows = {"h": hw.Input("h", mapping=hw.TimeWindow())} if declare else {}
    same_day = {"d": hw.Input("d", mapping=hw.TimeWindow())} if declare else {}

    @hw.asset(ins=whole)
    def roll(src: dict[str, int], cfg: int) -> int:
        return sum(src.values()) + cfg

    @hw.asset(partitions=_DAYS, ins=windows)
    def day(h: dict[str, int], cfg: int) -> int:
        return sum(h.values()) + cfg

    @hw.asset(partitions=_DAYS, ins=same_day)
    def daily(d: int, cfg: int) -> int:
        return d + cfg

    sources = [hw.source("src", partitions=regions), hw.source("cfg")]
    sources += [hw.source("h", partitions=hours), hw.source("d", partitions=_DAYS)]
    return hw.Definitions([*sources, roll, day, daily])


def _observe_rollup_sources(h: Harness) -> None:
    h.observe("cfg", value=1)
    h.observe("d", value=5, partition="2026-01-01")
    for region in ("eu", "us"):
        h.observe("src", value=2, partition=region)
    for hour in range(24):
        h.observe("h", value=hour, partition=f"2026-01-01T{hour:02d}:00")


_ROLLUPS = {("roll", None), ("day", "2026-01-01"), ("daily", "2026-01-01")}


@pytest.mark.parametrize("declared_first", [False, True], ids=["declared", "dropped"])
def test_declaring_the_mapping_an_input_has_by_default_is_no_binding_change(
    tmp_path: Path, declared_first: bool
) -> None:
    """``AllPartitions()`` into an unpartitioned reader, ``TimeWindow()`` from hours to
    days and from days to days read what no mapping reads: declared or dropped, nothing runs
    again."""
    now = "2026-01-02T00:00:00Z"
    with Harness(_rollups(declared_first), state_dir=tmp_path, now=now) as h:
        _observe_rollup_sources(h)
        assert set(h.tick().materialized) >= _ROLLUPS
    with Harness(_rollups(not declared_first), state_dir=tmp_path, now=now) as h:
        for asset, partition in _ROLLUPS:
            assert h.state(asset, partition=partition) == "fresh", h.why(asset, partition)
        assert h.tick().materialized == []


def test_runs_recorded_naming_a_mapping_that_reads_as_the_default_are_not_stale(
    tmp_path: Path,
) -> None:
    """Before such mappings were left out of bindings, a run recorded them
    (``src=src[AllPartitions()]``): opened by this version with the same definitions, nothing
    is stale, so an upgrade re-runs no history. A mapping that reads otherwise still counts."""
    now = "2026-01-02T00:00:00Z"
    with Harness(_rollups(True), state_dir=tmp_path, now=now) as h:
        _observe_rollup_sources(h)
        assert set(h.tick().materialized) >= _ROLLUPS
    with sqlite3.connect(tmp_path / "events.db") as db:  # as the version before wrote them
        for bare, named in (
            ("src=src ", "src=src[AllPartitions()] "),
            ("h=h ", "h=h[TimeWindow()] "),
            ("d=d ", "d=d[TimeWindow()] "),
        ):
            for table, column in (("current_state", "record"), ("events", "payload")):
                db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (bare, named))
        changed = db.execute("SELECT count(*) FROM current_state WHERE record LIKE '%()]%'")
        assert changed.fetchone()[0] == len(_ROLLUPS)
    with Harness(_rollups(True), state_dir=tmp_path, now=now) as h:
        for asset, partition in _ROLLUPS:
            assert h.state(asset, partition=partition) == "fresh", h.why(asset, partition)
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("UPDATE current_state SET record = replace(record, 'd=d[TimeWindow()]', ?)",
                   ("d=d[TimeWindow(offset=-1)]",))  # fmt: skip
    with Harness(_rollups(True), state_dir=tmp_path, now=now) as h:
        assert h.state("daily", partition="2026-01-01") == "stale"
        assert "parameter d reads d (was d[TimeWindow(offset=-1)])" in h.why(
            "daily", partition="2026-01-01"
        )


def test_a_renamed_parameter_or_another_deps_key_is_not_a_binding_change(tmp_path: Path) -> None:
    """Each parameter that was there before reads what it read: with ``code_version=`` held,
    a parameter renamed is no change at all, and a ``deps`` key removed is only itself."""

    def build(first: str, deps: list[str]) -> hw.Definitions:
        namespace: dict[str, Any] = {}
        exec(f"def total({first}, y):\n    return {first} + y\n", namespace)
        ins = {first: "b", "y": "c"}
        asset = hw.asset("total", ins=ins, deps=deps, code_version="1")(namespace["total"])
        return hw.Definitions([hw.source("audit"), hw.source("b"), hw.source("c"), asset])

    with Harness(build("x", ["audit"]), state_dir=tmp_path) as h:
        for key, value in (("audit", 0), ("b", 1), ("c", 2)):
            h.observe(key, value=value)
        assert h.tick().materialized == [("total", None)]
    with Harness(build("z", ["audit"]), state_dir=tmp_path) as h:
        assert h.state("total") == "fresh"
    with Harness(build("x", []), state_dir=tmp_path) as h:
        assert h.state("total") == "stale"
        why = h.why("total")
        assert "input audit disappeared" in why
        assert not [line for line in why if line.startswith("parameter")]


def test_a_failure_an_edit_caused_holds_no_reader_once_the_edit_is_reverted(
    tmp_path: Path,
) -> None:
    """x and y swapped: the run fails. Swapped back: the asset is fresh (its last good
    materialization matches the definitions again), so its readers read it, as the asset's
    own status says, instead of waiting on a failure that no longer stands."""

    def build(swapped: bool) -> hw.Definitions:
        def rows(x: list[int], y: int) -> list[int]:
            return [v * y for v in x]  # a TypeError when swapped

        @hw.asset(policy=hw.manual())
        def report(rows: list[int]) -> int:
            return sum(rows)

        ins = {"x": "b", "y": "a"} if swapped else {"x": "a", "y": "b"}
        nodes = [hw.source("a"), hw.source("b"), hw.asset("rows", ins=ins)(rows), report]
        return hw.Definitions(nodes)

    with Harness(build(False), state_dir=tmp_path) as h:
        h.observe("a", value=[1, 2])
        h.observe("b", value=3)
        assert h.tick().materialized == [("rows", None)]
    with Harness(build(True), state_dir=tmp_path) as h:
        assert list(h.tick().failed) == [("rows", None)]
    with Harness(build(False), state_dir=tmp_path) as h:
        assert h.state("rows") == "fresh"
        assert h.materialize("report").materialized == [("report", None)]
        assert h.value("report") == 9


def test_a_failure_does_not_hold_once_the_inputs_are_bound_otherwise(tmp_path: Path) -> None:
    """A failed run is "failed" until something it depends on changes: the binding is such a
    thing, so the asset runs again instead of waiting for a retry that never comes."""
    with Harness(_difference(False, fails=True), state_dir=tmp_path) as h:
        h.observe("high", value=10)
        h.observe("low", value=3)
        assert list(h.tick().failed) == [("diff", None)]
        assert h.state("diff") == "failed"
    with Harness(_difference(False, fails=True), state_dir=tmp_path) as h:
        assert h.state("diff") == "failed"
    with Harness(_difference(True, fails=True), state_dir=tmp_path) as h:
        assert h.state("diff") == "missing"  # never materialized: it runs again, and fails
        assert list(h.tick().failed) == [("diff", None)]


def test_reopening_a_state_dir_sees_everything(tmp_path: Path) -> None:
    """A harness opened again on the same state dir has the same states, values and events."""
    with Harness(_chain(), state_dir=tmp_path) as h:
        h.observe("raw", value="abcd")
        h.tick()
        events = [(e.id, e.kind) for e in h.events()]
    with Harness(_chain(), state_dir=tmp_path) as h:
        assert [(e.id, e.kind) for e in h.events()] == events
        assert h.state("c") == "fresh"
        assert h.value("c") == 9
        assert h.tick().materialized == []
        assert h.observe("raw", value="abcd") is False


def test_failed_run_records_error_and_stays_failed_until_inputs_change() -> None:
    """A raising asset is failed with its error; it runs again only when an input changes."""
    src = hw.source("src")

    @hw.asset
    def fragile(src: Any) -> Any:
        if src < 0:
            raise ValueError(f"negative input {src}")
        return src

    @hw.asset
    def below(fragile: Any) -> Any:
        return fragile

    with Harness(hw.Definitions([src, fragile, below])) as h:
        h.observe("src", value=-1)
        tick = h.tick()
        assert tick.failed == {("fragile", None): "ValueError: negative input -1"}
        assert tick.skipped[("below", None)] == "waiting: input fragile failed"
        assert h.state("fragile") == "failed"
        failed = h.events(kind="run_failed", asset="fragile")
        assert len(failed) == 1
        assert failed[0].payload["error"] == "ValueError: negative input -1"
        assert "Traceback" in failed[0].payload["traceback"]
        assert failed[0].payload["duration_ms"] >= 0
        assert h.tick().materialized == []  # nothing changed: no retry storm
        h.observe("src", value=5)
        assert h.tick().materialized == [("fragile", None), ("below", None)]


def test_failed_partition_runs_again_when_asked() -> None:
    """materialize() re-runs a failed asset even though nothing changed."""
    src = hw.source("src")
    calls: list[int] = []

    @hw.asset
    def flaky(src: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return src

    with Harness(hw.Definitions([src, flaky])) as h:
        h.observe("src", value=1)
        h.tick()
        assert h.state("flaky") == "failed"
        assert h.materialize("flaky").materialized == [("flaky", None)]
        assert h.state("flaky") == "fresh"


def test_a_source_observed_with_a_version_only_passes_none_after_a_value(
    tmp_path: Path,
) -> None:
    """A plain source observed with a value, then with a version only: its old file was read
    as a value lost, and its reader waited for good (hostile33a bug9). It now passes None,
    as the README says; a value observed again is passed again."""
    src = hw.source("src")

    @hw.asset
    def got(src: Any) -> str:
        return f"got {src!r}"

    with Harness(hw.Definitions([src, got]), state_dir=tmp_path) as h:
        h.observe("src", value=[5] * 10_000, data_version="v1")  # large: a file
        h.tick()
        h.observe("src", data_version="v2")
        assert h.tick().materialized == [("got", None)]
        assert h.value("got") == "got None"
        h.observe("src", value=7, data_version="v3")
        h.tick()
        assert h.value("got") == "got 7"
        assert h.events(kind="value_lost") == []


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_source_value_that_is_gone_is_lost_never_passed_as_none(
    tmp_path: Path, executor: str
) -> None:
    """A plain source observed with a value whose file is then deleted: its reader was given
    None and recorded as reading the source's version (hostile34c bug9). The value is lost:
    the source is missing, its reader waits, and runs on the value observed again."""
    from headwater._loading import load_definitions

    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n"
        "src = hw.source('src')\nother = hw.source('other')\n"
        "@hw.asset\ndef size(src, other):\n    return len(src) + other\n"
        "defs = hw.Definitions([src, other, size])\n"
    )
    defs = load_definitions(str(tmp_path / "defs.py"))
    state = tmp_path / "state"
    with Harness(defs, state_dir=state, executor=executor) as h:
        h.observe("src", value=list(range(100_000)))  # large: a file
        h.observe("other", value=1)
        h.tick()
        assert h.value("size") == 100_001
        for stored in (state / "values" / "src").iterdir():
            stored.unlink()
        h.observe("other", value=2)
        tick = h.tick()
        assert tick.materialized == [] and tick.failed == {}
        (lost,) = h.events(kind="value_lost")
        assert lost.asset == "src"
        assert h.state("src") == "missing" and h.value("size") == 100_001
        assert any(
            "input src is missing (its stored value was lost; until it is observed again)" in r
            for r in h.why("size")
        )  # a source comes back when it is observed, not "materialized" (hostile34d)
        h.observe("src", value=[0, 1])
        assert h.tick().materialized == [("size", None)]
        assert h.value("size") == 4


def test_the_same_value_observed_again_after_its_file_was_deleted_is_stored_again(
    tmp_path: Path,
) -> None:
    """Its version is unchanged, so the observation records nothing, but the value is stored
    again: its reader gets it (the first reader found it lost, and the source waited for
    yet another observation of what had just been observed: hostile34d)."""
    src, other = hw.source("src"), hw.source("other")

    @hw.asset
    def size(src: list[int], other: int) -> int:
        return len(src) + other

    state = tmp_path / "state"
    with Harness(hw.Definitions([src, other, size]), state_dir=state) as h:
        h.observe("src", value=list(range(100_000)))  # large: a file
        h.observe("other", value=1)
        h.tick()
        for stored in (state / "values" / "src").iterdir():
            stored.unlink()
        assert h.observe("src", value=list(range(100_000))) is False  # nothing new recorded
        h.observe("other", value=2)
        assert h.tick().materialized == [("size", None)]
        assert h.value("size") == 100_002
        assert h.events(kind="value_lost") == []


def test_output_sets_data_version_and_metadata() -> None:
    """hw.Output's data_version is recorded as given and its metadata is kept."""
    src = hw.source("src")

    @hw.asset
    def a(src: Any) -> hw.Output:
        return hw.Output([1, 2], data_version="my-version", metadata={"note": "hi"})

    with Harness(hw.Definitions([src, a])) as h:
        h.observe("src", "v1")
        h.tick()
        (event,) = h.events(kind="materialization", asset="a")
        assert event.data_version == "my-version"
        assert event.payload["metadata"] == {"note": "hi"}
        assert h.value("a") == [1, 2]


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ({"data_version": 2}, "TypeError: hw.Output(data_version=2): a data version is non-empty"),
        ({"data_version": ""}, "TypeError: hw.Output(data_version=''): a data version is non"),
        ({"data_version": "v\udc80"}, "ValueError: hw.Output(data_version='v\\udc80'): a data"),
        ({"metadata": [("rows", 3)]}, "TypeError: hw.Output(metadata=...) takes a mapping of"),
    ],
)
def test_an_output_that_is_not_well_formed_fails_its_run_and_keeps_the_last_value(
    output: dict[str, Any], error: str
) -> None:
    """A data version that is not text went into the log, and the next change stopped the
    daemon for good (hostile33a bug7); metadata that is not a mapping failed the run after
    its value was stored over the last good one (bug14). The run fails, naming the mistake,
    and readers keep the last good value."""
    src = hw.source("src")

    @hw.asset
    def a(src: int) -> Any:
        return src if src == 1 else hw.Output(src, **output)

    @hw.asset
    def b(a: int) -> int:
        return a * 10

    with Harness(hw.Definitions([src, a, b])) as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
        h.observe("src", value=2)
        tick = h.tick()
        assert list(tick.failed) == [("a", None)]
        assert tick.failed[("a", None)].startswith(error), tick.failed
        assert (h.value("a"), h.value("b")) == (1, 10)
        h.observe("src", value=1)  # the failure is moot: a is as it was
        assert h.tick().failed == {}
        assert (h.state("a"), h.state("b")) == ("fresh", "fresh")


def test_metadata_json_cannot_hold_is_written_as_text_and_fails_nothing() -> None:
    """Metadata with a key that is not text (a groupby's tuple), a loop, or NaN: its run's end
    could not be written, the commit raised, and with it the ends of the runs committed
    together, and the daemon stopped (at every start again). Now such keys and values are
    written as text (NaN as null), and every run ends."""
    src = hw.source("src")
    loop: dict[str, Any] = {}
    loop["self"] = loop
    deep: list[Any] = []
    inner = deep
    for _ in range(900):
        inner.append([])
        inner = inner[0]

    class Gone:
        def __str__(self) -> str:
            raise RuntimeError("detached")

    def odd(src: Any) -> hw.Output:
        metadata = {(1, 2): 3, "loop": loop, "nan": float("nan"), "big": 2**20_000,
                    "gone": Gone(), "deep": deep}  # fmt: skip
        return hw.Output(1, metadata=metadata)

    def plain(src: Any) -> int:
        return 2

    assets = [hw.asset(f"plain{i}", ins={"src": "src"})(plain) for i in range(5)]
    assets.append(hw.asset("odd", ins={"src": "src"})(odd))

    def judged(value: Any) -> hw.CheckResult:
        return hw.CheckResult(True, metadata={frozenset({1}): "x"})

    check = hw.check("odd", name="judged")(judged)
    with Harness(hw.Definitions([src, *assets], checks=[check])) as h:
        h.observe("src", "v1")
        result = h.tick()
        assert sorted(a for a, _ in result.materialized) == ["odd"] + [
            f"plain{i}" for i in range(5)
        ]
        (event,) = h.events(kind="materialization", asset="odd")
        shown = event.payload["metadata"]
        assert {k: shown[k] for k in ("(1, 2)", "loop", "nan", "big", "gone")} == {
            "(1, 2)": 3, "loop": {"self": "<circular>"}, "nan": None,
            "big": "<int of 20001 bits>", "gone": "<Gone that cannot be shown: RuntimeError>",
        }  # fmt: skip
        level = shown["deep"]
        for _ in range(62):  # the payload, its metadata, then the list's first 62 levels
            (level,) = level
        assert level == "<list nested past 64 levels>"
        (verdict,) = h.events(kind="check", asset="odd")
        assert verdict.payload["metadata"] == {"frozenset({1})": "x"}


def test_dataframes_are_stored_as_parquet_with_row_count_and_schema() -> None:
    """A DataFrame value lands as Parquet; its event carries rows and schema."""
    src = hw.source("src")

    @hw.asset
    def table(src: Any) -> pd.DataFrame:
        return pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})

    with Harness(hw.Definitions([src, table])) as h:
        h.observe("src", "v1")
        h.tick()
        (event,) = h.events(kind="materialization", asset="table")
        assert event.payload["metadata"]["rows"] == 3
        assert set(event.payload["metadata"]["schema"]) == {"x", "y"}
        assert event.data_version == hw.data_version(h.value("table"))
        assert list((h.state_dir / "values" / "table").glob("value.frame.parquet"))


def _frames() -> dict[str, Any]:
    """Frames Parquet cannot hold (as returned), and frames it re-types."""
    import pyarrow as pa

    return {
        "labels_1_and_text_1": pd.DataFrame([[1, 2]], columns=[1, "1"]),  # unreadable back
        "labels_float_and_text": pd.DataFrame([[1, 2]], columns=[1.0, "x"]),  # 1.0 -> "1.0"
        "duplicate_labels": pd.DataFrame([[1, 2]], columns=["a", "a"]),
        "sparse": pd.DataFrame({"s": pd.arrays.SparseArray([0, 1])}),
        "categorical": pd.DataFrame({"c": pd.Categorical([1, 2] * 20, categories=[1, 2, 3])}),
        "seconds": pd.DataFrame({"t": pd.to_datetime(["2020-01-01"] * 3).astype("datetime64[s]")}),
        "arrow_seconds": pa.table({"t": pa.array([0, 1], pa.timestamp("s"))}),
    }


@pytest.mark.parametrize("name", list(_frames()))
def test_a_table_is_read_back_as_it_was_stored_and_versioned_as_read(name: str) -> None:
    """Frames Parquet cannot hold were stored as Parquet anyway: some failed their run, one
    could not be read back and was lost and re-run for ever (hostile33a bug2, bug3). Those
    are pickled now, with their labels as returned. Frames Parquet re-types were versioned as
    returned, not as readers load them (bug4): the recorded version is that of the value the
    reader gets, and a run that returns the same again leaves the reader fresh."""

    def table(src: int) -> Any:
        return _frames()[name]

    src = hw.source("src")
    stored = hw.asset("table")(table)

    @hw.asset
    def reader(table: Any) -> str:
        return str(list(table.columns) if isinstance(table, pd.DataFrame) else table.schema)

    with Harness(hw.Definitions([src, stored, reader])) as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert tick.failed == {}
        assert sorted(n for n, _ in tick.materialized) == ["reader", "table"]
        (event,) = h.events(kind="materialization", asset="table")
        value = h.value("table")
        assert event.data_version == hw.data_version(value)
        if isinstance(value, pd.DataFrame):
            original = _frames()[name].columns
            assert [(type(c), c) for c in value.columns] == [(type(c), c) for c in original]
        h.observe("src", value=2)
        assert [n for n, _ in h.tick().materialized] == ["table"]  # the same: reader fresh


def test_deps_order_and_invalidate_without_passing_values() -> None:
    """deps= makes an asset stale on upstream change but passes nothing in."""
    src = hw.source("src")
    seen: list[tuple[Any, ...]] = []

    @hw.asset(deps=[src])
    def side_effect() -> str:
        seen.append(())
        return "done"

    with Harness(hw.Definitions([src, side_effect])) as h:
        h.observe("src", "v1")
        assert h.tick().materialized == [("side_effect", None)]
        h.observe("src", "v2")
        assert h.tick().materialized == [("side_effect", None)]
        assert len(seen) == 2


def test_prefixed_keys_and_ins_mapping() -> None:
    """Keys with / prefixes are reachable through ins=."""
    raw = hw.source("sales/raw")

    @hw.asset("sales/clean", ins={"data": "sales/raw"})
    def clean(data: Any) -> Any:
        return [x for x in data if x is not None]

    with Harness(hw.Definitions([raw, clean])) as h:
        h.observe("sales/raw", value=[1, None, 2])
        assert h.tick().materialized == [("sales/clean", None)]
        assert h.value("sales/clean") == [1, 2]


def test_abandoned_run_is_marked_and_planned_again(tmp_path: Path) -> None:
    """A run_started with no end (the process died) is marked abandoned on open and re-planned."""
    src = hw.source("src")

    @hw.asset
    def slow(src: Any) -> Any:
        return src

    defs = hw.Definitions([src, slow])
    with Harness(defs, state_dir=tmp_path) as h:
        h.observe("src", value=1)
        # What a crash leaves behind: the run's start is in the log, its end never came.
        started = hw.Event(kind="run_started", timestamp=h.now, asset="slow", run_id="r-crashed")
        h._call(h.engine.append, [started])
    with Harness(defs, state_dir=tmp_path) as h2:
        abandoned = h2.events(kind="run_abandoned", asset="slow")
        assert [e.run_id for e in abandoned] == ["r-crashed"]
        assert h2.tick().materialized == [("slow", None)]
        assert len(h2.events(kind="materialization", asset="slow")) == 1
    with Harness(defs, state_dir=tmp_path) as h3:
        assert len(h3.events(kind="run_abandoned")) == 1  # marked once, not on every open


def test_unknown_names_raise_errors_that_name_them() -> None:
    """Asking about an asset or partition that does not exist names it."""
    with Harness(_chain()) as h:
        with pytest.raises(hw.SelectionError, match="'nope'"):
            h.state("nope")
        with pytest.raises(hw.SelectionError, match="is a source"):
            h.materialize("raw")
        with pytest.raises(hw.SelectionError, match="cannot observe 'a'"):
            h.observe("a", "v1")
        with pytest.raises(hw.PartitionKeyError, match="not partitioned"):
            h.state("a", partition="2026-01-01")


def test_a_run_records_the_version_of_the_bytes_it_read(tmp_path: Path) -> None:
    """A file replaced after the run was planned: the run records the new version it read, so
    once the sensor reports that version too, nothing is stale."""
    from headwater.versions import bytes_version

    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    raw = hw.FileSource("raw", str(data))

    @hw.asset
    def rows(raw: Any) -> int:
        return len(raw)

    with Harness(hw.Definitions([raw, rows])) as h:
        h.observe("raw", bytes_version(data.read_bytes()))  # what the sensor saw
        data.write_text("a\n1\n2\n3\n")  # replaced before the run reads it
        assert h.tick().materialized == [("rows", None)]
        (event,) = h.events(kind="materialization", asset="rows")
        assert event.payload["inputs"] == [["raw", None, bytes_version(data.read_bytes())]]
        assert h.value("rows") == 3
        h.observe("raw", bytes_version(data.read_bytes()))  # the sensor catches up
        assert h.state("rows") == "fresh"
        assert h.tick().materialized == []


def test_a_stale_asset_says_which_inputs_changed_from_what_to_what() -> None:
    """Each changed input is named with its old and new version, in input order; an input
    that did not change is not mentioned."""

    @hw.asset(policy=hw.manual())
    def joined(left: Any, right: Any) -> str:
        return f"{left}{right}"

    with Harness(hw.Definitions([hw.source("left"), hw.source("right"), joined])) as h:
        h.observe("left", "L1")
        h.observe("right", "R1")
        h.materialize("joined")
        h.observe("right", "R2")
        assert "input right changed (R1 -> R2)" in "\n".join(h.why("joined"))
        h.observe("left", "L2")
        why = "\n".join(h.why("joined"))
        assert "input left changed (L1 -> L2)\ninput right changed (R1 -> R2)" in why
        assert "L2 -> L1" not in why and "R2 -> R1" not in why


def test_an_input_that_appears_or_disappears_is_named() -> None:
    """A reader of every partition is stale when one appears or goes, and says which."""
    days = hw.StaticPartitions(["d1", "d2"])
    raw = hw.source("raw", partitions=days)

    @hw.asset(policy=hw.manual())
    def total(raw: dict[str, Any]) -> int:
        return len(raw)

    with Harness(hw.Definitions([raw, total])) as h:
        h.observe("raw", "A", partition="d1")
        h.materialize("total")
        h.observe("raw", "B", partition="d2")
        assert "input raw[d2] appeared (version B)" in "\n".join(h.why("total"))


class _Unprintable(Exception):
    def __str__(self) -> str:  # a message that raises StopIteration itself
        return next(a for a in self.args if isinstance(a, str))


def test_an_error_whose_message_cannot_be_read_fails_only_its_run() -> None:
    """Runs that go to the worker thread together: one raises an exception whose ``str``
    raises; it fails with a readable error, the others materialize, the tick ends."""
    src = hw.source("src")

    @hw.asset
    def bad(src: int) -> int:
        raise _Unprintable(404)

    @hw.asset
    def good(src: int) -> int:
        return src + 1

    @hw.asset
    def also_good(src: int) -> int:
        return src + 2

    defs = hw.Definitions([src, bad, good, also_good], max_concurrency=3)
    with Harness(defs, executor="threads") as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert sorted(tick.materialized) == [("also_good", None), ("good", None)]
        assert tick.failed == {
            ("bad", None): "_Unprintable: (its message could not be read: StopIteration in __str__)"
        }


def test_a_deleted_source_says_when_it_was_deleted_not_never_observed() -> None:
    """`why` and `status` said "never observed" of a source observed and then deleted, next to
    its last observed change (hostile34c bug5)."""
    src = hw.source("src")
    with Harness(hw.Definitions([src]), now="2026-01-05T00:00:00Z") as h:
        assert h.why("src")[:2] == ["src is missing", "never observed"]
        h.observe("src", value=1)
        h.advance("1h")
        h.observe("src", deleted=True)
        assert h.state("src") == "missing"
        assert h.why("src")[:2] == ["src is missing", "deleted at 2026-01-05T01:00:00+00:00"]


def test_the_look_for_lost_values_leaves_an_asset_s_own_filesystem_store_alone(
    tmp_path: Path,
) -> None:
    """An asset whose values a FilesystemStore of its own keeps elsewhere: the daemon's look
    for values gone from the state directory (at start, and every rescan interval) looked
    for them there, found none, and made the asset missing, so it ran again each time."""
    src = hw.source("src")

    @hw.asset(io=hw.FilesystemStore(tmp_path / "elsewhere"))
    def kept(src: Any) -> list[Any]:
        return [src] * 10_000  # large: a file, not the event log

    with Harness(hw.Definitions([src, kept]), state_dir=tmp_path / "state") as h:
        h.observe("src", value=1)
        assert h.tick().materialized == [("kept", None)]
        assert h._call(h.engine.forget_lost_values) == 0
        assert h.events(kind="value_lost") == []
        assert h.state("kept") == "fresh"


def _two_tables() -> hw.Definitions:
    src = hw.source("src")

    @hw.asset
    def one(src: Any) -> list[Any]:
        return [src] * 10_000  # large: a file of the state directory, not the event log

    @hw.asset
    def two(src: Any) -> list[Any]:
        return [src, src] * 10_000

    return hw.Definitions([src, one, two])


def test_values_deleted_with_their_folders_are_lost_and_written_again(tmp_path: Path) -> None:
    """``rm -rf values`` while the daemon runs: the look finds every value gone, and the runs
    that make them again write them (the store remembered the folders it had made, and each
    write failed: hostile37b bug1)."""
    import shutil

    with Harness(_two_tables(), state_dir=tmp_path / "state") as h:
        h.observe("src", value=1)
        assert sorted(h.tick().materialized) == [("one", None), ("two", None)]
        shutil.rmtree(tmp_path / "state" / "values")
        assert h._call(functools.partial(h.engine.forget_lost_values, again=True)) == 2
        h.observe("src", value=1)  # its value went with the folder: a reader waits for it
        tick = h.tick()
        assert sorted(tick.materialized) == [("one", None), ("two", None)]
        assert tick.failed == {}
        assert h.value("two") == [1, 1] * 10_000


def test_a_value_folder_made_a_link_is_lost_and_the_look_goes_on(tmp_path: Path) -> None:
    """A value folder replaced by a link (here a loop) while the daemon runs: the look counts
    its values gone, as a start does (it followed the link: the folder was known from
    before), and goes on to the other folders (one that could not be read stopped the whole
    look, every time: hostile37b bug2, bug4)."""
    with Harness(_two_tables(), state_dir=tmp_path / "state") as h:
        h.observe("src", value=1)
        h.tick()
        assert h._call(functools.partial(h.engine.forget_lost_values, again=True)) == 0
        values = tmp_path / "state" / "values"
        folder = values / "one"
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        folder.symlink_to(folder)  # a loop
        (value,) = (values / "two").iterdir()
        value.unlink()
        assert h._call(functools.partial(h.engine.forget_lost_values, again=True)) == 2
        assert h.state("one") == h.state("two") == "missing"


def test_a_value_a_run_under_way_moves_into_the_log_is_not_lost(tmp_path: Path) -> None:
    """A run whose value shrank below the log's limit removes the old file before its end is
    recorded: a look in between found the file gone while the record still named it, and
    recorded a loss that was none (hostile37b bug3). Partitions under way are left to their
    runs' ends."""
    with Harness(_two_tables(), state_dir=tmp_path / "state") as h:
        h.observe("src", value=1)
        h.tick()
        (value,) = (tmp_path / "state" / "values" / "one").iterdir()
        value.unlink()  # as the run's worker does, just before the run's end is recorded
        h.engine.storing[("one", None)] = 1  # under way
        assert h._call(functools.partial(h.engine.forget_lost_values, again=True)) == 0
        del h.engine.storing[("one", None)]
        assert h._call(functools.partial(h.engine.forget_lost_values, again=True)) == 1
