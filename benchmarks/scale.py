"""Cost against graph size on the DAG shape Dagster benchmarks with, next to issue 9's targets.

The graph: N assets in layers of width ⌊√N⌋; every asset of a layer reads 1-3 assets of the
layer before (``random.Random(42)``); each asset of the first layer reads its own source. The
root is the first asset of the first layer. Its function returns ``source // 10**9``, every
other ``sum(inputs) + 1``, so:

- cut-off: the root's source changes by 1 (timed: the tick after the observation): the root runs and returns the same value, and
  nothing below it may cost anything (early cutoff);
- all-changed: the root's source changes by 10**9: every asset of the root's closure runs.

Each size runs in its own process (for its peak RSS), on a state directory seeded by yet another
with one observation per source and one materialization per asset (values stored, nothing to
do).
Printed per size, as medians over repeats: open (rebuild the state from the log), the first
full evaluation (nothing to run), the cut-off tick and how many partitions it decided, the
all-changed tick (sizes up to --all-changed-max) and its cost per run, the pure planner's cost
per step over the whole closure (a dry run, as `headwater plan --changed s0`: the first after
open, which gathers each asset's planning facts once per definitions, and the median of those
after it), next to it the floor (``minimal_plan``: the least any planner must do per step on the same records), and peak
RSS.
Then trivial materializations for a chain of 500 and for 500 independent assets (threads, the
default store), committed event-log appends per second for one writer, and issue 9's table:
each measure against its target.

    python benchmarks/scale.py [--sizes 1000 10000 100000] [--repeats 5] [--all-changed-max 5000]
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import pickle
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

import headwater as hw
from headwater._clock import VirtualClock, parse_instant
from headwater._collector import collector_paused
from headwater._events import Event, EventKind
from headwater.eventlog import SmallValue, open_event_log
from headwater.execution import Engine, FilesystemStore, IOManager
from headwater.planning._dryrun import dry_run
from headwater.versions import data_version

NOW = parse_instant("2026-01-05T00:00:00Z")
CUT = 10**9


def root(x: int) -> int:
    return x // CUT


def one(p0: int) -> int:
    return p0 + 1


def two(p0: int, p1: int) -> int:
    return p0 + p1 + 1


def three(p0: int, p1: int, p2: int) -> int:
    return p0 + p1 + p2 + 1


_FUNCTIONS: dict[int, Callable[..., int]] = {1: one, 2: two, 3: three}


def dagster_shape(
    n: int, io: IOManager | None = None
) -> tuple[hw.Definitions, dict[str, list[str]]]:
    """The definitions (values stored by ``io``, the default store if None), and each asset's
    inputs in parameter order (sources included). tests/test_cost_follows_change.py counts
    the work on this same graph."""
    width = max(1, math.isqrt(n))
    rng = random.Random(42)
    nodes: list[Any] = []
    inputs: dict[str, list[str]] = {}
    layers: list[list[str]] = []
    made = 0
    while made < n:
        layer = []
        for j in range(min(width, n - made)):
            key = f"l{len(layers)}/a{j}"
            if not layers:
                nodes.append(hw.source(f"s{j}"))
                inputs[key] = [f"s{j}"]
                nodes.append(hw.asset(key, ins={"x": f"s{j}"}, io=io)(root))
            else:
                previous = layers[-1]
                parents = rng.sample(previous, rng.randint(1, min(3, len(previous))))
                inputs[key] = parents
                ins = {f"p{i}": parent for i, parent in enumerate(parents)}
                nodes.append(hw.asset(key, ins=ins, io=io)(_FUNCTIONS[len(parents)]))
            layer.append(key)
        layers.append(layer)
        made += len(layer)
    return hw.Definitions(nodes), inputs


def closure(defs: hw.Definitions, key: str) -> int:
    return len(defs.graph.descendants([key])) + 1


async def seed(defs: hw.Definitions, inputs: dict[str, list[str]], state_dir: Path) -> None:
    """One observation per source (value 1, a file) and one materialization per asset with the
    value its function gives (kept in the log, as the engine keeps small values)."""
    values: dict[str, int] = {}
    versions: dict[str, str] = {}
    batch: list[Event] = []
    kept: dict[tuple[str, str | None], SmallValue | None] = {}
    files = FilesystemStore(state_dir / "values")
    async with Engine.open(defs, state_dir, VirtualClock(NOW)) as engine:
        order = defs.graph.order
        for key in sorted(defs.nodes, key=order.__getitem__):
            node = defs.nodes[key]
            if isinstance(node, hw.SourceDef):
                values[key] = 1
            else:
                args = [values[parent] for parent in inputs[key]]
                values[key] = node.fn(*args)
            versions[key] = data_version(values[key])
            if isinstance(node, hw.SourceDef):
                files.store(key, None, values[key], versions[key])
            else:
                kept[(key, None)] = SmallValue(versions[key], pickle.dumps(values[key], 5))
            if isinstance(node, hw.SourceDef):
                batch.append(
                    Event(
                        kind=EventKind.OBSERVATION,
                        timestamp=NOW,
                        asset=key,
                        data_version=versions[key],
                    )
                )
            else:
                payload = {
                    "code_version": defs.code_version(key),
                    "inputs": [[parent, None, versions[parent]] for parent in inputs[key]],
                }
                if (binding := defs.binding(key)) is not None:  # as the engine records it
                    payload["binding"] = binding
                batch.append(
                    Event(
                        kind=EventKind.MATERIALIZATION, timestamp=NOW, asset=key, run_id="seed",
                        data_version=versions[key], payload=payload,
                    )
                )  # fmt: skip
            if len(batch) >= 20_000:
                await engine.append(batch, values=kept)
                batch, kept = [], {}
        await engine.append(batch, values=kept)


async def measure(n: int, repeats: int, all_changed: bool) -> dict[str, Any]:
    defs, _ = dagster_shape(n)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        # Seeded by another process, so that this one's peak RSS is the engine's alone.
        seeding = [sys.executable, __file__, "--seed", str(n), "--into", tmp]
        await anyio.run_process(seeding, stdout=None, stderr=None)
        t = time.perf_counter()
        # As the daemon opens it: the loaded state is kept out of the cyclic collector.
        async with Engine.open(defs, state_dir, VirtualClock(NOW), long_lived=True) as engine:
            out: dict[str, Any] = {"open": time.perf_counter() - t}
            t = time.perf_counter()
            quiet = await engine.tick()
            out["full"] = time.perf_counter() - t
            assert quiet.materialized == [], "the seeded graph should be fresh"
            cut, decided = [], []
            for r in range(repeats):
                await engine.observe("s0", value=2 + r)
                t = time.perf_counter()
                result = await engine.tick()
                cut.append(time.perf_counter() - t)
                decided.append(result.decided)
                assert result.materialized == [("l0/a0", None)], result
            out["cut"] = statistics.median(cut)
            out["cut_decided"] = max(decided)
            # The engine's peak, before the dry run's copy of the state adds to it.
            out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            # The pure planner over the whole closure, as if every step produced a new version
            # (what `headwater plan --changed s0` shows): the cost per planned step.
            # The first plan after open gathers each asset's facts (``planning._facts``), once
            # per definitions: shown apart from a plan that finds them gathered.
            plans = []
            for _ in range(1 + max(1, repeats // 2)):
                t = time.perf_counter()
                planned = dry_run(defs, engine.state, NOW, changed=[("s0", None)])
                plans.append(time.perf_counter() - t)
            assert len(planned.steps) == closure(defs, "l0/a0"), len(planned.steps)
            out["first_plan_step"] = plans[0] / len(planned.steps)
            out["plan_step"] = statistics.median(plans[1:]) / len(planned.steps)
            floors = []
            for _ in range(max(1, repeats // 2)):
                t = time.perf_counter()
                with collector_paused():  # as dry_run: else the floor counts collections
                    steps = minimal_plan(defs, engine.state.records, ("s0", None))
                floors.append(time.perf_counter() - t)
            assert steps == len(planned.steps), (steps, len(planned.steps))
            out["floor_step"] = statistics.median(floors) / steps
            if all_changed:
                runs = closure(defs, "l0/a0")
                times = []
                for r in range(max(1, repeats // 2)):
                    await engine.observe("s0", value=(r + 1) * CUT)
                    t = time.perf_counter()
                    result = await engine.tick()
                    times.append(time.perf_counter() - t)
                    assert len(result.materialized) == runs, (len(result.materialized), runs)
                out["all"] = statistics.median(times)
                out["all_runs"] = runs
    out["closure"] = closure(defs, "l0/a0")
    return out


def minimal_plan(
    defs: hw.Definitions, records: dict[tuple[str, str | None], Any], changed: tuple[str, None]
) -> int:
    """The least a planner over these records can do per step, as a floor for the real one:
    the closure of ``changed`` (unpartitioned, every policy eager) in topological order, each
    step reading its inputs' versions, comparing them with the recorded ones (naming the
    changed inputs), recording a new version and reaching its children. No policies, checks,
    partitions, failures or SLAs. Same records, graph and definitions as the real planner, so
    what it costs at 100k that it does not at 1k is the memory of the data, not the logic."""
    from headwater.planning._state import NodeRecord

    records = dict(records)
    order, in_edges, children = defs.graph.order, defs.graph.in_edges, defs.graph.children
    records[changed] = NodeRecord(version="(new)")
    ready = [(order[child], child) for child in children[changed[0]]]
    heapq.heapify(ready)
    reached = {key for _, key in ready}
    steps = 0
    while ready:
        key = heapq.heappop(ready)[1]
        old = records[(key, None)]
        inputs = tuple(sorted((up, None, records[(up, None)].version) for up, _ in in_edges[key]))
        why = [up for (up, _, v), (_, _, was) in zip(inputs, old.inputs, strict=True) if v != was]
        assert why, key
        steps += 1
        records[(key, None)] = NodeRecord(
            version=f"(planned {steps})", inputs=inputs, code_version=defs.code_version(key)
        )
        for child in children[key]:
            if child not in reached:
                reached.add(child)
                heapq.heappush(ready, (order[child], child))
    return steps


async def throughput(n: int, serial: bool) -> float:
    """Milliseconds per trivial materialization (default store, threads executor)."""

    def trivial(prev: Any) -> int:
        return 1

    nodes: list[Any] = [hw.source("src")]
    upstream = "src"
    for i in range(n):
        nodes.append(hw.asset(f"a{i}", ins={"prev": upstream if serial else "src"})(trivial))
        upstream = f"a{i}"
    defs = hw.Definitions(nodes)
    with tempfile.TemporaryDirectory() as tmp:
        async with Engine.open(defs, Path(tmp), VirtualClock(NOW)) as engine:
            await engine.observe("src", "v1")
            t = time.perf_counter()
            result = await engine.tick()
            elapsed = time.perf_counter() - t
    assert len(result.materialized) == n
    return elapsed / n * 1000


async def appends(n: int) -> float:
    """Committed event-log appends per second, one writer, one event per write."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_event_log(Path(tmp)) as log:
            t = time.perf_counter()
            for i in range(n):
                await log.write(
                    [Event(kind="observation", timestamp=NOW, asset="s", data_version=str(i))]
                )
            return n / (time.perf_counter() - t)


def _one(n: int, repeats: int, all_changed: bool) -> None:
    result = anyio.run(measure, n, repeats, all_changed, backend="asyncio")
    print(json.dumps(result))


def _in_child(n: int, repeats: int, all_changed: bool) -> dict[str, Any]:
    args = [sys.executable, __file__, "--one", str(n), "--repeats", str(repeats)]
    if all_changed:
        args.append("--all-changed")
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _rates(kind: str) -> None:
    """Median of three, printed as JSON: ms per run (chain, independent) or appends/s."""
    if kind == "appends":
        measured = [anyio.run(appends, 10_000) for _ in range(3)]
    else:
        measured = [anyio.run(throughput, 500, kind == "chain") for _ in range(3)]
    print(json.dumps(statistics.median(measured)))


def _rate_in_child(kind: str) -> float:
    """Each rate in a process of its own, as each size: what ran before in the same process
    (its heap, its idle threads) would otherwise count."""
    args = [sys.executable, __file__, "--rate", kind]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.splitlines()[-1]))


def main(sizes: list[int], repeats: int, all_changed_max: int) -> None:
    print("Dagster-shaped DAG (width √N, 1-3 parents from the layer before, Random(42))")
    print(
        f"{'assets':>8} {'closure':>8} {'open':>8} {'full eval':>10} {'cut-off tick':>13} "
        f"{'decided':>8} {'all-changed':>12} {'per run':>9} {'1st plan':>9} {'plan/step':>10} "
        f"{'floor':>8} "
        f"{'peak RSS':>9}"
    )
    results = {}
    for n in sizes:
        r = results[n] = _in_child(n, repeats, n <= all_changed_max)
        every = f"{r['all']:>11.2f}s {r['all'] / r['all_runs'] * 1e3:>7.2f}ms" if "all" in r else (
            f"{'-':>12} {'-':>9}"
        )  # fmt: skip
        print(
            f"{n:>8} {r['closure']:>8} {r['open']:>7.2f}s {r['full']:>9.2f}s "
            f"{r['cut'] * 1e3:>11.2f}ms {r['cut_decided']:>8} {every} "
            f"{r['first_plan_step'] * 1e6:>7.2f}µs {r['plan_step'] * 1e6:>8.2f}µs "
            f"{r['floor_step'] * 1e6:>6.2f}µs {r['rss_mb']:>7.0f}MB"
        )
    chain = _rate_in_child("chain")
    independent = _rate_in_child("independent")
    appended = _rate_in_child("appends")
    print(f"trivial materialization, chain of 500:      {chain:.2f} ms/run")
    print(f"trivial materialization, 500 independent:   {independent:.2f} ms/run")
    print(f"event-log appends/s, one writer, committed: {appended:,.0f}")
    _targets(results, chain, independent, appended)


def _targets(
    results: dict[int, dict[str, Any]], chain: float, independent: float, appended: float
) -> None:
    """Issue 9's table: each measure, its target, and measure / target (<= 1 meets it; for
    rates, target / measure)."""
    rows: list[tuple[str, float, float, str]] = []
    large, small = max(results), min(results)
    big, little = results[large], results[small]
    rows.append((f"open, {large:,} assets", big["open"], 1.0, "s"))
    rows.append((f"first full evaluation, {large:,}", big["full"], 1.0, "s"))
    rows.append((f"cut-off tick, {large:,}", big["cut"] * 1e3, 5.0, "ms"))
    if large != small:
        rows.append((f"cut-off tick {large:,} / {small:,}", big["cut"] / little["cut"], 2.0, "x"))
    step = max(r["plan_step"] for r in results.values())
    rows.append(("plan, whole closure changed, per step", step * 1e6, 5.0, "µs"))
    first = max(r["first_plan_step"] for r in results.values())
    rows.append(("  the first plan after open (gathers facts)", first * 1e6, 5.0, "µs"))
    rows.append(("trivial materialization, chain of 500", chain, 0.5, "ms"))
    rows.append(("trivial materializations/s, independent", 1000 / independent, 3000, "/s"))
    for n, r in results.items():
        if "all" in r:
            rows.append((f"all-changed tick, {n:,} ({r['all_runs']:,} runs)", r["all"], 2.0, "s"))
    rows.append(("event-log appends/s, one writer", appended, 20_000, "/s"))
    rows.append((f"peak RSS, {large:,} opened and ticking", big["rss_mb"], 400, "MB"))
    print()
    print(f"{'measure (issue 9)':<44} {'measured':>12} {'target':>10} {'ratio':>7}")
    for name, value, target, unit in rows:
        ratio = target / value if unit == "/s" else value / target
        shown = f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"
        goal = f"{target:,.0f}{unit}" if target >= 100 else f"{target:g}{unit}"
        print(f"{name:<44} {shown:>12} {goal:>10} {ratio:>6.2f}{'' if ratio <= 1 else ' *'}")
    print("ratio: measured against the target, <= 1 meets it (* does not)")
    floor = big["floor_step"]
    print(
        f"plan per step, the least a planner can do on the same records (minimal_plan), "
        f"{large:,}: {floor * 1e6:.2f}µs; the real planner costs {big['plan_step'] / floor:.2f}x that"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-changed-max", type=int, default=5_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--rate", choices=["chain", "independent", "appends"], help=argparse.SUPPRESS
    )
    parser.add_argument("--all-changed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.seed:
        anyio.run(seed, *dagster_shape(args.seed), args.into, backend="asyncio")
    elif args.one:
        _one(args.one, args.repeats, args.all_changed)
    elif args.rate:
        _rates(args.rate)
    else:
        main(args.sizes, args.repeats, args.all_changed_max)
