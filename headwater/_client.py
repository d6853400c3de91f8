"""The CLI's side of the control socket: find the daemon that owns a state directory, ask it.

The owner's record in the state directory names its socket (see :mod:`headwater._statedir`).
A user who may not read the state directory (a member of the socket's group) names the socket
with ``HEADWATER_SOCKET``; ``/run/headwater/headwater.sock`` (systemd's ``RuntimeDirectory=``)
is tried last. A daemon is believed only if it says it serves the state directory asked about
(a copied state directory names a socket that answers for another one). Every call has a
timeout: a hung daemon makes the CLI say so, never hang with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater._errors import HeadwaterError, StateDirError
from headwater._statedir import (
    LOCK_NAME,
    OwnerInfo,
    lock_held_by,
    read_owner,
    short_socket_path,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DaemonClient",
    "DaemonGone",
    "DaemonUnresponsive",
    "RequestCutShort",
    "RequestRefused",
    "connect_to_owner",
    "find_daemon",
    "starting_daemon",
    "wait_for_exit",
]

ENV_SOCKET = "HEADWATER_SOCKET"
SYSTEMD_SOCKET = Path("/run/headwater/headwater.sock")
_START_WAIT = 60.0
"""Seconds to wait for a starting daemon (loading its definitions) to listen."""
_CALL_TIMEOUT = 10.0
"""Seconds a plain request may take: the daemon answers from memory."""
_STREAM_SILENCE = 60.0
"""Seconds of silence on a streamed request (the daemon sends a line every 10 s) that mean
the daemon hangs."""


class RequestRefused(HeadwaterError):
    """The daemon refused a request as a user's mistake (unknown asset, bad partition...)."""


class DaemonGone(StateDirError):
    """The daemon that owns the state directory cannot be reached."""


class DaemonUnresponsive(StateDirError):
    """The daemon accepted the connection but did not answer in time: it hangs."""


class RequestCutShort(HeadwaterError):
    """The daemon went away (or stopped) before a request finished: its outcome is not known
    here (the event log says what happened). Exit status 1, as for a failed request."""


class DaemonClient:
    """HTTP/JSON over the daemon's unix socket."""

    def __init__(
        self, socket_path: Path, owner: OwnerInfo | None = None, *, timeout: float = _CALL_TIMEOUT
    ) -> None:
        import httpx  # only commands that talk to a daemon pay for importing it

        self.socket_path = socket_path
        self.owner = owner
        self.health: dict[str, Any] | None = None
        """The daemon's answer to ``/health`` when it was found."""
        self._alias = contextlib.ExitStack()
        uds = self._alias.enter_context(short_socket_path(socket_path))
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=uds),
            base_url="http://headwater",
            timeout=httpx.Timeout(timeout),
        )

    def describe(self) -> str:
        if self.owner:
            return f"the daemon, {self.owner.describe()}"
        return f"the daemon at {self.socket_path}"

    def close(self) -> None:
        self._http.close()
        self._alias.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            response.read()
            try:
                message = str(response.json()["error"])
            except (ValueError, KeyError, TypeError):
                message = response.text
            if response.status_code == 503:
                raise DaemonGone(f"{self.describe()} refused the request: {message}")
            raise RequestRefused(message)

    @contextlib.contextmanager
    def _talking(self, *, midway: bool = False) -> Iterator[None]:
        import httpx

        try:
            yield
        except httpx.TimeoutException:
            raise DaemonUnresponsive(
                f"{self.describe()} did not answer in time: it may hang (its watchdog, under "
                "systemd, restarts it); `headwater logs` still reads the event log"
            ) from None
        except httpx.TransportError as exc:
            if midway:
                raise RequestCutShort(
                    f"{self.describe()} went away before the request finished ({exc}); what "
                    "it did is in the event log: headwater logs"
                ) from None
            raise DaemonGone(f"cannot reach {self.describe()}: {exc}") from None

    def get(self, path: str, params: Mapping[str, str | None] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        with self._talking():
            response = self._http.get(path, params=query)
            self._check(response)
            return response.json()

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        with self._talking():
            response = self._http.post(path, json=dict(body or {}))
            self._check(response)
            return response.json()

    def stream(self, path: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The newline-delimited JSON messages of a streaming request, as they arrive
        (heartbeats left out)."""
        import httpx

        timeout = httpx.Timeout(_CALL_TIMEOUT, read=_STREAM_SILENCE)
        with (
            self._talking(midway=True),
            self._http.stream("POST", path, json=dict(body), timeout=timeout) as response,
        ):
            self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    message = json.loads(line)
                    if message.get("type") != "alive":
                        yield message

    def serves(self, state_dir: Path) -> bool:
        """Whether the daemon answers, and for ``state_dir`` (when this user can tell).
        Raises :class:`DaemonUnresponsive` for one that accepts but does not answer."""
        try:
            health = self.health = self.get("/health")
        except (DaemonGone, RequestRefused):
            return False
        try:
            mine = state_dir.resolve()
        except OSError:
            return True  # this user cannot resolve it: the socket it was told to use decides
        return Path(str(health.get("state_dir", ""))) == mine


def _readable(state_dir: Path) -> bool:
    try:
        (state_dir / LOCK_NAME).exists()
    except PermissionError:
        return False
    return True


def _socket_candidates(state_dir: Path) -> Iterator[tuple[Path, OwnerInfo | None]]:
    if env := os.environ.get(ENV_SOCKET):
        yield Path(env), None
    if not _readable(state_dir):  # not the service's user: systemd's runtime directory?
        yield SYSTEMD_SOCKET, None
        return
    owner = read_owner(state_dir)
    if owner is not None and owner.role == "daemon" and owner.socket:
        yield Path(owner.socket), owner


def find_daemon(state_dir: Path, *, timeout: float = _CALL_TIMEOUT) -> DaemonClient | None:
    """A client of the live daemon serving ``state_dir``, or None when none answers for it.
    Raises :class:`DaemonUnresponsive` when its daemon accepts but does not answer."""
    for path, owner in _socket_candidates(state_dir):
        if not path.exists():
            continue
        client = DaemonClient(path, owner, timeout=timeout)
        try:
            if client.serves(state_dir):
                return client
        except BaseException:
            client.close()
            raise
        client.close()
    return None


def starting_daemon(state_dir: Path) -> OwnerInfo | None:
    """The daemon that owns ``state_dir`` but does not listen yet (it is starting)."""
    owner = read_owner(state_dir) if _readable(state_dir) else None
    if owner is not None and owner.role == "daemon" and not owner.socket:
        return owner
    return None


def deaf_daemon(state_dir: Path) -> OwnerInfo | None:
    """The live daemon that owns ``state_dir`` and has listened, when no control socket
    answers for it (its socket file deleted or replaced): it runs, but cannot be asked."""
    owner = read_owner(state_dir) if _readable(state_dir) else None
    if owner is None or owner.role != "daemon" or not owner.socket:
        return None
    # The record may be a copy's (a state directory copied with its owner.lock): only the
    # kernel's lock table says the process holds this very directory. Unknown: not it.
    return owner if lock_held_by(state_dir, owner.pid) else None


def connect_to_owner(state_dir: Path, owner: OwnerInfo) -> DaemonClient:
    """A client of the daemon that owns ``state_dir``; waits while it is starting up."""
    deadline = time.monotonic() + _START_WAIT
    while True:
        current = read_owner(state_dir)
        if current is None or current.pid != owner.pid:
            raise DaemonGone(f"the daemon, {owner.describe()}, stopped; try again")
        if current.socket:
            client = DaemonClient(Path(current.socket), current)
            if client.serves(state_dir):
                return client
            client.close()
        if time.monotonic() > deadline:
            raise DaemonGone(
                f"the daemon, {owner.describe()}, owns the state directory but does not answer "
                f"for it on its control socket after {_START_WAIT:.0f} s"
            )
        time.sleep(0.05)  # it is starting; its socket appears in a moment


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited; False if it still runs after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd (old kernel, or another user's process): poll
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            time.sleep(0.05)
        return False
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)
