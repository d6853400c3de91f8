"""Planning and execution cost against graph size, and per-run overhead.

For graphs of 1k, 10k and 100k assets (chains of 20 assets below one source each), one source
changes and the 20 assets below it are affected. Printed, as medians over repeats:

- open:      opening the engine (rebuilding the state from the log), once;
- full eval: the first evaluation after opening, which looks at every asset (nothing to do);
- plan:      from the change to a finished plan (observe, committed, + plan from the dirty set:
             its seed, the first asset of the chain; the tick reaches the rest as each
             changes), and in brackets the planner's share alone;
- e2e:       from the change to all 20 materializations finished (observe + tick);

and the ratio of the 100k figures to the 1k figures. Then trivial materializations per second
(independent assets in parallel, and a serial chain), and raw event-log appends per second.

    python benchmarks/plan.py [--sizes 1000 10000 100000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

import headwater as hw
from headwater._clock import VirtualClock, parse_instant
from headwater._events import Event, EventKind
from headwater.eventlog import open_event_log
from headwater.execution import Engine
from headwater.planning import Evaluator, plan

CHAIN = 20
NOW = parse_instant("2026-01-05T00:00:00Z")


def _step_fn() -> Callable[[Any], Any]:
    def step(prev: Any) -> Any:
        return (prev or 0) + 1

    return step


def chains(n_assets: int) -> hw.Definitions:
    """n_assets / 20 sources, each with a chain of 20 assets below it."""
    nodes: list[Any] = []
    for c in range(n_assets // CHAIN):
        upstream = f"src{c}"
        nodes.append(hw.source(upstream))
        for i in range(CHAIN):
            key = f"c{c}/a{i}"
            nodes.append(hw.asset(key, ins={"prev": upstream})(_step_fn()))
            upstream = key
    return hw.Definitions(nodes)


async def seed(defs: hw.Definitions, state_dir: Path) -> None:
    """Record every source as observed and every asset as materialized from it: all fresh."""
    clock = VirtualClock(NOW)
    async with Engine.open(defs, state_dir, clock) as engine:
        ev = Evaluator(defs, engine.state, NOW)
        batch: list[Event] = []
        for key in sorted(defs.graph.order, key=defs.graph.order.__getitem__):
            node = defs.nodes[key]
            if isinstance(node, hw.SourceDef):
                batch.append(
                    Event(kind=EventKind.OBSERVATION, timestamp=NOW, asset=key, data_version="seed")
                )
            else:
                (parent,) = defs.graph.parents[key]
                payload = {
                    "code_version": ev.code_version(node),
                    "inputs": [[parent, None, "seed"]],
                }
                batch.append(
                    Event(
                        kind=EventKind.MATERIALIZATION,
                        timestamp=NOW,
                        asset=key,
                        run_id="seed",
                        data_version="seed",
                        payload=payload,
                    )
                )
            if len(batch) >= 20_000:
                await engine.append(batch)
                batch = []
        await engine.append(batch)


async def measure_graph(n_assets: int, repeats: int) -> dict[str, float]:
    defs = chains(n_assets)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        await seed(defs, state_dir)
        clock = VirtualClock(NOW)
        t = time.perf_counter()
        async with Engine.open(defs, state_dir, clock) as engine:
            open_s = time.perf_counter() - t
            t = time.perf_counter()
            quiet = await engine.tick()
            full_s = time.perf_counter() - t
            assert quiet.materialized == [], "seeded graph should be fresh"
            plans, pure, e2e = [], [], []
            hot = f"src{(n_assets // CHAIN) // 2}"
            for r in range(repeats):
                t = time.perf_counter()
                await engine.observe(hot, value=r + 1)
                p0 = time.perf_counter()
                planned = plan(engine.evaluator(), set(engine.dirty))
                done = time.perf_counter()
                plans.append(done - t)
                pure.append(done - p0)
                assert planned.steps == [(f"c{(n_assets // CHAIN) // 2}/a0", None)]  # the seed
                result = await engine.tick()
                e2e.append(time.perf_counter() - t)
                assert len(result.materialized) == CHAIN, result
    return {
        "open": open_s,
        "full": full_s,
        "plan": statistics.median(plans),
        "pure": statistics.median(pure),
        "e2e": statistics.median(e2e),
    }


async def throughput(n: int, serial: bool) -> float:
    """Trivial materializations per second."""
    src = hw.source("src")
    nodes: list[Any] = [src]
    upstream = "src"
    for i in range(n):
        key = f"a{i}"

        def trivial(prev: Any) -> int:
            return 1

        nodes.append(hw.asset(key, ins={"prev": upstream if serial else "src"})(trivial))
        upstream = key
    defs = hw.Definitions(nodes)
    with tempfile.TemporaryDirectory() as tmp:
        async with Engine.open(defs, Path(tmp), VirtualClock(NOW)) as engine:
            await engine.observe("src", "v1")
            t = time.perf_counter()
            result = await engine.tick()
            elapsed = time.perf_counter() - t
    assert len(result.materialized) == n
    return n / elapsed


async def log_appends(n: int, writers: int) -> float:
    """Events per second appended by ``writers`` concurrent tasks, one event per write."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_event_log(Path(tmp)) as log:
            per_writer = n // writers

            async def writer(w: int) -> None:
                for i in range(per_writer):
                    await log.write(
                        [
                            Event(
                                kind="observation",
                                timestamp=NOW,
                                asset=f"s{w}",
                                data_version=str(i),
                            )
                        ]
                    )

            t = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for w in range(writers):
                    tg.start_soon(writer, w)
            return per_writer * writers / (time.perf_counter() - t)


async def main(sizes: list[int], repeats: int) -> None:
    print(
        f"{'assets':>8} {'open':>9} {'full eval':>10} {'plan':>10} {'(planner)':>10} {'e2e (20 runs)':>14}"
    )
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        r = await measure_graph(size, repeats)
        results[size] = r
        print(
            f"{size:>8} {r['open'] * 1e3:>7.0f}ms {r['full'] * 1e3:>8.0f}ms "
            f"{r['plan'] * 1e3:>8.2f}ms {r['pure'] * 1e6:>8.0f}us {r['e2e'] * 1e3:>12.1f}ms"
        )
    small, large = min(sizes), max(sizes)
    if small != large:
        print(
            f"ratio {large // 1000}k/{small // 1000}k: plan {results[large]['plan'] / results[small]['plan']:.2f}x, "
            f"e2e {results[large]['e2e'] / results[small]['e2e']:.2f}x (target: within 2x)"
        )
    print(
        f"trivial materializations/s, 500 independent: {await throughput(500, serial=False):,.0f}"
    )
    print(f"trivial materializations/s, chain of 200:    {await throughput(200, serial=True):,.0f}")
    print(f"event-log appends/s, 1 writer:    {await log_appends(2_000, 1):,.0f}")
    print(f"event-log appends/s, 100 writers: {await log_appends(20_000, 100):,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main, args.sizes, args.repeats, backend="asyncio")
