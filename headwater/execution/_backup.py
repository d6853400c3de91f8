"""``headwater backup``: a consistent copy of a state directory, while its daemon runs.

The snapshot is taken inside the state directory, by its owner: with value publishing held
(no value is renamed into place meanwhile), the log is copied by SQLite's online backup, then
every stored value is hard-linked beside it. Any value newer than the snapshot's log belongs
to a run that the snapshot shows as running (a run is started in the log before its function
runs), so a daemon started from the copy abandons that run and runs it again. The snapshot is
then copied out to its destination at leisure, and removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

from headwater._errors import StateDirError
from headwater.eventlog import DB_NAME
from headwater.execution._store import VERSIONED_MARK, FilesystemStore

__all__ = ["SNAPSHOT_PREFIX", "copy_snapshot", "remove_snapshots", "take_snapshot"]

SNAPSHOT_PREFIX = ".backup-"


STALE_AFTER_S = 24 * 3600.0
"""A snapshot older than this when another is taken was left behind (a backup killed while it
copied out, or a client that never said it was done): it is removed then, not only when the
daemon next starts."""


def take_snapshot(state_dir: Path, store: FilesystemStore) -> Path:
    """Snapshot the log and the values into a new folder inside ``state_dir``."""
    _remove_stale(state_dir)
    staging = state_dir / f"{SNAPSHOT_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(mode=0o700)
    try:
        with store.publishing(exclusive=True):
            source = sqlite3.connect(
                f"{(state_dir / DB_NAME).absolute().as_uri()}?mode=ro", uri=True
            )
            target = sqlite3.connect(staging / DB_NAME)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            (staging / DB_NAME).chmod(0o600)
            _link_values(store.root, staging / "values")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _remove_stale(state_dir: Path) -> None:
    now = time.time()
    for path in state_dir.glob(f"{SNAPSHOT_PREFIX}*"):
        with contextlib.suppress(OSError):  # removed meanwhile by its own client
            if now - path.stat().st_mtime > STALE_AFTER_S:
                remove_snapshots(state_dir, path)


def _link_values(values: Path, into: Path) -> None:
    if not values.is_dir():
        return
    for folder, _, files in os.walk(values):
        rel = Path(folder).relative_to(values)
        (into / rel).mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in files:
            mark = name == VERSIONED_MARK and folder == str(values)  # the copy is as strict
            if (name.startswith(".") and not mark) or Path(folder, name).is_symlink():
                continue  # temp files, the publishing lock, links: not values
            os.link(Path(folder, name), into / rel / name)


def copy_snapshot(staging: Path, dest: Path) -> int:
    """Copy a snapshot to ``dest`` (new or empty), private; return the bytes copied."""
    if dest.exists() and any(dest.iterdir()):
        raise StateDirError(f"the backup destination {dest} is not empty: name a new folder")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.chmod(0o700)
    copied = 0
    for folder, _, files in os.walk(staging):
        rel = Path(folder).relative_to(staging)
        (dest / rel).mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in files:
            shutil.copy2(Path(folder, name), dest / rel / name)
            (dest / rel / name).chmod(0o600)
            copied += (dest / rel / name).stat().st_size
    return copied


def is_snapshot(state_dir: Path, path: Path) -> bool:
    """Whether ``path`` names a snapshot of ``state_dir`` (by name: nothing else is removed)."""
    return path.parent == state_dir and path.name.startswith(SNAPSHOT_PREFIX)


def remove_snapshots(state_dir: Path, only: Path | None = None) -> None:
    """Remove one snapshot, or all that a crash left behind (the owner does it at start)."""
    for path in [only] if only is not None else state_dir.glob(f"{SNAPSHOT_PREFIX}*"):
        if is_snapshot(state_dir, path):
            shutil.rmtree(path, ignore_errors=True)
