"""``executor="dask://host:port"``: runs as tasks of a real Dask cluster (a ``dask scheduler``
and two ``dask worker`` processes on 127.0.0.1, killed by PID when the test ends).

A partitioned pipeline materializes on the workers, with the same data versions as under the
threads executor (so switching executors re-runs nothing); a worker SIGKILLed mid-run leaves
the partition materialized exactly once; a scheduler that cannot be reached is exit 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cli_process import hw
from servers import DaskCluster, dask_cluster, free_port

from headwater._loading import load_definitions
from headwater.testing import Harness

pytest.importorskip("distributed", reason="the dask extra is not installed")

PIPELINE = """
import os
import time
from pathlib import Path

import pandas as pd

import headwater as hw

HERE = Path(__file__).parent
days = hw.DailyPartitions(start="2026-01-01")
raw = hw.source("raw", partitions=days)


@hw.asset(partitions=days, retries=hw.Retry(max_attempts=2, delay="0s"))
def cleaned(raw: pd.DataFrame, context: hw.Context) -> pd.DataFrame:
    with open(HERE / "ran_by", "a") as f:
        f.write(f"{os.getpid()} {context.partition}\\n")
    hold = HERE / f"hold-{context.partition}"
    if hold.exists():
        (HERE / f"started-{context.partition}").write_text(str(os.getpid()))
        while hold.exists():
            time.sleep(0.01)
    return raw.dropna()


@hw.asset
def total(cleaned: dict[str, pd.DataFrame]) -> float:
    return float(sum(frame["amount"].sum() for frame in cleaned.values()))


defs = hw.Definitions([raw, cleaned, total], executor=os.environ.get("HW_EXECUTOR", "threads"))
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskCluster]:
    with dask_cluster(workers=2) as running:
        yield running


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.py").write_text(PIPELINE)
    return root


def _observe(h: Harness, *days: int) -> None:
    """Each day's frame, stored by the harness in the value store the workers read."""
    for day in days:
        frame = pd.DataFrame({"amount": [float(day), float(day * 10), None]})
        h.observe("raw", value=frame, partition=f"2026-01-0{day}")


def _versions(h: Harness) -> dict[tuple[str | None, str | None], str | None]:
    return {(e.asset, e.partition): e.data_version for e in h.events(kind="materialization")}


def _harness(
    project: Path, executor: str, monkeypatch: pytest.MonkeyPatch, state_dir: Path,
    now: str = "2026-01-04T00:00:00Z",
) -> Harness:  # fmt: skip
    """The project's definitions (their executor from the environment, as the daemon reads
    it) in a Harness on that executor."""
    monkeypatch.setenv("HW_EXECUTOR", executor)
    defs = load_definitions(str(project / "pipeline.py"))
    if executor.startswith("dask://"):
        return Harness(defs, now=now, state_dir=state_dir, executor=executor)
    return Harness(defs, now=now, state_dir=state_dir)


def test_a_pipeline_runs_on_the_workers_with_the_versions_threads_give(
    tmp_path: Path, cluster: DaskCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "p")
    with _harness(project, f"dask://{cluster.address}", monkeypatch, tmp_path / "on-dask") as h:
        _observe(h, 1, 2, 3)
        tick = h.tick()
        assert tick.failed == {}
        assert sorted(tick.materialized) == [
            ("cleaned", "2026-01-01"), ("cleaned", "2026-01-02"), ("cleaned", "2026-01-03"),
            ("total", None),
        ]  # fmt: skip
        on_dask = _versions(h)
        assert h.value("total") == 66.0
    pids = {int(line.split()[0]) for line in (project / "ran_by").read_text().splitlines()}
    assert pids <= {w.pid for w in cluster.workers}  # run by the workers, not here
    assert os.getpid() not in pids
    with _harness(project, "threads", monkeypatch, tmp_path / "on-threads") as h:
        _observe(h, 1, 2, 3)
        h.tick()
        assert _versions(h) == on_dask
    # the state directory the cluster filled, opened with threads: nothing to run again
    with _harness(project, "threads", monkeypatch, tmp_path / "on-dask") as h:
        assert h.tick().materialized == []


def test_a_worker_killed_mid_run_leaves_one_materialization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "p")
    (project / "hold-2026-01-01").write_text("")
    with dask_cluster(workers=2) as cluster:
        dask = f"dask://{cluster.address}"
        with _harness(project, dask, monkeypatch, tmp_path / "s", "2026-01-02T00:00:00Z") as h:
            _observe(h, 1)
            started = project / "started-2026-01-01"

            def kill_when_started() -> None:
                deadline = time.monotonic() + 60
                while not started.exists():
                    if time.monotonic() > deadline:
                        raise AssertionError("the run never started on a worker")
                    time.sleep(0.02)
                victim = int(started.read_text())
                started.unlink()
                os.kill(victim, signal.SIGKILL)
                (project / "hold-2026-01-01").unlink()

            import threading

            killer = threading.Thread(target=kill_when_started)
            killer.start()
            first = h.tick()
            killer.join()
            if ("cleaned", "2026-01-01") not in first.materialized:  # failed: retried
                assert "lost" in first.failed[("cleaned", "2026-01-01")]
                h.advance("1s")
            made = h.events(kind="materialization", asset="cleaned")
            assert [e.partition for e in made] == ["2026-01-01"]
            assert h.state("cleaned", partition="2026-01-01") == "fresh"
            assert h.value("cleaned", partition="2026-01-01")["amount"].tolist() == [1.0, 10.0]


@pytest.mark.parametrize("listening", [False, True], ids=["nothing there", "a silent port"])
def test_an_unreachable_scheduler_stops_run_with_exit_2(tmp_path: Path, listening: bool) -> None:
    """Nothing at the address, or something that is not a Dask scheduler (here a socket that
    never speaks; it held the daemon's start for ever: hostile34b bug14): exit 2, naming it."""
    import socket

    project = _project(tmp_path / "p")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        if listening:
            silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = hw(
            "run", "-d", "pipeline.py", "--state-dir", "st", cwd=project,
            env={"HW_EXECUTOR": f"dask://{address}"}, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot reach the Dask scheduler at tcp://{address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_lost_scheduler_fails_runs_with_why_and_is_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "p")
    first = DaskCluster(1).start()
    try:
        with _harness(project, f"dask://{first.address}", monkeypatch, tmp_path / "s") as h:
            _observe(h, 1)
            assert ("cleaned", "2026-01-01") in h.tick().materialized
            first.close()  # scheduler and worker gone
            _observe(h, 2)
            lost = h.tick()
            error = lost.failed[("cleaned", "2026-01-02")]
            assert f"tcp://{first.address}" in error  # the run failed, naming the scheduler
            again = DaskCluster(1)
            again.port, again.address = first.port, first.address  # the scheduler comes back
            try:
                again.start()
                back = h.materialize("cleaned", partition="2026-01-02")
                assert back.materialized == [("cleaned", "2026-01-02"), ("total", None)]
            finally:
                again.close()
    finally:
        first.close()


def test_a_fence_left_by_an_owner_that_died_is_gone_at_the_next_open(tmp_path: Path) -> None:
    """A daemon killed while a task ran on a worker left that task's fence: the next owner
    ran the asset again, then the old task, still running, published over the new value
    (hostile34b bug1). Opening removes every fence: the old task's publish is superseded."""
    from headwater.execution._publishing import Superseded
    from headwater.execution._store import FilesystemStore
    from headwater.execution.executors._dask import _FenceGuard

    store = FilesystemStore(tmp_path / "values")
    store.store("a", None, [1] * 10_000)
    fence = tmp_path / "values" / ".tmp" / "fence-r1"
    fence.touch()
    left = _FenceGuard(store, fence)
    with left.publishing():  # the attempt may publish while its fence stands
        pass
    assert store.remove_temp_files() == 1
    assert not fence.exists()
    with pytest.raises(Superseded), left.publishing():
        pass


def test_metadata_that_does_not_pickle_reaches_the_daemon_as_text(
    cluster: DaskCluster, tmp_path: Path
) -> None:
    """An Output whose metadata does not pickle: the run failed with a Dask traceback while
    its value, stored by the worker, replaced the last one (hostile34b bug10). It succeeds,
    its metadata recorded as text, as under the processes executor."""
    (tmp_path / "locked.py").write_text(
        "import threading\nimport headwater as hw\n"
        "src = hw.source('src')\n"
        "@hw.asset\ndef a(src):\n"
        "    return hw.Output([src] * 10_000, metadata={'lock': threading.Lock(), 'n': 1})\n"
        "defs = hw.Definitions([src, a])\n"
    )
    defs = load_definitions(str(tmp_path / "locked.py"))
    executor = f"dask://{cluster.address}"
    with Harness(defs, state_dir=tmp_path / "s", executor=executor) as h:
        h.observe("src", value=2)
        tick = h.tick()
        assert tick.failed == {} and tick.materialized == [("a", None)]
        (made,) = h.events(kind="materialization", asset="a")
        assert made.payload["metadata"]["n"] == 1
        assert "lock" in str(made.payload["metadata"]["lock"])
        assert h.value("a") == [2] * 10_000


def test_definitions_loaded_again_import_their_edited_helper_on_the_workers(
    tmp_path: Path,
) -> None:
    """A worker kept the definitions imported by their text: after a reload that changed
    only a helper module they import, it computed with the old helper, and the result was
    recorded as current (hostile34b bug4). Definitions loaded again are imported again (one
    worker: the same process runs both)."""
    (tmp_path / "helper34.py").write_text("FACTOR = 100\n")
    (tmp_path / "scaled.py").write_text(
        "import headwater as hw\nimport helper34\n"
        "src = hw.source('src')\n"
        "@hw.asset\ndef a(src):\n    return src * helper34.FACTOR\n"
        "defs = hw.Definitions([src, a])\n"
    )
    state = tmp_path / "s"
    one = DaskCluster(1).start()
    try:
        executor = f"dask://{one.address}"
        with Harness(load_definitions(str(tmp_path / "scaled.py")), state_dir=state,
                     executor=executor) as h:  # fmt: skip
            h.observe("src", value=2)
            h.tick()
            assert h.value("a") == 200
        (tmp_path / "helper34.py").write_text("FACTOR = 1000\n")
        with Harness(load_definitions(str(tmp_path / "scaled.py")), state_dir=state,
                     executor=executor) as h:  # fmt: skip
            assert h.materialize("a", force=True).materialized == [("a", None)]
            assert h.value("a") == 2000
    finally:
        one.close()


def test_a_reload_to_a_scheduler_that_does_not_answer_keeps_the_daemon_serving(
    tmp_path: Path, daemons: list[object]
) -> None:
    """A reload while the scheduler is down (or to a mistyped address) ended the daemon with
    status 2 once the previous definitions had stopped (hostile34b bug9). The reload fails,
    naming the scheduler, and the previous definitions go on serving."""
    from daemon_process import DaemonProcess

    project = _project(tmp_path / "p")
    first = DaskCluster(1).start()
    try:
        daemon = DaemonProcess(project, project / "pipeline.py", project / "st",
                               env={"HW_EXECUTOR": f"dask://{first.address}"})  # fmt: skip
        daemons.append(daemon)
        daemon.start().wait_notify("READY=1")
        nowhere = f"127.0.0.1:{free_port()}"
        text = (project / "pipeline.py").read_text()
        (project / "pipeline.py").write_text(
            text.replace('os.environ.get("HW_EXECUTOR", "threads")', f'"dask://{nowhere}"')
        )
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("reload_failed")
        assert f"cannot reach the Dask scheduler at tcp://{nowhere}" in failed["reason"]
        daemon.wait_notify("READY=1")
        assert daemon.proc is not None and daemon.proc.poll() is None
        health = hw("health", "--state-dir", "st", cwd=project)
        assert health.returncode == 0, health.stdout + health.stderr
        # it said "executor: None", and listing its workers would have crashed (hostile34b bug6)
        assert "executor: dask" in health.stdout, health.stdout
        assert f"scheduler tcp://{first.address} (running): 1 workers" in health.stdout
    finally:
        first.close()


def test_a_run_fails_once_no_worker_has_been_connected_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker killed mid-run: Dask keeps the task for a worker to come, and the run hung
    for ever, `materialize` with it (hostile34b bug3). It fails, saying so, once none has
    been connected for NO_WORKERS_S (shortened here), and its retries apply."""
    from headwater.execution.executors import _dask

    monkeypatch.setattr(_dask, "NO_WORKERS_S", 1.0)
    monkeypatch.setattr(_dask, "WORKER_CHECK_S", 0.2)
    project = _project(tmp_path / "p")
    (project / "hold-2026-01-01").write_text("")
    alone = DaskCluster(1).start()
    try:
        with _harness(project, f"dask://{alone.address}", monkeypatch, tmp_path / "s",
                      "2026-01-02T00:00:00Z") as h:  # fmt: skip
            _observe(h, 1)
            started = project / "started-2026-01-01"

            def kill_when_started() -> None:
                deadline = time.monotonic() + 60
                while not started.exists():
                    assert time.monotonic() < deadline, "the run never started on a worker"
                    time.sleep(0.02)
                for worker in alone.workers:
                    worker.kill()

            import threading

            killer = threading.Thread(target=kill_when_started)
            killer.start()
            tick = h.tick()
            killer.join()
            error = tick.failed[("cleaned", "2026-01-01")]
            assert (
                f"no worker has been connected to the Dask scheduler at tcp://{alone.address}"
                in error
            )
            assert len(h.events(kind="run_failed", asset="cleaned")) == 2  # with its retry
    finally:
        alone.close()


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_import_headwater_fails_the_run_saying_so(tmp_path: Path) -> None:
    """A worker whose environment has no (working) headwater could not unpickle the task: the
    run stayed running for ever, the cause only in the worker's log (hostile34b bug11). The
    run fails at once, naming the cause (here a ``headwater`` package that raises on import,
    first on the workers' path)."""
    shadow = tmp_path / "shadow" / "headwater"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no headwater on this worker')\n")
    (tmp_path / "one.py").write_text(
        "import headwater as hw\n@hw.asset\ndef a() -> int:\n    return 1\n"
        "defs = hw.Definitions([a])\n"
    )
    defs = load_definitions(str(tmp_path / "one.py"))
    with dask_cluster(workers=0) as cluster:  # the scheduler can import headwater
        cluster.add_worker("w0", env={"PYTHONPATH": str(shadow.parent)})
        cluster.wait_for_workers(1)
        with Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h:
            error = h.materialize("a").failed[("a", None)]
    assert "cannot import headwater" in error, error
    assert "no headwater on this worker" in error  # the worker's own reason
    assert "same code and headwater version" in error  # and what to do


STUCK = """
import time
from pathlib import Path

import headwater as hw

HERE = Path(__file__).parent


@hw.asset(policy=hw.manual(), timeout="1s")
def stuck() -> int:
    with open(HERE / "stuck-started", "a") as f:
        f.write("x")
    while True:  # never returns: only killing its process stops it
        time.sleep(0.05)


@hw.asset(policy=hw.manual())
def quick() -> int:
    return 1


defs = hw.Definitions([stuck, quick])
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nanny", [True, False], ids=["a nanny restarts it", "no nanny: closed"])
def test_a_timed_out_run_frees_its_worker_for_the_next_run(tmp_path: Path, nanny: bool) -> None:
    """A run that timed out left its task running on the worker: the next run, sent to that
    worker, waited behind it for ever (hostile34b bug2). The timed-out task's worker is
    restarted by its nanny (one worker: the next run goes to the new process), as the
    processes executor kills its worker; without a nanny it is closed (two workers: the next
    run goes to the other)."""
    (tmp_path / "stuck.py").write_text(STUCK)
    defs = load_definitions(str(tmp_path / "stuck.py"))
    with (
        dask_cluster(workers=1 if nanny else 2, nanny=nanny) as cluster,
        Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h,
    ):
        assert h.materialize("stuck").failed == {("stuck", None): "timed out after 1s"}
        assert (tmp_path / "stuck-started").read_text() == "x"  # not run again elsewhere
        quick = h.materialize("quick")
        assert quick.materialized == [("quick", None)], quick
        if not nanny:  # the scheduler sends nothing more to the worker the stuck task holds
            from distributed import Client

            with Client(f"tcp://{cluster.address}", timeout=30) as client:
                assert len(client.nthreads()) == 1


def test_a_function_that_kills_its_worker_runs_once_and_says_so(tmp_path: Path) -> None:
    """A function that ends its process (os._exit, a segfault) ran four times for one attempt,
    Dask re-running it on each worker it killed, and failed "worker … lost" (hostile34b
    bug7). It runs once; the run fails saying the worker died while running it."""
    (tmp_path / "dies.py").write_text(
        "import os\nfrom pathlib import Path\nimport headwater as hw\n"
        "@hw.asset\ndef dies() -> int:\n"
        "    with open(Path(__file__).parent / 'ran', 'a') as f:\n"
        "        f.write('x')\n"
        "    os._exit(7)\n"
        "defs = hw.Definitions([dies])\n"
    )
    defs = load_definitions(str(tmp_path / "dies.py"))
    with (
        dask_cluster(workers=2) as cluster,
        Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h,
    ):
        error = h.materialize("dies").failed[("dies", None)]
        assert (tmp_path / "ran").read_text() == "x"  # once
        assert "died or was lost while running it" in error, error
        dead = [w.pid for w in cluster.workers if w.poll() is not None]
        assert len(dead) == 1  # the other worker was not sent it again
        assert f"pid {dead[0]}" in error


def test_a_timeout_counts_from_when_the_task_starts_on_a_worker(
    tmp_path: Path, cluster: DaskCluster
) -> None:
    """Under dask a run's timeout counted the time its task waited for a free worker: a quick
    function queued behind other work failed "timed out" without having started
    (hostile34b bug12). It counts from the start on a worker, as under processes."""
    from distributed import Client

    (tmp_path / "fast.py").write_text(
        "import headwater as hw\n@hw.asset(timeout='1s')\ndef fast() -> int:\n    return 2\n"
        "defs = hw.Definitions([fast])\n"
    )
    defs = load_definitions(str(tmp_path / "fast.py"))
    with Client(f"tcp://{cluster.address}", timeout=30) as other:
        # other work holds both of the cluster's threads for three times the timeout
        busy = [other.submit(subprocess.call, ["sleep", "3"], pure=False) for _ in cluster.workers]
        deadline = time.monotonic() + 30
        while sum(len(keys) for keys in other.call_stack().values()) < len(busy):
            assert time.monotonic() < deadline, "the other work never started"
            time.sleep(0.05)
        with Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h:
            assert h.materialize("fast").materialized == [("fast", None)]
        assert all(f.done() for f in busy)  # it did wait for them


@pytest.mark.timeout(60)
def test_a_timeout_applies_when_the_word_of_the_start_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout counts from the worker's word that the task started; were it lost, the
    run would have no timeout at all. The daemon also asks the scheduler every
    WORKER_CHECK_S (shortened here), so the run still times out (here the daemon listens on
    a topic no worker speaks on: only the scheduler tells it)."""
    from headwater.execution.executors import _dask

    monkeypatch.setattr(_dask, "WORKER_CHECK_S", 0.2)
    monkeypatch.setattr(_dask, "STARTED_TOPIC", "nobody-says-this")
    (tmp_path / "stuck.py").write_text(STUCK)
    defs = load_definitions(str(tmp_path / "stuck.py"))
    with (
        dask_cluster(workers=1, nanny=True) as cluster,
        Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h,
    ):
        assert h.materialize("stuck").failed == {("stuck", None): "timed out after 1s"}
        assert h.materialize("quick").materialized == [("quick", None)]


@pytest.mark.timeout(90)
def test_a_timed_out_run_holding_the_gil_is_stopped_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function that never returns and never lets go of the GIL (a loop in C) freezes its
    worker's event loop: the worker neither says it started nor answers the scheduler. Its
    timeout still applies (counted from when the scheduler sent it there, at worst) and the
    worker is restarted through its nanny, another process."""
    from headwater.execution.executors import _dask

    monkeypatch.setattr(_dask, "WORKER_CHECK_S", 0.5)
    monkeypatch.setattr(_dask, "ANSWER_TIMEOUT_S", 1.0)
    (tmp_path / "gil.py").write_text(
        "import itertools\nimport headwater as hw\n"
        "@hw.asset(policy=hw.manual(), timeout='1s')\n"
        "def spins() -> int:\n    return sum(itertools.repeat(1))  # C: the GIL is never let go\n"
        "@hw.asset(policy=hw.manual())\ndef quick() -> int:\n    return 1\n"
        "defs = hw.Definitions([spins, quick])\n"
    )
    defs = load_definitions(str(tmp_path / "gil.py"))
    with (
        dask_cluster(workers=1, nanny=True) as cluster,
        Harness(defs, state_dir=tmp_path / "s", executor=f"dask://{cluster.address}") as h,
    ):
        assert h.materialize("spins").failed == {("spins", None): "timed out after 1s"}
        assert h.materialize("quick").materialized == [("quick", None)]
