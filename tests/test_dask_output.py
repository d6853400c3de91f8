"""What a function prints under ``executor="dask://…"``, on a real local Dask cluster (one
``dask worker`` process with two threads, so two runs share its ``sys.stdout``).

What a function printed reached only the Dask worker's own log: no ``output`` lines of its
run in the daemon's log, no stderr tail in a failed run's payload or in ``why`` (hostile34b
bug8). The worker captures what each run's thread writes and sends it back, bounded, with the
outcome; the daemon logs it as the processes executor logs a worker's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from cli_process import hw
from servers import DaskCluster, dask_cluster

from headwater._loading import load_definitions
from headwater.execution.executors._output import BURST, TAIL_LINES
from headwater.testing import Harness

pytest.importorskip("distributed", reason="the dask extra is not installed")

NOISY = """
import sys
import time
from pathlib import Path

import headwater as hw

HERE = Path(__file__).parent


@hw.asset(policy=hw.manual())
def noisy() -> int:
    print("MARKER-STDOUT the input had 3 bad rows")
    print("MARKER-STDERR cannot parse row 7", file=sys.stderr)
    raise ValueError("bad input")


@hw.asset(policy=hw.manual())
def floods() -> int:
    for i in range(3000):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    sys.stderr.write("no end")  # a last line without its newline
    raise ValueError("flooded")


def _together(name: str, other: str) -> None:
    # Both runs are in the worker's two threads at once before either prints (bounded: a
    # run alone fails the test rather than hanging it).
    (HERE / f"here-{name}").write_text("")
    deadline = time.monotonic() + 20
    while not (HERE / f"here-{other}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{other} never started beside {name}")
        time.sleep(0.005)


def _chatter(name: str, other: str) -> int:
    _together(name, other)
    for i in range(40):
        sys.stdout.write(f"{name}-")  # a line in two writes: the other thread may come between
        time.sleep(0)
        sys.stdout.write(f"{i}\\n")
        print(f"{name}-err-{i}", file=sys.stderr)
    return 1


@hw.asset(policy=hw.manual())
def left() -> int:
    return _chatter("left", "right")


@hw.asset(policy=hw.manual())
def right() -> int:
    return _chatter("right", "left")


defs = hw.Definitions([noisy, floods, left, right])
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskCluster]:
    with dask_cluster(workers=1, threads=2) as running:
        yield running


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "noisy.py").write_text(NOISY)
    return tmp_path


def _harness(project: Path, cluster: DaskCluster) -> Harness:
    defs = load_definitions(str(project / "noisy.py"))
    return Harness(defs, state_dir=project / "st", executor=f"dask://{cluster.address}")


def _of(logs: list[dict[str, Any]], run_id: str | None, event: str) -> list[dict[str, Any]]:
    return [ln for ln in logs if ln.get("run_id") == run_id and ln["event"] == event]


def test_what_a_function_prints_is_logged_as_its_run_and_its_stderr_is_in_why(
    project: Path, cluster: DaskCluster
) -> None:
    with _harness(project, cluster) as h, structlog.testing.capture_logs() as logs:
        assert "bad input" in h.materialize("noisy").failed[("noisy", None)]
        (failed,) = h.events(kind="run_failed", asset="noisy")
    run_id = failed.run_id
    output = _of(logs, run_id, "output")
    assert [(ln["stream"], ln["line"]) for ln in output] == [
        ("stdout", "MARKER-STDOUT the input had 3 bad rows"),
        ("stderr", "MARKER-STDERR cannot parse row 7"),
    ]
    assert all(ln["asset"] == "noisy" and ln["partition"] is None for ln in output)
    assert output[0]["worker"].startswith("tcp://127.0.0.1:")
    assert failed.payload["stderr"] == "MARKER-STDERR cannot parse row 7"
    why = hw("why", "noisy", "-d", "noisy.py", "--state-dir", "st", cwd=project)
    assert "stderr (last lines):" in why.stdout and "MARKER-STDERR" in why.stdout, why.stdout


def test_a_flood_is_bounded_and_counted_and_the_tail_of_stderr_kept(
    project: Path, cluster: DaskCluster
) -> None:
    with _harness(project, cluster) as h, structlog.testing.capture_logs() as logs:
        assert "flooded" in h.materialize("floods").failed[("floods", None)]
        (failed,) = h.events(kind="run_failed", asset="floods")
    run_id = failed.run_id
    output = _of(logs, run_id, "output")
    dropped = {ln["stream"]: ln["lines"] for ln in _of(logs, run_id, "output_dropped")}
    shown = {s: [ln["line"] for ln in output if ln["stream"] == s] for s in ("stdout", "stderr")}
    assert shown["stdout"] == [f"out {i}" for i in range(BURST)]  # the first ones, in order
    assert shown["stderr"] == [f"err {i}" for i in range(BURST)]
    assert dropped == {"stdout": 3000 - BURST, "stderr": 3001 - BURST}
    tail = failed.payload["stderr"].splitlines()
    assert tail == [f"err {i}" for i in range(3001 - TAIL_LINES, 3000)] + ["no end"]


def test_two_runs_in_one_worker_at_once_each_get_their_own_lines(
    project: Path, cluster: DaskCluster
) -> None:
    with _harness(project, cluster) as h, structlog.testing.capture_logs() as logs:
        tick = h.materialize(["left", "right"])
        assert sorted(tick.materialized) == [("left", None), ("right", None)], tick
        runs = {e.asset: e.run_id for e in h.events(kind="materialization")}
    for name in ("left", "right"):
        output = _of(logs, runs[name], "output")
        out = [ln["line"] for ln in output if ln["stream"] == "stdout"]
        err = [ln["line"] for ln in output if ln["stream"] == "stderr"]
        assert out == [f"{name}-{i}" for i in range(40)]
        assert err == [f"{name}-err-{i}" for i in range(40)]
        assert {ln["asset"] for ln in output} == {name}
