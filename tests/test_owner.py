"""One owner per state directory: the daemon owns it, everything else is its client.

Real processes throughout: the daemon as a subprocess with a real NOTIFY_SOCKET, the CLI as
users run it, the control socket, the event log read back from disk.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pty
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_process import cli_env, hw_project, hw_start
from daemon_process import DaemonProcess

import headwater as hw_api
from headwater._client import RequestRefused, connect_to_owner
from headwater._events import Event, EventKind
from headwater._statedir import Ownership, StateDirBusy, read_owner
from headwater.eventlog import EventLogReader, open_event_log
from headwater.testing import Harness

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def project(owner_project: Path) -> Path:
    return owner_project


def _daemon(
    project: Path, daemons: list[object], *args: str, env: dict[str, str] | None = None
) -> DaemonProcess:
    daemon = DaemonProcess(
        project,
        project / "defs.py",
        project / "state",
        args=("--settle", "0.2", *(args or ("--grace", "10"))),
        env=env,
    )
    daemons.append(daemon)
    return daemon


def _events(project: Path, kind: str | None = None, asset: str | None = None) -> list[Any]:
    return EventLogReader(project / "state").events(kind=kind, asset=asset)


def _land(project: Path, name: str, text: str = "a,b\n1,2\n") -> None:
    (project / "inbox" / f"{name}.csv").write_text(text)


def test_a_second_daemon_exits_3_and_leaves_the_first_untouched(
    project: Path, daemons: list[object]
) -> None:
    hold = project / "hold-busy"
    hold.touch()
    first = _daemon(project, daemons).start()
    first.wait_notify("READY=1")
    _land(project, "busy")
    first.wait_event("run_started", asset="parsed", partition="busy")
    second = _daemon(project, daemons).start()
    assert second.proc is not None
    started = time.monotonic()
    assert second.proc.wait(timeout=30) == 3
    assert time.monotonic() - started < 10
    second.drain()
    message = "".join(second.bad_lines)
    assert f"owned by PID {first.pid}" in message and "python -m headwater run" in message
    assert "Traceback" not in message
    second.bad_lines.clear()  # the one-paragraph error is plain text by design
    hold.unlink()
    first.wait_event("materialized", asset="parsed", partition="busy")
    since = first.mark()
    _land(project, "after")
    first.wait_event("materialized", asset="parsed", partition="after", since=since)
    assert _events(project, "run_abandoned") == []
    assert len(_events(project, "materialization", "parsed")) == 2
    assert len(_events(project, "daemon_started")) == 1


def test_materialize_force_ten_times_runs_in_the_daemon(
    project: Path, daemons: list[object]
) -> None:
    """Ten concurrent `materialize --force` while a slow run holds a slot: each runs in the
    daemon (its eager reader reacts there), none is abandoned or fails, exit codes mirror."""
    hold = project / "hold-slow"
    hold.touch()
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, "slow")
    daemon.wait_event("run_started", asset="parsed", partition="slow")
    clients = [hw_start("materialize", "stamp", "--force", "--state-dir", "state", cwd=project)
               for _ in range(10)]  # fmt: skip
    for client in clients:
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        assert "materialized stamp\n" in out and ", 0 failed, " in out
    stamps = _events(project, "materialization", "stamp")
    assert len(stamps) == 10
    for event in stamps:  # the daemon ran them (and logged them), not the CLI
        daemon.wait_event("materialized", asset="stamp", run_id=event.run_id)
    readers = _events(project, "materialization", "stamp_reader")
    assert readers, "the eager reader never reacted"
    assert readers[-1].payload["inputs"][0][2] == stamps[-1].data_version
    failing = hw_project(project, "materialize", "broken")
    assert failing.returncode == 1
    assert "failed broken: RuntimeError: broken on purpose" in failing.stdout
    hold.unlink()
    daemon.wait_event("materialized", asset="parsed", partition="slow")
    assert _events(project, "run_abandoned") == []
    assert [e.asset for e in _events(project, "run_failed")] == ["broken"]
    assert hw_project(project, "materialize", "nope").returncode == 2


def _run_in_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with a terminal on stdout and stderr; return its status and all it drew."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", *args],
        cwd=cwd, env=cli_env({"COLUMNS": "120"}), stdin=subprocess.DEVNULL,
        stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_backfill_through_the_daemon_shows_progress_and_mirrors_the_outcome(
    project: Path, daemons: list[object]
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    for name in ("p1", "p2", "p3"):
        since = daemon.mark()
        _land(project, name)
        daemon.wait_event("materialized", asset="parsed", partition=name, since=since)
    status, drawn = _run_in_pty(
        ["backfill", "parsed", "--from", "p1", "--to", "p3", "--force", "--state-dir", "state"],
        project,
    )
    assert status == 0, drawn
    assert "backfill parsed" in drawn and "3/3" in drawn  # the progress bar, on a terminal
    assert "backfill parsed p1..p3: 3 materialized, 0 failed, 0 waiting" in drawn
    assert len(_events(project, "materialization", "parsed")) == 6
    for event in _events(project, "materialization", "parsed"):  # all six ran in the daemon
        daemon.wait_event("materialized", run_id=event.run_id)
    assert _events(project, "run_abandoned") == []


def test_max_concurrency_1_never_overlaps_runs(project: Path, daemons: list[object]) -> None:
    """run_started is written when a run really starts, so runs never overlap in the log."""
    daemon = _daemon(project, daemons, env={"HW_MAX_CONCURRENCY": "1"}).start()
    daemon.wait_notify("READY=1")
    for i in range(5):
        _land(project, f"c{i}")
    for i in range(5):
        daemon.wait_event("materialized", asset="parsed", partition=f"c{i}")
    spans: dict[str, list[int]] = {}
    for event in _events(project):
        if event.kind in ("run_started", "materialization", "run_failed") and event.run_id:
            spans.setdefault(event.run_id, []).append(event.id)
    ordered = sorted(spans.values())
    assert len(ordered) == 5 and all(len(s) == 2 for s in ordered)
    for before, after in itertools.pairwise(ordered):
        assert after[0] > before[1], f"runs overlap: {ordered}"


def test_sigterm_exits_at_the_end_of_the_grace_period(project: Path, daemons: list[object]) -> None:
    """A function that would run for a minute: exit 0 within 4 s of SIGTERM with --grace 2;
    the next start abandons its run and plans it again, once."""
    hold = project / "hold-long"
    hold.touch()
    daemon = _daemon(project, daemons, "--grace", "2").start()
    daemon.wait_notify("READY=1")
    _land(project, "long")
    started = daemon.wait_event("run_started", asset="parsed", partition="long")
    daemon.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - stopped_at < 4
    assert _events(project)[-1].kind == "daemon_stopped"
    assert _events(project, "materialization") == []
    hold.unlink()
    again = _daemon(project, daemons).start()
    again.wait_event("materialized", asset="parsed", partition="long")
    assert [e.run_id for e in _events(project, "run_abandoned")] == [started["run_id"]]
    assert len(_events(project, "materialization", "parsed")) == 1


def test_a_second_sigterm_stops_at_once(project: Path, daemons: list[object]) -> None:
    hold = project / "hold-stuck"
    hold.touch()
    daemon = _daemon(project, daemons, "--grace", "30").start()
    daemon.wait_notify("READY=1")
    _land(project, "stuck")
    daemon.wait_event("run_started", asset="parsed", partition="stuck")
    daemon.signal(signal.SIGTERM)
    daemon.wait_notify("STOPPING=1")
    daemon.signal(signal.SIGTERM)
    second = time.monotonic()
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - second < 1
    assert _events(project)[-1].kind == "daemon_stopped"


def test_nothing_new_starts_after_stopping(project: Path, daemons: list[object]) -> None:
    """With the only slot busy, a queued partition is not started once stopping begins."""
    hold = project / "hold-first"
    hold.touch()
    daemon = _daemon(project, daemons, "--grace", "10", env={"HW_MAX_CONCURRENCY": "1"})
    daemon.start().wait_notify("READY=1")
    _land(project, "first")
    daemon.wait_event("run_started", asset="parsed", partition="first")
    _land(project, "queued")
    status = hw_project(project, "why", "parsed", "--partition", "queued")
    deadline = time.monotonic() + 10
    while "queued since" not in status.stdout and time.monotonic() < deadline:
        status = hw_project(project, "why", "parsed", "--partition", "queued")  # until it is seen
    assert "queued since" in status.stdout, status.stdout
    daemon.signal(signal.SIGTERM)
    daemon.wait_notify("STOPPING=1")
    hold.unlink()
    assert daemon.proc is not None and daemon.proc.wait(timeout=15) == 0
    assert [e.partition for e in _events(project, "run_started")] == ["first"]
    assert [e.partition for e in _events(project, "materialization")] == ["first"]


def test_a_requested_run_the_stopping_daemon_does_not_start_fails_materialize(
    project: Path, daemons: list[object]
) -> None:
    """``materialize X && publish`` must not publish: a requested partition that the daemon,
    stopping, never started is a request not carried out (exit 1), not a success."""
    daemon = _daemon(project, daemons, "--grace", "10", env={"HW_MAX_CONCURRENCY": "1"})
    daemon.start().wait_notify("READY=1")
    _land(project, "second")
    daemon.wait_event("materialized", asset="parsed", partition="second")
    hold = project / "hold-first"
    hold.touch()
    _land(project, "first")
    daemon.wait_event("run_started", asset="parsed", partition="first")  # the only slot
    asked = hw_start("materialize", "parsed", "--partition", "second", "--force",
                     "--state-dir", "state", "--definitions", "defs.py", cwd=project)  # fmt: skip
    status = hw_project(project, "why", "parsed", "--partition", "second")
    deadline = time.monotonic() + 10
    while "queued since" not in status.stdout and time.monotonic() < deadline:
        status = hw_project(project, "why", "parsed", "--partition", "second")
    assert "queued since" in status.stdout, status.stdout
    daemon.signal(signal.SIGTERM)
    daemon.wait_notify("STOPPING=1")
    hold.unlink()
    out, err = asked.communicate(timeout=30)
    assert "the daemon is stopping" in out + err
    assert asked.returncode == 1, out + err
    assert daemon.proc is not None and daemon.proc.wait(timeout=15) == 0


def test_stop_reload_and_health_talk_to_the_daemon(project: Path, daemons: list[object]) -> None:
    assert hw_project(project, "health").returncode == 1
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    health = hw_project(project, "health")
    assert health.returncode == 0, health.stderr
    assert f"daemon PID {daemon.pid}" in health.stdout and "serving" in health.stdout
    owner = read_owner(project / "state")
    assert owner is not None
    client = connect_to_owner(project / "state", owner)
    try:  # bad parameters of /events: a 400 that names them, never a traceback
        for bad in ({"since": "0001-01-01T00:00:00+05:00"}, {"since": "2026-01-01T00:00"},
                    {"after_id": "9" * 25}, {"limit": "many"}):  # fmt: skip
            with pytest.raises(RequestRefused, match="after_id and limit are whole numbers"):
                client.get("/events", bad)
        since = client.get("/events", {"since": "9999-12-31T00:00:00Z"})
        assert since == []
        # a typo is not an empty log (hostile26 bug3)
        with pytest.raises(RequestRefused, match=r"no such asset or source 'parse'.*'parsed'"):
            client.get("/events", {"asset": "parse"})
        with pytest.raises(RequestRefused, match="'materialised' is not an event kind"):
            client.get("/events", {"kind": "materialised"})
        assert client.get("/events", {"asset": "parsed", "kind": "materialization"}) == []
    finally:
        client.close()
    reload = hw_project(project, "reload")
    assert reload.returncode == 0, reload.stderr
    daemon.wait_notify("RELOADING=1")
    defs = project / "defs.py"
    good = defs.read_text()
    defs.write_text(good + "\ndef broken(:\n")
    broken = hw_project(project, "reload")
    assert broken.returncode == 2 and "syntax error" in broken.stderr
    defs.write_text(good)
    stop = hw_project(project, "stop")
    assert stop.returncode == 0, stop.stderr
    assert daemon.proc is not None and daemon.proc.poll() == 0  # gone when `stop` returns
    assert _events(project)[-1].kind == "daemon_stopped"
    assert not (project / "state" / "headwater.sock").exists()
    assert hw_project(project, "stop").returncode == 1


def test_a_daemon_waits_for_a_cli_command_that_owns_the_state_dir(
    project: Path, daemons: list[object]
) -> None:
    """A backfill running without a daemon owns the state directory; a daemon started
    meanwhile waits for it instead of failing, then serves."""
    _land(project, "w1")
    first = hw_project(project, "materialize", "parsed")
    assert first.returncode == 0, first.stderr
    assert "materialized parsed[w1]" in first.stdout  # a file's new dynamic partition counts
    hold = project / "hold-w1"
    hold.touch()
    cli = hw_start("materialize", "parsed", "--force", "--state-dir", "state", "-d", "defs.py",
                   cwd=project)  # fmt: skip
    deadline = time.monotonic() + 30
    while not _events(project, "run_started", "parsed")[1:]:
        assert cli.poll() is None and time.monotonic() < deadline
    daemon = _daemon(project, daemons).start()
    daemon.wait_event("waiting_for_state_dir")
    hold.unlink()
    _out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    daemon.wait_notify("READY=1")
    assert _events(project, "run_abandoned") == []


def test_a_harness_owns_its_state_dir(tmp_path: Path) -> None:
    src = hw_api.source("src")
    defs = hw_api.Definitions([src])
    with Harness(defs, state_dir=tmp_path):
        with pytest.raises(StateDirBusy, match=f"owned by PID {os.getpid()}"):
            Harness(defs, state_dir=tmp_path)
        with pytest.raises(StateDirBusy):
            Ownership.acquire(tmp_path, "cli")
    with Harness(defs, state_dir=tmp_path):  # released on close
        pass


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "garbage"])
def test_an_unreadable_event_log_is_exit_3_with_how_to_recover(
    project: Path, daemons: list[object], damage: str
) -> None:
    for i in range(40):
        _land(project, f"d{i}")
    assert hw_project(project, "materialize", "parsed").returncode == 0
    db = project / "state" / "events.db"
    size = db.stat().st_size
    data = db.read_bytes()
    if damage == "zeroed":
        db.write_bytes(b"\0" * size)
    elif damage == "truncated":
        db.write_bytes(data[: size // 3])
    else:
        db.write_bytes(data[:100] + os.urandom(size - 100))
    for command in (["status"], ["why", "parsed", "-p", "d1"], ["logs"], ["materialize", "parsed"]):
        result = hw_project(project, *command)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert f"the event log {db} is unreadable" in result.stderr
        assert ".recover" in result.stderr and "Traceback" not in result.stderr
    daemon = _daemon(project, daemons).start()
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 3
    daemon.drain()
    message = "".join(daemon.bad_lines)
    assert f"the event log {db} is unreadable" in message and "Traceback" not in message
    daemon.bad_lines.clear()


def test_a_deleted_value_is_materialized_again_after_restart(
    project: Path, daemons: list[object]
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, "keep")
    _land(project, "lose")
    daemon.wait_event("materialized", asset="parsed", partition="keep")
    daemon.wait_event("materialized", asset="parsed", partition="lose")
    assert daemon.terminate() == 0
    (value,) = (project / "state" / "values" / "parsed").glob("p=lose.*")
    value.unlink()
    again = _daemon(project, daemons).start()
    again.wait_event("materialized", asset="parsed", partition="lose")
    lost = _events(project, "value_lost")
    assert [(e.asset, e.partition) for e in lost] == [("parsed", "lose")]
    materialized = [e.partition for e in _events(project, "materialization")]
    assert sorted(materialized) == ["keep", "lose", "lose"]
    assert list((project / "state" / "values" / "parsed").glob("p=lose.*"))


def test_a_value_gone_when_a_reader_loads_it_is_materialized_first(tmp_path: Path) -> None:
    """The reader's run is abandoned (no retry spent), the input becomes missing, its policy
    materializes it again, then the reader runs."""
    src = hw_api.source("src")
    other = hw_api.source("other")

    @hw_api.asset
    def base(src: int) -> list[int]:
        return [src * 10] + [0] * 20_000  # too large for the event log to keep: a file

    @hw_api.asset
    def reader(base: list[int], other: int) -> int:
        return sum(base) + other

    defs = hw_api.Definitions([src, other, base, reader])
    with Harness(defs, state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.observe("other", value=1)
        assert h.tick().assets == {"base", "reader"}
        (value,) = (tmp_path / "values" / "base").glob("value.*")
        value.unlink()
        h.observe("other", value=2)
        tick = h.tick()
        assert tick.failed == {}
        assert tick.materialized == [("base", None), ("reader", None)]
        assert h.value("reader") == 12
        assert [e.asset for e in h.events(kind="value_lost")] == ["base"]
        assert [e.asset for e in h.events(kind="run_abandoned")] == ["reader"]
        assert h.state("base") == "fresh" and h.state("reader") == "fresh"


async def _old_history(state: Path, n: int) -> None:
    """``n`` observations of an asset the definitions no longer have, three hours ago."""
    then = datetime.now(UTC) - timedelta(hours=3)
    events = [Event(kind=EventKind.OBSERVATION, timestamp=then + timedelta(seconds=i),
                    asset="archived", data_version=f"v{i}") for i in range(n)]  # fmt: skip
    async with open_event_log(state) as log:
        await log.write(events)


def test_reading_commands_ask_the_daemon_when_the_state_dir_is_unreadable(
    project: Path, daemons: list[object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A member of the socket's group, not the service's user: status, why and logs come from
    the daemon over its socket. (Root without CAP_DAC_OVERRIDE stands in for that user.)"""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop the capability that reads any file")
    runtime = tmp_path_factory.mktemp("run")
    anyio.run(_old_history, project / "state", 1_500)  # more than a page of /events
    daemon = _daemon(project, daemons, env={"RUNTIME_DIRECTORY": str(runtime)}).start()
    daemon.wait_notify("READY=1")
    _land(project, "seen")
    daemon.wait_event("materialized", asset="parsed", partition="seen")
    assert (runtime / "headwater.sock").stat().st_mode & 0o777 == 0o660
    direct = hw_project(project, "status", "--json")
    recent = hw_project(project, "logs", "--since", "1h")
    assert "parsed[seen]" in recent.stdout and "archived" not in recent.stdout
    state = project / "state"
    os.chown(state, 12345, -1)  # another user's private directory, from here on
    state.chmod(0o700)

    def as_other_user(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable,
             "-m", "headwater", *args, "--state-dir", "state"],
            cwd=project, env=cli_env({"HEADWATER_SOCKET": str(runtime / "headwater.sock")}),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    status = as_other_user("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == json.loads(direct.stdout)
    why = as_other_user("why", "parsed", "--partition", "seen")
    assert why.returncode == 0, why.stderr
    assert why.stdout.startswith("parsed[seen] is fresh") and "materialization" in why.stdout
    logs = as_other_user("logs", "--kind", "materialization")
    assert logs.returncode == 0 and "parsed[seen]" in logs.stdout
    # pages of the daemon's answer older than --since are passed over, not taken for the end
    since = as_other_user("logs", "--since", "1h")
    assert since.returncode == 0, since.stderr
    assert since.stdout == recent.stdout
    unreachable = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable,
         "-m", "headwater", "status", "--state-dir", "state"],
        cwd=project, env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unreachable.returncode == 3 and "permission denied" in unreachable.stderr
    os.chown(state, 0, -1)


def test_plan_reads_the_log_while_the_daemon_runs_and_changes_nothing(
    project: Path, daemons: list[object]
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, "a")
    daemon.wait_event("materialized", asset="parsed", partition="a")
    count = len(_events(project))
    result = hw_project(project, "plan", "--changed", "files:a", "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert [(s["asset"], s["partition"]) for s in steps] == [("parsed", "a")]
    now = hw_project(project, "plan")
    assert now.returncode == 0, now.stderr
    assert "stamp: missing; manual policy" in now.stdout
    assert len(_events(project)) == count  # nothing written, nothing run
    assert daemon.proc is not None and daemon.proc.poll() is None


UNDECODABLE = """
import os
import headwater as hw
@hw.asset
def named() -> hw.Output:
    # a name that is not UTF-8, as os.listdir gives it: a lone surrogate in the metadata
    return hw.Output(1, metadata={"seen": [os.fsdecode(b"caf\\xe9.csv"), "ok.csv"]})
defs = hw.Definitions([named])
"""


def test_the_api_answers_with_an_event_that_holds_a_lone_surrogate(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Starlette's JSON rendering encodes UTF-8, which a lone surrogate refuses: every page of
    /events holding that event answered 400 for good (``headwater logs`` through the socket
    was stuck there). The API escapes what is not ASCII."""
    (tmp_path / "defs.py").write_text(UNDECODABLE)
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    daemon.wait_event("materialized", asset="named")
    owner = read_owner(tmp_path / "state")
    assert owner is not None
    client = connect_to_owner(tmp_path / "state", owner)
    try:
        (event,) = client.get("/events", {"asset": "named", "kind": "materialization"})
        assert event["payload"]["metadata"]["seen"] == ["caf\udce9.csv", "ok.csv"]
    finally:
        client.close()
    assert daemon.terminate() == 0


def test_a_running_daemon_of_a_version_without_the_lock_is_an_owner(tmp_path: Path) -> None:
    """Versions of 2026-11-24 took no lock: their daemon's start logged without its stop,
    its process alive running headwater with the event log open, is an owner the lock cannot
    see. Another owner started beside it ran every file twice (hostile34a bug3); it is
    refused, naming the PID. A process that is no headwater daemon (the dead daemon's PID
    reused by a reader of the log: hostile34d bug3) refuses nothing."""
    from headwater._errors import StateDirError

    state = tmp_path / "state"
    with Harness(hw_api.Definitions([hw_api.source("src")]), state_dir=state) as h:
        h.observe("src", value=1)  # makes the log
    hold = "import sys; f = open(sys.argv[1], 'rb'); print('open', flush=True); sys.stdin.read()"
    for args, refused in [((), False), (("headwater", "run"), True)]:
        holder = subprocess.Popen(  # holds the log open, as that daemon does, until told
            [sys.executable, "-c", hold, str(state / "events.db"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "open\n"
            with contextlib.closing(sqlite3.connect(state / "events.db")) as db, db:
                db.execute(
                    "INSERT INTO events (timestamp, kind, payload) VALUES (?, 'daemon_started', ?)",
                    ("2026-11-24T10:00:00.000000Z", json.dumps({"pid": holder.pid})),
                )
            if refused:
                with pytest.raises(StateDirError, match=f"used by PID {holder.pid}, a headwater"):
                    Ownership.acquire(state, "cli")
            else:
                with Ownership.acquire(state, "cli"):
                    pass
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(timeout=10)
            holder.stdout.close()
    with Ownership.acquire(state, "cli"):  # gone: the log's record says nothing any more
        pass
