"""What a run costs under each executor: threads (in the daemon's process) and processes (warm
worker processes, the default), side by side in one run on the same machine.

Two graphs below one source: a chain of 500 trivial assets (each run waits for the one before,
so every run's round trip is on the critical path) and 500 independent trivial assets (runs in
parallel, ``max_concurrency`` = CPU count). Each round changes the source, so all 500 run
again; the figure is the round's wall time divided by 500, as a median over rounds. Printed:
ms per run for each executor, and what processes add per run over threads (target: at most
0.3 ms).

    python benchmarks/executors.py [--assets 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import structlog

from headwater._clock import VirtualClock, parse_instant
from headwater._loading import load_definitions
from headwater.execution import Engine
from headwater.execution.executors import ExecutorSettings

NOW = parse_instant("2026-01-05T00:00:00Z")


def _project(folder: Path, n: int) -> dict[str, Path]:
    """Two definitions files: a chain of ``n`` and ``n`` independent assets below ``src``."""
    head = "import headwater as hw\n\nsrc = hw.source('src')\n\n"
    chain = [head]
    for i in range(n):
        upstream = "src" if i == 0 else f"c{i - 1}"
        chain.append(
            f"@hw.asset(ins={{'prev': {upstream!r}}})\ndef c{i}(prev):\n    return (prev or 0) + 1\n\n"
        )
    chain.append(f"defs = hw.Definitions([src, {', '.join(f'c{i}' for i in range(n))}])\n")
    wide = [head]
    for i in range(n):
        wide.append(f"@hw.asset(ins={{'s': 'src'}})\ndef w{i}(s):\n    return s + {i}\n\n")
    wide.append(f"defs = hw.Definitions([src, {', '.join(f'w{i}' for i in range(n))}])\n")
    files = {"chain": folder / "chain.py", "independent": folder / "independent.py"}
    files["chain"].write_text("".join(chain))
    files["independent"].write_text(textwrap.dedent("".join(wide)))
    return files


async def per_run_ms(path: Path, kind: str, n: int, rounds: int) -> float:
    """Median over rounds of (wall time of a round / runs in it), in ms."""
    defs = load_definitions(str(path))
    settings = ExecutorSettings(kind=kind, definitions=str(path))
    with tempfile.TemporaryDirectory() as state:
        async with Engine.open(defs, Path(state), VirtualClock(NOW), executor=settings) as engine:
            await engine.executor.warm()
            samples = []
            for r in range(rounds + 1):  # round 0 warms the caches and the workers' imports
                await engine.observe("src", value=r)
                t = time.perf_counter()
                result = await engine.tick()
                elapsed = time.perf_counter() - t
                assert len(result.materialized) == n and not result.failed, (
                    len(result.materialized),
                    list(result.skipped.items())[:3],
                )
                if r:
                    samples.append(elapsed / n * 1000)
    return statistics.median(samples)


async def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        files = _project(Path(folder), n)
        print(f"{'graph':<22} {'threads':>10} {'processes':>10} {'added':>10} {'ratio':>7}")
        for name, path in files.items():
            threads = await per_run_ms(path, "threads", n, rounds)
            processes = await per_run_ms(path, "processes", n, rounds)
            print(
                f"{n} {name:<18} {threads:>7.3f} ms {processes:>7.3f} ms "
                f"{processes - threads:>+7.3f} ms {processes / threads:>6.2f}x"
            )
    print("target: processes add at most 0.3 ms per run over threads")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    anyio.run(main, args.assets, args.rounds)
