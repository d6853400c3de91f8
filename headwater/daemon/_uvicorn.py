"""uvicorn as the daemon serves its APIs with it: inside its event loop, on its sockets, and
hardened against clients that are slow, malformed or many.

- A request's head and body must arrive within ``REQUEST_S`` of the connection (or of the
  response before it on a kept-alive one): a client that sends a byte a second (slowloris)
  holds a connection that long, not for ever, so it cannot keep every slot.
- A malformed body (a bad chunk size) is answered 400 by uvicorn itself; the application's
  own answer that follows is dropped instead of logged as a crash with its stack.
- uvicorn's warning for each malformed request is logged once a minute at most, with how many
  were left out: anyone who reaches the port could otherwise flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["REQUEST_S", "embedded_server"]

REQUEST_S = 10.0
"""Seconds a request's head and body may take to arrive."""
_QUIET_S = 60.0
"""The least time between two of uvicorn's lines about the same kind of malformed request."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon owns SIGTERM/SIGINT/SIGHUP


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request to arrive."""

    request_s = REQUEST_S
    _deadline: asyncio.TimerHandle | None = None
    _answered: object = None
    """The request cycle the deadline was set after (None: the connection's first)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._set_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._set_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and cycle is not self._answered and not cycle.more_body:
            self._clear_deadline()  # this request is all here

    def _unsupported_upgrade_warning(self) -> None:
        # not uvicorn's advice to install a WebSocket library: the daemon serves none
        self.logger.warning("Unsupported upgrade request (this server speaks plain HTTP).")

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def _set_deadline(self) -> None:
        self._clear_deadline()
        self._answered = self.cycle
        self._deadline = self.loop.call_later(self.request_s, self._late)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _AnsweredAlready:
    """Drops what the application sends once uvicorn has answered the request itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def guarded(message: Message) -> None:
            with contextlib.suppress(h11.LocalProtocolError):
                await send(message)

        await self.app(scope, receive, guarded)


class _Seldom(logging.Filter):
    """Lets one record per message through per ``_QUIET_S``; the next says how many it left."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = str(record.msg)
        now = time.monotonic()
        at, left = self._last.get(key, (-_QUIET_S, 0))
        if now - at < _QUIET_S:
            self._last[key] = (at, left + 1)
            return False
        self._last[key] = (now, 0)
        if left:
            record.msg = f"{record.msg} ({left} more like it in the last minute, not logged)"
        return True


_SELDOM = _Seldom()


def embedded_server(
    app: ASGIApp, *, limit_concurrency: int | None = None, request_s: float = REQUEST_S
) -> uvicorn.Server:
    """A uvicorn server for ``app`` that the daemon runs in its own loop (it owns signals and
    logging), with the protections above."""
    protocol = type("_Protocol", (_Protocol,), {"request_s": request_s})
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _SELDOM not in uvicorn_log.filters:
        uvicorn_log.addFilter(_SELDOM)
    config = uvicorn.Config(
        _AnsweredAlready(app),
        http=protocol,
        ws="none",
        lifespan="off",
        log_config=None,  # never reconfigure the daemon's logging
        access_log=False,
        timeout_graceful_shutdown=1,
        limit_concurrency=limit_concurrency,
    )
    return _Server(config)
