"""Properties over random DAGs and random change sets, run through the real engine.

Each asset either echoes its inputs (its value changes whenever an input does) or ignores them
(a constant: re-running it yields the same version, so the cascade stops there). A reference
model walks the graph in topological order and says which partitions must run; the engine must
run exactly those, each once, every one after its planned parents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headwater as hw
from headwater.planning._dryrun import dry_run
from headwater.testing import Harness

PARTS = ["p0", "p1", "p2"]


@dataclass(frozen=True)
class Spec:
    sources: int
    parents: tuple[tuple[int, ...], ...]  # per asset, indexes into sources + earlier assets
    echo: tuple[bool, ...]
    partitioned: bool

    def name(self, i: int) -> str:
        return f"s{i}" if i < self.sources else f"a{i - self.sources}"


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    sources = draw(st.integers(1, 3))
    count = draw(st.integers(1, 8))
    parents = []
    for i in range(count):
        pool = list(range(sources + i))
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        parents.append(tuple(sorted(chosen)))
    echo = tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count)))
    return Spec(sources, tuple(parents), echo, draw(st.booleans()))


def _build(spec: Spec) -> hw.Definitions:
    parts = hw.StaticPartitions(PARTS) if spec.partitioned else None
    nodes: list[Any] = [hw.source(spec.name(i), partitions=parts) for i in range(spec.sources)]
    for j, ups in enumerate(spec.parents):
        key = spec.name(spec.sources + j)
        params = [f"x{k}" for k in range(len(ups))]
        body = f"('{key}', {', '.join(params)},)" if spec.echo[j] else f"('{key}',)"
        namespace: dict[str, Any] = {}
        exec(f"def fn({', '.join(params)}):\n    return {body}\n", namespace)
        ins = {p: spec.name(u) for p, u in zip(params, ups, strict=True)}
        nodes.append(hw.asset(key, ins=ins, partitions=parts)(namespace["fn"]))
    return hw.Definitions(nodes)


def _started(h: Harness, spec: Spec) -> Any:
    """Every source at its start value, and the tick that materializes everything once."""
    partitions: list[str | None] = list(PARTS) if spec.partitioned else [None]
    for i in range(spec.sources):
        for p in partitions:
            h.observe(spec.name(i), value=("start", i), partition=p)
    return h.tick()


def _expected(spec: Spec, changed: set[tuple[int, str | None]]) -> set[tuple[str, str | None]]:
    """Reference model: an asset partition runs iff an input changed; it changes iff it echoes."""
    runs: set[tuple[str, str | None]] = set()
    partitions: list[str | None] = list(PARTS) if spec.partitioned else [None]
    for partition in partitions:
        changed_nodes = {i for i, p in changed if p == partition}
        for j, ups in enumerate(spec.parents):
            index = spec.sources + j
            if any(u in changed_nodes for u in ups):
                runs.add((spec.name(index), partition))
                if spec.echo[j]:
                    changed_nodes.add(index)
    return runs


changes = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(PARTS), st.integers(0, 2)), max_size=6
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), edits=changes)
def test_plan_runs_exactly_what_changed_data_makes_stale(
    spec: Spec, edits: list[tuple[int, str, int]]
) -> None:
    """After a random set of source edits, the engine runs exactly the reference set, once each,
    in topological order; edits that restore the same value change nothing."""
    defs = _build(spec)
    partitions: list[str | None] = list(PARTS) if spec.partitioned else [None]
    with Harness(defs) as h:
        first = _started(h, spec)
        assert len(first.materialized) == len(spec.parents) * len(partitions)
        values = {(i, p): ("start", i) for i in range(spec.sources) for p in partitions}
        changed: set[tuple[int, str | None]] = set()
        for source, part, new in edits:
            i = source % spec.sources
            p = part if spec.partitioned else None
            value = ("start", i) if new == 0 else ("edit", i, new)
            h.observe(spec.name(i), value=value, partition=p)
            values[(i, p)] = value
        changed = {k for k, v in values.items() if v != ("start", k[0])}
        tick = h.tick()
        assert tick.failed == {}
        assert len(tick.materialized) == len(set(tick.materialized))
        assert set(tick.materialized) == _expected(spec, changed)
        position = {node: n for n, node in enumerate(tick.materialized)}
        for (key, partition), n in position.items():
            j = int(key[1:])
            for u in spec.parents[j]:
                parent = (spec.name(u), partition)
                if parent in position:
                    assert position[parent] < n
        assert h.tick().materialized == []  # quiet afterwards


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(), edits=st.sets(st.tuples(st.integers(0, 2), st.sampled_from(PARTS)), max_size=4)
)
def test_a_dry_run_plans_what_the_next_tick_runs(spec: Spec, edits: set[tuple[int, str]]) -> None:
    """``headwater plan --changed``: every step it does not mark as one early cutoff may stop
    runs in the next tick, nothing it does not list runs, and its order is topological; when
    every asset echoes its inputs (no cutoff), the plan is exactly the tick. ``headwater
    plan`` once the changes are in (every partition looked at, as by a daemon starting now)
    marks and lists the same way."""
    defs = _build(spec)
    with Harness(defs) as h:
        _started(h, spec)
        quiet = dry_run(defs, h.engine.state, h.engine.clock.now())
        assert quiet.steps == []  # nothing to do: a full evaluation plans nothing
        changed = sorted(
            {(spec.name(s % spec.sources), p if spec.partitioned else None) for s, p in edits},
            key=str,
        )
        planned = dry_run(defs, h.engine.state, h.engine.clock.now(), changed=changed)
        for node in changed:
            h.observe(node[0], value=("edit", node), partition=node[1])
        full = dry_run(defs, h.engine.state, h.engine.clock.now())
        ran = set(h.tick().materialized)
        for made in (full, planned):
            listed = {(s.asset, s.partition): s for s in made.steps}
            assert ran <= set(listed)
            assert {n for n, s in listed.items() if not s.may_stop} <= ran
            if all(spec.echo):
                assert ran == set(listed)
        steps = {(s.asset, s.partition): s for s in planned.steps}
        order = [(s.asset, s.partition) for s in planned.steps]
        for n, (key, partition) in enumerate(order):
            for u in spec.parents[int(key[1:])]:
                parent = (spec.name(u), partition)
                if parent in steps:
                    assert order.index(parent) < n


def test_a_plan_of_everything_marks_only_what_early_cutoff_may_stop() -> None:
    """``headwater plan`` after ``s`` changed: ``a`` runs; ``b`` reads only ``a``, so it runs
    only if ``a``'s data changes (may stop); ``c`` also reads ``s``, so it runs anyway."""
    namespace: dict[str, Any] = {}
    exec(
        "def a(s):\n    return 'constant'\n"
        "def b(a):\n    return a\n"
        "def c(s, a):\n    return (s, a)\n",
        namespace,
    )
    defs = hw.Definitions([hw.source("s"), *(hw.asset(namespace[k]) for k in "abc")])
    with Harness(defs) as h:
        h.observe("s", value=1)
        h.tick()
        h.observe("s", value=2)
        planned = dry_run(defs, h.engine.state, h.engine.clock.now())
        marks = {s.asset: s.may_stop for s in planned.steps}
        assert marks == {"a": False, "b": True, "c": False}
        assert sorted(h.tick().materialized) == [("a", None), ("c", None)]


def test_a_missing_step_is_never_marked_as_one_early_cutoff_may_stop() -> None:
    """Nothing was materialized yet: ``b`` runs whatever ``a`` produces, so the plan does not
    mark it "may stop" (hostile34c bug13)."""
    namespace: dict[str, Any] = {}
    exec("def a(s):\n    return s % 2\ndef b(a):\n    return a\n", namespace)
    defs = hw.Definitions([hw.source("s"), hw.asset(namespace["a"]), hw.asset(namespace["b"])])
    with Harness(defs) as h:
        h.observe("s", value=1)
        planned = dry_run(defs, h.engine.state, h.engine.clock.now())
        assert {s.asset: s.may_stop for s in planned.steps} == {"a": False, "b": False}


@dataclass(frozen=True)
class Mixed:
    """A random unpartitioned graph whose assets differ in what the plain path of a dry run
    looks at: fails on edited data, policy, a blocking check, its code version edited after
    the state was recorded, an SLA with ``max_lag``."""

    spec: Spec
    fails: tuple[bool, ...]
    manual: tuple[bool, ...]
    checked: tuple[bool, ...]
    recoded: tuple[bool, ...]
    lagged: tuple[bool, ...]


@st.composite
def mixed(draw: st.DrawFn) -> Mixed:
    spec = draw(specs())
    spec = Spec(spec.sources, spec.parents, spec.echo, False)
    n = len(spec.parents)

    def flags() -> tuple[bool, ...]:  # mostly plain: the plain path has steps to take
        rare = st.sampled_from([False, False, False, True])
        return tuple(draw(st.lists(rare, min_size=n, max_size=n)))

    lag = draw(st.booleans())  # any lag SLA turns the plain path off for the whole plan
    return Mixed(spec, flags(), flags(), flags(), flags(), flags() if lag else (False,) * n)


def _build_mixed(m: Mixed, *, recoded: bool) -> hw.Definitions:
    spec = m.spec
    nodes: list[Any] = [hw.source(spec.name(i)) for i in range(spec.sources)]
    checks = []
    for j, ups in enumerate(spec.parents):
        key = spec.name(spec.sources + j)
        params = [f"x{k}" for k in range(len(ups))]
        body = f"('{key}', {', '.join(params)},)" if spec.echo[j] else f"('{key}',)"
        guard = "    if 'edit' in repr(x0):\n        raise ValueError('no')\n" if m.fails[j] else ""
        namespace: dict[str, Any] = {}
        exec(f"def fn({', '.join(params)}):\n{guard}    return {body}\n", namespace)
        made = hw.asset(
            key,
            ins={p: spec.name(u) for p, u in zip(params, ups, strict=True)},
            policy=hw.manual() if m.manual[j] else hw.eager(),
            code_version="v2" if recoded and m.recoded[j] else "v1",
            freshness=hw.Freshness(max_lag="1h") if m.lagged[j] else None,
        )(namespace["fn"])
        nodes.append(made)
        if m.checked[j]:
            checks.append(hw.check(made, blocking=True, name=f"{key}_ok")(lambda value: True))
    return hw.Definitions(nodes, checks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=mixed(), edited=st.sets(st.integers(0, 2), max_size=3), recode=st.booleans())
def test_a_dry_run_plans_the_same_with_and_without_its_plain_steps(
    m: Mixed, edited: set[int], recode: bool
) -> None:
    """The plain path of a dry run (an eager asset whose inputs are single present nodes,
    decided from the versions planned so far) plans what the evaluator alone plans: the same
    steps, reasons, marks, held partitions and SLA risks, whatever failed, is manual, has a
    blocking check, an edited code version or a lag SLA."""
    from headwater.planning import _dryrun

    defs = _build_mixed(m, recoded=False)
    spec = m.spec
    with Harness(defs) as h:
        _started(h, spec)
        for s in sorted(edited):
            h.observe(spec.name(s % spec.sources), value=("edit", s))
        h.tick()  # some fail on the edits: the state holds failures
        now = h.engine.clock.now()
        planned_defs = _build_mixed(m, recoded=recode)
        runs = [
            dry_run(planned_defs, h.engine.state, now, changed=[(spec.name(0), None)]),
            dry_run(planned_defs, h.engine.state, now),
        ]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_dryrun, "_plain_status", lambda *_: None)
            alone = [
                dry_run(planned_defs, h.engine.state, now, changed=[(spec.name(0), None)]),
                dry_run(planned_defs, h.engine.state, now),
            ]
    for fast, slow in zip(runs, alone, strict=True):
        assert fast.steps == slow.steps
        assert fast.held == slow.held
        assert fast.risks == slow.risks
