"""The clock sensor wakes the daemon at the instant of the engine's earliest timer, also one
set while it sleeps (a deadline an observation sets during a long tick), not only after a
tick ends or at its next look at the wall clock (``WALL_CHECK`` seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import headwater as hw
from headwater._clock import SystemClock
from headwater.execution import Engine
from headwater.execution._timers import Timers
from headwater.sensors.clock import WALL_CHECK, ClockSensor


def test_setting_a_timer_before_the_earliest_says_so() -> None:
    timers, told = Timers(), []
    timers.on_earlier = lambda: told.append(True)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    timers.schedule(now + timedelta(hours=1), "freshness", "a")
    timers.schedule(now + timedelta(hours=2), "freshness", "b")  # later: nothing to say
    timers.schedule(now + timedelta(minutes=1), "cron", "c")
    assert told == [True, True]


@pytest.mark.asyncio
async def test_a_timer_set_while_the_sensor_sleeps_wakes_it_on_time(tmp_path: Path) -> None:
    defs = hw.Definitions([hw.source("s")])
    woke = anyio.Event()
    async with Engine.open(defs, tmp_path, SystemClock()) as engine:
        sensor = ClockSensor(engine, woke.set)
        async with anyio.create_task_group() as tg:
            await tg.start(sensor.run)
            await anyio.wait_all_tasks_blocked()  # asleep until its next look (no timer)
            soon = datetime.now(UTC) + timedelta(milliseconds=50)
            engine.clockwork.timers.schedule(soon, "freshness", ("s", None))
            with anyio.fail_after(WALL_CHECK / 2):
                await woke.wait()
            assert datetime.now(UTC) >= soon
            tg.cancel_scope.cancel()
