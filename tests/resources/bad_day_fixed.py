# ruff: noqa: T201, PTH109  (misbehaving on purpose: it prints, it uses the process)
"""Functions that misbehave the way real code does on a bad day, next to a healthy chain.

Each misbehaving asset runs when its trigger file ``triggers/<name>.json`` appears. The healthy
chain (``inbox/*.csv`` -> ``parsed`` -> ``totals``) is what must not notice any of it.
This is ``bad_day_project.py`` with every function fixed (each body differs, so each code
version changes).
"""

import ctypes
import logging
import os
import threading

import pandas as pd
import structlog

import headwater as hw

inbox = hw.DynamicPartitions("inbox")
landed = hw.FileSource("landed", "inbox/{partition}.csv", partitions=inbox)


@hw.asset(partitions=inbox)
def parsed(landed: pd.DataFrame) -> pd.DataFrame:
    return landed


@hw.asset(partitions=inbox)
def totals(parsed: pd.DataFrame) -> int:
    return int(parsed["amount"].sum())


def _go(name: str) -> hw.FileSource:
    return hw.FileSource(f"{name}_go", f"triggers/{name}.json")


@hw.asset
def raises(raises_go: dict) -> int:
    return 17


@hw.asset
def exits(exits_go: dict) -> int:
    return 3


@hw.asset
def hard_exit(hard_exit_go: dict) -> int:
    return 7


@hw.asset
def segfault(segfault_go: dict) -> int:
    return len(ctypes.string_at(b"fixed"))


@hw.asset(timeout="2s")
def spins(spins_go: dict) -> int:
    return 2


@hw.asset(timeout="10m")
def spins_long(spins_long_go: dict) -> int:
    return 600


@hw.asset
def lingers(lingers_go: dict) -> int:
    return threading.active_count()


@hw.asset
def wanders(wanders_go: dict) -> int:
    return len(os.getcwd())


@hw.asset
def chatty(chatty_go: dict) -> int:
    print("one line")
    return 10_000


@hw.asset
def reconfigures(reconfigures_go: dict) -> int:
    return len(logging.getLogger().handlers) + len(structlog.get_config())


@hw.asset
def hogs(hogs_go: dict) -> int:
    return len(bytearray(10**7))


bomb = hw.FileSource("bomb", "triggers/bomb.parquet", loader=lambda path: path.stat().st_size)


@hw.asset
def reads_bomb(bomb: pd.DataFrame) -> int:
    """A small Parquet file that expands past the worker's memory when read."""
    return int(bomb)


BAD = [raises, exits, hard_exit, segfault, spins, spins_long, lingers, wanders, chatty,
       reconfigures, hogs, reads_bomb]  # fmt: skip
defs = hw.Definitions(
    [landed, parsed, totals, bomb, *BAD, *(_go(a.key) for a in BAD if a is not reads_bomb)]
)
