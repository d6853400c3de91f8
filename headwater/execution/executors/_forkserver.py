"""A small fork server: a clean process, pandas and pyarrow imported once, that forks workers.

The daemon cannot fork itself (it has threads, an event loop, open SQLite connections and the
state directory's locks), and a fresh interpreter per worker costs a second of imports. The
standard library's forkserver would do, except that it re-runs the parent's ``__main__`` in
every child and lets a child's early errors reach the daemon's own stderr. This one is ~100
lines: the daemon sends ``("fork", spec)`` with the worker's pipe ends attached (SCM_RIGHTS)
over a SOCK_SEQPACKET pair; the server forks, answers ``("forked", pid)``, and reports each
child's exit as ``("exited", pid, code)`` (code as ``Popen.returncode``: -N for signal N).

The server ends with the daemon (its socket reads EOF), and each worker dies with the server
(PR_SET_PDEATHSIG), so kill -9 of the daemon leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import traceback
from typing import Any

import anyio

__all__ = ["ForkServer", "ForkServerGone", "die_with_parent"]

_PRELOAD = ("pandas", "pyarrow", "pyarrow.parquet")
_MAX_FDS = 8
_MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_MAIN = f"import {__name__} as server; server.main()"
"""Not ``-m``: that would run this module a second time, as ``__main__``."""


class ForkServerGone(OSError):
    """The fork server exited (or was killed) before it answered."""


def _name(name: bytes) -> None:
    """What ``top`` and ``ps -o comm`` show for this process (at most 15 bytes)."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, name, 0, 0, 0)


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (kill -9 included)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(1)


def _environment() -> dict[str, str]:
    """The daemon's environment, with glibc's malloc arenas capped at 2 (unless set): each
    thread of pyarrow's pools would otherwise reserve a 64 MB arena, and a worker that has
    read one Parquet file holds 1.6 GB of address space instead of 0.4 GB, which an
    address-space limit (``worker_memory``) counts as if it were used."""
    return {"MALLOC_ARENA_MAX": "2", **os.environ}


# -- the daemon's side --------------------------------------------------------------------


class ForkServer:
    """The daemon's handle on one fork server process."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self._process = process
        self._sock = sock
        self._forked: list[int] = []
        self._forked_event = anyio.Event()
        self._exits: dict[int, int] = {}
        self._exit_events: dict[int, anyio.Event] = {}
        self._lock = anyio.Lock()
        self._alive = True
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_message)

    @classmethod
    async def start(cls) -> ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        try:
            process = await anyio.to_thread.run_sync(
                lambda: subprocess.Popen(
                    [sys.executable, "-c", _MAIN, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    process_group=0,  # Ctrl-C on the daemon's terminal does not reach it
                    close_fds=True,
                    env=_environment(),
                )
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(process, ours)

    def _on_message(self) -> None:
        try:
            data = self._sock.recv(_MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        message = pickle.loads(data)
        if message[0] == "forked":
            self._forked.append(message[1])
            self._forked_event.set()
        elif message[0] == "exited":
            _, pid, code = message
            self._exits[pid] = code
            event = self._exit_events.get(pid)
            if event is not None:
                event.set()

    def _gone(self) -> None:
        self._alive = False
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._forked_event.set()
        for event in self._exit_events.values():
            event.set()

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int:
        return self._process.pid

    async def fork(self, spec: Any, fds: list[int]) -> int:
        """Start a worker running ``worker_main(spec, *fds)``; its pid."""
        async with self._lock:
            self._forked_event = anyio.Event()
            data = pickle.dumps(("fork", spec), protocol=pickle.HIGHEST_PROTOCOL)
            while True:
                try:
                    socket.send_fds(self._sock, [data], fds)
                    break
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
            while not self._forked:
                if not self._alive:
                    raise ForkServerGone("the fork server has exited")
                await self._forked_event.wait()
                self._forked_event = anyio.Event()
            return self._forked.pop(0)

    async def exit_code(self, pid: int, wait: float) -> int | None:
        """The worker's exit code once it has exited (None if not within ``wait`` seconds)."""
        if pid not in self._exits and self._alive:
            event = self._exit_events.setdefault(pid, anyio.Event())
            with anyio.move_on_after(wait):
                await event.wait()
            self._exit_events.pop(pid, None)
        return self._exits.pop(pid, None)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        # Killed, not asked: it holds nothing to flush, and one still importing pandas would
        # only see the end of its socket after the imports (most of a second of a stop). The
        # workers' parent-death signal ends any left.
        pidfd = os.pidfd_open(self._process.pid)
        try:
            self._process.kill()
            await anyio.wait_readable(pidfd)
            self._process.poll()  # reaped: no zombie
        finally:
            os.close(pidfd)


# -- the server's side --------------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    from headwater.execution.executors._worker import worker_main

    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _report_exits(sock)
                continue
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
            if not data:
                return  # the daemon is gone
            _, spec = pickle.loads(data)
            pid = os.fork()
            if pid == 0:
                _child(sock, selector, (wake_r, wake_w), worker_main, spec, fds)
            for fd in fds:
                os.close(fd)
            sock.sendall(pickle.dumps(("forked", pid)))


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.sendall(pickle.dumps(("exited", pid, os.waitstatus_to_exitcode(status))))


def _child(
    sock: socket.socket,
    selector: selectors.BaseSelector,
    wake: tuple[int, int],
    main: Any,
    spec: Any,
    fds: list[int],
) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        selector.close()
        sock.close()
        for fd in wake:
            os.close(fd)
        die_with_parent()
        os.setpgid(0, 0)
        _name(b"headwater-work")
        main(spec, *fds)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()  # to the worker's stderr pipe once it has set it up
            sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    # No parent-death signal here: it would fire when the daemon's *thread* that started the
    # server ends (anyio retires idle threads). The server ends with the daemon all the same:
    # its socket reads EOF when the daemon exits, kill -9 included.
    _name(b"headwater-fork")
    _serve(socket.socket(fileno=int(sys.argv[1])))
    os._exit(0)  # nothing to flush: skip tearing down pandas and pyarrow (0.7 s of a stop)
