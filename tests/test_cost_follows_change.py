"""Work after a change follows what the change reached, not the size of the graph: counted
(partitions decided, functions called), never timed. The graph is benchmarks/scale.py's, the
shape Dagster benchmarks with: layers of width √N, each asset reading 1-3 assets of the layer
before."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import pytest

import headwater as hw
from headwater._clock import VirtualClock
from headwater.execution import Engine
from headwater.testing import Harness

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
scale = importlib.import_module("scale")
CUT = scale.CUT


class _Memory:
    """Values in a dict: this module counts decisions, and fsyncs would only slow it down."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str | None], Any] = {}

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        self.values[(asset, partition)] = value

    def load(self, asset: str, partition: str | None) -> Any:
        return self.values[(asset, partition)]


def _layered(n: int) -> hw.Definitions:
    """benchmarks/scale.py's graph, values in memory."""
    return scale.dagster_shape(n, io=_Memory())[0]


def _observe_sources(h: Harness, defs: hw.Definitions) -> None:
    for key in defs.sources:
        h.observe(key, value=1)


@pytest.mark.parametrize("n", [100, 1_000])
def test_a_change_cut_off_at_the_root_decides_one_partition_whatever_lies_below(n: int) -> None:
    defs = _layered(n)
    below = len(defs.graph.descendants(["l0/a0"]))
    assert below >= n // 2  # the root's closure is most of the graph
    with Harness(defs) as h:
        _observe_sources(h, defs)
        first = h.tick()
        assert len(first.materialized) == n
        assert first.decided == n  # the first evaluation looks at everything
        h.observe("s0", value=2)  # the root returns 2 // 10**9 == 0 again
        cut = h.tick()
        assert cut.materialized == [("l0/a0", None)]
        assert cut.decided == 1
        h.observe("s0", value=3 * CUT)  # now every asset below changes
        changed = h.tick()
        assert len(changed.materialized) == len(set(changed.materialized)) == below + 1
        assert changed.decided == below + 1


def _calls(fn: Callable[[], object]) -> int:
    """Python and C function calls made by ``fn()``, in this thread and those it starts (the
    harness's event loop, and the worker threads it hands blocking work to)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return count


def _on_the_loop(h: Harness, fn: Callable[[], object]) -> int:
    """Function calls ``fn()`` makes on the harness's event loop (started before: the
    profile is set there, where the engine works)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    h._call(sys.setprofile, profile)
    try:
        fn()
    finally:
        h._call(sys.setprofile, None)
    return count


def test_compute_code_versions_makes_calls_in_proportion_to_the_assets() -> None:
    small, large = _layered(200), _layered(2_000)
    ratio = _calls(large.compute_code_versions) / _calls(small.compute_code_versions)
    assert ratio < 12, f"10x the assets made {ratio:.1f}x the calls (quadratic: ~100x)"


def test_the_first_full_evaluation_makes_calls_in_proportion_to_the_assets(
    tmp_path: Path,
) -> None:
    """Loading the definitions, opening a state directory with history and evaluating
    everything once, with nothing to run."""

    def evaluate(n: int) -> Callable[[], object]:
        state_dir = tmp_path / str(n)
        defs = _layered(n)
        with Harness(defs, state_dir=state_dir) as h:
            _observe_sources(h, defs)
            h.tick()

        def again() -> object:
            with Harness(_layered(n), state_dir=state_dir) as reopened:
                return reopened.tick()

        return again

    ratio = _calls(evaluate(2_000)) / _calls(evaluate(200))
    assert ratio < 15, f"10x the assets made {ratio:.1f}x the calls"


def test_a_first_tick_that_runs_everything_makes_calls_in_proportion_to_the_assets() -> None:
    """Every asset missing: each is reached, waits for what is upstream of it, and runs."""

    def first_tick(n: int) -> Callable[[], object]:
        defs = _layered(n)

        def run() -> object:
            with Harness(defs) as h:
                _observe_sources(h, defs)
                return h.tick()

        return run

    ratio = _calls(first_tick(2_000)) / _calls(first_tick(200))
    assert ratio < 15, f"10x the assets made {ratio:.1f}x the calls"


OURS = str(Path(hw.__file__).parent)


def test_a_new_source_version_costs_the_same_calls_whatever_the_size_of_the_graph(
    tmp_path: Path,
) -> None:
    """Recording a source's new version (what every file landing does) and the tick it starts
    (the root runs and cuts off): counted on the engine's own thread, the same at 2,000
    assets as at 200. Recording it used to walk every asset of the graph (28 ms at 100k)."""

    def calls(n: int) -> int:
        defs = _layered(n)
        counted: list[int] = []

        def profile(frame: FrameType, event: str, arg: object) -> None:
            # headwater's own calls (and the builtins they call): how many turns the event
            # loop takes meanwhile depends on the log's upkeep (a commit handed to a thread
            # while the seeding's WAL is checkpointed), not on the graph
            if event in ("call", "c_call") and frame.f_code.co_filename.startswith(OURS):
                counted[0] += 1

        async def main() -> None:
            async with Engine.open(defs, tmp_path / str(n), VirtualClock(scale.NOW)) as engine:
                for key in defs.sources:
                    await engine.observe(key, value=1)
                await engine.tick()
                await engine.observe("s0", value=2)  # what is memoized is filled
                await engine.tick()
                counted.append(0)
                sys.setprofile(profile)
                try:
                    await engine.observe("s0", value=3)
                    cut = await engine.tick()
                finally:
                    sys.setprofile(None)
                assert cut.materialized == [("l0/a0", None)]

        anyio.run(main, backend="asyncio")
        return counted[0]

    small, large = calls(200), calls(2_000)
    assert large < 1.5 * small, f"10x the assets made {large / small:.1f}x the calls"


def test_a_dry_run_decides_each_partition_of_the_closure_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``headwater plan --changed`` of the root: every asset below it is planned, and each is
    decided once, however many of its parents reach it."""
    from headwater.planning import _dryrun

    decided: list[tuple[str, str | None]] = []
    _watch_dry_run_steps(monkeypatch, decided.append)
    defs = _layered(400)
    with Harness(defs) as h:
        _observe_sources(h, defs)
        h.tick()
        planned = _dryrun.dry_run(defs, h.engine.state, h.now, changed=[("s0", None)])
    assert len(planned.steps) == len(defs.graph.descendants(["l0/a0"])) + 1
    assert sorted(decided) == sorted((s.asset, s.partition) for s in planned.steps)


def test_a_dry_run_leaves_no_object_per_step_for_the_collector_to_walk() -> None:
    """The plan it returns holds its steps in columns of strings: a step object each put
    97k objects in the collector's youngest generation at 100k, and the collection that
    followed the plan walked them all (a tenth of the plan)."""
    from headwater.planning import _dryrun

    def tracked_after_a_plan(n: int) -> int:
        defs = _layered(n)
        with Harness(defs) as h:
            _observe_sources(h, defs)
            h.tick()
            gc.collect()
            before = len(gc.get_objects())
            planned = _dryrun.dry_run(defs, h.engine.state, h.now, changed=[("s0", None)])
            assert len(planned.steps) > n // 2
            return len(gc.get_objects()) - before

    small, large = tracked_after_a_plan(100), tracked_after_a_plan(1_000)
    assert large <= small + 5, f"10x the steps left {large} tracked objects, against {small}"


def test_a_long_lived_engine_keeps_its_loaded_state_out_of_collections(tmp_path: Path) -> None:
    """The daemon's engine (``long_lived``): every record it loaded is frozen, so a full
    collection no longer walks the state; an engine opened by others freezes nothing."""
    defs = _layered(300)
    with Harness(defs, state_dir=tmp_path) as h:
        _observe_sources(h, defs)
        h.tick()
    clock = VirtualClock(scale.NOW)
    seen: dict[str, int] = {}

    async def open_twice() -> None:
        async with Engine.open(defs, tmp_path, clock):
            seen["frozen by others"] = gc.get_freeze_count()
        async with Engine.open(defs, tmp_path, clock, long_lived=True) as engine:
            records = list(engine.state.records.values())
            tracked = {id(o) for o in gc.get_objects()}  # the collector's generations only
            seen["records"] = len(records)
            seen["frozen"] = gc.get_freeze_count()
            seen["records still walked"] = sum(id(r) in tracked for r in records)

    assert gc.get_freeze_count() == 0
    try:
        anyio.run(open_twice, backend="asyncio")
    finally:
        gc.unfreeze()
    assert seen["frozen by others"] == 0
    assert seen["records"] > 300
    assert seen["frozen"] > seen["records"]
    assert seen["records still walked"] == 0


def test_loading_the_state_for_good_starts_no_collection_that_walks_it(tmp_path: Path) -> None:
    """A load for the life of the process (the daemon's, and a command's: status, why and
    plan load, print and exit) runs no collection while rows and records pile up, and leaves
    none due on them: a collection as the load ended walked every record (0.1-0.3 s at 100k)
    just before they were frozen, or for nothing."""
    from headwater.eventlog import EventLogReader, open_event_log

    defs = _layered(300)
    with Harness(defs, state_dir=tmp_path) as h:
        _observe_sources(h, defs)
        h.tick()

    async def by_the_daemon() -> tuple[int, int, int]:
        async with open_event_log(tmp_path) as log:
            with _collections_started() as started:
                state = await log.load_state(long_lived=True)
            return _walked_after(len(started), state)

    def by_a_command() -> tuple[int, int, int]:
        with _collections_started() as started:
            state = EventLogReader(tmp_path).load_state(long_lived=True)
        return _walked_after(len(started), state)

    for during, walked, records in (anyio.run(by_the_daemon, backend="asyncio"), by_a_command()):
        assert records > 300
        assert during == 0
        assert walked == 0


@contextlib.contextmanager
def _collections_started() -> Iterator[list[int]]:
    """The generation of each collection started in the block."""
    started: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.callbacks.append(watch)
    try:
        yield started
    finally:
        gc.callbacks.remove(watch)


def _walked_after(during: int, state: Any) -> tuple[int, int, int]:
    """``during``, how many of the records of ``state`` the collector still walks after a
    young collection (unfrozen then), and how many records."""
    try:
        gc.collect(0)  # what a collection due after the load would walk
        tracked = {id(o) for o in gc.get_objects()}
    finally:
        gc.unfreeze()
    return during, sum(id(r) in tracked for r in state.records.values()), len(state.records)


def test_a_change_reaches_the_children_that_react_to_it_and_every_partition_of_one() -> None:
    """What a new version of a node reaches: its eager and lazy children, not the manual or
    cron ones (their dirty mark is enough), and each partition of a partitioned child. The
    unpartitioned case is memoized per asset; both must give the same answer."""
    from headwater.planning._wavefront import reacting_children

    def defs(partitioned_child: bool) -> hw.Definitions:
        src = hw.source("src")
        nodes: list[Any] = [src]
        for key, policy in [("eager", hw.eager()), ("manual", hw.manual()),
                            ("lazy", hw.lazy()), ("cron", hw.on_cron("0 * * * *"))]:  # fmt: skip
            nodes.append(hw.asset(key, ins={"x": "src"}, policy=policy)(_identity))
        if partitioned_child:
            parts = hw.StaticPartitions(["p", "q"])
            nodes.append(hw.asset("parts", ins={"x": "src"}, partitions=parts)(_identity))
        return hw.Definitions(nodes)

    expected = [("eager", None), ("lazy", None)]
    for partitioned in (False, True):
        with Harness(defs(partitioned)) as h:
            ev = h.engine.evaluator()
            tail = [("parts", "p"), ("parts", "q")] if partitioned else []
            for _ in range(2):  # the second answer comes from the memo, if there is one
                assert list(reacting_children(ev, ("src", None))) == expected + tail


def _identity(x: Any) -> Any:
    return x


def test_a_dry_run_pauses_the_collector_and_leaves_it_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paused while it plans (no collection walks the steps it builds), running again after
    it, even when it raises; and still off afterwards if it was off before."""
    from headwater.planning import _dryrun

    seen: list[bool] = []
    _watch_dry_run_steps(monkeypatch, lambda _: seen.append(gc.isenabled()))
    defs = _layered(50)
    with Harness(defs) as h:
        _observe_sources(h, defs)
        h.tick()
        _dryrun.dry_run(defs, h.engine.state, h.now, changed=[("s0", None)])
        assert seen and not any(seen)
        assert gc.isenabled()
        with pytest.raises(KeyError):
            _dryrun.dry_run(defs, h.engine.state, h.now, changed=[("no-such-source", None)])
        assert gc.isenabled()
        gc.disable()
        try:
            _dryrun.dry_run(defs, h.engine.state, h.now, changed=[("s0", None)])
            assert not gc.isenabled()
        finally:
            gc.enable()


def _watch_dry_run_steps(
    monkeypatch: pytest.MonkeyPatch, seen: Callable[[tuple[str, str | None]], object]
) -> None:
    """Call ``seen(node)`` as a dry run decides each step (then decide it as before): through
    the evaluator, or as a plain step (which the evaluator decides if that finds it is not)."""
    from headwater.planning import _dryrun

    real = _dryrun.decide_step
    real_plain = _dryrun._plain_status

    def watching(ev: Any, node: tuple[str, str | None], request: Any) -> Any:
        seen(node)
        return real(ev, node, request)

    def watching_plain(ev: Any, facts: Any, place: int, planned: Any) -> Any:
        judged = real_plain(ev, facts, place, planned)
        if judged is not None:
            seen((facts.keys[place], None))
        return judged

    monkeypatch.setattr(_dryrun, "decide_step", watching)
    monkeypatch.setattr(_dryrun, "_plain_status", watching_plain)


def test_a_stuck_chain_of_max_lag_holders_costs_calls_in_proportion_to_its_length(
    tmp_path: Path,
) -> None:
    """A failing asset above a chain whose every asset has a ``max_lag``: the push of its
    change down the chain, the check of each holder, and a restart in the middle of the
    episode each walk the stuck region once, not once per holder (quadratic: 4x the chain
    made 16x the calls; cubic at a restart: hostile36b bug3, bug4)."""

    def stuck_chain(n: int) -> hw.Definitions:
        src = hw.source("src")

        @hw.asset(retries=hw.Retry(max_attempts=1000, delay="1d", backoff=1.0))
        def a0(src: int) -> int:
            if src == 2:
                raise ConnectionError("flaky")
            return src

        assets: list[Any] = [src, a0]
        for i in range(1, n):
            lag = hw.Freshness(max_lag="10m")
            assets.append(hw.asset(f"a{i}", deps=[assets[-1]], freshness=lag)(lambda: 1))
        return hw.Definitions(assets)

    def calls(n: int) -> int:
        defs = stuck_chain(n)
        state_dir = tmp_path / str(n)
        with Harness(defs, now="2026-01-05T00:00:00Z", state_dir=state_dir) as h:
            h.observe("src", value=1)
            h.tick()
            h.observe("src", value=2)
            h.tick()
            h.advance("9m")
            pushed = _on_the_loop(h, lambda: h.advance("2m"))
            assert len(h.events(kind="freshness_violated")) == n - 1

        def reopen() -> None:
            with Harness(defs, now="2026-01-05T00:30:00Z", state_dir=state_dir) as h:
                h.tick()

        return pushed + _calls(reopen)

    small, large = calls(100), calls(400)
    assert large < 8 * small, f"4x the chain made {large / small:.1f}x the calls"
