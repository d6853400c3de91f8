"""The project the state-directory owner tests run: files landing in inbox/, a manual asset
whose every run gives a new version (so its eager reader reacts to each), and one that fails.

An asset partition holds (does not return) while a file named hold-<partition> exists beside
this file: the tests use it to catch the daemon in the middle of a run. HW_MAX_CONCURRENCY in
the environment sets max_concurrency; HW_RUN_SECONDS makes every run of parsed take that long.
"""

import os
import time
from pathlib import Path

import pandas as pd

import headwater as hw

HERE = Path(__file__).parent

inbox = hw.DynamicPartitions("inbox")
files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox)


@hw.asset(partitions=inbox)
def parsed(files: pd.DataFrame, context: hw.Context) -> pd.DataFrame:
    hold = HERE / f"hold-{context.partition}"
    while hold.exists():
        time.sleep(0.01)
    time.sleep(float(os.environ.get("HW_RUN_SECONDS", "0")))
    return files


@hw.asset(policy=hw.manual())
def stamp() -> int:
    return time.time_ns()


@hw.asset
def stamp_reader(stamp: int) -> int:
    return stamp % 1000


@hw.asset(policy=hw.manual())
def broken() -> int:
    raise RuntimeError("broken on purpose")


concurrency = os.environ.get("HW_MAX_CONCURRENCY")
defs = hw.Definitions(
    [files, parsed, stamp, stamp_reader, broken],
    max_concurrency=int(concurrency) if concurrency else None,
)
