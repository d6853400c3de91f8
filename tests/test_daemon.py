"""The daemon end to end: a real subprocess, real inotify, a real NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import anyio
import pytest
from cli_process import hw_project, hw_start
from daemon_process import DaemonProcess, Line

from headwater._loading import LoadError
from headwater.daemon._reload import import_in_child
from headwater.eventlog import EventLogReader

RESOURCES = Path(__file__).parent / "resources"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(RESOURCES / "daemon_project.py", tmp_path / "defs.py")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "drops").mkdir()
    return tmp_path


def _daemon(project: Path, daemons: list[object], **kwargs: object) -> DaemonProcess:
    daemon = DaemonProcess(project, project / "defs.py", project / "state", **kwargs)  # type: ignore[arg-type]
    daemons.append(daemon)
    return daemon


def _land(project: Path, name: str, text: str = "a,b\n1,2\n") -> None:
    (project / "inbox" / f"{name}.csv").write_text(text)


def _landed(daemon: DaemonProcess, project: Path, name: str, text: str = "a,b\n1,2\n") -> None:
    """Write a file and wait until its partition is materialized. Events are handled in order,
    so once this returns, everything that happened to the folder before has been handled."""
    since = daemon.mark()
    _land(project, name, text)
    daemon.wait_event("materialized", asset="parsed", partition=name, since=since)


def _events(project: Path, kind: str, partition: str | None = None) -> list[object]:
    return EventLogReader(project / "state").events(kind=kind, partition=partition)


def _held_run(
    project: Path, daemons: list[object], partition: str
) -> tuple[DaemonProcess, Path, Line]:
    """A started daemon running ``parsed[partition]``, held until the returned file goes;
    with that run's ``run_started`` line."""
    hold = project / f"hold-{partition}"
    hold.touch()
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, partition)
    started = daemon.wait_event("run_started", asset="parsed", partition=partition)
    return daemon, hold, started


def test_ready_only_after_the_startup_scan(project: Path, daemons: list[object]) -> None:
    """Files present at start are observed before READY=1 is sent."""
    _land(project, "early1")
    _land(project, "early2")
    daemon = _daemon(project, daemons).start()
    message = daemon.wait_notify("READY=1")
    assert "STATUS=serving 2 assets, watching 2 sources" in message
    observed = {e.partition for e in _events(project, "observation")}  # type: ignore[attr-defined]
    assert observed == {"early1", "early2"}
    daemon.wait_event("materialized", asset="parsed", partition="early2")


def test_a_file_written_in_pieces_counts_once(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    with open(project / "inbox" / "pieces.csv", "w") as f:
        f.write("a,b\n1,2\n")
        f.flush()
        os.fsync(f.fileno())
        _landed(daemon, project, "sentinel1")  # the half-written file has been seen by now
        f.write("3,4\n")
    daemon.wait_event("materialized", asset="parsed", partition="pieces")
    _landed(daemon, project, "sentinel2")
    assert len(_events(project, "observation", "pieces")) == 1
    assert len(_events(project, "materialization", "pieces")) == 1
    rows = _events(project, "materialization", "pieces")[0].payload["metadata"]["rows"]  # type: ignore[attr-defined]
    assert rows == 2


def test_the_same_bytes_rewritten_run_nothing(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _landed(daemon, project, "same")
    _land(project, "same")  # identical content, written again
    _landed(daemon, project, "sentinel")
    assert len(_events(project, "observation", "same")) == 1
    assert len(_events(project, "run_started", "same")) == 1


def test_a_change_made_while_stopped_is_noticed_at_start(
    project: Path, daemons: list[object]
) -> None:
    first = _daemon(project, daemons).start()
    first.wait_notify("READY=1")
    _landed(first, project, "kept")
    assert first.terminate() == 0
    _land(project, "kept", "a,b\n9,9\n")
    _land(project, "new")
    second = _daemon(project, daemons).start()
    second.wait_notify("READY=1")
    second.wait_event("materialized", asset="parsed", partition="kept")
    second.wait_event("materialized", asset="parsed", partition="new")
    assert len(_events(project, "materialization", "kept")) == 2


def test_sigterm_exits_0_after_stopping(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    assert daemon.terminate() == 0
    daemon.wait_notify("STOPPING=1", timeout=5)
    kinds = [e.kind for e in EventLogReader(project / "state").events()]  # type: ignore[attr-defined]
    assert kinds[0] == "daemon_started" and kinds[-1] == "daemon_stopped"
    daemon.drain()
    assert daemon.lines[-1]["event"] == "stopped"


def test_sigterm_lets_a_running_materialization_finish(
    project: Path, daemons: list[object]
) -> None:
    daemon, hold, _ = _held_run(project, daemons, "slow")
    daemon.signal(signal.SIGTERM)
    daemon.wait_notify("STOPPING=1")
    hold.unlink()  # the run can finish now, inside the grace period
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0
    assert len(_events(project, "materialization", "slow")) == 1
    assert _events(project, "run_abandoned") == []


def test_kill_9_mid_run_is_abandoned_then_materialized_once(
    project: Path, daemons: list[object]
) -> None:
    first, hold, started = _held_run(project, daemons, "crash")
    first.kill9()
    hold.unlink()
    second = _daemon(project, daemons).start()
    second.wait_notify("READY=1")
    second.wait_event("materialized", asset="parsed", partition="crash")
    abandoned = _events(project, "run_abandoned", "crash")
    assert [e.run_id for e in abandoned] == [started["run_id"]]  # type: ignore[attr-defined]
    assert len(_events(project, "materialization", "crash")) == 1


def test_sixty_files_in_sixty_new_folders(project: Path, daemons: list[object]) -> None:
    """Files written into folders created a moment earlier all count, once each."""
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    names = [f"batch{i:02d}" for i in range(60)]
    for name in names:
        folder = project / "drops" / name
        folder.mkdir()
        (folder / "data.csv").write_text(f"x\n{name}\n")
    seen: set[str] = set()
    while seen != set(names):
        line = daemon.wait_log(
            lambda ln: ln.get("event") == "materialized" and ln.get("asset") == "drop_rows"
            and ln.get("partition") not in seen,
        )  # fmt: skip
        seen.add(line["partition"])
    assert len(_events(project, "materialization")) == 60
    assert len(_events(project, "observation")) == 60


def test_a_csv_that_fails_to_parse_is_a_failed_run_and_the_daemon_goes_on(
    project: Path, daemons: list[object]
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _land(project, "broken", "a,b\n1,2\n3,4,5,6\n")
    line = daemon.wait_event("run_failed", asset="parsed", partition="broken")
    assert "Error tokenizing data" in line["error"]
    (failed,) = _events(project, "run_failed", "broken")
    assert "Error tokenizing data" in failed.payload["error"]  # type: ignore[attr-defined]
    assert "Traceback" in failed.payload["traceback"]  # type: ignore[attr-defined]
    _landed(daemon, project, "fine")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("\ndef broken(:\n", "syntax error"),
        # the file's own sys.exit() or interrupt is its failure, not the daemon's stop
        ("\nimport sys\nsys.exit(0)\n", "raised SystemExit"),
        ("\nraise KeyboardInterrupt\n", "raised KeyboardInterrupt"),
        ("\nclass Odd(BaseException): ...\nraise Odd('x')\n", "raised Odd"),
        # it would end the daemon itself (status 0: systemd would not restart it)
        ("\nimport os\nos._exit(0)\n", "called os._exit(0)"),
        ("\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "ended the process"),
    ],
    ids=["syntax", "sys_exit", "interrupt", "base_exception", "os_exit", "signal"],
)
def test_sighup_with_broken_definitions_keeps_serving(
    project: Path, daemons: list[object], breakage: str, reason: str
) -> None:
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    good = (project / "defs.py").read_text()
    (project / "defs.py").write_text(good + breakage)
    daemon.signal(signal.SIGHUP)
    reloading = daemon.wait_notify("RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    failed = daemon.wait_event("reload_failed")
    assert reason in failed["reason"] and "defs.py" in failed["reason"]
    daemon.wait_notify("READY=1")
    _landed(daemon, project, "after_broken_reload")
    extra = "\n\n@hw.asset(partitions=inbox)\ndef shout(parsed: pd.DataFrame) -> int:\n    return len(parsed)\n"
    (project / "defs.py").write_text(
        good.replace("defs = hw.Definitions([files, dropped, parsed, drop_rows])", "")
        + extra
        + "\ndefs = hw.Definitions([files, dropped, parsed, drop_rows, shout])\n"
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_notify("READY=1")
    daemon.wait_event("materialized", asset="shout", partition="after_broken_reload")
    failed, reloaded = _events(project, "reload_failed"), _events(project, "reloaded")
    assert len(failed) == 1 and reason in failed[0].payload["reason"]  # type: ignore[attr-defined]
    assert len(reloaded) == 1 and reloaded[0].payload["assets"] == 3  # type: ignore[attr-defined]


def test_a_sighup_while_a_reload_waits_for_running_functions_is_not_lost(
    project: Path, daemons: list[object]
) -> None:
    """The definitions edited after a reload began, and signalled again while it waits for
    a running function, are the ones that serve in the end (hostile26 bug2), and the ones
    that waited never serve: they would run what the edit changed, and again under the
    edit (hostile32b bug12)."""
    daemon, hold, _ = _held_run(project, daemons, "long")
    daemon.signal(signal.SIGHUP)  # the file as it is: waits for "long"
    daemon.wait_event("reload_waiting")
    daemon.wait_event("reload_loaded", replaces_waiting=False)
    good = (project / "defs.py").read_text()
    extra = "\n\n@hw.asset(partitions=inbox)\ndef shout(parsed: pd.DataFrame) -> int:\n    return len(parsed)\n"
    (project / "defs.py").write_text(
        good.replace("defs = hw.Definitions([files, dropped, parsed, drop_rows])", "")
        + extra
        + "\ndefs = hw.Definitions([files, dropped, parsed, drop_rows, shout])\n"
    )
    daemon.signal(signal.SIGHUP)  # no definitions serve at this moment
    daemon.wait_event("reload_loaded", replaces_waiting=True, assets=3)
    hold.unlink()
    daemon.wait_event("materialized", asset="shout", partition="long")
    reloaded = _events(project, "reloaded")
    assert [r.payload["assets"] for r in reloaded] == [3]  # type: ignore[attr-defined]


_BLOCKING_DEFS = """
import pathlib, time
import headwater as hw

here = pathlib.Path(__file__).parent
(here / "importing").touch()
while not (here / "release").exists():  # the daemon's first import, held by the test
    time.sleep(0.01)


@hw.asset
def a_v1() -> int:
    return 1


defs = hw.Definitions([a_v1])
"""
_EDITED_DEFS = """
import headwater as hw


@hw.asset
def a_v2() -> int:
    return 2


defs = hw.Definitions([a_v2])
"""


def _until(condition: object, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_reload_asked_while_the_daemon_starts_serves_the_edited_definitions(
    tmp_path: Path, daemons: list[object]
) -> None:
    """`headwater reload` while the first import of the definitions is still under way: the
    file edited before it is what serves once the start is over (hostile28 bug3: the start's
    own definitions served, and the reload said it was done)."""
    from cli_process import hw_start

    (tmp_path / "defs.py").write_text(_BLOCKING_DEFS)
    daemon = _daemon(tmp_path, daemons).start()
    _until(lambda: (tmp_path / "importing").exists())
    (tmp_path / "defs.py").write_text(_EDITED_DEFS)
    reload = hw_start("reload", "--state-dir", "state", "--definitions", "defs.py", cwd=tmp_path)
    daemon.wait_event("reloading")
    (tmp_path / "release").touch()
    daemon.wait_event("materialized", asset="a_v2")
    out, err = reload.communicate(timeout=60)
    assert reload.returncode == 0, out + err
    reloaded = _events(tmp_path, "reloaded")
    assert [r.payload["assets"] for r in reloaded] == [1]  # type: ignore[attr-defined]


def test_watchdog_pings_when_watchdog_usec_is_set(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons).start(watchdog_usec=200_000)
    daemon.wait_notify("READY=1")
    daemon.wait_notify("WATCHDOG=1", timeout=5)
    daemon.wait_notify("WATCHDOG=1", timeout=5)


def test_an_abstract_notify_socket_works(project: Path, daemons: list[object]) -> None:
    daemon = _daemon(project, daemons, abstract_socket=True).start()
    daemon.wait_notify("READY=1")
    assert daemon.terminate() == 0


def test_bad_definitions_at_start_exit_2(tmp_path: Path, daemons: list[object]) -> None:
    (tmp_path / "defs.py").write_text("import headwater as hw\nhw.Definitions([undefined])\n")
    daemon = _daemon(tmp_path, daemons).start()
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 2
    daemon.bad_lines.clear()  # the one-paragraph usage error is plain text by design


def test_a_notify_reader_that_stops_reading_never_blocks_the_daemon(
    project: Path, daemons: list[object]
) -> None:
    """Once READY is read, nobody reads the socket; its queue fills; the daemon goes on."""
    daemon = _daemon(project, daemons).start(watchdog_usec=20_000)  # 100 pings a second
    daemon.wait_notify("READY=1")
    for i in range(30):  # many ticks, each sending STATUS, while the socket goes unread
        _landed(daemon, project, f"unread{i}")
    daemon.wait_event("sd_notify_failed")


def test_a_long_run_does_not_hold_back_an_unrelated_file(
    project: Path, daemons: list[object]
) -> None:
    daemon, hold, _ = _held_run(project, daemons, "long")
    _landed(daemon, project, "quick")  # materialized while "long" is still running
    assert _events(project, "materialization", "long") == []
    hold.unlink()
    daemon.wait_event("materialized", asset="parsed", partition="long")


def test_a_reload_gives_up_a_hanging_import_for_a_newer_reload(
    project: Path, daemons: list[object]
) -> None:
    """The file hung at import when SIGHUP came; once it is fixed, `headwater reload` takes the
    file as it is now at once, instead of waiting behind the first child's 60 s."""
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    good = (project / "defs.py").read_text()
    (project / "defs.py").write_text("while True:\n    pass\n" + good)
    since = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reloading", since=since)
    (project / "defs.py").write_text(good)
    started = time.monotonic()
    done = hw_project(project, "reload")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30  # not behind the hanging child's 60 s
    superseded = daemon.wait_event("reload_superseded", since=since)
    daemon.wait_event("ready", since=daemon.lines.index(superseded))
    assert len(_events(project, "reloaded")) == 1
    _landed(daemon, project, "after_the_superseded_reload")


def test_a_reload_superseded_by_a_newer_one_answers_with_the_newer_ones_outcome(
    project: Path, daemons: list[object]
) -> None:
    """Two `headwater reload` at once (two deploy hooks): the older one answered "superseded
    by a newer reload" with exit 2, the code for definitions that do not load, so a hook
    rolled back a file that loads (hostile33b bug3). It now waits for the newer reload and
    answers with its outcome."""
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    good = (project / "defs.py").read_text()
    (project / "defs.py").write_text("while True:\n    pass\n" + good)
    since = daemon.mark()
    older = hw_start("reload", "--state-dir", "state", "--definitions", "defs.py", cwd=project)
    daemon.wait_event("reloading", since=since)
    (project / "defs.py").write_text(good)
    newer = hw_project(project, "reload")
    assert newer.returncode == 0, newer.stderr
    out, err = older.communicate(timeout=60)
    assert older.returncode == 0, out + err
    assert out.startswith("reloaded: the daemon, PID "), out
    daemon.wait_event("reload_superseded", since=since)


def test_a_daemon_whose_control_socket_is_gone_is_named_and_stopped_by_signal(
    project: Path, daemons: list[object]
) -> None:
    """The control socket file deleted under a live daemon: `health` and `stop` said "not
    running: no daemon owns DIR", and `stop` left it running (hostile33b bug1). `health` now
    names it and says its socket does not answer; `stop` stops it by SIGTERM."""
    from headwater._statedir import read_owner

    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    owner = read_owner(project / "state")
    assert owner is not None and owner.socket
    Path(owner.socket).unlink()
    health = hw_project(project, "health")
    assert health.returncode == 1
    assert f"not answering: the daemon, PID {owner.pid} " in health.stderr, health.stderr
    stop = hw_project(project, "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"sent SIGTERM to PID {owner.pid}" in stop.stdout
    assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 0


def test_a_second_stop_request_waits_for_the_same_graceful_stop(
    project: Path, daemons: list[object]
) -> None:
    """`headwater stop` twice (a retry, or a deploy script and an operator) was taken as a
    second SIGTERM: the daemon stopped at once and abandoned the run it had the grace period
    to finish (hostile33b bug4). Only a second signal stops at once."""
    daemon, hold, _ = _held_run(project, daemons, "graceful")
    stops = [hw_start("stop", "--state-dir", "state", cwd=project) for _ in range(2)]
    daemon.wait_event("stopping")
    daemon.wait_event("stop_repeated")  # both asked before the run ends
    hold.unlink()
    for stop in stops:
        out, err = stop.communicate(timeout=60)
        assert stop.returncode == 0, out + err
    assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 0
    assert [e.partition for e in _events(project, "materialization")] == ["graceful"]  # type: ignore[attr-defined]
    assert _events(project, "run_abandoned") == []


@pytest.mark.asyncio
async def test_an_import_that_never_ends_fails_the_reload_in_time(tmp_path: Path) -> None:
    """The reload's child import is killed at its deadline, and the reload fails saying why
    (the daemon said "reloading" for ever, and SIGTERM could not stop it)."""
    defs = tmp_path / "defs.py"
    await anyio.Path(defs).write_text("while True:\n    pass\n")
    with anyio.fail_after(30), pytest.raises(LoadError, match="did not finish within 1 s"):
        await import_in_child(str(defs), within=1)


PRINTS = """
import faulthandler, os, sys
faulthandler.enable()  # asks the stream for its descriptor
os.isatty(sys.stdout.fileno())
print("loading the definitions")
for i in range(300):
    print(f"line {i}", file=sys.stderr)
print("no end", end="")
import headwater as hw
defs = hw.Definitions([hw.source("src")])
"""


def test_what_the_definitions_print_at_import_becomes_log_lines(
    tmp_path: Path, daemons: list[object]
) -> None:
    """A print at module level reached the daemon's stdout and stderr as raw lines among the
    JSON ones (where jq stops). Each is a ``definitions_printed`` line now, up to 200 an
    import; the rest are counted (a file printing megabytes cannot flood the journal)."""
    (tmp_path / "defs.py").write_text(PRINTS)
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(daemon)  # the fixture fails the test on any line that is not JSON
    daemon.start().wait_notify("READY=1")
    first = daemon.wait_event("definitions_printed")
    assert (first["stream"], first["line"]) == ("stdout", "loading the definitions")
    dropped = daemon.wait_event("definitions_output_dropped")
    assert dropped["lines"] == 302 - 200  # 300 on stderr, and a last line with no end
    printed = [ln for ln in daemon.lines if ln.get("event") == "definitions_printed"]
    assert len(printed) == 200
    assert (printed[1]["stream"], printed[-1]["line"]) == ("stderr", "line 198")
    # A reload's child (validate) prints it all before its "ok:": the reload goes through.
    since = daemon.mark()
    (tmp_path / "defs.py").write_text(PRINTS.replace('[hw.source("src")]', '[hw.source("s2")]'))
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_log(lambda ln: ln.get("event") in ("ready", "reload_failed"),
                               since=since)  # fmt: skip
    assert reloaded["event"] == "ready", reloaded
    again = daemon.wait_event("definitions_printed", since=since)
    assert again["line"] == "loading the definitions"
    assert daemon.terminate() == 0


THREADS_PRINT = """
import sys, threading
import headwater as hw

go_on = threading.Event()

def chatter() -> None:  # a thread the definitions start, printing after the import
    go_on.wait(30)
    print("from a thread of the definitions")

threading.Thread(target=chatter, daemon=True).start()

@hw.asset
def loud() -> int:
    print("to stdout from a run")
    print("to stderr from a run", file=sys.stderr)
    go_on.set()
    return 1

defs = hw.Definitions([loud], executor="threads")
"""


def test_what_runs_print_under_threads_becomes_output_lines_of_their_run(
    tmp_path: Path, daemons: list[object]
) -> None:
    """Under the threads executor a function's print reached the daemon's stdout and stderr
    raw. It is an ``output`` line of its run now, as a worker's is; a thread the definitions
    started prints ``printed`` lines."""
    (tmp_path / "defs.py").write_text(THREADS_PRINT)
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state")
    daemons.append(daemon)  # the fixture fails the test on any line that is not JSON
    daemon.start().wait_notify("READY=1")
    run = daemon.wait_event("run_started", asset="loud")
    for stream in ("stdout", "stderr"):
        line = daemon.wait_event("output", stream=stream)
        assert line["line"] == f"to {stream} from a run"
        assert (line["asset"], line["run_id"]) == ("loud", run["run_id"])
    printed = daemon.wait_event("printed")
    assert printed["line"] == "from a thread of the definitions" and "run_id" not in printed
    assert daemon.terminate() == 0


_CHAIN_V1 = """
import os, time
import headwater as hw

HERE = {here!r}
src = hw.FileSource("src", "in/x.txt", loader=lambda p: open(p).read().strip())


@hw.asset
def a(src: str) -> str:
    while os.path.exists(os.path.join(HERE, "hold")):  # held by the test
        time.sleep(0.01)
    return src


@hw.asset
def b(a: str) -> str:
    with open(os.path.join(HERE, "b.txt"), "a") as f:
        f.write(a + "-{version}\\n")
    return a + "-{version}"
"""
_PUBLISH = """

@hw.asset
def publish(b: str) -> str:
    with open(os.path.join(HERE, "published.txt"), "a") as f:  # a side effect
        f.write(b + "\\n")
    return b


defs = hw.Definitions([src, a, b, publish])
"""


def _chain_daemon(tmp_path: Path, daemons: list[object]) -> tuple[DaemonProcess, Path]:
    """A ready daemon on the chain (v1) with ``publish``, and its definitions file."""
    defs = tmp_path / "defs.py"
    defs.write_text(_CHAIN_V1.format(here=str(tmp_path), version="v1") + _PUBLISH)
    daemon = DaemonProcess(tmp_path, defs, tmp_path / "state")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_notify("READY=1")
    return daemon, defs


def test_after_a_sighup_only_the_new_definitions_start_runs(
    tmp_path: Path, daemons: list[object]
) -> None:
    """SIGHUP while ``a`` runs, to a file that changes ``b`` and removes ``publish``: the old
    definitions went on with their plan once ``a`` ended, running ``b`` with its old code
    and ``publish`` (removed), and then the new ones ran ``b`` again (hostile32b bug4). Now
    what has not started when the reload is asked is left to the new definitions."""
    (tmp_path / "in").mkdir()
    (tmp_path / "hold").touch()
    daemon, defs = _chain_daemon(tmp_path, daemons)
    (tmp_path / "in" / "x.txt").write_text("1\n")
    daemon.wait_event("run_started", asset="a")
    defs.write_text(
        _CHAIN_V1.format(here=str(tmp_path), version="v2")
        + "\n\ndefs = hw.Definitions([src, a, b])\n"
    )
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload_loaded", since=mark)
    (tmp_path / "hold").unlink()
    daemon.wait_event("ready", since=mark)
    daemon.wait_event("materialized", asset="b", since=mark)
    assert (tmp_path / "b.txt").read_text() == "1-v2\n"
    assert not (tmp_path / "published.txt").exists()
    started = [e.asset for e in _events(tmp_path, "run_started")]  # type: ignore[attr-defined]
    assert started == ["a", "b"]


def test_a_materialize_under_way_at_a_reload_is_carried_out_by_the_new_definitions(
    tmp_path: Path, daemons: list[object]
) -> None:
    """`headwater materialize a b` while ``a`` runs, and a reload meanwhile: ``b`` has not
    started, so the old definitions do not start it; the new ones run it, and the command
    says both were materialized, as asked."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("1\n")
    daemon, defs = _chain_daemon(tmp_path, daemons)
    daemon.wait_event("materialized", asset="publish")
    (tmp_path / "hold").touch()
    mark = daemon.mark()
    state = str(tmp_path / "state")
    asked = hw_start("materialize", "a", "b", "--force", "--state-dir", state, cwd=tmp_path)
    try:
        daemon.wait_event("run_started", asset="a", since=mark)
        defs.write_text(
            _CHAIN_V1.format(here=str(tmp_path), version="v2")
            + "\n\ndefs = hw.Definitions([src, a, b])\n"
        )
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload_loaded", since=mark)
        (tmp_path / "hold").unlink()
        out, err = asked.communicate(timeout=60)
    finally:
        if asked.poll() is None:
            asked.kill()
    assert asked.returncode == 0, err
    assert "2 materialized, 0 failed, 0 skipped, of 2 requested" in out, out
    assert (tmp_path / "b.txt").read_text() == "1-v1\n1-v2\n"


def test_reading_commands_say_when_the_file_is_not_what_the_daemon_serves(
    project: Path, daemons: list[object]
) -> None:
    """The definitions file edited and not reloaded: `status` and `why` read the log under
    the file as it is now, and say it is not what the daemon runs. A file that does not load
    while the daemon serves the ones it loaded: they tell what the daemon serves, so
    `status --check` in a monitor reports the daemon, not exit 2 (hostile32b bug7)."""
    daemon = _daemon(project, daemons).start()
    daemon.wait_notify("READY=1")
    _landed(daemon, project, "one")
    good = (project / "defs.py").read_text()
    for command in (("status",), ("why", "parsed", "-p", "one")):
        fine = hw_project(project, *command)
        assert fine.returncode == 0 and "note:" not in fine.stderr, fine.stderr
    (project / "defs.py").write_text(good + "\n# an edit not reloaded yet\nEDITED = 1\n")
    for command in (("status",), ("why", "parsed", "-p", "one")):
        edited = hw_project(project, *command)
        assert edited.returncode == 0, edited.stderr
        assert "the definitions file changed since the daemon loaded it" in edited.stderr
    (project / "defs.py").write_text(good + "\ndef broken(:\n")
    check = hw_project(project, "status", "--check")
    assert check.returncode == 0, check.stderr
    assert "syntax error" in check.stderr and "showing what the running daemon serves" in (
        check.stderr
    )
    assert "parsed" in check.stdout
    why = hw_project(project, "why", "parsed", "-p", "one")
    assert why.returncode == 0 and "parsed[one] is fresh" in why.stdout, why.stderr


BIG_VALUES = """
import headwater as hw

raw = hw.FileSource("raw", "inbox/raw.json")

@hw.asset
def table(raw: str) -> list[str]:
    return [raw] * 10_000  # too large for the event log to keep: a file of the state dir

@hw.asset
def lines(table: list[str]) -> int:
    return len(table)

defs = hw.Definitions([raw, table, lines])
"""


def test_a_value_deleted_by_hand_while_the_daemon_runs_is_made_again(
    tmp_path: Path, daemons: list[object]
) -> None:
    """``rm`` of a stored value while the daemon serves: it is seen at the next look at the
    stored values (every --rescan-interval), recorded as lost (so `status` says missing, not
    fresh) and materialized again, though no reader loads it and nothing upstream changed."""
    (tmp_path / "defs.py").write_text(BIG_VALUES)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "raw.json").write_text('"hello"')
    daemon = DaemonProcess(
        tmp_path, tmp_path / "defs.py", tmp_path / "state",
        args=("--settle", "0.2", "--grace", "5", "--rescan-interval", "0.5"),
    )  # fmt: skip
    daemons.append(daemon)
    daemon.start().wait_notify("READY=1")
    first = daemon.wait_event("materialized", asset="table")
    daemon.wait_event("materialized", asset="lines")
    (value,) = (tmp_path / "state" / "values" / "table").iterdir()
    since = daemon.mark()
    value.unlink()
    lost = daemon.wait_event("value_lost", asset="table", since=since)
    again = daemon.wait_event("materialized", asset="table", since=since)
    assert daemon.lines.index(lost) < daemon.lines.index(again)
    assert again["data_version"] == first["data_version"]  # its reader has nothing to do
    assert value.exists()
    reasons = [e.payload["reason"] for e in EventLogReader(tmp_path / "state").events(
        kind="value_lost", asset="table")]  # fmt: skip
    assert reasons == ["found gone by a periodic look at the stored values"]
    assert daemon.terminate() == 0
