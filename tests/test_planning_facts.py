"""The planner's per-asset facts (``planning._facts``): gathered once per definitions, shared
by every plan and evaluator over them, and gone with them."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import headwater as hw
from headwater._records import replace
from headwater.planning._dryrun import dry_run, put_observed
from headwater.planning._state import NodeRecord, State
from headwater.planning._status import Evaluator

NOW = datetime(2026, 1, 5, tzinfo=UTC)


def _pairs(n: int) -> tuple[hw.Definitions, State]:
    """``s<i> -> a<i>``, every asset materialized on its source's version."""

    def reader(i: int) -> hw.AssetDef:
        def fn(x: object) -> object:
            return x

        return hw.asset(f"a{i}", ins={"x": f"s{i}"}, code_version="1")(fn)

    defs = hw.Definitions([hw.source(f"s{i}") for i in range(n)] + [reader(i) for i in range(n)])
    state = State()
    for i in range(n):
        state.put((f"s{i}", None), NodeRecord(version=f"v{i}", changed_at=NOW))
        state.put(
            (f"a{i}", None),
            NodeRecord(
                version=f"w{i}", changed_at=NOW, materialized_at=NOW, code_version="1",
                inputs=((f"s{i}", None, f"v{i}"),), store="",
            ),
        )  # fmt: skip
    return defs, state


def test_the_facts_of_definitions_no_longer_used_are_dropped_with_them() -> None:
    """A daemon reloads its definitions again and again: the facts of the old ones must not
    keep them (their modules, functions and graph) alive."""
    dropped = []
    for _ in range(3):
        defs, state = _pairs(3)
        Evaluator(defs, state, NOW).status("a0", None)  # every tick, status and why
        dry_run(defs, state, NOW, changed=[("s0", None)])  # `headwater plan`
        dropped.append(weakref.ref(defs))
        del defs
    gc.collect()
    assert [ref() for ref in dropped] == [None, None, None]


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_plans_in_threads_at_once_gather_each_asset_s_facts_for_it() -> None:
    """Two plans over new definitions in two threads gather facts at once: each asset's
    inputs must stay its own (not another's slice of the shared columns), and both plans
    must read the one set of facts (their evaluators too)."""
    n = 1000
    expected = {f"a{i}": f"input s{i} changed (v{i} -> (new {i}))" for i in range(n)}
    for _ in range(5):
        defs, state = _pairs(n)  # facts gathered afresh
        assert _plans_at_once(defs, state, [(f"s{i}", None) for i in range(n)]) == [expected] * 3


def _plans_at_once(
    defs: hw.Definitions, state: State, changed: list[tuple[str, None]]
) -> list[dict[str, str]]:
    """Three dry runs in three threads at once: each one's steps and their reasons."""
    plans: list[dict[str, str]] = []

    def plan() -> None:
        planned = dry_run(defs, state, NOW, changed=changed)
        plans.append({step.asset: step.reason for step in planned.steps})

    threads = [threading.Thread(target=plan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return plans


def _wide(n: int) -> tuple[hw.Definitions, State]:
    """``wide`` reads ``s0`` .. ``s<n-1>``, materialized on their versions."""

    params = {f"x{i}": f"s{i}" for i in range(n)}
    scope: dict[str, Any] = {}
    exec(f"def fn({', '.join(params)}): return 0", scope)  # n named inputs
    fn = scope["fn"]
    defs = hw.Definitions(
        [hw.source(f"s{i}") for i in range(n)]
        + [hw.asset("wide", ins=params, code_version="1")(fn)]
    )
    state = State()
    for i in range(n):
        state.put((f"s{i}", None), NodeRecord(version=f"v{i}", changed_at=NOW))
    inputs = tuple(sorted((f"s{i}", None, f"v{i}") for i in range(n)))
    state.put(
        ("wide", None),
        NodeRecord(
            version="w", changed_at=NOW, materialized_at=NOW, code_version="1", inputs=inputs,
            store="", binding=defs.binding("wide"),
        ),
    )  # fmt: skip
    return defs, state


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"code_version": "0"},
        {"store": "s3://elsewhere"},
        {"inputs": (("t0", None, "v0"),)},
        {"inputs": (("s0", "p", "v0"),)},
        {"inputs": ()},
    ],
    ids=["inputs", "code", "store", "renamed-input", "partition", "no-inputs"],
)
def test_a_plan_gives_a_plain_step_the_reasons_its_status_gives(change: dict[str, object]) -> None:
    """A dry run judges the usual step (only its inputs' versions changed) from the versions
    it planned, without the evaluator; any other record must still get the evaluator's
    reasons, in its order."""
    defs, state = _pairs(2)
    record = state.records[("a0", None)]
    state.put(("a0", None), replace(record, **change))  # type: ignore[arg-type]
    _assert_plan_says_what_status_says(defs, state, "a0", [("s0", None)])


@pytest.mark.parametrize("n", [11, 12, 13])
def test_a_plan_counts_the_input_changes_of_a_wide_step_as_its_status_does(n: int) -> None:
    defs, state = _wide(n)
    _assert_plan_says_what_status_says(defs, state, "wide", [(f"s{i}", None) for i in range(n)])


def _assert_plan_says_what_status_says(
    defs: hw.Definitions, state: State, key: str, changed: list[tuple[str, None]]
) -> None:
    planned = dry_run(defs, state, NOW, changed=changed)
    after = state.copy()
    for n, node in enumerate(changed):
        put_observed(after, node, f"(new {n})", NOW)
    status = Evaluator(defs, after, NOW).status(key, None)
    assert status.state in ("stale", "missing"), status
    assert [(s.asset, s.reason) for s in planned.steps] == [(key, "; ".join(status.reasons))]
