"""A worker process: import the definitions once, then run one job at a time for the daemon.

Started by :mod:`._processes` from a forkserver that has pandas and pyarrow imported already,
so a worker is ready in milliseconds plus the time its definitions take to import. Everything
a function does to its process (working directory, logging, signal handlers, threads,
globals, a crash) stays here; the daemon only sees messages, output lines and an exit status.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import mmap
import os
import re
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from headwater._sizes import Size
from headwater.execution._publishing import Superseded, current_guard
from headwater.execution._runner import Job, Outcome, Runner, plain_outcome
from headwater.execution._store import FilesystemStore, IOManager
from headwater.execution.executors._frames import encode, read_frame, write_all

__all__ = ["WorkerSpec", "worker_main"]

_OUT_OF_MEMORY = re.compile(r"(^|[\s(])\w*MemoryError\b")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    definitions: str
    source: bytes | None
    """The definitions file's text as the daemon loaded it."""
    modules: dict[str, tuple[str, bytes]]
    """The user's modules as the daemon loaded them (see ``Definitions.modules``)."""
    store: IOManager | None
    """None: the default store under ``values_root``."""
    values_root: Path
    private: tuple[str, ...]
    workers_lock: Path
    memory: Size | None


class _ProcessGuard:
    """The daemon sets ``flag[0]`` while holding the value store's publishing lock
    exclusively; this process reads it while holding that lock shared: after the daemon has
    set it, no value of this attempt is renamed into place."""

    def __init__(self, flag: mmap.mmap) -> None:
        self._flag = flag

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        if self._flag[0]:
            raise Superseded
        yield


class _PipeLogger:
    """structlog's last stop in a worker: each event goes to the daemon as a message, where it
    becomes a line of the daemon's log with the run's fields."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def msg(self, *rendered: Any, **event: Any) -> None:
        if rendered:  # a function configured its own renderer: the result is text
            write_all(self._fd, encode(("line", " ".join(str(r) for r in rendered))))
            return
        try:
            data = encode(("log", event))
        except Exception:  # a value that does not pickle is shown as its repr
            data = encode(("log", {k: v if _plain(v) else repr(v) for k, v in event.items()}))
        write_all(self._fd, data)

    debug = info = warning = warn = error = critical = exception = fatal = failure = msg


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _own_output(out: int, err: int) -> None:
    """stdout and stderr become the daemon's pipes, line-buffered, so what a function prints
    reaches the daemon as it prints it, and nothing is lost in a buffer if it crashes."""
    for target, fd in ((1, out), (2, err)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout, sys.stderr = (
        open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        for fd in (1, 2)
    )
    faulthandler.enable(file=2, all_threads=True)


def _configure_logging(fd: int) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            lambda _logger, _name, event: event,
        ],
        logger_factory=lambda *_args: _PipeLogger(fd),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )


def _limit_memory(memory: Size | None) -> None:
    """``worker_memory`` as a limit on the worker's address space: an allocation past it fails
    (MemoryError) instead of waking the kernel's OOM killer."""
    if memory is None:
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory.bytes, memory.bytes))
    except (OSError, ValueError) as exc:
        raise _Unstartable(
            f"worker_memory = {memory}: the limit cannot be set ({exc}); a service manager's "
            "system call filter that denies @resources would do this"
        ) from None


class _Unstartable(Exception):
    """The worker cannot serve: the daemon fails the run with this message."""


def _hold_workers_lock(path: Path) -> None:
    """Held (shared) until this process dies: a new owner of the state directory waits for
    every worker of the previous one to be gone before it starts."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_SH)  # a POSIX lock: not inherited by what the worker forks


def worker_main(
    spec: WorkerSpec, jobs_fd: int, results_fd: int, out_fd: int, err_fd: int, flag_fd: int
) -> None:
    """Run in a child of the fork server, in its own process group, dying with the server."""
    _own_output(out_fd, err_fd)
    flag = mmap.mmap(flag_fd, 1)
    os.close(flag_fd)
    _hold_workers_lock(spec.workers_lock)
    _configure_logging(results_fd)
    from headwater._loading import LoadError, load_definitions
    from headwater._usercode import mark_worker

    mark_worker()

    try:
        _limit_memory(spec.memory)
        defs = load_definitions(spec.definitions, spec.source, spec.modules)
        defs.compute_code_versions()
    except (_Unstartable, LoadError, MemoryError) as exc:
        write_all(results_fd, encode(("failed", str(exc) or type(exc).__name__)))
        return
    versions = {key: defs.code_version(key) for key in defs.assets}
    write_all(results_fd, encode(("ready", versions)))
    store = spec.store or FilesystemStore(spec.values_root)
    runner = Runner(defs, store, spec.private)
    home = Path.cwd()
    guard = _ProcessGuard(flag)
    while (message := read_frame(jobs_fd)) is not None:
        key, partition, run_id, now, inputs, code, small, stored = message
        job = Job(defs.assets[key], partition, run_id, now, inputs, code, small, stored)
        token = current_guard.set(guard)
        try:
            outcome = runner.run(job)
        finally:
            current_guard.reset(token)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        if Path.cwd() != home:  # the next function starts where every function starts
            os.chdir(home)
        if outcome.error is not None and _OUT_OF_MEMORY.search(outcome.error):
            # MemoryError, pyarrow's ArrowMemoryError, numpy's _ArrayMemoryError: the details
            # stay in the traceback
            limit = f" (limit {spec.memory})" if spec.memory is not None else ""
            outcome = replace(outcome, error=f"out of memory{limit}")
        write_all(results_fd, _encode_outcome(outcome))


def _encode_outcome(outcome: Outcome) -> bytes:
    try:
        return encode(("done", outcome))
    except Exception:  # not picklable, or nested past the recursion limit
        return encode(("done", plain_outcome(outcome)))
