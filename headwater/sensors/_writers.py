"""Which files some process holds open for writing, read from /proc.

A file that shows no close event (published as a hard link, or written into a folder whose
watch arrived late) cannot tell the sensor whether its writer is done. /proc can: if no process
holds it open for writing, no close event will ever come and it is complete; if one does, its
close will be seen. Only processes whose descriptors this one may read are visible (its own
user's, or all for root), so the answer says whether it saw them all.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["Writers", "held_for_writing"]

_WRITE = os.O_WRONLY | os.O_RDWR


@dataclass(frozen=True, slots=True)
class Writers:
    held: frozenset[str]
    """The paths asked about that some process holds open for writing."""
    complete: bool
    """Every process's descriptors were read: a path not held is held by nobody."""


def held_for_writing(paths: Collection[str], proc: str = "/proc") -> Writers:
    if not paths:
        return Writers(frozenset(), complete=True)
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return Writers(frozenset(), complete=False)  # no /proc (a container without it)
    held: set[str] = set()
    complete = True
    for pid in pids:
        fds = f"{proc}/{pid}/fd"
        try:
            names = os.listdir(fds)
        except FileNotFoundError:
            continue  # exited meanwhile
        except OSError:
            complete = False  # another user's process
            continue
        for fd in names:
            try:
                target = os.readlink(f"{fds}/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target in paths and _writes(f"{proc}/{pid}/fdinfo/{fd}"):
                held.add(target)
    return Writers(frozenset(held), complete)


def _writes(fdinfo: str) -> bool:
    """Is the descriptor open for writing? Assumed so when its flags cannot be read."""
    try:
        with open(fdinfo) as f:
            for line in f:
                if line.startswith("flags:"):
                    return bool(int(line.split()[1], 8) & _WRITE)
    except (OSError, ValueError, IndexError):
        pass
    return True
