from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from blockbuster import blockbuster_ctx


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (an unclosed harness or event log)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t
            for t in set(threading.enumerate()) - before
            if t.is_alive() and not t.name.startswith("asyncio_")
        ]
        if not leaked or time.monotonic() > deadline:
            break
        leaked[0].join(timeout=0.1)  # a worker that is finishing its shutdown
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(autouse=True)
def _no_blocking_calls_on_the_loop() -> Iterator[None]:
    """Fail a test in which a blocking call (file I/O, sleep, ...) runs on an event loop's
    thread: the engine's loop must stay responsive while assets run."""
    with blockbuster_ctx("headwater") as bb:  # our code; a test may inspect files directly
        # By design: a small commit is a page-cache write, cheaper than a hop to a thread
        # (headwater/eventlog/_writer.py says when it goes to one instead).
        # So is one indexed read of a small value.
        allowed = {"_write_transaction", "_failed", "small_value"}
        for method in ("Connection.execute", "Connection.executemany", "Connection.rollback",
                       "Cursor.fetchone"):  # fmt: skip
            bb.functions[f"sqlite3.{method}"].can_block_in("headwater/eventlog/_writer.py", allowed)
        # Once per outage, the free space the error line reports: one statfs.
        bb.functions["os.statvfs"].can_block_in("headwater/_storage.py", {"free_bytes"})
        yield


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Keep engine log lines out of test output; tests that assert on logs capture them."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


@pytest.fixture
def daemons() -> Iterator[list[object]]:
    """Daemon subprocesses a test started; each is killed by PID at the end, and every line
    it wrote to stderr must have been JSON."""
    started: list[object] = []
    yield started
    for daemon in started:
        daemon.close()  # type: ignore[attr-defined]
    for daemon in started:
        assert daemon.bad_lines == [], f"non-JSON log lines: {daemon.bad_lines}"  # type: ignore[attr-defined]


@pytest.fixture
def owner_project(tmp_path: Path) -> Path:
    """A copy of tests/resources/owner_project.py as defs.py, with an empty inbox/."""
    shutil.copy(Path(__file__).parent / "resources" / "owner_project.py", tmp_path / "defs.py")
    (tmp_path / "inbox").mkdir()
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files in the order workers take them (``--no-loadscope-reorder``): those with a long
    fault-injection run (``slow``) first, then by how many tests they hold, as xdist would.
    xdist's own order put the kill -9 file, one test of two minutes, last: it ran alone."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    ordered = sorted(
        files.values(),
        key=lambda tests: (all(t.get_closest_marker("slow") is None for t in tests), -len(tests)),
    )
    items[:] = [item for tests in ordered for item in tests]
