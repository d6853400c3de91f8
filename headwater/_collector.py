"""The cyclic garbage collector paused around pure work that builds many objects and no cycles.

Python 3.11 starts a collection every 700 new container objects, and a full one each time the
young generations outgrow a quarter of the old: loading 100k records, or planning 100k steps,
set off collections that walked the whole growing state again and again (a fifth of a load's
time, a third of a dry run's at 100k). What such work leaves behind holds no cycle, so the
collector has nothing to find there; it runs again as usual afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused(*, then_freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic collector for the block (a no-op if it was off already).
    ``then_freeze``: what is alive at its end is moved out of the collector's walks for good
    (``gc.freeze``) before it runs again, for a block that loads what a process keeps: else
    the first collection after it, due at once, walks everything the block made (100k
    records at 100k partitions: ~0.1 s of an open)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        if then_freeze:  # not on an error: what it made then is no one's to keep
            gc.freeze()
    finally:
        if collecting:
            gc.enable()
