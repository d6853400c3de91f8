"""OpenLineage run events from the real daemon to a real HTTP endpoint on 127.0.0.1.

START, then COMPLETE or FAIL, with the input and output datasets and their data versions; and
a lineage endpoint that is down never slows or fails a run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_process import hw_project
from daemon_process import DaemonProcess

from headwater.eventlog import EventLogReader

pytest.importorskip("openlineage.client", reason="the openlineage extra is not installed")


class _Collector:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def add(self, event: dict[str, Any]) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event; got {self.events}")
                self.changed.wait(left)


@pytest.fixture
def endpoint() -> Iterator[tuple[str, _Collector]]:
    collector = _Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            collector.add(json.loads(body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", collector
    server.shutdown()
    server.server_close()


def _configure(project: Path, url: str) -> None:
    (project / "pyproject.toml").write_text(
        "[tool.headwater.openlineage]\n"
        'namespace = "analytics"\n'
        f'transport = {{type = "http", url = "{url}", timeout = 2}}\n'
    )


def _daemon(project: Path, daemons: list[object]) -> DaemonProcess:
    daemon = DaemonProcess(project, project / "defs.py", project / "state")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_notify("READY=1")
    return daemon


def test_runs_send_start_then_complete_or_fail_with_datasets(
    owner_project: Path, daemons: list[object], endpoint: tuple[str, _Collector]
) -> None:
    url, lineage = endpoint
    _configure(owner_project, url)
    daemon = _daemon(owner_project, daemons)
    since = daemon.mark()
    (owner_project / "inbox" / "a.csv").write_text("x,y\n1,2\n")
    daemon.wait_event("materialized", asset="parsed", partition="a", since=since)
    (made,) = EventLogReader(owner_project / "state").events(kind="materialization", asset="parsed")
    assert made.run_id is not None
    run_id = str(uuid.UUID(hex=made.run_id))
    start = lineage.wait_for(lambda e: e["eventType"] == "START" and e["run"]["runId"] == run_id)
    complete = lineage.wait_for(
        lambda e: e["eventType"] == "COMPLETE" and e["run"]["runId"] == run_id
    )
    assert start["job"] == {"namespace": "analytics", "name": "parsed", "facets": {}}
    assert start["run"]["facets"]["headwater"]["partition"] == "a"
    (source,) = complete["inputs"]
    assert source["namespace"] == "file"
    assert source["name"] == str((owner_project / "inbox" / "a.csv").resolve())
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("analytics", "parsed")
    assert output["facets"]["version"]["datasetVersion"] == made.data_version
    assert source["facets"]["version"]["datasetVersion"] == made.payload["inputs"][0][2]

    assert hw_project(owner_project, "materialize", "broken").returncode == 1
    fail = lineage.wait_for(lambda e: e["eventType"] == "FAIL")
    assert fail["job"]["name"] == "broken"
    assert "broken on purpose" in fail["run"]["facets"]["errorMessage"]["message"]


def test_a_lineage_endpoint_that_is_down_never_holds_a_run_back(
    owner_project: Path, daemons: list[object]
) -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _configure(owner_project, f"http://127.0.0.1:{port}")
    daemon = _daemon(owner_project, daemons)
    since = daemon.mark()
    started = time.monotonic()
    for name in ("a", "b", "c"):
        (owner_project / "inbox" / f"{name}.csv").write_text("x,y\n1,2\n")
    for name in ("a", "b", "c"):
        daemon.wait_event("materialized", asset="parsed", partition=name, since=since)
    assert time.monotonic() - started < 5  # not held back by a client retrying a dead endpoint
    warning = daemon.wait_event("openlineage_undelivered", timeout=60, since=since)
    assert warning["level"] == "warning" and warning["failed"] >= 1
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('transport = {url = "http://x"}', "transport must be a table with a type"),
        ('namespace = "n"\nendpoint = "x"', "unknown keys ['endpoint']"),
        ('transport = {type = "carrier-pigeon"}', "[tool.headwater.openlineage] transport:"),
    ],
)
def test_a_bad_openlineage_table_stops_run_with_exit_2(
    owner_project: Path, table: str, message: str
) -> None:
    (owner_project / "pyproject.toml").write_text(f"[tool.headwater.openlineage]\n{table}\n")
    result = hw_project(owner_project, "run")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "pyproject.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_stopping_never_waits_on_an_endpoint_that_hangs() -> None:
    """An endpoint that accepts and never answers, a full queue: close() returns at once."""
    from headwater.daemon._openlineage import QUEUE_SIZE, LineageSettings, OpenLineageEmitter

    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(64)  # accepts connections (the kernel does), never reads or answers
        url = f"http://127.0.0.1:{hang.getsockname()[1]}"
        transport = {"type": "http", "url": url, "timeout": 30, "retry": {"total": 0}}
        emitter = OpenLineageEmitter(LineageSettings("n", transport))
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

        event = RunEvent(
            eventType=RunState.START,
            eventTime="2026-01-05T00:00:00+00:00",
            run=Run(runId=str(uuid.uuid4())),
            job=Job(namespace="n", name="a"),
        )
        for _ in range(QUEUE_SIZE + 1):  # the sender holds one, hanging; the queue is full
            emitter._queue.put(event, timeout=10)
        started = time.monotonic()
        emitter.close(timeout=1.0)
        assert time.monotonic() - started < 3
    emitter._thread.join(timeout=10)  # the endpoint gone, its send fails and the sender ends
    assert not emitter._thread.is_alive()


def test_run_ids_are_random_version_4_uuids() -> None:
    """OpenLineage sends a run's id as a UUID; consumers may check its version."""
    from headwater.execution._cycle import new_run_id

    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == 200
    for run_id in ids:
        parsed = uuid.UUID(hex=run_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, run_id)


def test_a_forked_child_makes_other_run_ids_than_its_parent() -> None:
    """Run ids come from a generator seeded once: a child forked from the daemon (a worker)
    must not repeat the ids its parent makes next."""
    from headwater.execution._cycle import new_run_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running the parent's cleanup
        os.write(write, " ".join(new_run_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child) == 3
    assert not set(child) & {new_run_id() for _ in range(3)}
