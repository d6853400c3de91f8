"""Failing writes in the state directory: an outage to ride out, not a crash.

A full disk (ENOSPC, SQLITE_FULL), an I/O error (EIO, SQLITE_IOERR) or a read-only filesystem
(EROFS, SQLITE_READONLY, a read-only remount) is recognised wherever the event log or the value
store writes, and raised as :class:`StorageFailure`, so the engine can stop starting runs, keep
watching and carry on by itself once writes succeed again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

__all__ = ["StorageFailure", "free_bytes", "storage_failure"]

_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_SQLITE = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")


class StorageFailure(Exception):
    """A write to the state directory failed for a reason the disk, not the data, holds."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[StorageFailure], tuple[Path, str]]:
        return StorageFailure, (self.path, self.reason)  # it crosses from a worker process


def storage_failure(exc: BaseException, path: Path) -> StorageFailure | None:
    """``exc`` as a :class:`StorageFailure` if it is one of the failing-disk kind, else None."""
    if isinstance(exc, StorageFailure):
        return exc
    if isinstance(exc, OSError) and exc.errno in _ERRNOS:
        return StorageFailure(path, exc.strerror or str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(_SQLITE) or "disk is full" in str(exc):
            return StorageFailure(path, str(exc))
    return None


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
