"""The cost of a Prometheus scrape of ``/metrics`` against graph size (issue 11: under 50 ms
for 1,000 assets).

Graphs of N assets in chains of 20 below one source each, every asset materialized once (so
each has a run counter, a duration histogram and four partition-state series), then scraped
through the same ``Metrics.render`` the daemon serves. Printed, as medians over repeats: a
first scrape (every partition counted: after a start or a reload), a scrape after one change
(one source observed again and its chain of 20 run: what is counted again is what that
touched), a warm one (nothing written since the last), and the size of the page.

    python benchmarks/metrics.py [--sizes 1000 5000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from plan import chains  # the same graphs as the planning benchmark

from headwater.daemon._metrics import Metrics
from headwater.daemon._summary import StateSummary
from headwater.testing import Harness


def _measure(size: int, repeats: int) -> tuple[float, float, float, int]:
    defs = chains(size)
    with tempfile.TemporaryDirectory() as tmp, Harness(defs, state_dir=Path(tmp)) as h:
        metrics = Metrics(Path(tmp))
        metrics.serve(h.engine, lambda: ())
        for key in defs.sources:
            h.observe(key, value=1)
        h.tick()  # every asset runs once: its counters and histogram exist
        first: list[float] = []
        changed: list[float] = []
        warm: list[float] = []
        body = b""
        for r in range(repeats):
            metrics.summary = StateSummary()  # as after a reload: every partition counted
            started = time.perf_counter()
            body = h._call(metrics.render)  # on the engine's loop, as the daemon serves it
            first.append(time.perf_counter() - started)
            h.observe(next(iter(defs.sources)), value=r + 2)
            h.tick()
            started = time.perf_counter()
            h._call(metrics.render)
            changed.append(time.perf_counter() - started)
            started = time.perf_counter()
            h._call(metrics.render)
            warm.append(time.perf_counter() - started)
        return (
            statistics.median(first),
            statistics.median(changed),
            statistics.median(warm),
            len(body),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    print("scrape of /metrics (target: under 50 ms at 1,000 assets)")
    print(f"{'assets':>8}  {'first':>9}  {'1 change':>9}  {'warm':>9}  {'page':>9}")
    for size in args.sizes:
        first, changed, warm, page = _measure(size, args.repeats)
        print(
            f"{size:>8}  {first * 1000:>7.1f}ms  {changed * 1000:>7.1f}ms  "
            f"{warm * 1000:>7.1f}ms  {page / 1024:>7.0f}KB"
        )


if __name__ == "__main__":
    main()
