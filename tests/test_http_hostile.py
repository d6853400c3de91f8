"""The daemon's HTTP servers against careless and hostile clients: commands whose fields have
the wrong type, bodies too large, too deep or malformed on the wire, and connections that never
finish a request. The real daemon as a subprocess (or the real uvicorn server the daemon embeds,
on a real socket); nothing is mocked."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from daemon_process import DaemonProcess
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from headwater.daemon._uvicorn import embedded_server


def _start(project: Path, daemons: list[object]) -> tuple[DaemonProcess, str]:
    daemon = DaemonProcess(
        project,
        project / "defs.py",
        project / "state",
        args=("--grace", "10", "--http", "127.0.0.1:0", "--http-write"),
    )
    daemons.append(daemon)
    daemon.start()
    line = daemon.wait_event("http_listening")
    daemon.wait_notify("READY=1")
    return daemon, f"http://{line['address']}"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/materialize", {"selection": "parsed"}, 400, "selection must be a non-empty list"),
        ("/materialize", {"selection": ["parsed"], "force": "false"}, 400, "force must be true"),
        ("/materialize", {"selection": ["parsed"], "partitions": [None]}, 400, "partitions must"),
        ("/backfill", {"asset": "parsed", "from": 1, "to": "b"}, 400, "from must be a string"),
        ("/prune", {"vacuum": "false"}, 400, "vacuum must be true or false"),
        ("/prune", {"values": 1}, 400, "values must be true or false"),
        ("/prune", {"older_than_s": 1e300}, 400, "older_than_s must be a number of seconds"),
        ("/prune", {"older_than_s": -5}, 400, "older_than_s must be a number of seconds"),
        ("/backup/done", {"staging": "/etc"}, 400, "is not a snapshot of this state directory"),
        ("/materialize", {"selection": ["x" * 600_000]}, 400, "unknown asset"),
        ("/materialize", {"selection": ["y" * 1_100_000]}, 413, "larger than 1048576 bytes"),
    ],
)
def test_a_command_with_a_field_of_the_wrong_kind_is_refused_naming_it(
    owner_project: Path,
    daemons: list[object],
    path: str,
    body: dict[str, object],
    status: int,
    message: str,
) -> None:
    """ "false" is not false: a string taken for a flag ran a forced run, or a VACUUM. A body
    past 1 MiB is refused before it is read (100 MB froze the daemon for 22 s and took 4 GB)."""
    daemon, base = _start(owner_project, daemons)
    answer = httpx.post(f"{base}{path}", json=body, timeout=30)
    assert answer.status_code == status, answer.text[:300]
    assert message in answer.json()["error"], answer.text[:300]
    assert len(answer.content) < 10_000  # a long name is not echoed back whole
    assert httpx.get(f"{base}/health", timeout=10).json()["state"] == "serving"
    assert daemon.terminate() == 0
    daemon.drain()
    assert not [ln for ln in daemon.lines if ln.get("event") == "run_started"]
    assert not [ln for ln in daemon.lines if "exception" in ln], daemon.lines[-5:]


def test_bodies_malformed_on_the_wire_are_answered_once_without_a_stack(
    owner_project: Path, daemons: list[object]
) -> None:
    """JSON nested past the parser's depth is a 400 naming it; a bad chunk size is uvicorn's
    own 400, and the application's answer after it is dropped (it was logged as a crash, with
    its stack, for any client, no --http-write needed). With --http-write, a command whose
    body did not arrive whole does nothing: /stop answered 400 on the wire still stopped."""
    daemon, base = _start(owner_project, daemons)
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = httpx.post(
        f"{base}/prune", content=deep, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["error"]
    host, port = base.removeprefix("http://").rsplit(":", 1)
    for path in ("/stop", "/materialize", "/metrics"):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".encode()
            )
            assert raw.recv(200).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{base}/health", timeout=10).json()["state"] == "serving"
    assert daemon.terminate() == 0
    daemon.drain()
    assert not [ln for ln in daemon.lines if "exception" in ln], daemon.lines[-5:]


@asynccontextmanager
async def _served(request_s: float, slots: int) -> AsyncIterator[tuple[str, int]]:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    server = embedded_server(
        Starlette(routes=[Route("/", hello)]), limit_concurrency=slots, request_s=request_s
    )
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    async with anyio.create_task_group() as tg:
        # listening already: connections made before uvicorn takes over wait in the backlog
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        try:
            yield sock.getsockname()[:2]
        finally:
            server.should_exit = True
    sock.close()


@pytest.mark.asyncio
async def test_connections_that_never_finish_a_request_are_closed_so_others_get_in() -> None:
    """A client that opens every slot and sends a byte now and then (slowloris) held them for
    ever, and every other client got 503. Each request now has ``request_s`` to arrive."""
    async with _served(request_s=0.5, slots=4) as (host, port):
        hogs = [await anyio.connect_tcp(host, port) for _ in range(6)]
        for hog in hogs[:3]:
            await hog.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            assert (await client.get("/")).status_code == 503  # every slot is taken
            with anyio.fail_after(10):
                for hog in hogs:  # each is closed by the server once its time is up
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        while True:
                            await hog.receive()
            assert (await client.get("/")).status_code == 200
        for hog in hogs:
            await hog.aclose()


@pytest.mark.asyncio
async def test_a_request_that_arrives_in_time_is_served_and_its_connection_kept() -> None:
    """The deadline is for a request to arrive, not for the connection: one kept-alive
    connection serves request after request for longer than ``request_s`` in all."""
    async with _served(request_s=0.3, slots=4) as (host, port):
        conn = await anyio.connect_tcp(host, port)
        async with conn:
            for _ in range(6):
                await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                with anyio.fail_after(10):
                    while not answer.endswith(b"hello"):
                        answer += await conn.receive()
                assert answer.startswith(b"HTTP/1.1 200")
                await anyio.sleep(0.1)  # the client's pace between requests, not a wait
