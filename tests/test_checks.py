"""Asset checks: run after each materialization; blocking failures hold the data back."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

import headwater as hw
from headwater.testing import Harness


def _defs(blocking: bool) -> hw.Definitions:
    src = hw.source("src")

    @hw.asset
    def rows(src: Any) -> list[int]:
        return list(src)

    @hw.check(rows, blocking=blocking)
    def not_empty(rows: list[int]) -> hw.CheckResult:
        return hw.CheckResult(len(rows) > 0, metadata={"count": len(rows)})

    @hw.asset
    def total(rows: list[int]) -> int:
        return sum(rows)

    return hw.Definitions([src, rows, total], checks=[not_empty])


def test_failed_blocking_check_holds_downstream_with_a_reason_naming_it() -> None:
    with Harness(_defs(blocking=True)) as h:
        h.observe("src", value=[])
        tick = h.tick()
        assert tick.materialized == [("rows", None)]
        assert tick.skipped == {
            ("total", None): "waiting: input rows is blocked by failed check 'not_empty'"
        }
        (check,) = h.events(kind="check", asset="rows")
        assert check.payload["passed"] is False and check.payload["blocking"] is True
        assert check.payload["metadata"] == {"count": 0}
        assert check.data_version == h.events(kind="materialization", asset="rows")[0].data_version
        assert any("blocking check 'not_empty' FAILED" in line for line in h.why("rows"))


@pytest.mark.parametrize("edit", ["removed", "made non-blocking"])
def test_a_failed_check_the_definitions_no_longer_block_on_holds_nothing_back(
    tmp_path: Path, edit: str
) -> None:
    """The user edits the failed blocking check away (or makes it non-blocking) and
    restarts: what its old result holds back is decided by the definitions now."""
    with Harness(_defs(blocking=True), state_dir=tmp_path) as h:
        h.observe("src", value=[])
        assert h.tick().skipped == {
            ("total", None): "waiting: input rows is blocked by failed check 'not_empty'"
        }
    edited = _defs(blocking=edit != "made non-blocking")
    checks = list(edited.checks.get("rows", []))
    if edit == "removed":
        checks = []
    nodes = list(edited.nodes.values())
    with Harness(hw.Definitions(nodes, checks=checks), state_dir=tmp_path) as h:
        assert h.tick().materialized == [("total", None)]
        assert h.value("total") == 0


def _edited_check(body: str, *, name: str = "not_empty") -> hw.Definitions:
    """``_defs(blocking=True)`` with the check's body (an expression of ``rows``) replaced."""
    namespace: dict[str, Any] = {"hw": hw}
    exec(f"def {name}(rows):\n    return hw.CheckResult({body})\n", namespace)
    return _checked_by(hw.check("rows", blocking=True, name=name)(namespace[name]))


def _checked_by(check: hw.CheckDef) -> hw.Definitions:
    """``_defs``' assets with ``check`` as their only check."""
    return hw.Definitions(list(_defs(blocking=check.blocking).nodes.values()), checks=[check])


@pytest.mark.parametrize(
    ("body", "name", "verdict"),
    [
        ("True", "not_empty", True),  # too strict before: the data passes now
        ("len(rows) > 0", "has_rows", False),  # renamed: a check that never judged this data
    ],
    ids=["edited", "renamed"],
)
def test_a_blocking_check_edited_or_added_judges_the_current_data(
    tmp_path: Path, body: str, name: str, verdict: bool
) -> None:
    """The old verdict was given by other code, or by no check of that name: the asset is
    stale and runs again, so that the check declared now judges the data that its readers
    would get (an edited check that passes releases them; one that fails holds them)."""
    with Harness(_edited_check("len(rows) > 0"), state_dir=tmp_path) as h:
        h.observe("src", value=[])
        assert h.tick().materialized == [("rows", None)]
        assert h.state("total") == "missing"
    with Harness(_edited_check("len(rows) > 0"), state_dir=tmp_path) as h:
        assert h.state("rows") == "fresh"  # the same check, defined again: nothing to judge
        assert h.tick().materialized == []
    with Harness(_edited_check(body, name=name), state_dir=tmp_path) as h:
        assert h.state("rows") == "stale"
        judged = "changed since it judged its data" if name == "not_empty" else "has not judged"
        assert any(judged in line for line in h.why("rows"))
        tick = h.tick()
        assert tick.materialized == ([("rows", None), ("total", None)] if verdict else
                                     [("rows", None)])  # fmt: skip
        assert h.events(kind="check")[-1].payload["passed"] is verdict
        assert h.state("rows") == "fresh"
        assert h.tick().materialized == []


def test_a_failure_an_edited_check_caused_stands_no_more_once_the_edit_is_reverted(
    tmp_path: Path,
) -> None:
    """The edit re-runs the asset and that run fails (here: a flaky function). Reverted, the
    last good value is judged by the check that judged it: the asset is fresh and its readers
    read it, as after a reverted code edit, not "failed" until its input changes."""
    flaky = {"on": False}

    def build(body: str | None) -> hw.Definitions:
        src = hw.source("src")

        @hw.asset
        def rows(src: list[int]) -> list[int]:
            if flaky["on"]:
                raise RuntimeError("flaky")
            return src

        @hw.asset(policy=hw.manual())
        def total(rows: list[int]) -> int:
            return sum(rows)

        if body is None:
            return hw.Definitions([src, rows, total])
        namespace: dict[str, Any] = {"hw": hw}
        exec(f"def ok(rows):\n    return {body}\n", namespace)
        check = hw.check(rows, blocking=True, name="ok")(namespace["ok"])
        return hw.Definitions([src, rows, total], checks=[check])

    with Harness(build("True"), state_dir=tmp_path) as h:
        h.observe("src", value=[1, 2])
        assert h.tick().materialized == [("rows", None)]
    flaky["on"] = True
    with Harness(build("len(rows) >= 0"), state_dir=tmp_path) as h:
        assert list(h.tick().failed) == [("rows", None)]
        assert h.state("rows") == "failed"
    flaky["on"] = False
    with Harness(build("True"), state_dir=tmp_path) as h:
        assert h.state("rows") == "fresh", h.why("rows")
        assert h.tick().materialized == []
        assert h.materialize("total").materialized == [("total", None)]
        assert h.value("total") == 3
    with Harness(build("len(rows) >= 0"), state_dir=tmp_path) as h:
        assert h.state("rows") == "failed"  # the same checks as the failed run: it stands

    # failed with no blocking check at all, then one added: the failure is moot as well
    added = tmp_path / "added"
    with Harness(build(None), state_dir=added) as h:
        h.observe("src", value=[3])
        assert h.tick().materialized == [("rows", None)]
        flaky["on"] = True
        assert list(h.materialize("rows", force=True).failed) == [("rows", None)]
        assert h.state("rows") == "failed"
    flaky["on"] = False
    with Harness(build("True"), state_dir=added) as h:
        assert h.state("rows") == "stale", h.why("rows")  # the new check must judge [3]
        assert "blocking check 'ok' has not judged its current data" in h.why("rows")
        assert h.tick().materialized == [("rows", None)]


def test_a_non_blocking_check_edited_is_not_run_again_by_itself(tmp_path: Path) -> None:
    """It holds nothing back: its next verdict waits for the next materialization."""

    def build(threshold: int) -> hw.Definitions:
        namespace: dict[str, Any] = {"hw": hw}
        exec(f"def not_empty(rows):\n    return len(rows) > {threshold}\n", namespace)
        return _checked_by(hw.check("rows", name="not_empty")(namespace["not_empty"]))

    with Harness(build(0), state_dir=tmp_path) as h:
        h.observe("src", value=[1])
        assert h.tick().materialized == [("rows", None), ("total", None)]
    with Harness(build(5), state_dir=tmp_path) as h:
        assert h.state("rows") == "fresh"
        assert h.tick().materialized == []


def test_rematerializing_runs_the_check_again_and_releases_downstream() -> None:
    with Harness(_defs(blocking=True)) as h:
        h.observe("src", value=[])
        h.tick()
        h.observe("src", value=[1, 2])
        tick = h.tick()
        assert tick.materialized == [("rows", None), ("total", None)]
        assert [c.payload["passed"] for c in h.events(kind="check")] == [False, True]
        assert h.value("total") == 3


def test_non_blocking_failure_is_only_recorded() -> None:
    with Harness(_defs(blocking=False)) as h:
        h.observe("src", value=[])
        assert h.tick().materialized == [("rows", None), ("total", None)]
        (check,) = h.events(kind="check")
        assert check.payload["passed"] is False and check.payload["blocking"] is False


def test_a_check_that_raises_has_failed_with_its_error() -> None:
    src = hw.source("src")

    @hw.asset
    def rows(src: Any) -> Any:
        return src

    @hw.check(rows, blocking=True, name="explodes")
    def boom(value: Any, context: hw.Context) -> bool:
        raise RuntimeError(f"cannot judge {context.asset}")

    @hw.asset
    def after(rows: Any) -> Any:
        return rows

    with Harness(hw.Definitions([src, rows, after], checks=[boom])) as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert ("after", None) in tick.skipped
        (check,) = h.events(kind="check")
        assert check.payload["check"] == "explodes"
        assert check.payload["error"] == "RuntimeError: cannot judge rows"


def test_a_check_result_that_cannot_be_read_fails_the_check_not_the_run() -> None:
    """``passed`` that is not a truth value (a pandas Series), ``metadata`` that is not a
    mapping: the check failed, saying so; the asset materialized."""
    import pandas as pd

    src = hw.source("src")

    @hw.asset
    def rows(src: Any) -> Any:
        return src

    @hw.check(rows, name="ambiguous")
    def ambiguous(value: Any) -> hw.CheckResult:
        return hw.CheckResult(pd.Series([True, False]))  # type: ignore[arg-type]

    @hw.check(rows, name="listed")
    def listed(value: Any) -> hw.CheckResult:
        return hw.CheckResult(True, metadata=[1, 2, 3])  # type: ignore[arg-type]

    with Harness(hw.Definitions([src, rows], checks=[ambiguous, listed])) as h:
        h.observe("src", value=[1])
        tick = h.tick()
        assert tick.materialized == [("rows", None)] and tick.failed == {}
        errors = {c.payload["check"]: c.payload["error"] for c in h.events(kind="check")}
        assert {c.payload["passed"] for c in h.events(kind="check")} == {False}
        assert errors["ambiguous"].startswith(
            "returned a CheckResult that cannot be read: ValueError: The truth value of a Series"
        )
        assert errors["listed"].startswith("returned a CheckResult that cannot be read: TypeError")


def test_checks_judge_the_stored_value() -> None:
    """The check receives the value as it was stored (a DataFrame read back from Parquet)."""
    import pandas as pd

    src = hw.source("src")
    seen: list[Any] = []

    @hw.asset
    def table(src: Any) -> pd.DataFrame:
        return pd.DataFrame({"x": [1, 2]})

    @hw.check(table)
    def looks_right(table: pd.DataFrame) -> bool:
        seen.append(table)
        return True

    with Harness(hw.Definitions([src, table], checks=[looks_right])) as h:
        h.observe("src", "v1")
        h.tick()
        assert isinstance(seen[0], pd.DataFrame) and list(seen[0]["x"]) == [1, 2]


def test_a_check_must_take_the_value() -> None:
    import pytest

    with pytest.raises(hw.DefinitionError, match="must take exactly one parameter"):

        @hw.check("x")
        def no_value() -> bool:
            return True


def test_a_declared_check_the_run_did_not_run_is_recorded_as_failed() -> None:
    """A worker that loaded other definitions (edited on disk, not reloaded) ran no check of
    that name: leaving its verdict out would leave the data unjudged, and the asset would run
    again and again; it is recorded as failed, with the declared check's code version."""
    from headwater.execution._runner import Outcome

    with Harness(_defs(blocking=True)) as h:
        outcome = Outcome(ok=True, duration_ms=1.0, data_version="v1", checks=())
        (event,) = h.engine.cycle._check_events(("rows", None), "r1", outcome)
        (check,) = h.engine.defs.checks["rows"]
        assert (event.kind, event.data_version) == ("check", "v1")
        assert event.payload["check"] == "not_empty" and event.payload["passed"] is False
        assert event.payload["code_version"] == h.engine.defs.check_version(check)
        assert "not run: the definitions the run loaded do not declare it" in event.payload["error"]


def test_a_blocking_check_given_as_a_partial_is_the_same_check_at_the_next_start(
    tmp_path: Path,
) -> None:
    """``hw.check`` takes any callable: a partial (or a callable object) is fingerprinted by
    its function and arguments, never by an address that changes at every start."""

    alive: list[object] = []  # each start's objects at their own addresses, as in a new process

    def build(n: int) -> hw.Definitions:
        def at_least(n: int, rows: list[int]) -> bool:
            return len(rows) >= n

        alive.append(at_least)
        return _checked_by(
            hw.check("rows", blocking=True, name="enough")(functools.partial(at_least, n))
        )

    with Harness(build(1), state_dir=tmp_path) as h:
        h.observe("src", value=[1])
        assert h.tick().materialized == [("rows", None), ("total", None)]
    with Harness(build(1), state_dir=tmp_path) as h:
        assert h.state("rows") == "fresh"
        assert h.tick().materialized == []
    with Harness(build(2), state_dir=tmp_path) as h:  # its argument edited: judged again
        assert h.state("rows") == "stale"
        assert h.tick().materialized == [("rows", None)]
        assert h.state("total") == "fresh"  # held: the old total, not read again


def test_a_renamed_blocking_check_holds_readers_until_it_has_judged(tmp_path: Path) -> None:
    """``rows`` (manual) failed its blocking check; the check is renamed, same body. Its old
    verdict no longer counts, and no verdict of the new name exists: readers wait for one
    rather than read what no check declared now has passed."""

    def build(name: str, at_least: int = 1) -> hw.Definitions:
        @hw.asset(policy=hw.manual())
        def rows(src: Any) -> list[int]:
            return list(src)

        @hw.asset
        def mean(rows: list[int]) -> float:
            return sum(rows) / max(len(rows), 1)

        check = hw.check("rows", blocking=True, name=name)(lambda rows: len(rows) >= at_least)
        return hw.Definitions([hw.source("src"), rows, mean], checks=[check])

    with Harness(build("not_empty"), state_dir=tmp_path) as h:
        h.observe("src", value=[])
        assert h.materialize("rows").materialized == [("rows", None)]
        assert h.tick().materialized == []  # mean waits: the check failed
    with Harness(build("rows_not_empty"), state_dir=tmp_path) as h:
        tick = h.tick()
        assert tick.materialized == [] and tick.failed == {}
        assert tick.skipped[("mean", None)] == (
            "waiting: input rows waits for blocking check 'rows_not_empty' to judge its "
            "current data"
        )
        assert h.materialize("rows").materialized == [("rows", None)]  # judged now: failed
        assert "input rows is blocked by failed check 'rows_not_empty'" in " ".join(h.why("mean"))
    with Harness(build("any_rows", at_least=0), state_dir=tmp_path) as h:
        assert h.tick().materialized == []  # mean waits for the new check's verdict
        # The same data, judged again and passed: mean, which waited, hears of it at once.
        assert h.materialize("rows").materialized == [("rows", None), ("mean", None)]


def test_a_blocking_check_added_holds_readers_until_it_has_judged(tmp_path: Path) -> None:
    """``rows`` was materialized before it had any check; a blocking one is added: a reader
    asked for waits for its verdict on that data (there is none yet)."""

    def build(checked: bool) -> hw.Definitions:
        @hw.asset(policy=hw.manual())
        def rows(src: Any) -> list[int]:
            return list(src)

        @hw.asset(policy=hw.manual())
        def total(rows: list[int]) -> int:
            return sum(rows)

        checks = [hw.check("rows", blocking=True, name="small")(lambda rows: len(rows) < 3)]
        return hw.Definitions([hw.source("src"), rows, total], checks=checks if checked else [])

    with Harness(build(False), state_dir=tmp_path) as h:
        h.observe("src", value=[1, 2, 3])
        assert h.materialize("rows").materialized == [("rows", None)]
    with Harness(build(True), state_dir=tmp_path) as h:
        asked = h.materialize("total")
        assert asked.materialized == []
        assert asked.skipped[("total", None)] == (
            "requested, but waiting: input rows waits for blocking check 'small' to judge its "
            "current data"
        )


def test_a_dry_run_assumes_the_checks_of_a_planned_run_pass() -> None:
    """`plan` stopped at an asset with a blocking check: its readers were held back
    "waiting for blocking check 'a_ok' to judge its current data", though the plan assumes
    every planned run passes its checks; the tick then ran them (hostile34c bug1)."""
    from headwater.planning._dryrun import dry_run

    src = hw.source("src")

    @hw.asset
    def a(src: int) -> int:
        return src

    @hw.check(a, blocking=True)
    def a_ok(a: int) -> bool:
        return True

    @hw.asset
    def b(a: int) -> int:
        return a

    defs = hw.Definitions([src, a, b], checks=[a_ok])
    with Harness(defs) as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=2)
        planned = dry_run(defs, h.engine.state, h.now)
        assert [(s.asset, s.partition) for s in planned.steps] == [("a", None), ("b", None)]
        assert planned.held == {}
        assert h.tick().materialized == [("a", None), ("b", None)]
