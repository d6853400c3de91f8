"""The daemon's optional TCP address (``run --http``): the read-only control API, ``/metrics``
and the web page (``/``).

Off unless asked for; a bare port listens on 127.0.0.1 only. Commands that change something
(materialize, backfill, reload, stop, prune, backup) stay on the unix socket, whose file mode
says who may send them, unless ``--http-write`` opens them on TCP too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from headwater._config import ConfigError
from headwater.daemon._api import ROUTES, Controlled
from headwater.daemon._metrics import Metrics, SensorLag
from headwater.daemon._page import Page
from headwater.daemon._summary import StateSummary
from headwater.daemon._uvicorn import embedded_server
from headwater.execution import Engine

__all__ = ["HttpAddress", "HttpServer", "parse_http_address"]

LOCALHOST = "127.0.0.1"
MAX_CONNECTIONS = 256
"""Connections served at once on the TCP address; more get 503 (the daemon's own file
descriptors are not for anyone who can reach the port to use up)."""


@dataclass(frozen=True, slots=True)
class HttpAddress:
    host: str
    port: int
    write: bool = False
    """Whether commands that change something are served on it too."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_http_address(text: str, where: str) -> HttpAddress | None:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` (port 0: any free one); empty or ``off``:
    None."""
    text = text.strip()
    if text in ("", "off"):
        return None
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError(f"{where}: {text!r}: write an IPv6 address in brackets, as [::1]:8642")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") if host else LOCALHOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or not host or any(c.isspace() for c in host):
        raise ValueError(
            f"{where}: {text!r} is not an address to listen on; give PORT (on {LOCALHOST}) "
            "or HOST:PORT, such as 127.0.0.1:8642"
        )
    return HttpAddress(host, port)


class HttpServer:
    """One task of the daemon's root task group, like the control socket's server."""

    def __init__(self, daemon: Controlled, address: HttpAddress, state_dir: Path) -> None:
        self.address = address
        summary = StateSummary()
        self.metrics = metrics = Metrics(state_dir, summary)
        self.page = page = Page(daemon, summary)
        routes: list[BaseRoute] = [
            r for r in ROUTES if address.write or not isinstance(r, Route) or _reads(r)
        ]
        routes.append(Route("/metrics", self._metrics))
        routes += page.routes()
        if not address.write:
            paths = [r.path for r in ROUTES if isinstance(r, Route) and not _reads(r)]
            routes += [Route(path, _refuse_write, methods=["POST"]) for path in paths]
        app = Starlette(routes=routes, middleware=[Middleware(_SameSite, address=address)])
        app.state.daemon = daemon
        self.metrics = metrics
        self._server = embedded_server(app, limit_concurrency=MAX_CONNECTIONS)
        self.bound = address
        """Where it listens (the port chosen, when asked for port 0)."""

    async def _metrics(self, request: Request) -> Response:
        body = await self.metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sock = await anyio.to_thread.run_sync(self._bind)
        host, port = sock.getsockname()[:2]
        self.bound = HttpAddress(host, port, self.address.write)
        task_status.started()
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()

    def _bind(self) -> socket.socket:
        address = self.address
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        try:
            sock = socket.create_server((address.host, address.port), family=family, backlog=64)
        except (OSError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(
                f"cannot listen on {address} (--http, HEADWATER_HTTP or [tool.headwater] "
                f"http): {reason}"
            ) from None
        sock.setblocking(False)
        return sock

    def serve_engine(
        self, engine: Engine, sensor_lags: Callable[[], Iterable[tuple[str, str, float]]]
    ) -> None:
        """What the metrics and the page show from now on (a reload keeps counters)."""
        engine.observers.append(self.page)
        self.metrics.serve(engine, lambda: [SensorLag(*lag) for lag in sensor_lags()])

    def stop(self) -> None:
        self.page.close()  # open pages' event streams end before the server stops
        self._server.should_exit = True


async def _refuse_write(request: Request) -> Response:
    return JSONResponse(
        {
            "error": "commands that change something are served on the unix socket "
            "(headwater's CLI uses it); start the daemon with --http-write to serve them here"
        },
        status_code=403,
    )


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class _SameSite:
    """Only requests meant for this address: a Host that names it (a page of another site,
    rebinding its own name to 127.0.0.1, may not read the API), and, for commands, a JSON body
    from no other origin (a form or a no-cors fetch of another site may not send them)."""

    def __init__(self, app: ASGIApp, address: HttpAddress) -> None:
        self.app = app
        self.hosts = _LOOPBACK | {address.host}
        self.any_host = address.host in ("0.0.0.0", "::")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            refusal = None
            if not self.any_host and name not in self.hosts:
                refusal = f"host {host!r} is not this daemon's address"
            elif scope["method"] == "POST":
                origin = headers.get("origin")
                kind = headers.get("content-type", "").split(";")[0].strip()
                if kind != "application/json":
                    refusal = "commands take a JSON body (Content-Type: application/json)"
                elif origin is not None and origin.split("://", 1)[-1] != host:
                    refusal = f"origin {origin!r} may not send commands"
            if refusal is not None:
                response = JSONResponse({"error": refusal}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _reads(route: Route) -> bool:
    return route.methods is None or "POST" not in route.methods
