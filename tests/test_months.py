"""Left alone for months: retention keeps the log's size level without losing what explains
each asset partition, `prune` goes through the daemon, `backup` copies a live state directory
consistently, and bad settings are usage errors naming the option."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_process import hw, hw_project
from daemon_process import DaemonProcess

import headwater as hw_api
from headwater._events import parse_timestamp
from headwater.eventlog import KEEP_KINDS, EventLogReader
from headwater.testing import Harness

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def project(owner_project: Path) -> Path:
    return owner_project


def _pages(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def _stream(project: Path, stop: threading.Event, partitions: int = 5) -> None:
    """A steady stream of changes: the same few files rewritten with new content."""
    i = 0
    while not stop.is_set():
        (project / "inbox" / f"p{i % partitions}.csv").write_text(f"a,b\n{i},{i}\n")
        i += 1
        stop.wait(0.05)


def test_retention_on_the_daemon_levels_the_log_and_keeps_what_explains_it(
    project: Path, daemons: list[object]
) -> None:
    daemon = DaemonProcess(project, project / "defs.py", project / "state",
                           args=("--settle", "0.2", "--retention", "3s"))  # fmt: skip
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    stop = threading.Event()
    writer = threading.Thread(target=_stream, args=(project, stop))
    writer.start()
    try:
        daemon.wait_event("pruned", timeout=10)
        time.sleep(6)  # let the stream run past the retention (the subject, not a wait)
        early = _pages(project / "state" / "events.db")
        time.sleep(8)
        late = _pages(project / "state" / "events.db")
    finally:
        stop.set()
        writer.join()
    assert late <= early * 1.5, (early, late)  # level, not growing with the stream
    since = daemon.mark()
    daemon.wait_event("pruned", since=since, timeout=10)  # one more pass after the stream
    cutoff = datetime.now(UTC) - timedelta(seconds=3 + 1 + 2)  # retention + interval + slack
    events = EventLogReader(project / "state").events()
    old = [e for e in events if e.timestamp < cutoff]
    newest: dict[tuple[Any, Any, str], int] = {}
    for e in events:
        if e.asset is not None:
            newest[(e.asset, e.partition, e.kind)] = e.id or 0
    for e in old:  # only the newest of each kept kind per asset partition survives
        assert e.kind in KEEP_KINDS and newest[(e.asset, e.partition, e.kind)] == e.id, e
    status = hw_project(project, "status", "--json")
    rows = {(r["asset"], r["partition"]): r["state"] for r in json.loads(status.stdout)}
    assert all(rows[("parsed", f"p{i}")] == "fresh" for i in range(5))
    why = hw_project(project, "why", "parsed", "--partition", "p0")
    assert "is fresh" in why.stdout and "last materialized at" in why.stdout
    pruned = hw_project(project, "prune", "--older-than", "1s")
    assert pruned.returncode == 0 and "pruned" in pruned.stdout, pruned.stderr
    # without --older-than, the daemon's own retention (3 s), not the default 30 days
    # (hostile32a bug6)
    own = hw_project(project, "prune")
    assert own.returncode == 0, own.stderr
    before = parse_timestamp(own.stdout.split("older than ")[1].split(";")[0])
    assert datetime.now(UTC) - before < timedelta(minutes=1), own.stdout
    daemon.wait_event("pruned", since=since)  # the daemon did it: it owns the log
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.terminate() == 0


def test_the_harness_prunes_only_when_given_retention() -> None:
    src = hw_api.source("src")

    @hw_api.asset
    def copy(src: int) -> int:
        return src

    defs = hw_api.Definitions([src, copy])
    for retention, expect_pruned in ((None, False), ("1h", True)):
        with Harness(defs, now="2026-01-05T00:00:00Z", retention=retention) as h:
            for i in range(5):
                h.observe("src", value=i)
                h.advance("30m")
            h.advance("2h")
            kinds = Counter(e.kind for e in h.events(asset="copy"))
            assert (kinds["materialization"] == 1) is expect_pruned, kinds
            assert h.state("copy") == "fresh" and h.value("copy") == 4


def test_a_snapshot_left_behind_is_removed_when_a_later_backup_begins(tmp_path: Path) -> None:
    """A backup killed while it copied out (or a client that never says it is done) leaves
    its snapshot, a full copy of the log, in the state directory: the next backup a day on
    removes it, and leaves a recent one (another backup under way) alone."""
    from headwater.execution._backup import STALE_AFTER_S, take_snapshot
    from headwater.execution._store import FilesystemStore

    with Harness(hw_api.Definitions([hw_api.source("src")]), state_dir=tmp_path) as h:
        h.observe("src", value=1)
    store = FilesystemStore(tmp_path / "values")
    left = take_snapshot(tmp_path, store)
    recent = take_snapshot(tmp_path, store)
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(left, (day_ago, day_ago))
    new = take_snapshot(tmp_path, store)
    assert sorted(tmp_path.glob(".backup-*")) == sorted([recent, new])


def test_backup_while_runs_land_is_a_usable_state_directory(
    project: Path, daemons: list[object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    daemon = DaemonProcess(project, project / "defs.py", project / "state",
                           args=("--settle", "0.2"), env={"HW_RUN_SECONDS": "0.05"})  # fmt: skip
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    stop = threading.Event()
    writer = threading.Thread(target=_stream, args=(project, stop, 20))
    writer.start()
    backups = [tmp_path_factory.mktemp("backups") / f"b{i}" for i in range(3)]
    try:
        for dest in backups:
            done = hw_project(project, "backup", str(dest))
            assert done.returncode == 0, done.stderr
    finally:
        stop.set()
        writer.join()
    for dest in backups:
        with sqlite3.connect(dest / "events.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert not list(project.joinpath("state").glob(".backup-*"))  # snapshots removed
        assert (dest / "values" / ".versioned").is_file()  # as strict about values as its origin
        status = hw_project(project, "status", "--json", state=str(dest))
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        for row in rows:  # every value the copy's log says is fresh is in the copy
            if row["asset"] == "parsed" and row["state"] == "fresh":
                assert list((dest / "values" / "parsed").glob(f"p={row['partition']}.*")), row
    restored = DaemonProcess(project, project / "defs.py", backups[-1], args=("--settle", "0.2"))
    daemons.append(restored)
    assert daemon.terminate() == 0
    restored.start().wait_notify("READY=1")
    deadline = time.monotonic() + 30
    while True:  # the copy catches up with the inbox by itself
        status = hw_project(project, "status", "--json", state=str(backups[-1]))
        rows = [r for r in json.loads(status.stdout) if r["asset"] == "parsed"]
        landed = len(list((project / "inbox").glob("*.csv")))
        if len(rows) == landed and all(r["state"] == "fresh" for r in rows):
            break
        assert time.monotonic() < deadline, [r for r in rows if r["state"] != "fresh"]
    assert restored.terminate() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--retention", "0s"], "--retention: '0s' must be longer than zero"),
        (["run", "--retention", "banana"], "--retention: 'banana' is not a duration"),
        (["run", "--settle", "nan"], "Invalid value for '--settle'"),
        (["run", "--grace", "inf"], "Invalid value for '--grace'"),
        (["prune", "--older-than", "-1d"], "--older-than: '-1d' is not a duration"),
        (["logs", "--since", "99999999999d"], "too long to be a duration"),
        (["logs", "--since", "0001-01-01T00:00+14:00"], "neither a duration"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_option(
    project: Path, args: list[str], message: str
) -> None:
    assert hw_project(project, "materialize", "stamp").returncode == 0
    result = hw_project(project, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_settings_come_from_the_environment_and_pyproject(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.headwater]\nretention = "soon"\n')
    result = hw_project(project, "run")
    assert result.returncode == 2 and "[tool.headwater] retention: 'soon'" in result.stderr
    result = hw("run", "-d", "defs.py", cwd=project, env={"HEADWATER_SETTLE": "nan"})
    assert result.returncode == 2 and "--settle" in result.stderr


def test_a_retention_shorter_than_an_sla_is_a_warning_that_says_why(
    tmp_path: Path, daemons: list[object]
) -> None:
    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n"
        "src = hw.source('src', freshness=hw.Freshness(max_age='1d'))\n"
        "defs = hw.Definitions([src])\n"
    )
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state",
                           args=("--retention", "1h"))  # fmt: skip
    daemons.append(daemon)
    daemon.start()
    warning = daemon.wait_event("retention_shorter_than_sla")
    assert "src max_age" in warning["sla"] and "pruned" in warning["reason"]
    assert daemon.terminate() == 0
