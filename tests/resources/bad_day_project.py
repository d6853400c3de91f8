# ruff: noqa: T201  (misbehaving on purpose: it prints, it uses the process)
"""Functions that misbehave the way real code does on a bad day, next to a healthy chain.

Each misbehaving asset runs when its trigger file ``triggers/<name>.json`` appears. The healthy
chain (``inbox/*.csv`` -> ``parsed`` -> ``totals``) is what must not notice any of it.
``bad_day_fixed.py`` is the same project with every function fixed.
"""

import ctypes
import logging
import os
import sys
import threading
import time

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
    raise ValueError("bad row 17")


@hw.asset
def exits(exits_go: dict) -> int:
    sys.exit(3)


@hw.asset
def hard_exit(hard_exit_go: dict) -> int:
    os._exit(7)


@hw.asset
def segfault(segfault_go: dict) -> int:
    print("about to read address 0", file=sys.stderr)
    return len(ctypes.string_at(0))


@hw.asset(timeout="2s")
def spins(spins_go: dict) -> int:
    while True:
        pass


@hw.asset(timeout="10m")
def spins_long(spins_long_go: dict) -> int:
    while True:
        pass


@hw.asset
def lingers(lingers_go: dict) -> int:
    threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon thread
    return 1


@hw.asset
def wanders(wanders_go: dict) -> str:
    os.chdir("/")
    return "x" * 20_000  # too large for the event log to keep: a file, written after the chdir


@hw.asset
def chatty(chatty_go: dict) -> int:
    for i in range(10_000):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    return 1


@hw.asset
def reconfigures(reconfigures_go: dict) -> int:
    logging.basicConfig(level=logging.DEBUG, force=True)
    structlog.configure(processors=[structlog.dev.ConsoleRenderer()])
    logging.getLogger("aiosqlite").debug("a debug line nobody asked for")
    structlog.get_logger().info("reconfigured")
    return 1


@hw.asset
def hogs(hogs_go: dict) -> int:
    held = []
    while True:
        held.append(bytearray(10**7))


bomb = hw.FileSource("bomb", "triggers/bomb.parquet")


@hw.asset
def reads_bomb(bomb: pd.DataFrame) -> int:
    """A small Parquet file that expands past the worker's memory when read."""
    return len(bomb)


BAD = [raises, exits, hard_exit, segfault, spins, spins_long, lingers, wanders, chatty,
       reconfigures, hogs, reads_bomb]  # fmt: skip
defs = hw.Definitions(
    [landed, parsed, totals, bomb, *BAD, *(_go(a.key) for a in BAD if a is not reads_bomb)]
)
