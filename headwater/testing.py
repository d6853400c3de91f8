"""``Harness``: run definitions on a virtual clock against the real event log and executor.

    with Harness(defs, now="2026-01-05T00:00:00Z", state_dir=tmp_path) as h:
        h.observe("sales_raw", data_version="v1", partition="2026-01-04")
        tick = h.tick()

The engine runs on an asyncio loop in a background thread; every method blocks until the work
it started is finished, so tests read as a sequence of steps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from headwater._clock import VirtualClock, parse_instant
from headwater._durations import Duration, parse_duration, parse_retention
from headwater._events import Event
from headwater._loading import importable_target
from headwater._statedir import Ownership
from headwater.definitions import EXECUTORS, Definitions, valid_executor
from headwater.eventlog import EventLogReader
from headwater.execution import Engine, IOManager, NoValueError, TickResult
from headwater.execution.executors import ExecutorSettings
from headwater.planning import FreshnessStatus

__all__ = ["FreshnessStatus", "Harness", "TickResult"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Opened:
    portal: BlockingPortal
    engine: Engine


class Harness:
    """A virtual-clock test bench for :class:`~headwater.Definitions`.

    Functions run in threads of this process (fast, on the virtual clock) unless ``executor``
    names another executor: ``"processes"`` runs them in worker processes as the daemon does
    (the definitions must then be built at the top level of a module, which each worker
    imports). ``state_dir`` defaults to a new temporary directory (removed on close). A harness opened
    again on the same ``state_dir`` sees everything the earlier one recorded. A harness owns its
    state directory while open (a daemon or another harness there raises ``StateDirBusy``).
    """

    def __init__(
        self,
        defs: Definitions,
        now: str | datetime = "2026-01-01T00:00:00Z",
        state_dir: str | Path | None = None,
        *,
        store: IOManager | None = None,
        retention: Duration | None = None,
        executor: str | None = None,
    ) -> None:
        self.defs = defs
        self.clock = VirtualClock(parse_instant(now))
        self.retention = parse_retention(retention, what="Harness retention")
        """Prune events older than this after every tick (None: never, the default)."""
        self._stack = ExitStack()
        if state_dir is None:
            state_dir = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="headwater-"))
        self.state_dir = Path(state_dir)
        self._reader = EventLogReader(self.state_dir)
        try:
            self._stack.enter_context(Ownership.acquire(self.state_dir, "harness"))
            portal = self._stack.enter_context(start_blocking_portal(backend="asyncio"))
            engine = self._stack.enter_context(
                portal.wrap_async_context_manager(
                    Engine.open(
                        defs,
                        self.state_dir,
                        self.clock,
                        store=store,
                        executor=_executor_settings(defs, executor),
                    )
                )
            )
        except BaseException:
            self._stack.close()
            raise
        self._opened = _Opened(portal, engine)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._opened.portal.call(fn, *args)

    @property
    def engine(self) -> Engine:
        return self._opened.engine

    @property
    def now(self) -> datetime:
        return self.clock.now()

    # -- acting ---------------------------------------------------------------------------

    def observe(
        self,
        key: str,
        data_version: str | None = None,
        *,
        partition: str | None = None,
        value: Any = None,
        deleted: bool = False,
    ) -> bool:
        """Report a source's version (or its value, which is stored and fingerprinted)."""

        async def go() -> bool:
            return await self.engine.observe(
                key, data_version, partition=partition, value=value, deleted=deleted
            )

        return bool(self._call(go))

    def add_partitions(self, name: str, keys: Iterable[str]) -> list[str]:
        """Add keys to the dynamic partitions called ``name``."""
        keys = list(keys)

        async def go() -> list[str]:
            return await self.engine.add_partitions(name, keys)

        result: list[str] = self._call(go)
        return result

    def tick(self) -> TickResult:
        """Evaluate, run everything requested to completion, repeat until quiet (then prune,
        if the harness was given a ``retention``)."""
        result: TickResult = self._call(self.engine.tick)
        if self.retention is not None:
            cutoff = self.clock.now() - self.retention

            async def prune() -> None:
                await self.engine.prune(cutoff)

            self._call(prune)
        return result

    def advance(
        self,
        duration: Duration | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> TickResult:
        """Run what is due now, then move the clock, ticking at every instant in between where
        the clock makes work (cron ticks, retries, deadlines), and at the end."""
        delta = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
        if duration is not None:
            delta += parse_duration(duration, what="advance")
        if delta < timedelta(0):
            raise ValueError("advance() cannot move the clock backwards")
        target = self.clock.now() + delta
        result = self.tick()  # what is due now runs now, not at the end of the step
        while (wake := self.engine.next_wakeup()) is not None and wake <= target:
            self.clock.set(max(wake, self.clock.now()))
            result.merge(self.tick())
        self.clock.set(target)
        result.merge(self.tick())
        return result

    def step_clock(self, to: str | datetime) -> TickResult:
        """Step the wall clock to ``to``, forwards or backwards, as an NTP step or a resume from
        suspend does, and tick as the daemon does within seconds of it: cron ticks skipped over
        are caught up once, a tick already handled never runs again."""
        self.clock.step(parse_instant(to))
        return self.tick()

    def materialize(
        self,
        selection: str | Iterable[str],
        *,
        partition: str | Iterable[str] | None = None,
        force: bool = False,
    ) -> TickResult:
        """A manual request: run what is stale, missing or failed (everything with ``force``)."""
        keys = [selection] if isinstance(selection, str) else list(selection)
        parts = (
            None
            if partition is None
            else [partition]
            if isinstance(partition, str)
            else list(partition)
        )
        nodes = self.engine.resolve(keys, parts)

        async def go() -> TickResult:
            return await self.engine.materialize(nodes, force=force)

        result: TickResult = self._call(go)
        return result

    def backfill(self, asset: str, start: str, end: str, *, force: bool = False) -> TickResult:
        """Materialize the partitions of ``asset`` from ``start`` to ``end`` (both included),
        after the upstream partitions they need: only what is missing, stale or failed unless
        ``force``; failures do not stop the rest."""
        nodes = self._call(lambda: self.engine.backfill(asset, start, end))

        async def go() -> TickResult:
            return await self.engine.materialize(nodes, force=force)

        result: TickResult = self._call(go)
        return result

    # -- reading --------------------------------------------------------------------------

    def freshness(self, key: str, partition: str | None = None) -> FreshnessStatus:
        """``.late`` and ``.lag`` (plus ``.age``, ``.deadline``, ``.reasons``) against the SLA."""
        status: FreshnessStatus | None = self._call(lambda: self.engine.freshness(key, partition))
        if status is None:
            raise ValueError(f"{key!r} declares no freshness SLA")
        return status

    def state(self, key: str, partition: str | None = None) -> str:
        """``"fresh"``, ``"stale"``, ``"missing"`` or ``"failed"``."""
        return str(self._call(lambda: self.engine.status(key, partition).state))

    def why(self, key: str, partition: str | None = None) -> list[str]:
        """Human-readable reasons: the state first, then what causes it."""
        result: list[str] = self._call(lambda: self.engine.why(key, partition))
        return result

    def value(self, key: str, partition: str | None = None) -> Any:
        """The stored value of an asset partition (or a source's loaded value): the version
        the log records, or NoValueError."""
        self._call(lambda: self.engine.evaluator().check_node(key, partition))
        version = self.engine.state.version((key, partition))
        if version is None and key in self.engine.defs.assets:  # any file there is not it
            label = key if partition is None else f"{key}[{partition}]"
            raise NoValueError(f"{label} has no current value: it is {self.state(key, partition)}")
        return self.engine.runner.load(key, partition, version)

    def events(
        self, kind: str | None = None, asset: str | None = None, partition: str | None = None
    ) -> list[Event]:
        """Events from the log, oldest first."""
        return self._reader.events(kind=kind, asset=asset, partition=partition)


def _executor_settings(defs: Definitions, kind: str | None) -> ExecutorSettings:
    if kind is None or kind == "threads":
        return ExecutorSettings()
    if not valid_executor(kind):
        raise ValueError(f"Harness executor={kind!r}: use one of {', '.join(EXECUTORS)}")
    return ExecutorSettings(kind=kind, definitions=importable_target(defs))
