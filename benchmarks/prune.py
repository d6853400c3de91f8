"""Retention's cost: pruning a large log while the daemon's loop and writers go on.

Builds an event log of N old events (default 1,000,000) spread over 10,000 asset partitions,
then prunes it while, on the same event loop, a ticker measures how late the loop wakes up and
a writer appends an event every millisecond and measures how long each append waits. Prints:

- the prune's total time, events deleted, transactions and the longest one (the writer lock);
- the longest event-loop pause and the longest wait of a concurrent append (target <= 10 ms);
- the log's bytes before and after (incremental auto-vacuum hands pages back);
- bytes of log per trivial materialization (from a run of real materializations);
- optionally (--vacuum-gb G), the time of `prune --vacuum` (a full VACUUM) on a log of G GB.

    python benchmarks/prune.py [--events 1000000] [--vacuum-gb 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import structlog

import headwater as hw
from headwater._events import Event, EventKind, format_timestamp
from headwater.eventlog import open_event_log
from headwater.testing import Harness

KINDS = ["observation", "run_started", "materialization", "decision", "check"]
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def build(state_dir: Path, n_events: int, n_nodes: int = 10_000) -> None:
    """A log of ``n_events`` events, all older than a month, written straight with sqlite3."""

    async def create() -> None:
        async with open_event_log(state_dir):
            pass  # schema and incremental auto-vacuum, as the daemon makes it

    anyio.run(create)
    rng = random.Random(7)
    start = NOW - timedelta(days=60)
    step = timedelta(days=30) / n_events
    payload = json.dumps({"code_version": "c" * 32, "inputs": [["src", None, "v" * 32]]})
    with sqlite3.connect(state_dir / "events.db") as db:
        rows = (
            (
                format_timestamp(start + i * step),
                KINDS[i % len(KINDS)],
                f"asset{rng.randrange(n_nodes // 10)}",
                f"p{rng.randrange(10)}",
                f"{i:032x}",
                "v" * 32,
                payload,
            )
            for i in range(n_events)
        )
        db.executemany(
            "INSERT INTO events (timestamp, kind, asset, partition, run_id, data_version, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def size(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "events.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(db.execute("PRAGMA page_count").fetchone()[0]) * int(
            db.execute("PRAGMA page_size").fetchone()[0]
        )


async def prune_under_load(state_dir: Path) -> dict[str, float]:
    pauses: list[float] = []
    waits: list[float] = []
    async with open_event_log(state_dir) as log:
        done = anyio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await anyio.sleep(0.001)
                pauses.append(time.perf_counter() - t - 0.001)

        async def writer() -> None:
            while not done.is_set():
                event = Event(kind=EventKind.DECISION, timestamp=datetime.now(UTC), asset="live")
                t = time.perf_counter()
                await log.write([event])
                waits.append(time.perf_counter() - t)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(writer)
            t = time.perf_counter()
            pruned = await log.prune(NOW - timedelta(days=1))
            total = time.perf_counter() - t
            done.set()
    return {
        "total_s": total,
        "events": pruned.events,
        "batches": pruned.batches,
        "longest_batch_ms": pruned.longest_batch_s * 1000,
        "longest_pause_ms": max(pauses) * 1000,
        "median_pause_ms": statistics.median(pauses) * 1000,
        "longest_append_ms": max(waits) * 1000,
        "p99_append_ms": sorted(waits)[int(len(waits) * 0.99)] * 1000,
        "median_append_ms": statistics.median(waits) * 1000,
    }


def bytes_per_materialization(n: int = 2000) -> float:
    src = hw.source("src")

    @hw.asset
    def copy(src: int) -> int:
        return src

    with (
        tempfile.TemporaryDirectory() as tmp,
        Harness(hw.Definitions([src, copy]), state_dir=tmp) as h,
    ):
        h.observe("src", value=0)
        h.tick()
        before = size(Path(tmp))
        for i in range(1, n + 1):
            h.observe("src", value=i)
            h.tick()
        return (size(Path(tmp)) - before) / n


def vacuum_time(gigabytes: float) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        build(state, int(gigabytes * 4_300_000))
        with sqlite3.connect(state / "events.db") as db:  # an older log, without auto-vacuum
            db.execute("PRAGMA auto_vacuum=NONE")
            db.execute("VACUUM")
        before = size(state)

        async def vacuum() -> None:
            async with open_event_log(state) as log:
                await log.vacuum()

        t = time.perf_counter()
        anyio.run(vacuum)
        return before, time.perf_counter() - t


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vacuum-gb", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        t = time.perf_counter()
        build(state, args.events)
        built = time.perf_counter() - t
        before = size(state)
        r = anyio.run(prune_under_load, state)
        after = size(state)
    print(f"log of {args.events:,} old events built in {built:.1f} s: {before / 1e6:.1f} MB")
    print(
        f"prune: {r['total_s']:.1f} s, {r['events']:,.0f} events deleted in {r['batches']:,.0f}"
        f" transactions; longest transaction {r['longest_batch_ms']:.1f} ms"
    )
    print(
        f"while pruning: event-loop pause median {r['median_pause_ms']:.2f} ms, longest"
        f" {r['longest_pause_ms']:.1f} ms; a concurrent append waited median"
        f" {r['median_append_ms']:.2f} ms, p99 {r['p99_append_ms']:.1f} ms, longest"
        f" {r['longest_append_ms']:.1f} ms (the loop's pause and each prune transaction: <= 10 ms)"
    )
    print(
        f"log after: {after / 1e6:.1f} MB (incremental auto-vacuum handed back {(before - after) / 1e6:.1f} MB)"
    )
    print(
        f"log bytes per trivial materialization (observe + run): {bytes_per_materialization():,.0f}"
    )
    if args.vacuum_gb:
        size_before, took = vacuum_time(args.vacuum_gb)
        print(f"prune --vacuum (a full VACUUM) of a {size_before / 1e9:.2f} GB log: {took:.1f} s")


if __name__ == "__main__":
    main()
