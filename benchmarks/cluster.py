"""A backfill of CPU-bound partitions on a Dask cluster of one worker, then of two (issue 12:
two workers at least 1.6x faster).

Starts its own ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (one thread
each), then backfills N daily partitions whose function spins the CPU for a fixed amount of
work, through the engine on the virtual clock with ``executor="dask://..."``. Prints the
wall time of each backfill (median over repeats) and their ratio.

    python benchmarks/cluster.py [--partitions 8] [--work 3000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

PIPELINE = """
import headwater as hw
import os

days = hw.DailyPartitions(start="2026-01-01")
seed = hw.source("seed", partitions=days)


@hw.asset(partitions=days)
def crunch(seed, context):
    total = 0
    for i in range(int(os.environ["HW_WORK"])):
        total += i * i % 7
    return total


defs = hw.Definitions(
    [seed, crunch], executor=os.environ.get("HW_EXECUTOR", "threads"), max_concurrency=8
)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    def __init__(self, workers: int) -> None:
        self.port = _free_port()
        dask = str(Path(sys.executable).with_name("dask"))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs = [
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-dashboard",
                ],
                **quiet,
            )
        ]
        for n in range(workers):
            self.procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        f"tcp://127.0.0.1:{self.port}",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--no-nanny",
                        "--name",
                        f"w{n}",
                    ],
                    **quiet,
                )
            )
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{self.port}", timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _backfill(folder: Path, address: str, partitions: int, run: int) -> float:
    from headwater._loading import load_definitions
    from headwater.testing import Harness

    os.environ["HW_EXECUTOR"] = f"dask://{address}"
    defs = load_definitions(str(folder / "pipeline.py"))
    last = f"2026-01-{partitions:02d}"
    with Harness(
        defs,
        now="2026-02-01T00:00:00Z",
        state_dir=folder / f"state-{run}",
        executor=f"dask://{address}",
    ) as h:
        for day in range(1, partitions + 1):
            h.observe("seed", data_version="1", partition=f"2026-01-{day:02d}")
        started = time.perf_counter()
        result = h.backfill("crunch", "2026-01-01", last)
        took = time.perf_counter() - started
        if result.failed or len(result.materialized) != partitions:
            raise SystemExit(f"backfill went wrong: {result.failed or result.materialized}")
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--work", type=int, default=3_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    os.environ["HW_WORK"] = str(args.work)
    medians: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pipeline.py").write_text(PIPELINE)
        for workers in (1, 2):
            cluster = _Cluster(workers)
            try:
                address = f"127.0.0.1:{cluster.port}"
                times = [
                    _backfill(folder, address, args.partitions, workers * 100 + n)
                    for n in range(args.repeats)
                ]
            finally:
                cluster.close()
            medians[workers] = statistics.median(times)
    print(f"backfill of {args.partitions} CPU-bound partitions on Dask (median of {args.repeats})")
    for workers, took in medians.items():
        print(f"  {workers} worker{'s' if workers > 1 else ' '}: {took:6.2f} s")
    print(f"  speed-up with 2 workers: {medians[1] / medians[2]:.2f}x (target 1.6x)")


if __name__ == "__main__":
    main()
