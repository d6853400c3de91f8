"""The clock sensor: wake the daemon at the exact instant of the engine's next timer.

Cron ticks, retry delays, SLA deadlines and new time windows live in the engine's timer heap;
this task sleeps until the earliest one (no fixed polling interval) and is re-armed after each
tick, since a tick can add earlier timers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from headwater.execution import Engine

__all__ = ["ClockSensor"]


class ClockSensor:
    def __init__(self, engine: Engine, on_change: Callable[[], None]) -> None:
        self.engine = engine
        self.on_change = on_change
        self._rearm = anyio.Event()

    def rearm(self) -> None:
        """The timers may have changed: look at the next one again."""
        self._rearm.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._rearm = anyio.Event()
            wake = self.engine.next_wakeup()
            delay = math.inf
            if wake is not None:
                delay = max(0.0, (wake - datetime.now(UTC)).total_seconds())
            with anyio.move_on_after(delay) as scope:
                await self._rearm.wait()
            if scope.cancelled_caught:
                self.on_change()
                await self._rearm.wait()  # until the tick has taken the timer
