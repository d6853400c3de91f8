"""One owner per state directory, against what careless and hostile users do: delete the lock,
delete the directory, copy it, share a runtime directory, press Ctrl-C, reload mid-run, freeze
the daemon, plant links, loosen permissions, corrupt rows. Real processes throughout."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_process import hw, hw_project, hw_start
from daemon_process import DaemonProcess

from headwater.eventlog import EventLogReader

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def project(owner_project: Path) -> Path:
    return owner_project


def _daemon(
    project: Path,
    daemons: list[object],
    *args: str,
    env: dict[str, str] | None = None,
    state: Path | None = None,
) -> DaemonProcess:
    daemon = DaemonProcess(project, project / "defs.py", state or project / "state",
                           args=("--settle", "0.2", *(args or ("--grace", "10"))), env=env)  # fmt: skip
    daemons.append(daemon)
    return daemon


def _events(project: Path, kind: str | None = None, asset: str | None = None) -> list[Any]:
    return EventLogReader(project / "state").events(kind=kind, asset=asset)


def _land(project: Path, name: str) -> None:
    (project / "inbox" / f"{name}.csv").write_text("a,b\n1,2\n")


def _until(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)  # polling a file on disk, not synchronising on a sleep


def test_deleting_owner_lock_lets_no_second_owner_in(project: Path, daemons: list[object]) -> None:
    first = _daemon(project, daemons).start()
    first.wait_notify("READY=1")
    (project / "state" / "owner.lock").unlink()  # "a stale lock", thinks the user
    second = _daemon(project, daemons).start()
    assert second.proc is not None and second.proc.wait(timeout=30) == 3
    second.drain()
    second.bad_lines.clear()
    assert hw_project(project, "materialize", "stamp").returncode in (0, 3)  # never a second writer
    _until(lambda: (project / "state" / "owner.lock").exists())  # the owner writes it again
    result = hw_project(project, "materialize", "stamp", "--force")
    assert result.returncode == 0, result.stderr
    for event in _events(project, "materialization", "stamp"):
        first.wait_event("materialized", run_id=event.run_id)  # all ran in the one daemon
    assert len(_events(project, "daemon_started")) == 1


def test_a_deleted_state_directory_stops_its_daemon(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    shutil.rmtree(project / "state")
    assert daemon.proc is not None and daemon.proc.wait(timeout=20) == 3
    daemon.drain()
    assert any(line.get("event") == "state_dir_gone" for line in daemon.lines)
    daemon.bad_lines.clear()  # the exit-3 message is plain text by design


def test_ctrl_c_on_a_direct_cli_leaves_no_writer_behind(project: Path) -> None:
    _land(project, "held")
    hold = project / "hold-held"
    hold.touch()
    cli = hw_start("materialize", "parsed", "--state-dir", "state", "-d", "defs.py", cwd=project)
    _until(lambda: (project / "state" / "events.db").exists()
           and EventLogReader(project / "state").events(kind="run_started"))  # fmt: skip
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=10)
    assert cli.returncode == 130 and "interrupted" in err and "Traceback" not in err
    hold.unlink()  # had a thread survived, it would store its value now
    owned = hw_project(project, "materialize", "stamp")  # the lock is free at once
    assert owned.returncode == 0, owned.stderr
    assert not list((project / "state" / "values").glob("parsed/p=held.*"))


def test_reload_during_a_long_run_abandons_nothing(project: Path, daemons: list[object]) -> None:
    hold = project / "hold-long"
    hold.touch()
    daemon = _daemon(project, daemons, env={"HW_MAX_CONCURRENCY": "1"}).start()
    daemon.wait_notify("READY=1")
    _land(project, "long")
    daemon.wait_event("run_started", partition="long")
    before_reload = daemon.mark()
    started = time.monotonic()
    reload = hw_project(project, "reload")
    assert reload.returncode == 0, reload.stderr
    assert time.monotonic() - started < 15 and "once the functions running now" in reload.stdout
    _land(project, "later")
    hold.unlink()
    daemon.wait_event("materialized", partition="long")
    daemon.wait_event("ready", since=before_reload)  # the new definitions serve
    daemon.wait_event("materialized", partition="later")
    assert _events(project, "run_abandoned") == []
    assert len(_events(project, "reloaded")) == 1
    spans: dict[str, list[int]] = {}
    for event in _events(project):
        if event.kind in ("run_started", "materialization") and event.run_id:
            spans.setdefault(event.run_id, []).append(event.id)
    ordered = sorted(spans.values())
    assert all(b[0] > a[1] for a, b in itertools.pairwise(ordered))  # one at a time


def test_a_frozen_daemon_fails_the_check_instead_of_hanging_it(
    project: Path, daemons: list[object]
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, "before")
    daemon.wait_event("materialized", partition="before")
    daemon.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        check = hw_project(project, "status", "--check")
        assert time.monotonic() - started < 15
        assert check.returncode == 1 and "did not answer" in check.stderr
        logs = hw_project(project, "logs", "--kind", "materialization")
        assert logs.returncode == 0 and "parsed[before]" in logs.stdout
        health = hw_project(project, "health")
        assert health.returncode == 3 and "did not answer" in health.stderr
    finally:
        daemon.signal(signal.SIGCONT)


def test_a_copied_state_directory_is_not_its_daemon(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    shutil.copytree(project / "state", project / "copy", ignore=shutil.ignore_patterns("*.sock"))
    stop = hw_project(project, "stop", state="copy")
    assert stop.returncode == 1 and "not running" in stop.stdout
    assert daemon.proc is not None and daemon.proc.poll() is None  # the original runs on


def test_two_daemons_on_one_runtime_directory_do_not_steal_a_socket(
    project: Path, daemons: list[object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    runtime = tmp_path_factory.mktemp("runtime")
    env = {"RUNTIME_DIRECTORY": str(runtime)}
    first = _daemon(project, daemons, env=env).start()
    first.wait_notify("READY=1")
    other = project / "other"
    other.mkdir()
    second = _daemon(project, daemons, env=env, state=other / "state").start()
    assert second.proc is not None and second.proc.wait(timeout=30) == 3
    second.drain()
    assert "another daemon listens on" in "".join(second.bad_lines)
    second.bad_lines.clear()
    health = hw("health", "--json", "--state-dir", "state", cwd=project,
                env={"HEADWATER_SOCKET": str(runtime / "headwater.sock")})  # fmt: skip
    assert json.loads(health.stdout)["pid"] == first.pid


def test_a_garbage_owner_record_is_no_traceback(project: Path) -> None:
    (project / "state").mkdir(mode=0o700)
    (project / "state" / "owner.lock").write_bytes(b"\xff\xfe garbage")
    for command in (["status"], ["health"], ["stop"], ["why", "stamp"]):
        result = hw_project(project, *command)
        assert result.returncode in (1, 2) and "Traceback" not in result.stderr, command


def test_stop_reaches_a_daemon_still_loading_its_definitions(
    project: Path, daemons: list[object]
) -> None:
    defs = project / "defs.py"
    defs.write_text("import time\ntime.sleep(4)\n" + defs.read_text())
    daemon = _daemon(project, daemons).start()
    _until(lambda: (project / "state" / "headwater.sock").exists())
    health = hw_project(project, "health")
    assert health.returncode == 0 and "starting" in health.stdout
    started = time.monotonic()
    stop = hw_project(project, "stop")
    assert stop.returncode == 0, stop.stderr
    assert time.monotonic() - started < 3  # the import is left behind, not waited for
    assert daemon.proc is not None and daemon.proc.poll() == 0


def test_a_mistake_leaves_no_state_directory_behind(project: Path) -> None:
    result = hw_project(project, "materialize", "stmp")
    assert result.returncode == 2 and "did you mean 'stamp'" in result.stderr
    assert not (project / "state").exists()
    assert hw_project(project, "status", "--check").returncode == 2  # no "all OK" on nothing


def test_asking_for_a_partition_whose_value_is_gone_runs_it(project: Path) -> None:
    (project / "inbox" / "a.csv").write_text("a,b\n1,2\n")  # a table: its value is a file
    assert hw_project(project, "materialize", "parsed", "-p", "a").returncode == 0
    (value,) = (project / "state" / "values" / "parsed").glob("p=a.*")
    value.unlink()
    again = hw_project(project, "materialize", "parsed", "-p", "a")
    assert again.returncode == 0 and "materialized parsed[a]" in again.stdout, again.stdout
    assert [(e.asset, e.partition) for e in _events(project, "value_lost")] == [("parsed", "a")]


def test_links_in_the_state_directory_are_refused(project: Path) -> None:
    victim = project / "victim.txt"
    victim.write_text("precious")
    (project / "state").mkdir(mode=0o700)
    (project / "state" / "owner.lock").symlink_to(victim)
    result = hw_project(project, "materialize", "stamp")
    assert result.returncode == 3 and "is a symbolic link" in result.stderr
    assert victim.read_text() == "precious"
    (project / "state" / "owner.lock").unlink()
    assert hw_project(project, "materialize", "stamp").returncode == 0
    db = project / "state" / "events.db"
    db.rename(project / "elsewhere.db")
    db.symlink_to(project / "elsewhere.db")
    for command in (["status"], ["materialize", "stamp"]):
        result = hw_project(project, *command)
        assert result.returncode == 3 and "is a symbolic link" in result.stderr, command


def test_a_state_directory_others_may_write_is_refused_and_files_are_private(
    project: Path, daemons: list[object]
) -> None:
    state = project / "state"
    state.mkdir()
    state.chmod(0o777)
    result = hw_project(project, "materialize", "stamp")
    assert result.returncode == 3 and f"chmod 700 {state}" in result.stderr
    state.chmod(0o755)  # readable by others: a warning, not a refusal
    old = os.umask(0o022)
    try:
        assert hw_project(project, "materialize", "stamp").returncode == 0
    finally:
        os.umask(old)
    assert (state / "events.db").stat().st_mode & 0o777 == 0o600
    for path in (state / "values").rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


def test_a_bad_socket_location_is_a_message(project: Path, daemons: list[object]) -> None:
    (project / "state").mkdir(mode=0o700)
    (project / "state" / "headwater.sock").mkdir()
    daemon = _daemon(project, daemons).start()
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 3
    daemon.drain()
    assert "cannot listen on the control socket" in "".join(daemon.bad_lines)
    assert not any("Traceback" in line for line in daemon.bad_lines)
    daemon.bad_lines.clear()


@pytest.mark.parametrize(
    ("table", "sql", "message"),
    [
        ("events", "UPDATE events SET payload = '{not json' WHERE id = 2", "events row id 2"),
        ("events", "UPDATE events SET timestamp = 'yesterday' WHERE id = 2", "events row id 2"),
        ("events", "UPDATE events SET kind = 'bogus' WHERE id = 2", "unknown kind 'bogus'"),
        ("state", "UPDATE current_state SET record = '[1, 2]'", "current_state row"),
        ("state", "UPDATE current_state SET record = '{\"version\": 5}'", "version is int"),
    ],
)
def test_a_malformed_row_is_exit_3_naming_the_row(
    project: Path, daemons: list[object], table: str, sql: str, message: str
) -> None:
    assert hw_project(project, "materialize", "stamp").returncode == 0
    with sqlite3.connect(project / "state" / "events.db") as db:
        db.execute(sql)
    commands = [["logs"]] if table == "events" else [["status"], ["why", "stamp"]]
    for command in commands:
        result = hw_project(project, *command)
        assert result.returncode == 3, (command, result.stderr)
        assert "has a malformed row" in result.stderr and message in result.stderr
        assert "Traceback" not in result.stderr
    if table == "state":
        daemon = _daemon(project, daemons).start()
        assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 3
        daemon.drain()
        assert "has a malformed row" in "".join(daemon.bad_lines)
        daemon.bad_lines.clear()


def test_reading_commands_work_on_a_read_only_state_directory(
    project: Path, tmp_path: Path
) -> None:
    assert hw_project(project, "materialize", "stamp").returncode == 0
    state = project / "state"
    done = subprocess.run(
        ["mount", "--bind", str(state), str(state)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("bind mounts need root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        status = hw_project(project, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert {r["asset"]: r["state"] for r in json.loads(status.stdout)}["stamp"] == "fresh"
    finally:
        subprocess.run(["umount", str(state)], check=False)
