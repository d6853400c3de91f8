"""The real daemon as a subprocess, with a real NOTIFY_SOCKET, for end-to-end tests.

Waits are on events with timeouts: sd_notify datagrams read from the socket, and the daemon's
JSON log lines read by a thread from its stderr. Every stderr line must parse as JSON.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Line = dict[str, Any]


class DaemonProcess:
    def __init__(
        self,
        workdir: Path,
        definitions: Path,
        state_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("--settle", "0.2", "--grace", "10"),
        abstract_socket: bool = False,
        new_session: bool = False,
    ) -> None:
        self.workdir = workdir
        self.definitions = definitions
        self.state_dir = state_dir
        self.extra_env = env or {}
        self.args = args
        self.abstract_socket = abstract_socket
        self._sock_dir: Path | None = None
        self.new_session = new_session
        """Its own session and process group, as a shell's foreground job has."""
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[Line] = []
        self.bad_lines: list[str] = []
        self._queue: queue.Queue[Line | None] = queue.Queue()
        self.notifications: list[str] = []
        self._sock: socket.socket | None = None
        self._reader = threading.Thread()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, watchdog_usec: int | None = None) -> DaemonProcess:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if self.abstract_socket:
            name = f"headwater-test-{os.getpid()}-{id(self)}"
            self._sock.bind("\0" + name)
            address = "@" + name
        else:  # in a short folder of its own: a socket's path has at most 107 bytes, and
            # pytest's (under xdist, popen-gwN/) long test folders pass that
            self._sock_dir = Path(tempfile.mkdtemp(prefix="hw-notify-"))
            path = self._sock_dir / "notify.sock"
            self._sock.bind(str(path))
            address = str(path)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HEADWATER_", "NOTIFY_", "WATCHDOG_"))
        }
        env.update(self.extra_env)
        env["NOTIFY_SOCKET"] = address
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headwater", "run", "--definitions", str(self.definitions),
             "--state-dir", str(self.state_dir), *self.args],
            cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=self.new_session,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for raw in proc.stderr:
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    self.bad_lines.append(raw)
                    continue
                self._queue.put(line)
        self._queue.put(None)

    def close(self) -> None:
        """Kill by PID if still running; close the socket."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self._reader.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def terminate(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout=10)

    # -- waiting on events ----------------------------------------------------------------

    def wait_notify(self, prefix: str, timeout: float = 30) -> str:
        """The next datagram that contains a line starting with ``prefix``."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no sd_notify {prefix!r} within {timeout}s; got {self.notifications}"
                )
            self._sock.settimeout(remaining)
            try:
                message = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.notifications.append(message)
            if any(line.startswith(prefix) for line in message.splitlines()):
                return message

    def wait_log(
        self, predicate: Callable[[Line], bool], timeout: float = 30, *, since: int = 0
    ) -> Line:
        """The first log line (from index ``since``) that satisfies ``predicate``."""
        for line in self.lines[since:]:
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching log line within {timeout}s; last: {self.lines[-5:]}"
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"daemon exited; last lines: {self.lines[-10:]}")
            self.lines.append(line)
            if predicate(line):
                return line

    def wait_event(self, event: str, timeout: float = 30, since: int = 0, **fields: Any) -> Line:
        return self.wait_log(
            lambda line: (
                line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
            ),
            timeout,
            since=since,
        )

    def mark(self) -> int:
        """Drain what has arrived so far; return the index to wait from for what comes next."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return len(self.lines)
            if line is not None:
                self.lines.append(line)

    def drain(self) -> None:
        """Read stderr to the end (after the process exited)."""
        assert self.proc is not None and self.proc.poll() is not None
        while True:
            try:
                line = self._queue.get(timeout=10)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)
