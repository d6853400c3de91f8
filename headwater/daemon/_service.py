"""``headwater run``: the long-running service, and the one owner of its state directory.

One root task group. Start-up: take the state directory's lock (another daemon there: exit 3;
a CLI command or Harness there: wait for it) -> load the definitions -> listen on the control
socket -> open the event log (abandoned runs marked, leftover temp files removed) -> arm the
sensors (events queue from here on) -> scan every source once -> READY=1 -> the loop: tick,
then wait for a sensor, the clock or a request to poke it.

SIGHUP (or ``headwater reload``) loads the definitions again; a broken file keeps the old ones.
SIGTERM/SIGINT (or ``headwater stop``) stop the sensors, start nothing new, let running
functions finish within the grace period, record ``daemon_stopped`` (shielded) and return; a
second signal skips the rest of the grace period.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from headwater import __version__
from headwater._clock import SystemClock
from headwater._config import ConfigError
from headwater._errors import HeadwaterError, StateDirError
from headwater._events import EventKind, format_timestamp
from headwater._loading import LoadError, absolute_target, source_digest
from headwater._statedir import Ownership, StateDirBusy, control_socket_path
from headwater._storage import StorageFailure, free_bytes
from headwater.daemon._api import ControlServer, Unavailable
from headwater.daemon._notify import Notifier
from headwater.daemon._printed import load_logged, printed_as_log
from headwater.daemon._reload import import_in_child
from headwater.definitions import Definitions, FileSource, ObjectSource
from headwater.eventlog import DB_NAME, EventLogReader
from headwater.execution import Engine, TickResult
from headwater.execution.executors import ExecutorSettings, check_reachable
from headwater.sensors.clock import ClockSensor
from headwater.sensors.files import FileSensor
from headwater.sensors.objects import ObjectSensor

if TYPE_CHECKING:  # imported when used: only a daemon with --http or OpenLineage pays for them
    from headwater.daemon._http import HttpAddress, HttpServer
    from headwater.daemon._openlineage import LineageSettings, OpenLineageEmitter

__all__ = ["Daemon", "DaemonSettings", "run_daemon"]

_log = structlog.get_logger("headwater.daemon")
_OWNER_POLL = 0.2
"""Seconds between attempts to take a state directory a CLI command is using."""
_PRUNE_EVERY = timedelta(hours=1)
_RELOAD_ANSWER = 5.0
"""Seconds a reload request waits for the new definitions to take over before answering."""
_GUARD_EVERY = 5.0
"""Seconds between checks that the state directory is still the one this daemon locked."""
_FIRST_RETRY, _LAST_RETRY = 1.0, 30.0
"""Seconds between attempts to write a state directory that refuses writes (doubling)."""


_THREADS = ExecutorSettings()


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
    retention: timedelta | None = timedelta(days=30)
    """How long the log keeps events (None: forever)."""
    executor: ExecutorSettings = _THREADS
    """From the configuration at start (``headwater run`` resolves it; threads if not given);
    ``Definitions(executor=)`` wins, also on reload."""
    http: HttpAddress | None = None
    """Where to serve the read-only API, ``/metrics`` and the web page (None: nowhere)."""
    openlineage: LineageSettings | None = None
    """Where to send OpenLineage run events (None: nowhere)."""

    def absolute(self) -> DaemonSettings:
        """Paths resolved once at start: a function that changes the working directory
        cannot move the state directory or the definitions under the daemon."""
        target = absolute_target(self.definitions)
        return replace(
            self,
            definitions=target,
            state_dir=self.state_dir.resolve(),
            executor=replace(self.executor, definitions=target),
        )


_SUPERSEDED = "superseded by a newer reload"


class Daemon:
    def __init__(self, settings: DaemonSettings, notifier: Notifier | None = None) -> None:
        self.settings = settings.absolute()
        self.state_dir = self.settings.state_dir
        self.notifier = notifier or Notifier()
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._phase = "starting"
        self._wake = anyio.Event()
        self._end = anyio.Event()
        self._stopping = False
        self._stop_now = anyio.Event()
        self._next_defs: Definitions | None = None
        self._reload_asked = False
        self._hup_queued = False
        self._checking: anyio.CancelScope | None = None
        """The reload's child import under way (a newer reload gives it up)."""
        """A SIGHUP's reload waits for the one under way: later ones need no other."""
        """A SIGHUP came while no engine served (starting, or a reload under way)."""
        self._reloaded = anyio.Event()
        self._carried: list[Callable[[Engine | None], None]] = []
        """What requests under way at a reload hand to the next engine."""
        self._engine: Engine | None = None
        self._objects: ObjectSensor | None = None
        """The object sensor serving now (what it cannot list, ``health`` says)."""
        self._engine_changed = anyio.Event()
        self._work: TaskGroup | None = None
        self._root: TaskGroup | None = None
        self._reload_lock = anyio.Lock()
        self._reload_error: str | None = None
        """What the latest reload decided (None: it loaded), for one it superseded."""
        self._api: ControlServer | None = None
        self._runs = 0
        self._serving = "starting"
        self._ownership: Ownership | None = None
        self._loading: anyio.CancelScope | None = None
        self._stop_requested = anyio.Event()
        self._fatal: StateDirError | None = None
        self._storage_trouble = anyio.Event()
        self._overdue_told: set[str] = set()
        self._http: HttpServer | None = None
        self._lineage: OpenLineageEmitter | None = None

    # -- what the control API asks of the daemon ------------------------------------------

    @property
    def grace(self) -> float:
        return self.settings.grace

    @property
    def retention(self) -> timedelta | None:
        return self.settings.retention

    async def current_engine(self) -> Engine:
        while True:
            if self._stopping:
                raise Unavailable("the daemon is stopping")
            if self._engine is not None:
                return self._engine
            await self._engine_changed.wait()

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._work is None:
            raise Unavailable("the daemon is not serving")
        self._work.start_soon(fn)

    def after_reload(self, fn: Callable[[Engine | None], None]) -> None:
        if self._stopping:
            fn(None)
        else:
            self._carried.append(fn)

    def _carry_on(self, engine: Engine | None) -> None:
        """What requests under way at a reload left to the next engine (None: there is none)."""
        carried, self._carried = self._carried, []
        for fn in carried:
            fn(engine)

    def poke(self) -> None:
        """Something changed: run a tick soon."""
        self._wake.set()

    async def _reload_for_signal(self) -> None:
        self._supersede_check()
        async with self._reload_lock:
            self._hup_queued = False  # a SIGHUP from now on may see a newer file
            self._reload_error = await self._reload()

    async def reload(self) -> tuple[str | None, bool]:
        """Load the definitions again; keep the old ones if the new ones do not load. Returns
        the error, if any, and whether the new definitions serve already (they take over once
        what is running has finished)."""
        self._supersede_check()
        async with self._reload_lock:
            error = self._reload_error = await self._reload()
        for _ in range(100):  # each newer one queued on the lock decides (or is superseded)
            if error != _SUPERSEDED:
                break
            # Not this file's fault: the newer reload loads the file as it is now, and its
            # outcome is this one's too (a deploy hook must not roll back a file that loads).
            async with self._reload_lock:  # held by the newer one until it is decided
                error = self._reload_error
        if error is not None:
            return error, False
        # Waited for outside the lock: a newer reload meanwhile replaces these definitions
        # before they take over, rather than after (they would run what they changed).
        reloaded = self._reloaded
        with anyio.move_on_after(_RELOAD_ANSWER):  # the new definitions take over once the
            await reloaded.wait()  # running functions finish; say so, do not block
        return None, reloaded.is_set()

    def _supersede_check(self) -> None:
        """A newer reload asks for the file as it is now: the child still importing an older
        one (which may never end) is given up, so the newer one does not wait behind it."""
        if self._checking is not None:
            self._checking.cancel()

    async def _reload(self) -> str | None:
        self.notifier.reloading()
        self._phase = "reloading"
        _log.info("reloading", definitions=self.settings.definitions)
        try:
            check = self._checking = anyio.CancelScope()
            try:
                with check:
                    await import_in_child(self.settings.definitions)
            finally:
                self._checking = None
            if check.cancelled_caught:
                _log.info("reload_superseded", reason="a newer reload asked meanwhile")
                return _SUPERSEDED
            defs = await anyio.to_thread.run_sync(load_logged, self.settings.definitions)
            # Opened only once the previous definitions stopped: unusable, the daemon ended.
            await check_reachable(self.settings.executor.for_definitions(defs))
        except (LoadError, ConfigError) as exc:
            _log.error("reload_failed", reason=str(exc))
            self._phase = "serving"
            self.notifier.ready(f"reload failed, serving the previous definitions: {exc}")
            if (engine := self._engine) is not None:
                payload = {"definitions": self.settings.definitions, "reason": str(exc)}
                with contextlib.suppress(StorageFailure):
                    await engine.append([engine.event(EventKind.RELOAD_FAILED, payload=payload)])
            return str(exc)
        if self._stopping:
            return "the daemon is stopping"
        replaced = self._next_defs is not None and not self._reloaded.is_set()
        if not replaced:
            self._reloaded = anyio.Event()  # else: these replace definitions still waiting
        _log.info("reload_loaded", assets=len(defs.assets), replaces_waiting=replaced)
        self._next_defs = defs
        self._end.set()
        self._wake.set()
        return None

    def stop(self, reason: str, *, again_now: bool = True) -> None:
        """Start nothing new, let running functions finish within the grace period, exit.
        Asked a second time (``again_now``, as a second SIGTERM): stop at once."""
        if self._stopping and not again_now:  # `headwater stop` retried, or from two places
            _log.info("stop_repeated", reason=reason, note="the grace period stands")
            return
        if self._stopping:
            _log.warning("stopping_now", reason=reason)
            self._stop_now.set()
            return
        _log.info("stopping", reason=reason)
        self.notifier.stopping()
        self._phase = "stopping"
        self._stopping = True
        self._stop_requested.set()
        if self._loading is not None:
            self._loading.cancel()
        if self._engine is not None:
            self._engine.stop_starting()
        self._end.set()
        self._wake.set()
        self._engine_changed.set()  # requests waiting for an engine learn that none comes
        self._carry_on(None)

    async def health(self) -> dict[str, Any]:
        engine = self._engine
        log = EventLogReader(self.state_dir)

        def log_facts() -> tuple[int, str | None]:
            size = sum(
                (self.state_dir / f"{DB_NAME}{suffix}").stat().st_size
                for suffix in ("", "-wal")
                if (self.state_dir / f"{DB_NAME}{suffix}").exists()
            )
            oldest = log.oldest()
            return size, None if oldest is None else format_timestamp(oldest)

        log_error: str | None = None
        try:
            size, oldest = await anyio.to_thread.run_sync(log_facts)
        except (OSError, HeadwaterError) as exc:  # the daemon answers, whatever the log does
            size, oldest, log_error = 0, None, str(exc)
        runs = [] if engine is None else engine.in_flight()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self._phase,
            "started_at": format_timestamp(self.started_at),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "degraded": engine is not None and engine.degraded is not None,
            "degraded_reason": None
            if engine is None or engine.degraded is None
            else f"cannot write {engine.degraded.path}: {engine.degraded.reason}",
            "definitions": self.settings.definitions,
            "definitions_digest": None if engine is None else source_digest(engine.defs),
            "state_dir": str(self.state_dir),
            "socket": None if self._api is None else str(self._api.path),
            "event_log": {
                "path": str(log.path),
                "bytes": size,
                "oldest_event": oldest,
                "error": log_error,
            },
            "unreadable_sources": [] if self._objects is None else self._objects.unreadable(),
            "executor": None if engine is None else engine.executor.health(),
            "max_concurrency": None if engine is None else engine.slots,
            "runs": [
                {
                    "asset": f.asset,
                    "partition": f.partition,
                    "state": f.state,
                    "since": format_timestamp(f.since),
                    "run_id": f.run_id,
                    "overdue": None if engine is None else engine.overdue(f),
                }
                for f in runs
            ],
        }

    # -- the service ----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped. Raises LoadError if the definitions do not load, and
        StateDirError if another daemon owns the state directory or its log is unreadable."""
        async with anyio.create_task_group() as root:
            self._root = root
            await root.start(self._signals)
            await root.start(self._watchdog)
            ownership = await self._own()
            if ownership is None:  # stopped while waiting for the state directory
                root.cancel_scope.cancel()
                return
            self._ownership = ownership
            try:
                root.start_soon(self._guard, ownership)
                await self._run_owned(root, ownership)
            finally:
                if self._api is not None:
                    self._api.remove_socket()
                ownership.release()
            root.cancel_scope.cancel()
        self.notifier.close()
        if self._fatal is not None:
            raise self._fatal

    async def _guard(self, ownership: Ownership) -> None:
        """A state directory deleted or replaced under its owner: stop (exit 3) rather than
        go on writing into a log nobody else can see while another owner starts afresh."""
        while True:
            await anyio.sleep(_GUARD_EVERY)
            self._watch_long_runs()
            if not await anyio.to_thread.run_sync(ownership.check):
                self._fatal = StateDirError(
                    f"the state directory {self.state_dir} was deleted or replaced while this "
                    f"daemon (PID {os.getpid()}) owned it; stopping. Start it again to use the "
                    "new one"
                )
                _log.error("state_dir_gone", state_dir=str(self.state_dir))
                self.stop("the state directory is gone")
                self.stop("the state directory is gone")  # at once: nothing to drain into
                return

    def _watch_long_runs(self) -> None:
        """Runs past their timeout or far past their usual duration: a warning once per run,
        and systemd's STATUS= names them while they last."""
        engine = self._engine
        if engine is None:
            return
        overdue = [(f, why) for f in engine.in_flight() if (why := engine.overdue(f))]
        for flight, why in overdue:
            if flight.run_id not in self._overdue_told:
                self._overdue_told.add(str(flight.run_id))
                _log.warning("run_overdue", asset=flight.asset, partition=flight.partition,
                             run_id=flight.run_id, reason=why)  # fmt: skip
        line = self._status_line(engine)
        if overdue:
            flight, why = overdue[0]
            label = f"{flight.asset}[{flight.partition}]" if flight.partition else flight.asset
            more = f" (+{len(overdue) - 1} more)" if len(overdue) > 1 else ""
            line += f"; {label} {why}{more}"
        if overdue or self._overdue_told:
            self.notifier.status(line)
        if not overdue:
            self._overdue_told.clear()

    async def _own(self) -> Ownership | None:
        """Take the state directory; wait while a CLI command or Harness is using it."""
        waiting = False
        while not self._stopping:
            try:
                return await anyio.to_thread.run_sync(
                    lambda: Ownership.acquire(
                        self.state_dir, "daemon", definitions=self.settings.definitions
                    )
                )
            except StorageFailure as failure:  # a read-only or full disk: wait, degraded
                if not waiting:
                    _log.error("storage_failed", path=str(failure.path), reason=failure.reason)
                    self.notifier.ready(f"degraded: {failure}")
                    waiting = True
            except StateDirBusy as busy:
                if busy.owner is not None and busy.owner.role == "daemon":
                    raise
                if not waiting:
                    who = busy.owner.describe() if busy.owner else "another process"
                    _log.warning("waiting_for_state_dir", owner=who, state_dir=str(self.state_dir))
                    self.notifier.status(f"waiting for {who} to release {self.state_dir}")
                    waiting = True
                self.notifier.extend_timeout(10 * _OWNER_POLL)
            with anyio.move_on_after(_OWNER_POLL):
                await self._end.wait()
        return None

    async def _run_owned(self, root: TaskGroup, ownership: Ownership) -> None:
        # The socket first: `health` and `stop` work while the definitions load.
        api = self._api = ControlServer(self, control_socket_path(self.state_dir))
        api_done = anyio.Event()

        async def serve_api(*, task_status: TaskStatus[None]) -> None:
            try:
                await api.serve(task_status=task_status)
            finally:
                api_done.set()

        await root.start(serve_api)
        if self.settings.http is not None:  # imported only when asked for: start-up time
            from headwater.daemon._http import HttpServer

            self._http = HttpServer(self, self.settings.http, self.state_dir)
            await root.start(self._http.serve)
            _log.info("http_listening", address=str(self._http.bound))
        if self.settings.openlineage is not None:
            from headwater.daemon._openlineage import OpenLineageEmitter

            self._lineage = OpenLineageEmitter(self.settings.openlineage)
        await anyio.to_thread.run_sync(lambda: ownership.publish(socket=str(api.path)))
        defs: Definitions | None = None
        self._loading = anyio.CancelScope()
        if self._stopping:
            self._loading.cancel()
        with self._loading:  # a stop does not wait for an import that may take long
            defs = await anyio.to_thread.run_sync(
                load_logged, self.settings.definitions, abandon_on_cancel=True
            )
        first = True
        while not self._stopping and defs is not None:
            await self._serve(defs, first=first)
            first = False
            if self._stopping or self._next_defs is None:
                break
            defs, self._next_defs = self._next_defs, None
        api.stop()
        if self._http is not None:
            self._http.stop()
        if self._lineage is not None:  # what is queued gets two seconds to leave
            await anyio.to_thread.run_sync(self._lineage.close)
        with anyio.move_on_after(1.5):  # streaming clients get their last lines
            await api_done.wait()

    async def _serve(self, defs: Definitions, *, first: bool) -> None:
        if not self._stopping and self._next_defs is None:  # else a reload asked to end it
            self._end = anyio.Event()
        settings = self.settings
        if not first:  # the previous definitions' cycles, kept out of collections till now
            gc.unfreeze()
            gc.collect()
        async with contextlib.AsyncExitStack() as stack:
            engine = await self._open(stack, defs)
            if engine is None:  # stopped while the disk refused to open the log
                return
            engine.on_degraded = self._degraded
            payload = {
                "pid": os.getpid(),
                "definitions": settings.definitions,
                "version": __version__,
                "assets": len(defs.assets),
            }
            kind = EventKind.DAEMON_STARTED if first else EventKind.RELOADED
            with contextlib.suppress(StorageFailure):
                await engine.append([engine.event(kind, payload=payload)])
            if self._stopping:
                engine.stop_starting()
            clock = ClockSensor(engine, self.poke)
            files = FileSensor(
                engine, self.poke, settle=settings.settle, rescan_interval=settings.rescan_interval
            )
            objects = self._objects = ObjectSensor(engine, self.poke)
            # watchers first: what the first scans observe counts and shows too
            if self._lineage is not None:
                self._lineage.defs = engine.defs
                engine.observers.append(self._lineage)
            if self._http is not None:
                self._http.serve_engine(engine, lambda: _sensor_lags(files, objects))
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
                self._work = tg
                self._engine = engine
                self._carry_on(engine)
                self._engine_changed.set()
                self._engine_changed = anyio.Event()
                self._phase = "stopping" if self._stopping else "serving"
                watching = len(
                    [s for s in defs.sources.values() if isinstance(s, FileSource | ObjectSource)]
                )
                self._serving = f"serving {len(defs.assets)} assets, watching {watching} sources"
                self.notifier.ready(self._status_line(engine))
                if self._next_defs is None:  # newer definitions wait to take over
                    self._reloaded.set()
                if self._reload_asked and self._root is not None:
                    # a SIGHUP while no definitions served: the file may have changed since
                    # the definitions that serve now were loaded
                    self._reload_asked = False
                    self._root.start_soon(self.reload)
                _log.info(
                    "ready",
                    assets=len(defs.assets),
                    sources=len(defs.sources),
                    state_dir=str(settings.state_dir),
                )
                tg.start_soon(engine.executor.warm)
                tg.start_soon(self._loop, engine, clock)
                tg.start_soon(self._find_lost_values, engine)
                tg.start_soon(self._ride_out_storage, engine, files, objects)
                tg.start_soon(self._prune_forever, engine)
                await self._end.wait()
                self._engine = None  # requests from now on wait for the next engine
                if not self._stopping:
                    await self._quiesce_for_reload(engine)
                self._work = None
                sensors.cancel()
                if self._stopping:
                    engine.stop_starting()
                    await self._drain(engine)
                tg.cancel_scope.cancel()
            if self._stopping:
                with anyio.move_on_after(5, shield=True), contextlib.suppress(StorageFailure):
                    event = engine.event(EventKind.DAEMON_STOPPED, payload={"pid": os.getpid()})
                    await engine.append([event], check_freshness=False)
                _log.info("stopped")

    async def _open(self, stack: contextlib.AsyncExitStack, defs: Definitions) -> Engine | None:
        """Open the engine; while the disk refuses (full, read-only), report READY with a
        degraded STATUS and try again with backoff instead of exiting."""
        delay = _FIRST_RETRY
        told = False
        while not self._stopping:
            try:
                return await stack.enter_async_context(
                    Engine.open(
                        defs,
                        self.settings.state_dir,
                        SystemClock(),
                        executor=self.settings.executor.for_definitions(defs),
                        long_lived=True,
                    )
                )
            except StorageFailure as failure:
                if not told:
                    _log.error("storage_failed", path=str(failure.path), reason=failure.reason,
                               free_bytes=free_bytes(failure.path.parent))  # fmt: skip
                    self.notifier.ready(f"degraded: {failure}")
                    told = True
            with anyio.move_on_after(delay):
                await self._end.wait()
            delay = min(delay * 2, _LAST_RETRY)
        return None

    def _degraded(self) -> None:
        engine = self._engine
        if engine is not None:
            self.notifier.status(self._status_line(engine))
        self._storage_trouble.set()

    def _status_line(self, engine: Engine) -> str:
        if engine.degraded is not None:
            return f"degraded: cannot write {engine.degraded.path}: {engine.degraded.reason}"
        return self._serving

    async def _ride_out_storage(
        self, engine: Engine, files: FileSensor, objects: ObjectSensor
    ) -> None:
        """While the state directory refuses writes, try again with backoff; when it takes them,
        carry on: what changed meanwhile is noticed by a rescan of every source."""
        while True:
            if engine.degraded is None:
                self._storage_trouble = anyio.Event()
                await self._storage_trouble.wait()
                continue
            self.notifier.status(self._status_line(engine))
            delay = _FIRST_RETRY
            while True:
                await anyio.sleep(delay)
                try:
                    await engine.probe_storage()
                    await engine.recover()
                except StorageFailure:
                    delay = min(delay * 2, _LAST_RETRY)
                    continue
                break
            if self._ownership is not None and not self._ownership.written:
                await anyio.to_thread.run_sync(self._ownership.publish)  # clients find us again
            await files.scan()
            await objects.scan()
            self.notifier.status(self._status_line(engine))
            self.poke()

    async def _quiesce_for_reload(self, engine: Engine) -> None:
        """A reload waits, however long, for the functions running to finish; nothing else
        starts (the sensors keep recording): nothing is abandoned, nothing runs its old code
        after the reload, and nothing runs twice (once by each engine). What was not started
        is the next engine's: it evaluates everything, and requests under way are handed to
        it (see the control API). A stop meanwhile turns it into a stop."""
        engine.stop_starting(reloading=True)
        if engine.in_flight():
            running = [f"{f.asset}[{f.partition}]" if f.partition else f.asset
                       for f in engine.in_flight()]  # fmt: skip
            _log.info("reload_waiting", running=running)
        async with anyio.create_task_group() as tg:

            async def stop_watch() -> None:
                await self._stop_requested.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_watch)
            await engine.idle()
            tg.cancel_scope.cancel()

    async def _drain(self, engine: Engine) -> None:
        """Let running functions finish within the grace period (or until a second stop)."""
        grace = self.settings.grace
        async with anyio.create_task_group() as tg:

            async def stop_now() -> None:
                await self._stop_now.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_now)
            with anyio.move_on_after(grace) as scope:
                await engine.idle()
            tg.cancel_scope.cancel()
        if scope.cancelled_caught or self._stop_now.is_set():
            running = [f for f in engine.in_flight() if f.state == "running"]
            _log.warning(
                "grace_period_over",
                grace_s=grace,
                left_running=[
                    f"{f.asset}[{f.partition}]" if f.partition else f.asset for f in running
                ],
            )

    async def _prune_forever(self, engine: Engine) -> None:
        """Apply retention once at start, then at least every ``min(retention / 4, 1 h)``.
        The cutoff never passes an event faster than the monotonic clock: a forward step of
        the wall clock prunes nothing early. It does leap over the time the step skipped (no
        event tells of it), or it would stay that far behind for the process's life: a clock
        set right by NTP after a boot would switch retention off until a restart."""
        retention = self.settings.retention
        if retention is None:
            return
        _warn_if_shorter_than_an_sla(engine, retention)
        interval = min(retention / 4, _PRUNE_EVERY).total_seconds()
        last: tuple[datetime, float] | None = None
        while True:
            wall, mono = datetime.now(UTC), time.monotonic()
            cutoff = wall - retention
            allowed = None if last is None else last[0] + timedelta(seconds=mono - last[1])
            if allowed is not None and cutoff > allowed:
                reader = EventLogReader(self.state_dir)
                after = await anyio.to_thread.run_sync(reader.first_since, allowed)
                if after is not None:  # else nothing is as recent: the cutoff stands
                    cutoff = min(cutoff, max(allowed, after))
            if engine.degraded is None:
                try:
                    await engine.prune(cutoff)
                    last = (cutoff, mono)
                except StorageFailure:
                    pass  # degraded: the next pass after recovery prunes
                except (sqlite3.Error, OSError) as exc:  # pruning must never take us down
                    _log.error("prune_failed", error=f"{type(exc).__name__}: {exc}")
            await anyio.sleep(interval)

    async def _find_lost_values(self, engine: Engine) -> None:
        """At start, then every ``rescan_interval`` (as the file sources are looked at again):
        a stored value deleted by hand, or lost with its disk, makes its partition missing
        (`status` says so) and its policy materializes it again, also when no reader loads it.
        One listing per value folder, in a thread."""
        again = False
        while True:
            try:
                if await engine.forget_lost_values(again=again):
                    self.poke()
            except StorageFailure:
                pass  # degraded: readers find lost values as they load them
            except OSError as exc:  # a value folder it may not read: never a reason to stop
                _log.error("lost_values_check_failed", error=f"{type(exc).__name__}: {exc}")
            await anyio.sleep(self.settings.rescan_interval)
            again = True

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
                    # Definitions waiting for running functions to take over are replaced
                    # at once: the newer file is what serves next, and nothing runs twice.
                    waiting = self._next_defs is not None
                    if (self._engine is not None or waiting) and self._root is not None:
                        if not self._hup_queued:  # one queued reload loads what all asked
                            self._hup_queued = True
                            self._root.start_soon(self._reload_for_signal)
                    else:  # starting, or a reload waits for running functions: once served
                        self._reload_asked = True
                else:
                    self.stop(f"signal {signal.Signals(signum).name}")

    async def _watchdog(self, *, task_status: TaskStatus[None]) -> None:
        """Ping systemd's watchdog from the loop itself: a loop that hangs stops pinging."""
        task_status.started()
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)


def _warn_if_shorter_than_an_sla(engine: Engine, retention: timedelta) -> None:
    slas = [
        (window, key, name)
        for key, node in engine.defs.nodes.items()
        if node.freshness is not None
        for name, window in (
            ("max_lag", node.freshness.max_lag),
            ("max_age", node.freshness.max_age),
        )
        if window is not None
    ]
    if not slas:
        return
    window, key, name = max(slas)
    if retention < window:
        _log.warning(
            "retention_shorter_than_sla",
            retention_s=retention.total_seconds(),
            sla=f"{key} {name} {window}",
            reason="events a late partition's SLA refers to may be pruned before it is on "
            "time again; `replay` and `logs` then cannot show how it became late",
        )


def run_daemon(settings: DaemonSettings) -> None:
    """Run in the foreground until stopped (blocking).

    A function still running past the grace period runs in a thread Python would wait for at
    exit; the daemon has recorded ``daemon_stopped`` by then, so it leaves without waiting.
    """
    _raise_open_files_limit()
    try:
        with printed_as_log():
            anyio.run(Daemon(settings).run, backend="asyncio")
    except BaseExceptionGroup as group:
        # A task group wraps what its tasks raise; a user's mistake (definitions that do not
        # load, a state directory owned by another daemon) is one message, not a traceback.
        mistake = _only_mistake(group)
        if mistake is None:
            raise
        raise mistake from None
    lingering = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if lingering:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _raise_open_files_limit(wanted: int = 65536) -> None:
    """The soft limit on open files up to the hard one (the default soft limit, 1024, is
    low for watches, workers' pipes and HTTP connections together)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _sensor_lags(files: FileSensor, objects: ObjectSensor) -> list[tuple[str, str, float]]:
    """``(sensor, source, seconds behind)`` of every sensor that watches something."""
    lags = [("files", "", files.lag())] if files.sources else []
    return lags + [("objects", key, seconds) for key, seconds in objects.lags()]


def _only_mistake(group: BaseExceptionGroup[BaseException]) -> HeadwaterError | None:
    mistakes, rest = group.split(HeadwaterError)
    if mistakes is None or rest is not None:
        return None
    first: BaseException = mistakes
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, HeadwaterError) else None
