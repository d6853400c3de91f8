"""Where asset functions run. The run cycle hands each run to an :class:`Executor` and records
what comes back; the planner and the event log never know which executor it was.

- ``processes`` (the default): warm worker processes (:mod:`._processes`); a function cannot
  take the daemon down, hang it or change it.
- ``threads``: threads of the daemon's own process (:mod:`._threads`); the lowest latency, no
  isolation.
- ``dask://HOST:PORT``: tasks of a Dask distributed cluster (:mod:`._dask`, the ``dask`` extra).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from headwater._sizes import Size
from headwater.definitions import Definitions
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution.executors._processes import ProcessPool
from headwater.execution.executors._threads import ThreadExecutor

__all__ = ["Executor", "ExecutorSettings", "check_reachable", "open_executor"]


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    kind: str = "threads"
    definitions: str | None = None
    """What a worker imports: a definitions file (absolute) or ``module:attribute``."""
    timeout: timedelta | None = None
    """For assets without ``timeout=`` (``[tool.headwater] timeout``)."""
    worker_memory: Size | None = None

    def for_definitions(self, defs: Definitions) -> ExecutorSettings:
        """``Definitions(executor=)`` wins over the configuration."""
        return replace(self, kind=defs.executor or self.kind)


class Executor(Protocol):
    """Runs one job per call; the run cycle bounds how many calls are in flight."""

    kind: str

    async def run(self, job: Job, limit: timedelta | None) -> Outcome:
        """Run ``job`` to its outcome. A failure of the function, or of whatever runs it, is
        an outcome with ``ok=False``; only cancellation raises (the attempt is then stopped
        and may no longer publish)."""
        ...

    async def warm(self) -> None:
        """Get ready for the first runs now (start workers) rather than when they come."""
        ...

    def health(self) -> dict[str, Any]:
        """What ``headwater health`` shows of it: workers, runs left behind."""
        ...


async def check_reachable(settings: ExecutorSettings) -> None:
    """Raise ConfigError, saying why, if the executor of ``settings`` cannot be used now (a
    Dask scheduler that does not answer): a reload to it would end the daemon, which opens
    it only once the previous definitions have stopped."""
    if settings.kind.startswith("dask://"):
        from headwater.execution.executors._dask import probe

        await probe(settings.kind[len("dask://") :])


@asynccontextmanager
async def open_executor(
    settings: ExecutorSettings, runner: Runner, slots: int, state_dir: Path
) -> AsyncIterator[Executor]:
    """The executor for ``settings``; on exit, nothing it started is left running (worker
    processes are killed; a thread cannot be, and is reported instead)."""
    if settings.kind.startswith("dask://"):
        from headwater.execution.executors._dask import DaskExecutor

        address = settings.kind[len("dask://") :]
        async with DaskExecutor.open(address, runner, state_dir, settings.definitions) as dask:
            yield dask
    elif settings.kind == "processes":
        if settings.definitions is None:
            raise ValueError("executor 'processes' needs importable definitions")
        async with ProcessPool.open(
            settings.definitions, runner, slots, state_dir, settings.worker_memory
        ) as pool:
            yield pool
    else:
        threads = ThreadExecutor(runner)
        try:
            yield threads
        finally:
            threads.close()
