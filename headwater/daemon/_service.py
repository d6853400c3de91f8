"""``headwater run``: the long-running service.

One root task group. Start-up: load definitions -> open the event log (abandoned runs marked,
leftover temp files removed) -> arm the sensors (events queue from here on) -> scan every
source once -> READY=1 -> the loop: tick, then wait for a sensor or the clock to poke it.
SIGHUP loads the definitions again (a broken file keeps the old ones); SIGTERM/SIGINT stop the
sensors, let the current tick finish within the grace period, record ``daemon_stopped``
(shielded from cancellation) and return.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus

from headwater import __version__
from headwater._clock import SystemClock
from headwater._events import EventKind
from headwater._loading import LoadError, load_definitions
from headwater.daemon._notify import Notifier
from headwater.definitions import Definitions, FileSource, ObjectSource
from headwater.execution import Engine, TickResult
from headwater.sensors.clock import ClockSensor
from headwater.sensors.files import FileSensor
from headwater.sensors.objects import ObjectSensor

__all__ = ["Daemon", "DaemonSettings"]

_log = structlog.get_logger("headwater.daemon")


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    definitions: str
    state_dir: Path
    grace: float = 30.0
    """Seconds running materializations may take to finish after SIGTERM."""
    rescan_interval: float = 300.0
    """Seconds between reconciliation rescans of file sources."""
    settle: float = 0.5
    """Seconds a created-only file must stand still before it counts."""


class Daemon:
    def __init__(self, settings: DaemonSettings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self._wake = anyio.Event()
        self._end = anyio.Event()
        self._stopping = False
        self._next_defs: Definitions | None = None
        self._runs = 0

    def poke(self) -> None:
        """Something changed: run a tick soon."""
        self._wake.set()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT. Raises LoadError if the definitions do not load."""
        defs = await anyio.to_thread.run_sync(load_definitions, self.settings.definitions)
        async with anyio.create_task_group() as root:
            await root.start(self._signals)
            await root.start(self._watchdog)
            first = True
            while True:
                await self._serve(defs, first=first)
                first = False
                if self._stopping or self._next_defs is None:
                    break
                defs, self._next_defs = self._next_defs, None
            root.cancel_scope.cancel()
        self.notifier.close()

    async def _serve(self, defs: Definitions, *, first: bool) -> None:
        self._end = anyio.Event()
        settings = self.settings
        async with Engine.open(defs, settings.state_dir, SystemClock()) as engine:
            if first:
                payload = {
                    "pid": os.getpid(),
                    "definitions": settings.definitions,
                    "version": __version__,
                }
                await engine.append([engine.event(EventKind.DAEMON_STARTED, payload=payload)])
            clock = ClockSensor(engine, self.poke)
            files = FileSensor(
                engine, self.poke, settle=settings.settle, rescan_interval=settings.rescan_interval
            )
            objects = ObjectSensor(engine, self.poke)
            async with anyio.create_task_group() as tg:
                sensors = anyio.CancelScope()

                async def run_sensors(*, task_status: TaskStatus[None]) -> None:
                    with sensors:
                        async with anyio.create_task_group() as stg:
                            if files.sources:
                                await stg.start(files.run)
                            if objects.sources:
                                await stg.start(objects.run)
                            await stg.start(clock.run)
                            task_status.started()

                await tg.start(run_sensors)
                await files.scan()
                await objects.scan()
                watching = len(
                    [s for s in defs.sources.values() if isinstance(s, FileSource | ObjectSource)]
                )
                self.notifier.ready(
                    f"serving {len(defs.assets)} assets, watching {watching} sources"
                )
                _log.info(
                    "ready",
                    assets=len(defs.assets),
                    sources=len(defs.sources),
                    state_dir=str(settings.state_dir),
                )
                tg.start_soon(self._loop, engine, clock)
                await self._end.wait()
                sensors.cancel()
                with anyio.move_on_after(settings.grace) as grace:
                    await engine.idle()
                if grace.cancelled_caught:
                    _log.warning("grace_period_over", grace_s=settings.grace)
                tg.cancel_scope.cancel()
            if self._stopping:
                with anyio.move_on_after(5, shield=True):
                    event = engine.event(EventKind.DAEMON_STOPPED, payload={"pid": os.getpid()})
                    await engine.append([event], check_freshness=False)
                _log.info("stopped")

    async def _loop(self, engine: Engine, clock: ClockSensor) -> None:
        """One tick per burst of pokes; ticks overlap, so a long run holds back nothing else."""
        async with anyio.create_task_group() as ticks:
            while not self._end.is_set():
                self._wake = anyio.Event()
                ticks.start_soon(self._tick, engine, clock)
                await self._wake.wait()

    async def _tick(self, engine: Engine, clock: ClockSensor) -> None:
        result = await engine.tick()
        clock.rearm()
        self._report(result)

    def _report(self, result: TickResult) -> None:
        self._runs += len(result.materialized)
        if result.materialized or result.failed:
            status = f"{self._runs} materializations since start; last tick: "
            status += f"{len(result.materialized)} materialized, {len(result.failed)} failed"
            self.notifier.status(status)

    async def _signals(self, *, task_status: TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
            task_status.started()
            async for signum in received:
                if signum == signal.SIGHUP:
                    await self._reload()
                else:
                    _log.info("stopping", signal=signal.Signals(signum).name)
                    self.notifier.stopping()
                    self._stopping = True
                    self._end.set()
                    self._wake.set()

    async def _reload(self) -> None:
        self.notifier.reloading()
        _log.info("reloading", definitions=self.settings.definitions)
        try:
            defs = await anyio.to_thread.run_sync(load_definitions, self.settings.definitions)
        except LoadError as exc:
            _log.error("reload_failed", reason=str(exc))
            self.notifier.ready(f"reload failed, serving the previous definitions: {exc}")
            return
        self._next_defs = defs
        self._end.set()
        self._wake.set()

    async def _watchdog(self, *, task_status: TaskStatus[None]) -> None:
        """Ping systemd's watchdog from the loop itself: a loop that hangs stops pinging."""
        task_status.started()
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)


def run_daemon(settings: DaemonSettings) -> None:
    """Run in the foreground until SIGTERM/SIGINT (blocking)."""
    anyio.run(Daemon(settings).run, backend="asyncio")
