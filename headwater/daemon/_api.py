"""The control API: HTTP/JSON on a unix socket, served inside the daemon's root task group.

Starlette routes, each a small handler that asks the daemon (behind :class:`Controlled`) and
answers JSON. ``materialize`` and ``backfill`` stream newline-delimited JSON: ``accepted``,
one ``step`` per finished partition, then ``result``. The work runs in the daemon's own task
group, so a client that goes away (Ctrl-C) does not cancel what it asked for.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from headwater._errors import HeadwaterError, StateDirError, did_you_mean
from headwater._events import EVENT_KINDS, format_timestamp, parse_timestamp
from headwater._lineage import FORMATS, render_lineage
from headwater._report import status_rows
from headwater._statedir import short_socket_path
from headwater._storage import StorageFailure
from headwater.daemon._responses import JSON
from headwater.daemon._uvicorn import embedded_server
from headwater.eventlog import EventLogReader
from headwater.execution import RELOADING, Engine, TickResult
from headwater.execution._backup import is_snapshot, remove_snapshots
from headwater.planning import NodeKey

__all__ = ["ControlServer", "Controlled", "result_json"]

_log = structlog.get_logger("headwater.daemon")

SOCKET_MODE = 0o660
"""The service's user and group may talk to the daemon; nobody else."""
MAX_EVENTS = 100_000
"""The most events one ``/events`` request returns (page with ``after_id``)."""
MAX_BODY = 1 << 20
"""The largest request body taken (a command names assets and partitions: 1 MiB is thousands
of them); a larger one is refused before it is read."""
HEARTBEAT = 10.0
"""Seconds between lines of a streamed request while nothing finishes: a client that hears
nothing for much longer knows the daemon hangs."""


class Unavailable(Exception):
    """The daemon cannot take the request now (it is stopping)."""


class Controlled(Protocol):
    """What the API needs of the daemon."""

    state_dir: Path

    async def current_engine(self) -> Engine:
        """The engine serving now; waits through a reload; raises Unavailable when stopping."""
        ...

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the daemon's task group (it outlives the request)."""
        ...

    def after_reload(self, fn: Callable[[Engine | None], None]) -> None:
        """Call ``fn`` with the next engine once it serves (its task group takes spawns by
        then), or with None if the daemon stops first."""
        ...

    def poke(self) -> None: ...

    async def reload(self) -> tuple[str | None, bool]:
        """Load the definitions again: the error message if they do not load, and whether
        the new ones serve already (else once what is running has finished)."""
        ...

    def stop(self, reason: str, *, again_now: bool = True) -> None: ...

    @property
    def grace(self) -> float: ...

    @property
    def retention(self) -> timedelta | None:
        """How long the daemon keeps events (None: for ever)."""
        ...

    async def health(self) -> dict[str, Any]: ...


def result_json(result: TickResult, requested: int) -> dict[str, Any]:
    return {
        "type": "result",
        "requested": requested,
        "materialized": [list(n) for n in result.materialized],
        "failed": [[a, p, e] for (a, p), e in result.failed.items()],
        "skipped": [[a, p, r] for (a, p), r in result.skipped.items()],
    }


def _error(message: str, status: int = 400) -> JSONResponse:
    if len(message) > 2000:  # a name a client sent may be long: it is not echoed back whole
        message = message[:1000] + " ... " + message[-200:]
    return JSON({"error": message}, status_code=status)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except HeadwaterError as exc:
        raise _Refused(_error(str(exc))) from None
    except (Unavailable, StorageFailure) as exc:
        raise _Refused(_error(str(exc), 503)) from None


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _handler(
    fn: Callable[[Controlled, Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            with _user_errors():
                return await fn(request.app.state.daemon, request)
        except _Refused as refused:
            return refused.response
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # a malformed body
            return _error(f"bad request: {exc}")
        except ClientDisconnect:  # gone, or its body was malformed on the wire (uvicorn's 400)
            return _error("the request ended before its body did")

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object: refused with 413 past ``MAX_BODY``. (A body that takes long
    to arrive is the server's: see ``_uvicorn.REQUEST_S``.)"""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _Refused(_error(f"the body is larger than {MAX_BODY} bytes", 413))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(_error(f"the body is larger than {MAX_BODY} bytes", 413))
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")  # no body: no fields
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _flag(body: dict[str, Any], name: str) -> bool:
    """A true/false field (absent: false): "false", 0 or [] are not taken for an answer."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {_shown(value)}")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {_shown(value)}")
    return value


def _texts(body: dict[str, Any], name: str, *, required: bool) -> list[str] | None:
    """A list of strings (absent, null or empty: None, unless required)."""
    value = body.get(name)
    if not value and not required and (value is None or isinstance(value, list)):
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a non-empty list of strings, not {_shown(value)}")
    return value


def _seconds(body: dict[str, Any], name: str) -> float | None:
    """A duration in seconds (absent or null: None): finite, not negative, at most 1,000 years."""
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= 1000 * 365.25 * 86400
    ):
        raise ValueError(f"{name} must be a number of seconds from 0 to 1,000 years, not "
                         f"{_shown(value)}")  # fmt: skip
    return float(value)


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _stream(
    daemon: Controlled,
    engine: Engine,
    nodes: list[NodeKey],
    force: bool,
) -> StreamingResponse:
    """Run the request in the daemon and stream its progress as it goes.

    A reload stops the old definitions from starting what the request still holds: the new
    ones run it, as asked, once they serve (what they no longer define is said so). The
    work is handed over with a clone of the stream, since the old definitions' task group,
    where it ran, ends with them."""
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
    result = TickResult()

    def emit(out: MemoryObjectSendStream[dict[str, Any]], message: dict[str, Any]) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            out.send_nowait(message)  # the client may have gone: the work goes on

    def on_step(node: NodeKey, outcome: str) -> None:
        emit(send, {"type": "step", "asset": node[0], "partition": node[1], "outcome": outcome})

    async def work(
        engine: Engine, out: MemoryObjectSendStream[dict[str, Any]], asked: list[NodeKey]
    ) -> None:
        with out:
            ev = engine.evaluator()
            for node in [n for n in asked if n[0] not in engine.defs.assets or not ev.exists(*n)]:
                result.skipped[node] = "not started: the reloaded definitions do not define it"
                asked.remove(node)
            if asked:
                more = await engine.materialize(
                    asked, force=force, only_requested=True, on_step=on_step
                )
                result.merge(more)
            if left := [n for n, why in result.skipped.items() if why == RELOADING]:
                daemon.after_reload(handed_over(out.clone(), left))
                return
            emit(out, result_json(result, len(nodes)))
            daemon.poke()  # eager readers of what changed react in the daemon's own ticks

    def handed_over(
        out: MemoryObjectSendStream[dict[str, Any]], left: list[NodeKey]
    ) -> Callable[[Engine | None], None]:
        def carry_on(engine: Engine | None) -> None:
            if engine is not None:
                daemon.spawn(lambda: work(engine, out, left))
                return
            with out:  # the daemon stops: the reload's reason stands
                emit(out, result_json(result, len(nodes)))

        return carry_on

    async def lines() -> AsyncIterator[bytes]:
        with receive:
            while True:
                message: dict[str, Any] = {"type": "alive"}  # a long run: the client waits on
                with anyio.move_on_after(HEARTBEAT):
                    try:
                        message = await receive.receive()
                    except anyio.EndOfStream:
                        return
                yield (json.dumps(message, default=str) + "\n").encode()

    emit(send, {"type": "accepted", "requested": [list(n) for n in nodes]})
    daemon.spawn(lambda: work(engine, send, nodes))
    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _materialize(daemon: Controlled, request: Request) -> Response:
    body = await _body(request)
    selection = _texts(body, "selection", required=True)
    assert selection is not None
    partitions = _texts(body, "partitions", required=False)
    force = _flag(body, "force")
    engine = await daemon.current_engine()
    nodes = engine.resolve(selection, partitions)
    return _stream(daemon, engine, nodes, force)


async def _backfill(daemon: Controlled, request: Request) -> Response:
    body = await _body(request)
    asset, first, last = _text(body, "asset"), _text(body, "from"), _text(body, "to")
    force = _flag(body, "force")
    engine = await daemon.current_engine()
    nodes = engine.backfill(asset, first, last)
    return _stream(daemon, engine, nodes, force)


async def _reload(daemon: Controlled, request: Request) -> Response:
    await _body(request)  # whole and well-formed: a request refused on the wire does nothing
    error, done = await daemon.reload()
    if error is not None:
        return _error(error)
    return JSON({"reloaded": done, "pending": not done})


async def _stop(daemon: Controlled, request: Request) -> Response:
    await _body(request)  # whole and well-formed: a request refused on the wire does nothing
    daemon.stop("requested over the control socket", again_now=False)
    return JSON({"stopping": True, "pid": os.getpid(), "grace_s": daemon.grace})


async def _prune(daemon: Controlled, request: Request) -> Response:
    body = await _body(request)
    older, values, vacuum = (
        _seconds(body, "older_than_s"),
        _flag(body, "values"),
        _flag(body, "vacuum"),
    )
    window = timedelta(seconds=older) if older is not None else None
    if window is None and _flag(body, "retention"):  # the daemon's own, as it prunes
        window = daemon.retention
    engine = await daemon.current_engine()
    cutoff = None if window is None else engine.clock.now() - window
    done = await engine.maintain(cutoff, values=values, vacuum=vacuum)
    return JSON(done)


async def _backup(daemon: Controlled, request: Request) -> Response:
    await _body(request)  # whole and well-formed: a request refused on the wire does nothing
    engine = await daemon.current_engine()
    staging = await engine.snapshot(daemon.state_dir)
    return JSON({"staging": str(staging)})


async def _backup_done(daemon: Controlled, request: Request) -> Response:
    staging = Path(_text(await _body(request), "staging"))
    if not is_snapshot(daemon.state_dir, staging):
        return _error(f"{str(staging)[:200]!r} is not a snapshot of this state directory")
    await anyio.to_thread.run_sync(lambda: remove_snapshots(daemon.state_dir, staging))
    return JSON({"removed": str(staging)})


async def _health(daemon: Controlled, request: Request) -> Response:
    return JSON(await daemon.health())


async def _status(daemon: Controlled, request: Request) -> Response:
    engine = await daemon.current_engine()
    flights = {(f.asset, f.partition): f.state for f in engine.in_flight()}
    rows = []
    for row in status_rows(engine.defs, engine.state, engine.clock.now()):
        rows.append({**row.as_json(), "run": flights.get((row.asset, row.partition))})
    return JSON(rows)


async def _runs(daemon: Controlled, request: Request) -> Response:
    engine = await daemon.current_engine()
    return JSON(
        [
            {
                "asset": f.asset,
                "partition": f.partition,
                "state": f.state,
                "since": format_timestamp(f.since),
                "reason": f.reason,
                "run_id": f.run_id,
            }
            for f in engine.in_flight()
        ]
    )


async def _why(daemon: Controlled, request: Request) -> Response:
    engine = await daemon.current_engine()
    asset = request.query_params["asset"]
    partition = request.query_params.get("partition")
    lines = engine.why(asset, partition)
    reader = EventLogReader(daemon.state_dir)
    recent = await anyio.to_thread.run_sync(lambda: reader.newest(asset, partition, 5))
    failure = None
    if engine.status(asset, partition).state == "failed":
        failure = await anyio.to_thread.run_sync(reader.last_failure, asset, partition)
    events = [e.as_json() for e in reversed(recent)]
    return JSON({"lines": lines, "events": events, "failure": failure})


async def _events(daemon: Controlled, request: Request) -> Response:
    """A page of events in id order, after ``after_id``, at most ``limit`` (1,000) of them;
    ``since`` (ISO-8601) filters here: filtered by the client, a page older than it came back
    empty, and the client took that for the end of the log."""
    q = request.query_params
    reader = EventLogReader(daemon.state_dir)
    try:
        after = int(q["after_id"]) if q.get("after_id") else None
        if after is not None and not -(2**63) <= after < 2**63:
            raise ValueError(f"after_id {after} is past what an event id can be")
        limit = min(max(int(q["limit"]), 1), MAX_EVENTS) if q.get("limit") else 1000
        since = parse_timestamp(q["since"]) if q.get("since") else None
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since has no timezone")
            format_timestamp(since)  # in UTC: a time at the calendar's edge may not be
    except (ValueError, OverflowError) as exc:
        return _error(f"/events: after_id and limit are whole numbers, since an ISO-8601 time "
                      f"with a timezone: {exc}")  # fmt: skip
    kind, asset = q.get("kind"), q.get("asset")
    if kind is not None and kind not in EVENT_KINDS:
        return _error(
            f"/events: kind {kind!r} is not an event kind{did_you_mean(kind, EVENT_KINDS)}"
        )
    if asset is not None:  # a typo must not read as an empty log
        engine = await daemon.current_engine()
        known = set(engine.defs.nodes) | await anyio.to_thread.run_sync(reader.assets)
        if asset not in known:
            return _error(f"/events: no such asset or source {asset!r}"
                          f"{did_you_mean(asset, known)}")  # fmt: skip

    def read() -> list[dict[str, Any]]:
        events = reader.events(
            kind=kind,
            asset=asset,
            partition=q.get("partition"),
            since=since,
            after_id=after,
            limit=limit,
        )
        return [e.as_json() for e in events]

    return JSON(await anyio.to_thread.run_sync(read))


async def _lineage(daemon: Controlled, request: Request) -> Response:
    fmt = request.query_params.get("format", "text")
    if fmt not in FORMATS:
        return _error(f"unknown lineage format {fmt!r}; use one of {', '.join(FORMATS)}")
    engine = await daemon.current_engine()
    return JSON({"text": render_lineage(engine.defs, fmt)})


ROUTES = [
    Route("/health", _handler(_health)),
    Route("/status", _handler(_status)),
    Route("/runs", _handler(_runs)),
    Route("/why", _handler(_why)),
    Route("/events", _handler(_events)),
    Route("/lineage", _handler(_lineage)),
    Route("/materialize", _handler(_materialize), methods=["POST"]),
    Route("/backfill", _handler(_backfill), methods=["POST"]),
    Route("/reload", _handler(_reload), methods=["POST"]),
    Route("/stop", _handler(_stop), methods=["POST"]),
    Route("/prune", _handler(_prune), methods=["POST"]),
    Route("/backup", _handler(_backup), methods=["POST"]),
    Route("/backup/done", _handler(_backup_done), methods=["POST"]),
]


def bind_socket(path: Path) -> tuple[socket.socket, int]:
    """Listen on ``path`` with mode 0660, atomically replacing a socket a crash left behind.

    The socket is bound under a temporary name, given its mode, then renamed into place, so
    it is never reachable with the umask's looser mode.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with short_socket_path(tmp) as tmp_name, short_socket_path(path) as final_name:
            if _answers(final_name):
                raise StateDirError(
                    f"another daemon listens on {path}: give each daemon its own "
                    "RUNTIME_DIRECTORY (or state directory), or stop the other one first"
                )
            Path(tmp_name).unlink(missing_ok=True)
            sock.bind(tmp_name)
            Path(tmp_name).chmod(SOCKET_MODE)
            Path(tmp_name).rename(final_name)
            inode = Path(final_name).stat().st_ino
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StateDirError(
            f"cannot listen on the control socket {path}: {exc.strerror or exc}"
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock, inode


def _answers(name: str) -> bool:
    """Whether something accepts connections on the socket ``name`` (a live daemon)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(name)
    except OSError:
        return False  # absent, or left behind by a crash: safe to replace
    finally:
        probe.close()
    return True


class ControlServer:
    """The API on the control socket, one task of the daemon's root task group."""

    def __init__(self, daemon: Controlled, path: Path) -> None:
        self.path = path
        app = Starlette(routes=ROUTES)
        app.state.daemon = daemon
        self._server = embedded_server(app)
        self._inode: int | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sock, self._inode = await anyio.to_thread.run_sync(bind_socket, self.path)
        # Connections queue in the listen backlog from here on, before uvicorn accepts them.
        task_status.started()
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()

    def stop(self) -> None:
        self._server.should_exit = True

    def remove_socket(self) -> None:
        """Remove the socket file if it is still ours (not a successor's). Blocking."""
        with contextlib.suppress(OSError), short_socket_path(self.path) as name:
            if Path(name).stat().st_ino == self._inode:
                Path(name).unlink()
