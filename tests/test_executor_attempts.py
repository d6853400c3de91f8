"""Executors through the Harness: the same results in worker processes as in threads, and a
superseded attempt (timed out) never publishes its value, under either executor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

import headwater as hw
from headwater._loading import LoadError, load_definitions
from headwater.testing import Harness

PROJECT = """
import os
import signal
import sys
import threading
import time

import headwater as hw


@hw.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@hw.asset
def total(numbers: list[int], context: hw.Context) -> int:
    context.log.info("adding", count=len(numbers))
    return sum(numbers)


@hw.asset
def broken(numbers: list[int]) -> int:
    raise ValueError(f"cannot use {numbers[0]}")


@hw.asset(policy=hw.manual(), timeout="0.3s")
def stubborn() -> str:
    if threading.current_thread() is threading.main_thread():  # in a worker process
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it will not stop when asked
    time.sleep(0.6)
    print("returning now, after the timeout", file=sys.stderr)
    return "late"


defs = hw.Definitions([numbers, total, broken, stubborn])
"""


@pytest.fixture
def project(tmp_path: Path) -> hw.Definitions:
    (tmp_path / "project.py").write_text(PROJECT)
    return load_definitions(str(tmp_path / "project.py"))


def _stored(state_dir: Path, asset: str) -> list[Path]:
    folder = state_dir / "values" / asset
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_results_are_the_same_under_each_executor(
    project: hw.Definitions, tmp_path: Path, executor: str
) -> None:
    with Harness(project, state_dir=tmp_path / executor, executor=executor) as h:
        tick = h.tick()
        assert sorted(tick.assets) == ["numbers", "total"]
        assert tick.failed == {("broken", None): "ValueError: cannot use 1"}
        assert h.value("total") == 6
        (failure,) = h.events(kind="run_failed", asset="broken")
        assert str(failure.payload["where"]).endswith("project.py:24")


def test_a_timed_out_process_never_publishes_what_it_returns_later(
    project: hw.Definitions, tmp_path: Path
) -> None:
    """It ignores SIGTERM and returns 0.3 s after its timeout, before the SIGKILL a second
    later: the store refuses the value (the attempt was superseded first)."""
    with Harness(project, state_dir=tmp_path, executor="processes") as h:
        tick = h.materialize("stubborn")
        assert tick.failed[("stubborn", None)] == "timed out after 300ms"
        (failure,) = h.events(kind="run_failed", asset="stubborn")
        assert "returning now, after the timeout" in failure.payload["stderr"]
        assert _stored(tmp_path, "stubborn") == []
        assert h.state("stubborn") == "failed"


def test_a_timed_out_thread_is_left_behind_and_its_value_discarded(
    project: hw.Definitions, tmp_path: Path
) -> None:
    with Harness(project, state_dir=tmp_path) as h:
        started = time.monotonic()
        tick = h.materialize("stubborn")
        assert tick.failed[("stubborn", None)] == "timed out after 300ms"
        assert time.monotonic() - started < 0.55  # the run ended at its timeout, not after
        behind = h.engine.executor.health()["threads_left_behind"]
        assert [b["asset"] for b in behind] == ["stubborn"]
        deadline = time.monotonic() + 10
        while h.engine.executor.health()["threads_left_behind"]:  # the thread finishes...
            assert time.monotonic() < deadline, "the left-behind thread never finished"
            time.sleep(0.02)
        assert _stored(tmp_path, "stubborn") == []  # ...and what it stored was discarded
        assert h.state("stubborn") == "failed"


def test_processes_need_definitions_a_worker_can_import(tmp_path: Path) -> None:
    @hw.asset
    def local() -> int:
        return 1

    defs = hw.Definitions([local])  # inside a function: no worker can import it
    with pytest.raises(LoadError, match="top level of a module"):
        Harness(defs, state_dir=tmp_path, executor="processes")
    with pytest.raises(ValueError, match="use one of processes, threads"):
        Harness(defs, state_dir=tmp_path, executor="dask")
    with pytest.raises(hw.DefinitionError, match="executor='fibers'"):
        hw.Definitions([local], executor="fibers")


class _Custom(BaseException):
    pass


@pytest.mark.parametrize(
    "error", [GeneratorExit(), asyncio.CancelledError(), _Custom("mine"), KeyboardInterrupt()]
)
def test_whatever_a_function_raises_fails_its_run(tmp_path: Path, error: BaseException) -> None:
    """In a thread of the daemon's process: not a crash of the tick, not an abandoned run."""

    @hw.asset
    def raises() -> int:
        raise error

    @hw.asset
    def fine() -> int:
        return 1

    with Harness(hw.Definitions([raises, fine]), state_dir=tmp_path) as h:
        tick = h.tick()
        assert tick.assets == {"fine"}
        assert tick.failed[("raises", None)].startswith(type(error).__name__)
        assert h.state("raises") == "failed"
        assert h.events(kind="run_abandoned") == []


CLASSES = """
from dataclasses import dataclass

import headwater as hw


@dataclass
class Point:
    x: int
    y: int


@hw.asset
def origin() -> Point:
    return Point(0, 0)


@hw.asset(policy=hw.manual())
def moved(origin: Point) -> Point:
    return Point(origin.x + 1, origin.y)


defs = hw.Definitions([origin, moved])
"""


def test_a_value_of_a_class_the_definitions_file_defines_loads_in_every_process(
    tmp_path: Path,
) -> None:
    """Pickled in one worker, it is read in another, started later under another hash seed:
    the file is imported under the same module name there (a name from hash() was not), so
    the class is found."""
    (tmp_path / "classes.py").write_text(CLASSES)
    defs = load_definitions(str(tmp_path / "classes.py"))
    with Harness(defs, state_dir=tmp_path / "state", executor="processes") as h:
        assert h.materialize("origin").materialized == [("origin", None)]
    with Harness(defs, state_dir=tmp_path / "state", executor="processes") as h:  # new workers
        tick = h.materialize("moved")
        assert tick.failed == {}
        assert tick.materialized == [("moved", None)]
        assert (h.value("moved").x, h.value("moved").y) == (1, 0)


UNGUARDED = """
import headwater as hw
from headwater.testing import Harness

src = hw.source("src")


@hw.asset
def a(src):
    return src + 1


defs = hw.Definitions([src, a])
with Harness(defs, now="2026-01-05T00:00:00Z", executor="processes") as h:
    h.observe("src", value=1)
    print("FAILED", h.tick().failed)
"""


def test_a_script_that_opens_a_harness_unguarded_fails_its_runs_saying_why(tmp_path: Path) -> None:
    """Workers import the file that builds the definitions: a script that also opens a
    Harness at its top level opened one in each worker, which started workers of its own,
    without end. The worker refuses to, and the run fails naming the fix."""
    (tmp_path / "script.py").write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "script.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FAILED {('a', None):" in done.stdout
    assert "if __name__ == '__main__':" in done.stdout
