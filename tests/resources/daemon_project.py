"""The project the end-to-end daemon tests run: CSV files landing in inbox/ and drops/<name>/.

An asset partition holds (does not return) while a file named hold-<partition> exists beside
this file: the tests use it to catch the daemon in the middle of a run.
"""

import time
from pathlib import Path

import pandas as pd

import headwater as hw

HERE = Path(__file__).parent

inbox = hw.DynamicPartitions("inbox")
files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox)

drops = hw.DynamicPartitions("drops")
dropped = hw.FileSource("dropped", "drops/{partition}/data.csv", partitions=drops)


@hw.asset(partitions=inbox)
def parsed(files: pd.DataFrame, context: hw.Context) -> pd.DataFrame:
    hold = HERE / f"hold-{context.partition}"
    while hold.exists():
        time.sleep(0.01)
    return files


@hw.asset(partitions=drops)
def drop_rows(dropped: pd.DataFrame) -> int:
    return len(dropped)


defs = hw.Definitions([files, dropped, parsed, drop_rows])
