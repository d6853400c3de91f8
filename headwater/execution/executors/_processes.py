"""Functions in warm worker processes (the default executor).

At most ``slots`` workers, forked from a fork server (:mod:`._forkserver`) that has pandas and
pyarrow imported, each importing the definitions once. A run goes to an idle worker as one small message (asset,
partition, run id, time, input versions); the worker loads its inputs from the value store,
runs the function, its checks and IO manager, stores the value and answers with the outcome
(version and metadata, never the value). A worker that dies fails its run with the reason
and is replaced by the next run that needs one; a run past its timeout has its worker killed.

The daemon watches each worker's pipes with the event loop's own reader callbacks (asyncio's
``add_reader``): no thread and no task per worker, which keeps a run's round trip to a few
tens of microseconds over the thread executor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import re
import signal
import sysconfig
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog

from headwater._durations import format_duration
from headwater._sizes import Size
from headwater._statedir import WORKERS_LOCK
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution._store import FilesystemStore
from headwater.execution.executors._forkserver import ForkServer, ForkServerGone
from headwater.execution.executors._frames import FrameReader, encode
from headwater.execution.executors._output import OutputLines, with_stderr
from headwater.execution.executors._worker import WorkerSpec

__all__ = ["ProcessPool"]

_log = structlog.get_logger("headwater.executor")

_START_TIMEOUT = 120.0
"""How long a worker may take to import the definitions."""
_TERM_GRACE = 1.0
"""After SIGTERM, how long a timed-out worker has before SIGKILL."""
_EXIT_WAIT = 5.0


class _WorkerFailed(Exception):
    """A worker could not start: its definitions did not import, or it died first."""


class _Worker:
    """One worker process and the daemon's ends of its pipes."""

    def __init__(self, server: ForkServer, pid: int, fds: dict[str, int], flag: mmap.mmap) -> None:
        self.server = server
        self.pid = pid
        self.fds = fds
        self.flag = flag
        self.reader = FrameReader()
        self.output = OutputLines(self.pid)
        self.inbox: list[Any] = []
        self.arrived = anyio.Event()
        self.alive = True
        self.code_versions: dict[str, str] = {}
        self.job: Job | None = None
        self.since = time.monotonic()
        self.runs = 0
        self.killed_for: str | None = None
        self.exit_code: int | None = None

    # -- the event loop's reader callbacks ------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.fds["results"], self._on_results)
        loop.add_reader(self.fds["stdout"], self._on_output, "stdout")
        loop.add_reader(self.fds["stderr"], self._on_output, "stderr")

    def _on_results(self) -> None:
        try:
            data = os.read(self.fds["results"], 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._ended()
            return
        for message in self.reader.feed(data):
            if message[0] == "log":
                self.output.event(message[1])
            elif message[0] == "line":
                self.output.line("log", str(message[1]))
            else:
                self.inbox.append(message)
                self.arrived.set()

    def _on_output(self, stream: str) -> None:
        try:
            data = os.read(self.fds[stream], 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fds[stream])
            return
        self.output.feed(stream, data)

    def drain_output(self) -> None:
        """Read what the worker printed and the loop has not delivered yet."""
        for stream in ("stdout", "stderr"):
            with contextlib.suppress(OSError):
                while data := os.read(self.fds[stream], 1 << 16):
                    self.output.feed(stream, data)

    def _ended(self) -> None:
        self.alive = False
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.fds["results"])
        self.arrived.set()

    async def next_message(self) -> Any | None:
        """The next message from the worker, or None once it has died."""
        while not self.inbox:
            if not self.alive:
                return None
            self.arrived = anyio.Event()
            await self.arrived.wait()
        return self.inbox.pop(0)

    # -- ending it ------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Signal the worker's process group (what it started too)."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)  # not its own group yet: it just started
        except PermissionError:
            pass  # reaped, and the pid is someone else's now

    async def exit_status(self, wait: float = _EXIT_WAIT) -> int | None:
        if self.exit_code is None:
            self.exit_code = await self.server.exit_code(self.pid, wait)
        return self.exit_code

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for name, fd in self.fds.items():
            if name != "jobs":
                loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}
        self.flag.close()


def _death(code: int | None) -> str:
    if code is None:
        return "worker died (its exit status is unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed by another process, or the kernel ran out of memory)"
        return f"worker died: {name}" + (hint if -code == signal.SIGKILL else "")
    return f"worker exited with status {code}"


class ProcessPool:
    kind = "processes"

    def __init__(self, spec: WorkerSpec, store: Any, slots: int) -> None:
        self._spec = spec
        self._store = store
        self._slots = slots
        self._limiter = anyio.CapacityLimiter(slots)
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._changed = anyio.Event()
        self._closed = False
        self._server: ForkServer | None = None
        self._starting = 0
        """Workers being forked, not in ``_workers`` yet."""
        self._server_lock = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, definitions: str, runner: Runner, slots: int, state_dir: Path, memory: Size | None
    ) -> AsyncIterator[ProcessPool]:
        spec = await anyio.to_thread.run_sync(_spec, definitions, runner, state_dir, memory)
        pool = cls(spec, runner.store, slots)
        try:
            yield pool
        finally:
            with anyio.CancelScope(shield=True):
                await pool._close_all()

    # -- the pool -------------------------------------------------------------------------

    async def warm(self) -> None:
        """Start every worker now rather than when the first runs need them."""
        async with anyio.create_task_group() as tg:
            for _ in range(self._slots - len(self._workers) - self._starting):
                tg.start_soon(self._warm_one)

    async def _warm_one(self) -> None:
        try:
            worker = await self._start()
        except _WorkerFailed as exc:
            _log.error("worker_start_failed", reason=str(exc))
            return
        self._release(worker)

    async def _take(self) -> _Worker:
        while True:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive and worker.server.alive:  # its server's end is its own
                    return worker
                await self._retire(worker)
            if len(self._workers) + self._starting < self._slots:
                return await self._start()
            if self._changed.is_set():  # one event for every waiter: none is left behind
                self._changed = anyio.Event()
            await self._changed.wait()

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            return
        self._idle.append(worker)
        self._changed.set()

    async def _fork_server(self) -> ForkServer:
        async with self._server_lock:
            if self._server is None or not self._server.alive:
                self._server = await ForkServer.start()
            return self._server

    async def _start(self) -> _Worker:
        self._starting += 1
        try:
            try:
                return await self._start_one()
            except ForkServerGone:
                _log.warning("fork_server_restarted")  # the next one forks from a fresh server
                return await self._start_one()
        except OSError as exc:  # out of pipes, of processes, or the server died twice
            raise _WorkerFailed(str(exc)) from exc
        finally:
            self._starting -= 1
            self._changed.set()

    async def _start_one(self) -> _Worker:
        server = await self._fork_server()
        pipes = {name: os.pipe() for name in ("jobs", "results", "stdout", "stderr")}
        ours = {
            "jobs": pipes["jobs"][1],
            "results": pipes["results"][0],
            "stdout": pipes["stdout"][0],
            "stderr": pipes["stderr"][0],
        }
        flag_fd = os.memfd_create("headwater-attempt", os.MFD_CLOEXEC)
        os.ftruncate(flag_fd, 1)
        flag = mmap.mmap(flag_fd, 1)
        theirs = [pipes["jobs"][0], pipes["results"][1], pipes["stdout"][1], pipes["stderr"][1],
                  flag_fd]  # fmt: skip
        try:
            pid = await server.fork(self._spec, theirs)
        except BaseException:
            for fd in ours.values():
                os.close(fd)
            flag.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)  # the worker has its own copies: EOF comes when it dies
        for fd in ours.values():
            os.set_blocking(fd, False)
        worker = _Worker(server, pid, ours, flag)
        worker.watch(asyncio.get_running_loop())
        self._workers.add(worker)
        self._changed.set()
        try:
            with anyio.fail_after(_START_TIMEOUT):
                message = await worker.next_message()
        except TimeoutError:
            worker.killed_for = "start"
            await self._retire(worker)
            raise _WorkerFailed(
                f"a worker did not import the definitions within {_START_TIMEOUT:.0f}s"
            ) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._retire(worker)
            raise
        if message is None or message[0] != "ready":
            code = await worker.exit_status() if message is None else None
            worker.drain_output()
            tail = worker.output.end()
            await self._retire(worker)
            why = message[1] if message is not None else _death(code)
            raise _WorkerFailed(why + (f"\n{tail}" if tail and message is None else ""))
        worker.code_versions = message[1]
        _log.debug("worker_started", pid=worker.pid)
        return worker

    async def _retire(self, worker: _Worker) -> None:
        """Make sure the worker is gone (SIGKILL to its group), and forget it."""
        self._workers.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if worker.fds:
            worker.signal(signal.SIGKILL)
            await worker.exit_status()
            worker.close()
        self._changed.set()

    async def _close_all(self) -> None:
        """Idle workers are told to exit (end of their job pipe); whatever is left after a
        moment is killed."""
        self._closed = True
        workers = list(self._workers)
        for worker in workers:
            with contextlib.suppress(OSError):
                os.close(worker.fds.pop("jobs"))
        with anyio.move_on_after(_TERM_GRACE):
            for worker in workers:
                await worker.exit_status(wait=_TERM_GRACE)
        for worker in workers:
            await self._retire(worker)
        if self._server is not None:
            await self._server.aclose()

    # -- a run ----------------------------------------------------------------------------

    async def run(self, job: Job, limit: timedelta | None) -> Outcome:
        started = time.monotonic()

        def failed(error: str, stderr: str | None = None) -> Outcome:
            return Outcome(
                ok=False, duration_ms=(time.monotonic() - started) * 1000, error=error,
                stderr=stderr,
            )  # fmt: skip

        async with self._limiter:
            for _ in range(self._slots + 1):
                try:
                    worker = await self._take()
                except _WorkerFailed as exc:
                    return failed(f"the worker could not start: {exc}")
                expected = worker.code_versions.get(job.asset.key)
                if expected != job.code_version:
                    self._release(worker)
                    return failed(
                        "the definitions on disk have changed since the daemon loaded them: "
                        "reload the daemon (headwater reload) to run the new code"
                    )
                outcome = await self._run_on(worker, job, limit, failed)
                if outcome is not None:
                    return outcome
            return failed("every worker died before it could take the run")

    async def _run_on(
        self,
        worker: _Worker,
        job: Job,
        limit: timedelta | None,
        failed: Callable[..., Outcome],
    ) -> Outcome | None:
        """The run's outcome; None if the worker had died before the job reached it (the
        run goes to another worker)."""
        worker.job, worker.since = job, time.monotonic()
        worker.flag[0] = 0
        worker.output.begin(job.asset.key, job.partition, job.run_id)
        message = (job.asset.key, job.partition, job.run_id, job.now, job.inputs,
                   job.code_version, job.small, job.stored)  # fmt: skip
        try:
            try:
                await _send(worker.fds["jobs"], encode(message))
            except BrokenPipeError:
                worker.output.end()
                await self._retire(worker)
                return None
            with anyio.move_on_after(None if limit is None else limit.total_seconds()):
                reply = await worker.next_message()
                worker.drain_output()
                if reply is not None:
                    outcome: Outcome = reply[1]
                    worker.runs += 1
                    worker.job = None
                    tail = worker.output.end()
                    if outcome.error is not None and outcome.error.startswith("out of memory"):
                        await self._retire(worker)  # a fresh worker, not a fragmented heap
                    else:
                        self._release(worker)
                    return with_stderr(outcome, tail)
                code = await worker.exit_status()
                worker.drain_output()
                tail = worker.output.end()
                await self._retire(worker)
                return replace(failed(self._death(code, tail), tail), where=_crash_site(tail))
            assert limit is not None
            await self._stop(worker, "timeout")
            return failed(f"timed out after {format_duration(limit)}", worker.output.end())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(worker, "stopped", grace=0)
                worker.output.end()
            raise
        finally:
            worker.job = None

    async def _stop(self, worker: _Worker, why: str, grace: float = _TERM_GRACE) -> None:
        """Supersede the attempt (nothing it stores from now on is published), then SIGTERM
        the worker's group, SIGKILL after ``grace``."""
        worker.killed_for = why
        await anyio.to_thread.run_sync(self._supersede, worker)
        if grace:
            worker.signal(signal.SIGTERM)
            if await worker.exit_status(wait=grace) is None:
                worker.signal(signal.SIGKILL)
        worker.drain_output()
        await self._retire(worker)

    def _death(self, code: int | None, stderr: str | None) -> str:
        """Why a worker died. Under ``worker_memory`` (an address-space limit) a native
        library that cannot allocate may abort rather than raise — glibc exits 127 when it
        cannot make a thread — so its last words decide."""
        memory = self._spec.memory
        if memory is not None and stderr and _NATIVE_OUT_OF_MEMORY.search(stderr):
            return f"out of memory (limit {memory})"
        return _death(code)

    def _supersede(self, worker: _Worker) -> None:
        store = self._store
        publishing = (
            store.publishing(exclusive=True)
            if isinstance(store, FilesystemStore)
            else contextlib.nullcontext()
        )
        with publishing:
            worker.flag[0] = 1

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        workers = []
        for w in sorted(self._workers, key=lambda w: w.pid):
            entry: dict[str, Any] = {"pid": w.pid, "runs": w.runs}
            if w.job is not None:
                entry.update(
                    state="running", asset=w.job.asset.key, partition=w.job.partition,
                    run_id=w.job.run_id, running_s=round(now - w.since, 1),
                )  # fmt: skip
            else:
                entry["state"] = "idle" if w in self._idle else "starting"
            workers.append(entry)
        server = self._server
        forking = server.pid if server is not None and server.alive else None
        return {"executor": self.kind, "slots": self._slots, "workers": workers,
                "fork_server": forking}  # fmt: skip


_NATIVE_OUT_OF_MEMORY = re.compile(
    r"cannot allocate memory|std::bad_alloc|MemoryError|out of memory", re.IGNORECASE
)
_FRAME = re.compile(r'\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_NOT_USER = (
    str(Path(__file__).resolve().parents[2]),
    *{sysconfig.get_path(k) for k in ("stdlib", "purelib", "platlib")},
    "<",
)


def _crash_site(stderr: str | None) -> str | None:
    """``file:line`` of the innermost frame of the user's code in a crash's Python stack
    (faulthandler lists the most recent call first)."""
    for line in (stderr or "").splitlines():
        match = _FRAME.match(line)
        if match and not match["file"].startswith(_NOT_USER):
            return f"{match['file']}:{match['line']}"
    return None


def _spec(definitions: str, runner: Runner, state_dir: Path, memory: Size | None) -> WorkerSpec:
    state_dir = state_dir.absolute()  # a worker's working directory may differ
    store = runner.store
    default = isinstance(store, FilesystemStore) and store.root.absolute() == state_dir / "values"
    return WorkerSpec(
        definitions=definitions,
        source=runner.defs.source,
        modules=runner.defs.modules,
        store=None if default else store,
        values_root=state_dir / "values",
        private=runner.private,
        workers_lock=state_dir / WORKERS_LOCK,
        memory=memory,
    )


async def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await anyio.wait_writable(fd)
