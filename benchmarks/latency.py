"""Latency from a file landing to its downstream asset starting and finishing, in the real daemon.

Starts `headwater run` as a subprocess on a temporary project (a FileSource with one partition
per file, and an asset that parses the CSV; with `--beside N`, N more assets in the shape of
benchmarks/scale.py whose sources never arrive, so that the graph is large and the change
small; with `--scrape S`, /metrics scraped every S seconds meanwhile, as Prometheus would),
waits for READY=1 on a real NOTIFY_SOCKET, then
lands files one after another — first written in place (complete on close-after-write), then
moved into place — waiting for each to be materialized before the next. Times are taken from
the moment the file is complete (after close, or after the rename) to the daemon's own
`observation`, `run_started` and `materialized` log timestamps (same wall clock, same machine).

    python benchmarks/latency.py [--files 50] [--beside 100000] [--scrape 1]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

DEFS = textwrap.dedent(
    """
    import sys

    import pandas as pd
    import headwater as hw

    inbox = hw.DynamicPartitions("inbox")
    files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox)

    @hw.asset(partitions=inbox)
    def parsed(files: pd.DataFrame) -> pd.DataFrame:
        return files

    sys.path.insert(0, BENCHMARKS)
    import scale  # the functions of the assets beside: workers import them from here too

    beside = list(scale.dagster_shape(BESIDE)[0].nodes.values()) if BESIDE else []
    defs = hw.Definitions([files, parsed, *beside])
    """
)


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Daemon:
    def __init__(self, root: Path, http: bool) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(root / "notify.sock"))
        env = {**os.environ, "NOTIFY_SOCKET": str(root / "notify.sock")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headwater", "run", "-d", "defs.py", "--state-dir", "state",
             *(["--http", "127.0.0.1:0"] if http else [])],
            cwd=root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        self.sock.settimeout(600)  # a graph of 100k opens and evaluates first
        while b"READY=1" not in self.sock.recv(4096):
            pass

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.put(json.loads(raw))
            except json.JSONDecodeError:
                print(f"daemon wrote a non-JSON line: {raw!r}", file=sys.stderr)

    def wait(self, event: str, partition: str | None = None) -> dict[str, Any]:
        while True:
            line = self.lines.get(timeout=600)  # a graph of 100k opens and evaluates first
            if line.get("event") == event and line.get("partition") == partition:
                return line

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.sock.close()


def land(root: Path, daemon: Daemon, name: str, moved: bool) -> tuple[float, float]:
    body = f"id,value\n1,{name}\n2,{name}\n"
    target = root / "inbox" / f"{name}.csv"
    if moved:
        tmp = root / "inbox" / f".{name}.partial"
        tmp.write_text(body)
        tmp.rename(target)
    else:
        target.write_text(body)
    complete = time.time()
    started = daemon.wait("run_started", name)
    finished = daemon.wait("materialized", name)
    return _ts(started) - complete, _ts(finished) - complete


def _scrape(address: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=60) as response:
            response.read()


def main(count: int, beside: int, scrape: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        defs = DEFS.replace("BENCHMARKS", repr(str(Path(__file__).parent)))
        (root / "defs.py").write_text(defs.replace("BESIDE", str(beside)))
        (root / "inbox").mkdir()
        daemon = Daemon(root, http=scrape is not None)
        stop = threading.Event()
        try:
            if scrape is not None:
                address = daemon.wait("http_listening")["address"]
                threading.Thread(target=_scrape, args=(address, scrape, stop), daemon=True).start()
            land(root, daemon, "warmup", moved=False)  # first pandas import, first Parquet write
            for moved in (False, True):
                starts, finishes = [], []
                for i in range(count):
                    start, finish = land(root, daemon, f"{'m' if moved else 'w'}{i}", moved)
                    starts.append(start * 1000)
                    finishes.append(finish * 1000)
                how = "moved into place" if moved else "written, closed"
                print(
                    f"{count} files {how:>16}: start median {statistics.median(starts):6.1f} ms "
                    f"p99 {_percentile(starts, 0.99):6.1f} ms | finish median "
                    f"{statistics.median(finishes):6.1f} ms p99 {_percentile(finishes, 0.99):6.1f} ms"
                )
        finally:
            stop.set()
            daemon.stop()
    shape = f", {beside:,} assets beside" if beside else ""
    scraped = f", /metrics scraped every {scrape:g} s" if scrape is not None else ""
    print(f"({2 + beside:,} nodes{shape}{scraped})")
    print("target: median under 50 ms to start (Dagster 1.13 on this class of machine: 5-7 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--beside", type=int, default=0, metavar="N")
    parser.add_argument("--scrape", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    main(args.files, args.beside, args.scrape)
