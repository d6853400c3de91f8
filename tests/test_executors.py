"""A user's function can never take the daemon down: the real daemon, functions in worker
processes (the default executor), one misbehaving asset at a time next to a healthy chain.

One daemon serves most of this module (tests/resources/bad_day_project.py): each test drops
the trigger file of one misbehaving asset and checks that the run fails with the stated
reason while the daemon stays up and keeps answering. Every line the daemon writes to stderr
must parse as JSON (checked when the module's daemon is closed).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cli_process import cli_env, hw, hw_project
from daemon_process import DaemonProcess

from headwater.eventlog import EventLogReader

RESOURCES = Path(__file__).parent / "resources"
# One daemon (the bad_day fixture) for the module, and the last test reads what the others
# left in its log: the module runs in one worker, in order (pytest-xdist's --dist loadfile).
pytestmark = pytest.mark.timeout(300)


class BadDay:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = f"state-{uuid.uuid4().hex[:8]}"  # relative on purpose: see `wanders`
        self.daemons: list[DaemonProcess] = []
        self.fork_server: int | None = None
        """The first daemon's fork server, as it was once the daemon was ready."""

    def start(self, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(
            self.root,
            self.root / "defs.py",
            Path(self.state),
            env={"HEADWATER_WORKER_MEMORY": "1.5GB", **(env or {})},
            args=("--settle", "0.05", *args),
        )
        self.daemons.append(daemon)
        daemon.start().wait_notify("READY=1")
        return daemon

    @property
    def daemon(self) -> DaemonProcess:
        return self.daemons[-1]

    def trigger(self, name: str) -> None:
        (self.root / "triggers" / f"{name}.json").write_text(json.dumps({"at": time.time_ns()}))

    def land(self, name: str, amount: int = 1) -> float:
        """A CSV file moved into the inbox; the wall-clock time it landed."""
        staged = self.root / f"{name}.csv.part"
        staged.write_text(f"amount\n{amount}\n")
        landed = time.time()
        staged.rename(self.root / "inbox" / f"{name}.csv")
        return landed

    def failed(self, asset: str, since: int) -> dict[str, Any]:
        return self.daemon.wait_event("run_failed", asset=asset, since=since, timeout=60)

    def events(self, kind: str, asset: str | None = None) -> list[Any]:
        return EventLogReader(self.root / self.state).events(kind=kind, asset=asset)

    def assert_alive(self) -> None:
        """Still running, and answering on its socket."""
        assert self.daemon.proc is not None and self.daemon.proc.poll() is None
        health = hw_project(self.root, "health", "--json", state=self.state)
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout)["pid"] == self.daemon.pid


@pytest.fixture(scope="module")
def bad_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadDay]:
    root = tmp_path_factory.mktemp("bad-day")
    shutil.copy(RESOURCES / "bad_day_project.py", root / "defs.py")
    (root / "inbox").mkdir()
    (root / "triggers").mkdir()
    day = BadDay(root)
    day.start("--grace", "3")
    day.fork_server = _health(day)["executor"]["fork_server"]
    yield day
    for daemon in day.daemons:
        daemon.close()
    for daemon in day.daemons:
        assert daemon.bad_lines == [], f"non-JSON log lines: {daemon.bad_lines[:5]}"
    assert not (Path("/") / day.state).exists(), "a value went to /<relative state dir>"


def _health(day: BadDay) -> dict[str, Any]:
    health = hw_project(day.root, "health", "--json", state=day.state)
    assert health.returncode == 0, health.stderr
    return dict(json.loads(health.stdout))


def _line_of(text: str) -> int:
    """The line of ``text`` in the misbehaving project."""
    lines = (RESOURCES / "bad_day_project.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


def test_an_exception_fails_the_run_with_its_message(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("raises")
    line = bad_day.failed("raises", since)
    assert line["error"] == "ValueError: bad row 17"
    assert line["where"].endswith(f"defs.py:{_line_of('raise ValueError')}")
    bad_day.assert_alive()


def test_sys_exit_fails_the_run_and_the_daemon_stays(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("exits")
    assert bad_day.failed("exits", since)["error"] == "SystemExit: 3"
    bad_day.assert_alive()


def test_os_exit_in_a_function_is_its_worker_exiting(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("hard_exit")
    assert bad_day.failed("hard_exit", since)["error"] == "worker exited with status 7"
    bad_day.assert_alive()


def test_a_segfault_fails_the_run_with_the_python_stack_in_why(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("segfault")
    line = bad_day.failed("segfault", since)
    assert line["error"] == "worker died: SIGSEGV"
    assert line["where"].endswith(f"defs.py:{_line_of('string_at(0)')}")
    bad_day.assert_alive()
    payload = bad_day.events("run_failed", "segfault")[-1].payload
    assert "about to read address 0" in payload["stderr"]
    assert "Fatal Python error: Segmentation fault" in payload["stderr"]
    at = f'defs.py", line {_line_of("string_at(0)")} in segfault'
    assert at in payload["stderr"]  # faulthandler's stack
    why = hw_project(bad_day.root, "why", "segfault", state=bad_day.state)
    assert "worker died: SIGSEGV" in why.stdout
    assert "stderr (last lines):" in why.stdout and "in segfault" in why.stdout


def test_a_spinning_function_is_killed_at_its_timeout(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    started = time.monotonic()
    bad_day.trigger("spins")
    line = bad_day.failed("spins", since)
    assert line["error"] == "timed out after 2s"
    assert time.monotonic() - started < 8  # 2 s, plus at most a second for SIGTERM to work
    bad_day.assert_alive()


def test_a_function_that_leaves_a_thread_behind_succeeds(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("lingers")
    bad_day.daemon.wait_event("materialized", asset="lingers", since=since)
    bad_day.assert_alive()


def test_chdir_in_a_function_moves_nothing_of_the_daemon(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("wanders")
    bad_day.daemon.wait_event("materialized", asset="wanders", since=since)
    bad_day.land("after-wandering", 5)  # the next runs, perhaps in the same worker
    bad_day.daemon.wait_event("materialized", asset="totals", partition="after-wandering")
    values = bad_day.root / bad_day.state / "values"
    assert (values / "wanders" / "value.pickle").is_file()
    assert (values / "parsed" / "p=after-wandering.frame.parquet").is_file()
    assert not (Path("/") / bad_day.state).exists()
    status = hw_project(bad_day.root, "status", "--json", state=bad_day.state)
    rows = {(r["asset"], r["partition"]): r["state"] for r in json.loads(status.stdout)}
    assert rows[("wanders", None)] == "fresh"


def test_a_flood_of_output_is_logged_rate_limited_and_counted(bad_day: BadDay) -> None:
    """20,000 printed lines: some become log lines of the run, the rest are counted; the
    healthy chain, landing files meanwhile, loses none of its own lines."""
    since = bad_day.daemon.mark()
    bad_day.trigger("chatty")
    names = [f"during-chatter-{i}" for i in range(5)]
    for name in names:
        bad_day.land(name)
    done = bad_day.daemon.wait_event("materialized", asset="chatty", since=since, timeout=60)
    for name in names:
        bad_day.daemon.wait_event("materialized", asset="totals", partition=name, since=since)
    lines = bad_day.daemon.lines[since:]
    run = [ln for ln in lines if ln.get("run_id") == done["run_id"]]
    shown = [ln for ln in run if ln["event"] == "output"]
    dropped = sum(ln["lines"] for ln in run if ln["event"] == "output_dropped")
    assert 200 <= len(shown) < 1_000  # a burst of 100 per stream, then 25 a second
    assert len(shown) + dropped == 20_000
    assert {ln["stream"] for ln in shown} == {"stdout", "stderr"}
    assert all(ln["asset"] == "chatty" and ln["level"] == "info" for ln in shown)


def test_logging_configured_by_a_function_stays_in_its_worker(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("reconfigures")
    bad_day.daemon.wait_event("materialized", asset="reconfigures", since=since)
    bad_day.land("after-reconfiguring")
    bad_day.daemon.wait_event("materialized", asset="totals", partition="after-reconfiguring")
    after = bad_day.daemon.lines[since:]
    assert all({"timestamp", "level", "event", "logger"} <= ln.keys() for ln in after)
    assert not any(ln.get("logger") == "aiosqlite" for ln in after)
    outputs = [ln["line"] for ln in after if ln["event"] == "output"]
    assert any("reconfigured" in text for text in outputs)  # the user's renderer, as text


def test_unbounded_allocation_fails_out_of_memory_with_the_limit(bad_day: BadDay) -> None:
    since = bad_day.daemon.mark()
    bad_day.trigger("hogs")
    assert bad_day.failed("hogs", since)["error"] == "out of memory (limit 1.5 GB)"
    bad_day.assert_alive()


def test_a_parquet_file_that_expands_past_worker_memory_fails_only_its_run(
    bad_day: BadDay,
) -> None:
    """1.3 MB on disk, 2.4 GB of int64 once read: its reader fails out of memory (the worker
    is replaced); the daemon and the healthy chain go on."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk = pa.table({"x": pa.array(np.zeros(10_000_000, dtype=np.int64))})
    staged = bad_day.root / "bomb.parquet.part"
    with pq.ParquetWriter(staged, chunk.schema) as writer:
        for _ in range(30):
            writer.write_table(chunk)
    assert staged.stat().st_size < 5_000_000
    since = bad_day.daemon.mark()
    staged.rename(bad_day.root / "triggers" / "bomb.parquet")
    assert bad_day.failed("reads_bomb", since)["error"] == "out of memory (limit 1.5 GB)"
    bad_day.land("after-the-bomb")
    bad_day.daemon.wait_event("materialized", asset="totals", partition="after-the-bomb")
    bad_day.assert_alive()


def test_a_killed_fork_server_is_replaced_and_runs_go_on(bad_day: BadDay) -> None:
    """The kernel's OOM killer may pick the fork server (it holds pandas and pyarrow): its
    workers die with it, and the next run forks from a new one."""
    server = _health(bad_day)["executor"]["fork_server"]
    # The tests above took far longer than the 10 s after which anyio retires an idle thread:
    # a server whose parent-death signal was tied to such a thread would have been killed.
    assert server is not None and server == bad_day.fork_server
    os.kill(server, signal.SIGKILL)
    assert not _alive(server)
    bad_day.land("after-the-fork-server")
    bad_day.daemon.wait_event("materialized", asset="totals", partition="after-the-fork-server")
    assert _health(bad_day)["executor"]["fork_server"] not in (None, server)
    bad_day.assert_alive()


def _latencies(day: BadDay, prefix: str, count: int = 20) -> list[float]:
    """Seconds from each file landing to its ``totals`` partition materialized."""
    result = []
    for i in range(count):
        since = day.daemon.mark()
        landed = day.land(f"{prefix}-{i}", i)
        line = day.daemon.wait_event("materialized", asset="totals", partition=f"{prefix}-{i}",
                                     since=since)  # fmt: skip
        result.append(_ts(line) - landed)
    return result


def test_a_spinning_neighbour_does_not_slow_the_healthy_chain(bad_day: BadDay) -> None:
    baseline = statistics.median(_latencies(bad_day, "quiet"))
    since = bad_day.daemon.mark()
    bad_day.trigger("spins_long")
    bad_day.daemon.wait_event("run_started", asset="spins_long", since=since)
    busy = statistics.median(_latencies(bad_day, "busy"))
    assert busy <= max(2 * baseline, baseline + 0.020), (baseline, busy)
    health = _health(bad_day)
    spinning = [w for w in health["executor"]["workers"] if w.get("asset") == "spins_long"]
    assert len(spinning) == 1 and spinning[0]["state"] == "running"


def test_sigterm_with_grace_3_stops_within_5_s_whatever_runs(bad_day: BadDay) -> None:
    """A function spinning with a 10-minute timeout and a worker with a non-daemon thread
    asleep for a minute: SIGTERM with --grace 3 exits 0 within 5 s, no process left."""
    daemon = bad_day.daemon
    if not any(ln["event"] == "run_started" and ln.get("asset") == "spins_long"
               for ln in daemon.lines):  # fmt: skip
        bad_day.trigger("spins_long")
        daemon.wait_event("run_started", asset="spins_long")
    health = _health(bad_day)
    workers = [w["pid"] for w in health["executor"]["workers"]]
    assert workers
    daemon.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - stopped < 5
    for pid in workers:
        assert not _alive(pid), f"worker {pid} outlived the daemon"
    abandoned = bad_day.events("run_abandoned", "spins_long")
    assert abandoned[-1].payload["reason"] == "still running when the daemon stopped"


def test_after_the_code_is_fixed_each_failed_asset_runs_once(bad_day: BadDay) -> None:
    for name in ("raises", "exits", "hard_exit", "segfault", "spins", "hogs"):
        if not bad_day.events("run_failed", name):
            pytest.skip("needs the failures recorded by the tests above")
    if bad_day.daemon.proc is not None and bad_day.daemon.proc.poll() is None:
        bad_day.daemon.terminate()
    before = {name: len(bad_day.events("materialization", name)) for name in ("totals", "parsed")}
    shutil.copy(RESOURCES / "bad_day_fixed.py", bad_day.root / "defs.py")
    daemon = bad_day.start("--grace", "3")
    fixed = ("raises", "exits", "hard_exit", "segfault", "spins", "spins_long", "hogs",
             "reads_bomb")  # fmt: skip
    for name in fixed:
        daemon.wait_event("materialized", asset=name)
    health = hw_project(bad_day.root, "status", "--check", state=bad_day.state)
    assert health.returncode == 0, health.stdout
    for name in fixed:
        assert len(bad_day.events("materialization", name)) == 1, name
    for name, count in before.items():  # the healthy chain's code did not change
        assert len(bad_day.events("materialization", name)) == count
    assert bad_day.daemon.terminate() == 0


def _worker_running(root: Path, state: str, asset: str) -> int:
    """The pid of the worker running ``asset``: the run is logged as started once committed,
    a moment before a worker has taken it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = json.loads(hw_project(root, "health", "--json", state=state).stdout)
        for worker in health["executor"]["workers"]:
            if worker.get("asset") == asset:
                return int(worker["pid"])
    raise AssertionError(f"no worker took {asset} within 30 s")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process, waiting up to 5 s for it to end."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        return not select.select([fd], [], [], 5)[0]
    finally:
        os.close(fd)


# -- the daemon's own death ----------------------------------------------------------------

SLEEPER = """
import time
import headwater as hw

@hw.asset(policy=hw.manual())
def sleeps() -> int:
    time.sleep(600)
    return 1

defs = hw.Definitions([sleeps])
"""


def _materialize_sleeps(root: Path) -> subprocess.Popen[bytes]:
    """``headwater materialize sleeps`` as a user runs it, left running (it waits for the run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", "materialize", "sleeps", "-d", "defs.py",
         "--state-dir", "state"],
        cwd=root, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_kill_9_of_the_daemon_leaves_no_worker_and_a_new_owner_starts(
    tmp_path: Path, daemons: list[object]
) -> None:
    (tmp_path / "defs.py").write_text(SLEEPER)
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    request = _materialize_sleeps(tmp_path)
    try:
        started = daemon.wait_event("run_started", asset="sleeps")
        worker = _worker_running(tmp_path, "state", "sleeps")
        daemon.kill9()
        assert not _alive(worker), "the worker outlived its daemon (kill -9)"
    finally:
        request.wait(timeout=30)
    again = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(again)
    again.start().wait_notify("READY=1")
    abandoned = again.wait_event("run_abandoned", asset="sleeps")
    assert abandoned["run_id"] == started["run_id"]
    assert again.terminate() == 0


def test_ctrl_c_on_the_daemons_terminal_does_not_reach_its_workers(
    tmp_path: Path, daemons: list[object]
) -> None:
    """SIGINT to the whole foreground process group (what Ctrl-C does): the daemon stops
    gracefully; the function is not interrupted, it is stopped at the end of the grace."""
    (tmp_path / "defs.py").write_text(SLEEPER)
    daemon = DaemonProcess(
        tmp_path, tmp_path / "defs.py", tmp_path / "state", args=("--grace", "1"),
        new_session=True,
    )  # fmt: skip
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    request = _materialize_sleeps(tmp_path)
    try:
        daemon.wait_event("run_started", asset="sleeps")
        os.killpg(daemon.pid, signal.SIGINT)
        assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0
    finally:
        request.wait(timeout=30)
    daemon.drain()
    assert not [ln for ln in daemon.lines if ln["event"] == "run_failed"]  # no KeyboardInterrupt
    reader = EventLogReader(tmp_path / "state")
    (event,) = reader.events(kind="run_abandoned", asset="sleeps")
    assert event.payload["reason"] == "still running when the daemon stopped"


CRASHER = """
import os
import headwater as hw

@hw.asset
def crashes() -> int:
    os._exit(7)

@hw.asset
def steady() -> int:
    return 1

defs = hw.Definitions([crashes, steady])
"""


def test_under_threads_a_function_that_kills_the_daemon_cannot_make_it_crash_loop(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Under threads the function's os._exit is the daemon's: it dies three times as the run
    is planned again at each start; the fourth start records the run as failed for good and
    stays up, until the code changes. The sibling that happened to run when it first died
    goes alone next time, and is not blamed again."""
    (tmp_path / "defs.py").write_text(CRASHER)
    env = {"HEADWATER_EXECUTOR": "threads"}
    for _ in range(3):
        daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state", env=env)
        daemons.append(daemon)
        daemon.start()
        assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 7
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state", env=env)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    failed = daemon.wait_event("run_failed", asset="crashes")
    assert failed["error"] == "the daemon died while running it 3 times"
    daemon.wait_event("materialized", asset="steady")
    reader = EventLogReader(tmp_path / "state")
    crashes = reader.events(kind="run_abandoned", asset="crashes")
    assert [e.payload.get("crash") for e in crashes] == [True, True]
    assert reader.events(kind="run_failed", asset="steady") == []  # a bystander, once at most
    status = json.loads(hw_project(tmp_path, "status", "--json").stdout)
    assert {r["asset"]: r["state"] for r in status}["crashes"] == "failed"
    assert hw_project(tmp_path, "materialize", "steady", "--force").returncode == 0
    assert len(reader.events(kind="run_started", asset="crashes")) == 3  # not planned again
    assert daemon.proc is not None and daemon.proc.poll() is None
    (tmp_path / "defs.py").write_text(CRASHER.replace("os._exit(7)", "return 7"))
    assert hw_project(tmp_path, "reload").returncode == 0
    daemon.wait_event("materialized", asset="crashes")
    assert daemon.terminate() == 0


def test_the_executor_setting_is_checked_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "defs.py").write_text(CRASHER)
    (tmp_path / "pyproject.toml").write_text('[tool.headwater]\nworker_memory = "lots"\n')
    run = hw_project(tmp_path, "run")
    assert run.returncode == 2
    assert "worker_memory" in run.stderr and "'lots' is not a size" in run.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.headwater]\nexecutor = "fibers"\n')
    run = hw_project(tmp_path, "run")
    assert run.returncode == 2 and "executor 'fibers'" in run.stderr
    assert "processes, threads" in run.stderr
    assert not (tmp_path / "state").exists()


HELPER_DEFS = """
import helper_mod
import headwater as hw

answer = hw.asset(helper_mod.answer, policy=hw.manual())
defs = hw.Definitions([answer])
"""


def test_reload_runs_the_new_code_of_a_helper_module_the_definitions_import(
    tmp_path: Path, daemons: list[object]
) -> None:
    """The asset's function lives in a module beside the definitions. Edited, then reloaded:
    the daemon imports the helper afresh too, so its code version is the workers' and the
    run runs the new code (it kept the old one, and every run failed asking for a reload)."""
    from headwater.versions import data_version

    (tmp_path / "helper_mod.py").write_text("def answer() -> int:\n    return 1\n")
    (tmp_path / "defs.py").write_text(HELPER_DEFS)
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    first = hw_project(tmp_path, "materialize", "answer")
    assert first.returncode == 0, first.stderr
    (tmp_path / "helper_mod.py").write_text("def answer() -> int:\n    return 2\n")
    reload = hw_project(tmp_path, "reload")
    assert reload.returncode == 0, reload.stderr
    again = hw_project(tmp_path, "materialize", "answer")
    assert again.returncode == 0, again.stdout + again.stderr
    runs = EventLogReader(tmp_path / "state").events(kind="materialization", asset="answer")
    assert [e.data_version for e in runs] == [data_version(1), data_version(2)]
    assert daemon.terminate() == 0


MODULE_DEFS = """
import headwater as hw

from . import helper

answer = hw.asset(helper.answer, policy=hw.manual())
defs = hw.Definitions([answer])
"""


@pytest.mark.parametrize("namespace", [False, True], ids=["package", "namespace package"])
def test_reload_of_definitions_named_as_a_module_runs_their_new_code(
    tmp_path: Path, daemons: list[object], namespace: bool
) -> None:
    """``--definitions mypkg.defs:defs`` whose function reads a helper beside it, edited, then
    reloaded: the daemon imports the module and the helper afresh (it kept the module it had
    imported, said it had reloaded, and ran the old code; Dask workers did the same:
    hostile34b bug5). Also for a folder without ``__init__.py``, whose package object held the
    old helper (hostile35b bug5)."""
    from headwater.versions import data_version

    package = tmp_path / "mypkg"
    package.mkdir()
    if not namespace:
        (package / "__init__.py").write_text("")
    (package / "defs.py").write_text(MODULE_DEFS)
    (package / "helper.py").write_text("def answer() -> int:\n    return 1\n")
    env = {"PYTHONPATH": str(tmp_path), "HEADWATER_EXECUTOR": "threads"}
    target = "mypkg.defs:defs"
    daemon = DaemonProcess(tmp_path, Path(target), tmp_path / "state", env=env)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")

    def materialize() -> None:
        done = hw(
            "materialize", "answer", "-d", target, "--state-dir", "state", cwd=tmp_path, env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr

    materialize()
    (package / "helper.py").write_text("def answer() -> int:\n    return 2\n")
    reload = hw("reload", "-d", target, "--state-dir", "state", cwd=tmp_path, env=env)
    assert reload.returncode == 0, reload.stderr
    materialize()
    runs = EventLogReader(tmp_path / "state").events(kind="materialization", asset="answer")
    assert [e.data_version for e in runs] == [data_version(1), data_version(2)]
    assert daemon.terminate() == 0


@pytest.mark.parametrize("kind", ["module", "file"])
def test_a_worker_started_after_a_failed_reload_runs_the_code_the_daemon_kept(
    tmp_path: Path, daemons: list[object], kind: str
) -> None:
    """``mypkg.defs:defs`` under the processes executor: an edit breaks the helper, the reload
    fails and the daemon keeps the old definitions. Its workers are killed (the OOM killer);
    the one started for the next run imports the code the daemon kept, not the broken files
    (it failed every run "the worker could not start": hostile35b bug2). The same for a
    helper beside a definitions file."""
    from headwater.versions import data_version

    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if kind == "module":
        (package / "defs.py").write_text(MODULE_DEFS)
        helper = package / "helper.py"
        target = "mypkg.defs:defs"
    else:
        (package / "defs.py").write_text(HELPER_DEFS)
        helper = package / "helper_mod.py"
        target = str(package / "defs.py")
    helper.write_text("def answer() -> int:\n    return 1\n")
    env = {"PYTHONPATH": str(tmp_path), "HEADWATER_EXECUTOR": "processes"}
    daemon = DaemonProcess(tmp_path, Path(target), tmp_path / "state", env=env)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return hw(*args, "-d", target, "--state-dir", "state", cwd=tmp_path, env=env)

    assert cli("materialize", "answer").returncode == 0
    helper.write_text("raise ImportError('half-saved')\n")
    reload = cli("reload")
    assert reload.returncode == 2 and "half-saved" in reload.stdout + reload.stderr
    workers = json.loads(cli("health", "--json").stdout)["executor"]["workers"]
    assert workers
    for worker in workers:
        os.kill(worker["pid"], signal.SIGKILL)
    again = cli("materialize", "answer", "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    runs = EventLogReader(tmp_path / "state").events(kind="materialization", asset="answer")
    assert [e.data_version for e in runs] == [data_version(1), data_version(1)]
    assert daemon.terminate() == 0


LAZY_DEFS = """
import headwater as hw


@hw.asset(policy=hw.manual())
def answer() -> int:
    from mypkg import lazy  # at run time, not while the definitions load

    return lazy.F


defs = hw.Definitions([answer])
"""


def test_a_reload_imports_afresh_a_helper_a_function_imported_while_running(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Under the threads executor, a module the function imports when it runs is the user's
    code too: a reload imports it afresh, as it does the helpers the definitions import (the
    daemon said "reloaded" and ran the old helper: hostile35b bug13)."""
    from headwater.versions import data_version

    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "defs.py").write_text(LAZY_DEFS)
    (package / "lazy.py").write_text("F = 1\n")
    env = {"PYTHONPATH": str(tmp_path), "HEADWATER_EXECUTOR": "threads"}
    target = "mypkg.defs:defs"
    daemon = DaemonProcess(tmp_path, Path(target), tmp_path / "state", env=env)
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return hw(*args, "-d", target, "--state-dir", "state", cwd=tmp_path, env=env)

    assert cli("materialize", "answer").returncode == 0
    (package / "lazy.py").write_text("F = 2\n")
    assert cli("reload").returncode == 0
    assert cli("materialize", "answer", "--force").returncode == 0
    runs = EventLogReader(tmp_path / "state").events(kind="materialization", asset="answer")
    assert [e.data_version for e in runs] == [data_version(1), data_version(2)]
    assert daemon.terminate() == 0
