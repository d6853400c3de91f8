"""The clock sensor: wake the daemon at the exact instant of the engine's next timer.

Cron ticks, retry delays, SLA deadlines and new time windows live in the engine's timer heap;
this task sleeps until the earliest one and is re-armed after each tick and whenever a timer
is set before the earliest (a deadline an observation sets during a long tick). The wall
clock is read again at least every ``WALL_CHECK`` seconds, so that after a suspend/resume or
a clock step due cron ticks, retries and SLA deadlines fire within seconds (a tick skipped
over is caught up once; one already handled never repeats).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from headwater.execution import Engine

__all__ = ["WALL_CHECK", "ClockSensor"]

WALL_CHECK = 5.0
"""Seconds at most between two looks at the wall clock while waiting for the next timer."""


class ClockSensor:
    def __init__(self, engine: Engine, on_change: Callable[[], None]) -> None:
        self.engine = engine
        self.on_change = on_change
        self._rearm = anyio.Event()

    def rearm(self) -> None:
        """The timers may have changed: look at the next one again."""
        self._rearm.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.engine.on_earlier_timer(self.rearm)
        task_status.started()
        while True:
            self._rearm = anyio.Event()
            wake = self.engine.next_wakeup()
            delay = math.inf
            if wake is not None:
                delay = max(0.0, (wake - datetime.now(UTC)).total_seconds())
            # The sleep runs on the monotonic clock, which a suspend/resume or an NTP step of
            # the wall clock does not move: look at the wall clock again every few seconds.
            with anyio.move_on_after(min(delay, WALL_CHECK)) as scope:
                await self._rearm.wait()
            if not scope.cancelled_caught:
                continue  # re-armed: the timers changed
            if wake is not None and datetime.now(UTC) >= wake:
                self.on_change()
                await self._rearm.wait()  # until the tick has taken the timer
