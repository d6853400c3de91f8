"""Functions in threads of the daemon's process: the lowest latency, no isolation.

A thread cannot be killed: a run past its timeout fails, its thread is left behind (and shown
by ``health`` until it ends), and whatever it stores afterwards is discarded.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import anyio

from headwater._durations import format_duration
from headwater.execution._publishing import ThreadGuard, current_guard
from headwater.execution._runner import Job, Outcome, Runner
from headwater.execution.executors._handoff import Handoff

__all__ = ["ThreadExecutor"]


class ThreadExecutor:
    kind = "threads"

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._threads = Handoff("headwater run")
        """Never more calls at once than the engine's slots, plus those left behind (which
        do not hold a slot: a spinning function cannot stop every other run)."""
        self._left_behind: dict[str, tuple[str, str | None, float]] = {}
        """run id -> (asset, partition, monotonic start) of timed-out functions still going."""
        self._lock = threading.Lock()

    async def run(self, job: Job, limit: timedelta | None) -> Outcome:
        guard = ThreadGuard()
        started = time.monotonic()

        finished = False

        def call() -> Outcome:
            nonlocal finished
            token = current_guard.set(guard)
            try:
                return self.runner.run(job)
            finally:
                current_guard.reset(token)
                with self._lock:
                    finished = True
                    self._left_behind.pop(job.run_id, None)

        def leave_behind() -> None:
            with self._lock:
                if not finished:
                    self._left_behind[job.run_id] = (job.asset.key, job.partition, started)
            # Waits at most for a rename under way in that thread: microseconds.
            guard.supersede()

        try:
            if limit is None:  # no cancel scope to enter and leave: ~5 µs of a trivial run
                return await self._threads.run(call)
            with anyio.move_on_after(limit.total_seconds()):
                return await self._threads.run(call)
        except anyio.get_cancelled_exc_class():
            leave_behind()
            raise
        leave_behind()
        assert limit is not None
        return Outcome(
            ok=False,
            duration_ms=(time.monotonic() - started) * 1000,
            error=f"timed out after {format_duration(limit)}",
        )

    async def warm(self) -> None:
        pass  # threads need no start

    def close(self) -> None:
        self._threads.close()

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            behind = [
                {"asset": a, "partition": p, "run_id": r, "running_s": round(now - t, 1)}
                for r, (a, p, t) in self._left_behind.items()
            ]
        return {"executor": self.kind, "threads_left_behind": behind}
