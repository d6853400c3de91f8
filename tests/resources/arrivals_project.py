"""The project the file-arrival tests run: one source per way files land.

- ``inbox/{partition}.csv`` (dynamic): cp, mv, rsync, editors, links, FIFOs;
- ``linked/{partition}.csv`` with ``symlinks="follow"``: links to anywhere (but /proc, ...);
- ``days/{partition}.csv`` (daily): canonical keys only;
- ``burst/**/*.csv`` (a glob): thousands of files at once, into new folders;
- ``appends/{partition}.log`` with ``settle="400ms"``: a file appended to in steps.
"""

from pathlib import Path

import pandas as pd

import headwater as hw

inbox = hw.DynamicPartitions("inbox")
files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox)

linked_keys = hw.DynamicPartitions("linked")
linked = hw.FileSource(
    "linked", "linked/{partition}.csv", partitions=linked_keys, symlinks="follow"
)

daily = hw.DailyPartitions(start="2026-01-01")
days = hw.FileSource("days", "days/{partition}.csv", partitions=daily)

burst = hw.FileSource("burst", "burst/**/*.csv")

log_keys = hw.DynamicPartitions("appends")
appends = hw.FileSource(
    "appends",
    "appends/{partition}.log",
    partitions=log_keys,
    settle="400ms",
    loader=lambda path: Path(path).read_text().splitlines(),
)


@hw.asset(partitions=inbox)
def parsed(files: pd.DataFrame) -> pd.DataFrame:
    return files


@hw.asset(partitions=linked_keys)
def linked_rows(linked: pd.DataFrame) -> int:
    return len(linked)


@hw.asset(partitions=daily, policy=hw.manual())
def day_rows(days: pd.DataFrame) -> int:
    return len(days)


@hw.asset
def burst_count(burst: list[Path]) -> int:
    return len(burst)


@hw.asset(partitions=log_keys)
def log_lines(appends: list[str]) -> int:
    return len(appends)


defs = hw.Definitions(
    [files, linked, days, burst, appends, parsed, linked_rows, day_rows, burst_count, log_lines]
)
