"""A full disk under the state directory is an outage to ride out, with real faults: the state
directory on a small tmpfs the test mounts, filled until writes fail, then freed. The daemon
stays up, logs no traceback, reports itself degraded, and catches up by itself: every file that
landed ends materialized exactly once, nothing recorded is lost, no value is half-written.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_process import hw
from daemon_process import DaemonProcess

import headwater as hw_
from headwater._storage import storage_failure
from headwater.eventlog import EventLogReader
from headwater.testing import Harness

DEFS = textwrap.dedent(
    """
    import os
    import headwater as hw

    inbox = hw.DynamicPartitions("inbox")
    files = hw.FileSource("files", "inbox/{partition}.csv", partitions=inbox,
                          loader=lambda path: path.read_bytes())

    @hw.asset(partitions=inbox)
    def padded(files: bytes) -> bytes:
        return files + os.urandom(300_000)  # a value that takes room on the disk

    defs = hw.Definitions([files, padded])
    """
)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write until the filesystem refuses."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _project(tmp_path: Path) -> Path:
    (tmp_path / "defs.py").write_text(DEFS)
    (tmp_path / "inbox").mkdir()
    return tmp_path


def _land(project: Path, name: str) -> None:
    (project / "inbox" / f"{name}.csv").write_text(f"id\n{name}\n")


def _check_whole(state: Path, names: list[str]) -> None:
    reader = EventLogReader(state)
    materialized = [e.partition for e in reader.events(kind="materialization")]
    assert sorted(materialized) == sorted(names), "each file exactly once"
    with sqlite3.connect(state / "events.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not list((state / "values").rglob(".tmp-*"))
    for name in names:
        (value,) = (state / "values" / "padded").glob(f"p={name}.*")
        assert value.stat().st_size > 300_000


def test_a_disk_that_fills_up_is_ridden_out_without_a_restart(
    tmp_path: Path, disk: Path, daemons: list[object]
) -> None:
    project = _project(tmp_path)
    state = disk / "state"
    daemon = DaemonProcess(project, project / "defs.py", state,
                           args=("--settle", "0.2", "--grace", "5"))  # fmt: skip
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    before = [f"early{i}" for i in range(3)]
    for name in before:
        since = daemon.mark()
        _land(project, name)
        daemon.wait_event("materialized", partition=name, since=since)
    filler = disk / "filler"
    _fill(filler)
    during = [f"late{i}" for i in range(4)]
    since = daemon.mark()
    for name in during:
        _land(project, name)
    failure = daemon.wait_event("storage_failed", since=since)
    assert str(disk) in failure["path"] and failure["free_bytes"] is not None
    status = daemon.wait_notify("STATUS=degraded")
    assert "cannot write" in status
    health = hw("health", "--json", "--state-dir", str(state), cwd=project)
    assert health.returncode == 1 and json.loads(health.stdout)["degraded"] is True
    assert hw("status", "--check", "--state-dir", str(state), "-d", "defs.py",
              cwd=project).returncode == 1  # fmt: skip
    filler.unlink()  # space comes back; nobody restarts anything
    for name in during:
        daemon.wait_event("materialized", partition=name, since=since, timeout=60)
    daemon.wait_event("storage_recovered", since=since)
    assert daemon.proc is not None and daemon.proc.poll() is None  # the same process throughout
    errors = [ln for ln in daemon.lines if ln.get("event") == "storage_failed"]
    assert len(errors) == 1  # one error line for the outage, not one per event
    assert not any("exception" in ln or "Traceback" in json.dumps(ln) for ln in daemon.lines)
    assert daemon.terminate() == 0
    _check_whole(state, before + during)
    retried = EventLogReader(state).events(kind="run_failed")
    assert retried == []  # storage failures spend no retries and are not the function's


def test_a_disk_full_at_start_reports_ready_degraded_then_recovers(
    tmp_path: Path, disk: Path, daemons: list[object]
) -> None:
    project = _project(tmp_path)
    state = disk / "state"
    first = DaemonProcess(project, project / "defs.py", state, args=("--settle", "0.2"))
    daemons.append(first)
    first.start().wait_notify("READY=1")
    assert first.terminate() == 0
    _land(project, "waiting")
    filler = disk / "filler"
    _fill(filler)
    daemon = DaemonProcess(project, project / "defs.py", state, args=("--settle", "0.2"))
    daemons.append(daemon)
    ready = daemon.start().wait_notify("READY=1")
    assert "STATUS=degraded" in ready
    filler.unlink()
    daemon.wait_event("materialized", partition="waiting", timeout=60)
    assert daemon.terminate() == 0
    _check_whole(state, ["waiting"])


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.EIO, "Input/output error"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
    ],
)
def test_every_failing_disk_error_is_an_outage(error: OSError) -> None:
    """A read-only remount cannot be provoked under a running daemon (it holds files open for
    writing, so the kernel refuses it); its errno is recognised like a full disk's."""
    failure = storage_failure(error, Path("/state"))
    assert failure is not None and failure.reason == error.strerror


def test_sqlite_refusing_writes_is_an_outage(tmp_path: Path) -> None:
    db_path = tmp_path / "ro.db"
    sqlite3.connect(db_path).execute("CREATE TABLE t (x)").connection.commit()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("INSERT INTO t VALUES (1)")
    assert storage_failure(caught.value, db_path) is not None  # SQLITE_READONLY
    assert storage_failure(ValueError("not a disk"), db_path) is None


def test_the_log_s_own_wal_never_fills_a_small_disk(disk: Path) -> None:
    """Hundreds of runs on a 4 MiB disk: the WAL is checkpointed (and started afresh) often
    enough that it never takes the room, which a full disk could then not get back (copying
    the WAL into the database needs room too)."""
    src = hw_.source("src")

    @hw_.asset
    def doubled(src: int) -> int:
        return src * 2

    with Harness(hw_.Definitions([src, doubled]), state_dir=disk / "state") as h:
        for i in range(300):
            h.observe("src", value=i)
            assert h.tick().failed == {}
        assert h.value("doubled") == 2 * 299
        wal = (disk / "state" / "events.db-wal").stat().st_size
    assert wal < 1024 * 1024, wal
