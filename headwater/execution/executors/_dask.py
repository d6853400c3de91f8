"""The Dask executor (``executor="dask://host:port"``, the ``dask`` extra): each run is a task
on a worker of an existing Dask distributed cluster.

The task imports the definitions on the worker (the same file, and the same text the daemon
loaded), loads the inputs from the value store, runs the function and its checks, stores the
value and returns only its data version and metadata: no value passes through the daemon. So
the worker must see the definitions' code and the value store at the same paths (one host, or
a shared filesystem) or use a store both reach (an S3-compatible bucket).

Dask runs a task at least once (a worker killed mid-task may see it re-run elsewhere) and
cannot stop a running task. So every run has a key of its own (``headwater-<asset>-<run id>``,
never reused) and a *fence*: a file the daemon creates before submitting and removes, under the
store's publishing lock, when it gives up on the attempt (timeout, stop, a lost scheduler).
A worker renames a value into place only while the fence stands, holding that lock: a late
result of a superseded attempt can never replace what the log says is there. A worker still
executing an attempt given up on is restarted (by its nanny; closed if it has none): the task
would hold its thread, and the runs sent there after it, for ever.

What a run writes to ``sys.stdout`` and ``sys.stderr`` on the worker is caught by its thread
(:func:`~headwater.execution.executors._output.captured`), returned with the outcome, bounded,
and logged by the daemon as ``output`` lines of the run, as the processes executor logs its
workers' pipes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog

from headwater import __version__
from headwater._config import ConfigError
from headwater._durations import format_duration
from headwater.eventlog import SmallValue
from headwater.execution._publishing import Superseded, current_guard
from headwater.execution._runner import Job, Outcome, Runner, plain_outcome
from headwater.execution._store import FENCE_PREFIX, FilesystemStore, IOManager
from headwater.execution.executors._output import Printed, captured, with_stderr
from headwater.planning import InputVersions, NodeKey

__all__ = ["DaskExecutor", "DaskTask", "Ran", "run_task"]

_log = structlog.get_logger("headwater.executor")

NO_WORKERS_S = 60.0
"""A run fails once no worker has been connected to the scheduler this long."""
WORKER_CHECK_S = 5.0
"""How often a run in flight asks the scheduler how many workers it has."""
ANSWER_TIMEOUT_S = 3.0
"""How long workers have to say which tasks they execute (a frozen one never does)."""
STOP_TIMEOUT_S = 10.0
"""How long to wait for a worker running a run given up on to be restarted (or closed)."""
CONNECT_TIMEOUT_S = 5.0
"""How long to try a scheduler before giving up (at start: exit 2; later: the run fails)."""


@dataclass(frozen=True, slots=True)
class DaskTask:
    """What a worker needs for one run: plain data (the function travels as the definitions'
    path and text, imported on the worker once)."""

    definitions: str
    source: bytes | None
    store: IOManager | None
    """None: the filesystem store at ``values_root``."""
    values_root: str
    private: tuple[str, ...]
    asset: str
    partition: str | None
    run_id: str
    now: datetime
    inputs: InputVersions
    code_version: str
    small: dict[NodeKey, SmallValue]
    """Inputs whose value the event log keeps (a worker never opens the log)."""
    instance: str = ""
    """The daemon's definitions object (``Definitions.instance``): another is imported anew."""
    stored: frozenset[NodeKey] = frozenset()
    """Inputs of plain sources observed with a value (``Job.stored``)."""


STARTED_TOPIC = "headwater-task-started"
"""The Dask event topic on which a worker says it started a run's task (``run_id``)."""


def _announce(run_id: str) -> None:
    """On the worker: tell the daemon the run's task has started (its timeout counts from
    now). Best effort: the daemon also asks the scheduler every WORKER_CHECK_S."""
    try:
        from distributed import get_worker

        get_worker().log_event(STARTED_TOPIC, {"run_id": run_id})
    except Exception:  # not on a worker (called directly): nobody is waiting
        return


class _TimedOut(Exception):
    """The run's timeout expired (not a TimeoutError: Dask raises those of its own)."""


class _FenceGuard:
    def __init__(self, store: FilesystemStore, fence: Path) -> None:
        self._store, self._fence = store, fence

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        # Held shared around the check and the publish (a rename, or a PUT to a bucket); the
        # daemon removes the fence holding it exclusively: "fence gone" and "published" exclude.
        with self._store.publishing():
            if not self._fence.exists():
                raise Superseded
            yield


_RUNNERS: dict[tuple[str, str], tuple[str, Runner]] = {}
"""Per worker process and (definitions, store): the definitions imported for the daemon's
current ones. Another load of theirs (a reload, even with the same text: a helper module
may have changed) imports them anew, helpers included (``load_definitions`` forgets the
helpers the last import of that file brought), and the previous import is dropped."""


def _runner(task: DaskTask) -> Runner:
    digest = hashlib.blake2b(task.source or b"", digest_size=16).hexdigest()
    key, loaded = (task.definitions, task.values_root), f"{task.instance}/{digest}"
    held = _RUNNERS.get(key)
    if held is None or held[0] != loaded:
        from headwater._loading import load_definitions
        from headwater._usercode import mark_worker

        mark_worker()
        defs = load_definitions(task.definitions, task.source)
        defs.compute_code_versions()
        store = task.store or FilesystemStore(Path(task.values_root))
        held = _RUNNERS[key] = (loaded, Runner(defs, store, task.private))
    return held[1]


_UNLOADABLE = "unloadable"
"""The first item of what a worker returns instead of an Outcome when it cannot run
headwater's task at all: ``(_UNLOADABLE, worker address, why)``."""


def _worker_entry() -> Callable[[str, bytes], object]:
    """The callable Dask runs on the worker, made here so that it is a local function:
    Dask pickles that by value (cloudpickle), so unpickling it needs only Python. Had the
    task referred to headwater (``run_task``, a ``DaskTask``), a worker that cannot import
    headwater, or another version of it, failed to unpickle it: the error stayed in that
    worker's log and the run waited for ever (hostile34b bug11). The task's data travels as
    bytes, unpickled by headwater's own code once it has been imported."""

    def headwater_task(version: str, blob: bytes) -> object:
        try:
            from distributed import get_worker

            where = str(get_worker().address)
        except BaseException:  # only a name for the message
            where = "?"
        try:
            from headwater.execution.executors._dask import run_payload
        except BaseException as exc:  # any failure to import is the answer
            # _UNLOADABLE spelled out: a function pickled by value takes the globals it
            # names along, and this one should need nothing of headwater's
            return ("unloadable", where, f"cannot import headwater ({type(exc).__name__}: {exc})")
        return run_payload(version, blob, where)

    return headwater_task


def _payload(task: DaskTask) -> tuple[str, bytes]:
    """The worker's arguments: this headwater's version and the task, pickled as Dask pickled
    it before (cloudpickle: by reference where it can, by value where it must)."""
    import cloudpickle  # type: ignore[import-untyped]  # Dask's own dependency

    return __version__, cloudpickle.dumps(task)


def run_payload(version: str, blob: bytes, where: str) -> object:
    """On a Dask worker, headwater imported: check the version, unpickle the task, run it."""
    if version != __version__:
        return (
            _UNLOADABLE, where,
            f"headwater {__version__} is installed there, {version} on the daemon",
        )  # fmt: skip
    try:
        task = pickle.loads(blob)
    except Exception as exc:
        return (_UNLOADABLE, where, f"cannot unpickle the task ({type(exc).__name__}: {exc})")
    return run_task(task, where)


CLAIM_SUFFIX = ".started"
"""Beside a run's fence: the claim of the first worker that started it (its address and PID)."""


def _claim(fence: Path, where: str) -> str | None:
    """Claim the attempt for this worker; why not to run it if it may not be claimed.

    Dask runs a task again when the worker running it dies, up to the scheduler's
    ``allowed-failures`` (3): a function that ends its process (``os._exit``, a segfault)
    ran four times for one attempt, killing four workers, and the run failed "worker …
    lost" (hostile34b bug7). The scheduler's setting is the cluster's, not the task's: so
    the first worker to start the attempt leaves a claim beside the fence (created
    exclusively: one wins), and any later start of the same attempt finds it and fails it,
    naming that worker. Only the default filesystem store has fences (and claims)."""
    if not fence.exists():  # given up on (and the claim gone): the daemon waits no more
        return "given up on before a worker started it"
    claim = _claimed(fence)
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)  # fmt: skip
    except FileExistsError:
        try:
            first = claim.read_text() or "?"
        except OSError:
            first = "?"
        return (
            f"the Dask worker {first} died or was lost while running it (the function exited "
            "or crashed its process, the worker was killed or restarted, or it lost the "
            "scheduler: see that worker's log); Dask sent it to another worker, which did not "
            "run it again"
        )
    with os.fdopen(fd, "w") as f:
        f.write(f"{where} (pid {os.getpid()})")
    return None


@dataclass(frozen=True, slots=True)
class Ran:
    """What a worker sends back for a run it took on: its outcome, what it printed (bounded),
    and the worker's address (for the log lines of what it printed)."""

    outcome: Outcome
    printed: Printed
    worker: str


def run_task(task: DaskTask, where: str = "?") -> Ran:
    """On a Dask worker (its address ``where``): run one job, catching what it writes to
    ``sys.stdout`` and ``sys.stderr`` (its definitions' import, inputs, function, checks and
    store included); that reached only the worker's own log, never the run's (hostile34b
    bug8). The worker runs several tasks at once in its threads: each catches its own thread's
    output only (see :func:`captured`)."""
    with captured() as printed:
        outcome = _run(task, where)
    return Ran(outcome, printed, where)


def _run(task: DaskTask, where: str) -> Outcome:
    """One job on the worker; any failure is an outcome, never an exception."""
    started = time.perf_counter()
    fence = Path(task.values_root, ".tmp", f"{FENCE_PREFIX}{task.run_id}")
    if task.values_root and (refused := _claim(fence, where)) is not None:
        return Outcome(False, (time.perf_counter() - started) * 1000, error=refused)
    _announce(task.run_id)
    try:
        runner = _runner(task)
    except Exception as exc:
        return Outcome(False, 0.0, error=f"the worker cannot load the definitions: {exc}")
    defs = runner.defs
    asset = defs.assets.get(task.asset)
    if asset is None or defs.code_version(task.asset) != task.code_version:
        return Outcome(
            False,
            (time.perf_counter() - started) * 1000,
            error=f"the worker's definitions differ from the daemon's for {task.asset!r} "
            "(deploy the same code to every worker)",
        )
    store = runner.store
    guard = _FenceGuard(store, fence) if isinstance(store, FilesystemStore) else None
    token = current_guard.set(guard)
    home = Path.cwd()
    try:
        job = Job(
            asset, task.partition, task.run_id, task.now, task.inputs, task.code_version,
            task.small, task.stored,
        )  # fmt: skip
        outcome = runner.run(job)
    finally:
        current_guard.reset(token)
        if Path.cwd() != home:  # the next task starts where every task starts
            os.chdir(home)
    try:
        pickle.dumps(outcome)
    except Exception:  # it must reach the daemon: its value is stored already
        outcome = plain_outcome(outcome)
    return outcome


class DaskExecutor:
    """Runs jobs as tasks of a Dask distributed cluster through an asynchronous client."""

    kind = "dask"

    def __init__(
        self, address: str, client: Any, runner: Runner, state_dir: Path, definitions: str
    ) -> None:
        self.address = address
        self._client = client
        self._runner = runner
        store = runner.store
        default = isinstance(store, FilesystemStore) and store.root.absolute() == (
            state_dir.absolute() / "values"
        )
        self._store = None if default else store
        self._values = (state_dir.absolute() / "values") if default else None
        self._definitions = definitions
        self._lost = 0
        self._workers: list[str] = []
        """The workers' addresses, as last counted (at open, and by runs in flight)."""
        self._reconnecting = anyio.Lock()
        self._started: dict[str, anyio.Event] = {}
        """The runs in flight, by run id: set once their task has started on a worker."""
        self._subscribe(client)

    def _subscribe(self, client: Any) -> None:
        """Hear from the workers when they start a task (before any is submitted: the
        subscription and the submissions go to the scheduler in order, by one stream)."""
        client.subscribe_topic(STARTED_TOPIC, self._on_started)

    def _on_started(self, event: tuple[float, Any]) -> None:
        """A worker started a task (on the client's loop, the daemon's)."""
        message = event[1]
        run_id = message.get("run_id") if isinstance(message, dict) else None
        start = self._started.get(run_id) if isinstance(run_id, str) else None
        if start is not None:  # another daemon's run, or one over: not ours to time
            start.set()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, address: str, runner: Runner, state_dir: Path, definitions: str | None
    ) -> AsyncIterator[DaskExecutor]:
        if definitions is None:
            raise ConfigError(f"executor 'dask://{address}' needs importable definitions")
        client = await _connect(address)
        executor = cls(address, client, runner, state_dir, definitions)
        with contextlib.suppress(Exception):  # health shows none until a run counts them
            executor._workers = sorted(await client.nthreads())
        try:
            yield executor
        finally:  # the client now in use: a reconnection replaced the first one
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await executor._client.close(timeout=2)

    async def warm(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        """What ``headwater health`` shows: the scheduler, the client's state and the workers
        it last counted (a run in flight counts them every few seconds)."""
        return {
            "executor": self.kind,
            "scheduler": f"tcp://{self.address}",
            "status": self._client.status,
            "dask_workers": self._workers,
            "lost": self._lost,
        }

    async def _connected(self) -> Any:
        """The client; a new one when the old lost its scheduler for good (a scheduler that
        comes back is found again by the next run)."""
        if self._client.status in ("running", "connecting"):
            return self._client
        async with self._reconnecting:
            if self._client.status not in ("running", "connecting"):
                with contextlib.suppress(Exception):
                    await self._client.close(timeout=1)
                self._client = await _connect(self.address)
                self._subscribe(self._client)
                _log.info("dask_reconnected", scheduler=f"tcp://{self.address}")
        return self._client

    async def run(self, job: Job, limit: timedelta | None) -> Outcome:
        started = time.perf_counter()
        try:
            client = await self._connected()
        except ConfigError as exc:
            return self._failed(started, str(exc).split(": ", 1)[-1])
        try:
            payload = _payload(self._task(job))
        except Exception as exc:  # a store of the user's that does not pickle
            return self._failed(started, f"the task does not pickle ({type(exc).__name__}: {exc})")
        fence = self._fence(job.run_id)
        if fence is not None:
            await anyio.to_thread.run_sync(_make_fence, fence)
        key = f"headwater-{job.asset.key}-{job.run_id}"
        start = self._started[job.run_id] = anyio.Event()
        future = client.submit(_ENTRY, *payload, key=key, pure=False)
        done = False
        try:
            outcome = await self._outcome(client, future, start, limit)
            if outcome is None:
                return self._failed(
                    started,
                    f"no worker has been connected to the Dask scheduler at tcp://{self.address} "
                    f"for {format_duration(timedelta(seconds=NO_WORKERS_S))}",
                )
            done = True
            return self._received(job, started, outcome)
        except _TimedOut:
            assert limit is not None
            return self._failed(started, f"timed out after {format_duration(limit)}")
        except Exception as exc:
            return self._failed(started, self._why(exc))
        finally:
            del self._started[job.run_id]
            if not done:  # superseded: nothing it stores from now on is published
                with anyio.CancelScope(shield=True):
                    if fence is not None:
                        await anyio.to_thread.run_sync(self._supersede, fence)
                    await self._give_up(client, future, job)
            elif fence is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_remove, fence)
                    await anyio.to_thread.run_sync(_remove, _claimed(fence))

    async def _give_up(self, client: Any, future: Any, job: Job) -> None:
        """Cancel the task, and stop it if a worker is running it. Dask cannot stop a running
        task: a timed-out run that never returns held its worker's thread for ever, and the
        scheduler, the task cancelled, sent the next run there to wait behind it (hostile34b
        bug2). So the worker running it is restarted by its nanny, as the processes executor
        kills a timed-out worker; a worker without a nanny cannot be restarted and is closed,
        so that no run is sent to it (whatever runs it again must start a new one)."""
        executing: list[str] = []
        if client.status == "running":  # a lost scheduler answers nothing
            with contextlib.suppress(Exception):
                executing = await _executing(client, future.key)
        with contextlib.suppress(Exception):
            await future.cancel()
        if not executing:
            return
        with contextlib.suppress(Exception), anyio.move_on_after(STOP_TIMEOUT_S):
            # The cancel goes by the client's stream, a restart by a call of its own: one
            # arriving first made the scheduler send the task, still wanted, to another worker
            # (or the same, restarted), which ran it again and held that one in turn.
            # No event says so: the scheduler is asked until it has let the task go.
            while True:
                processing = await client.processing()
                if not any(future.key in keys for keys in processing.values()):
                    break
                await anyio.sleep(0.02)
        for worker in executing:
            await self._stop_worker(client, worker, job)

    async def _stop_worker(self, client: Any, worker: str, job: Job) -> None:
        log = _log.bind(worker=worker, asset=job.asset.key, partition=job.partition,
                        run_id=job.run_id)  # fmt: skip
        try:
            with anyio.fail_after(2 * STOP_TIMEOUT_S):
                try:
                    result = await client.restart_workers(
                        [worker], timeout=STOP_TIMEOUT_S, raise_for_error=False
                    )
                except ValueError:  # no nanny (distributed says so with a ValueError)
                    await client.retire_workers([worker], close_workers=True)
                    log.warning("dask_worker_closed", reason="it runs a run given up on, "
                                "and has no nanny to restart it")  # fmt: skip
                    return
        except Exception as exc:
            log.warning("dask_worker_not_stopped", error=f"{type(exc).__name__}: {exc}")
            return
        log.warning("dask_worker_restarted", reason="it ran a run given up on",
                    result=result.get(worker))  # fmt: skip

    async def _outcome(
        self, client: Any, future: Any, start: anyio.Event, limit: timedelta | None
    ) -> object:
        """The task's outcome, or None once no worker has been connected for
        :data:`NO_WORKERS_S`: Dask keeps a task for a worker to come, for ever (every worker
        killed, a scheduler restarted alone), and the run hung with it. _TimedOut once it
        has run ``limit`` on a worker: the time it waited for one is not counted (a quick run
        queued behind other work failed "timed out" without having started: hostile34b
        bug12), as a run under processes waits for a free worker before its timeout counts."""
        got: list[object] = []
        raised: list[BaseException] = []
        timed_out: list[bool] = []
        async with anyio.create_task_group() as tg:

            async def timer(seconds: float) -> None:
                await start.wait()
                await anyio.sleep(seconds)
                timed_out.append(True)
                tg.cancel_scope.cancel()

            async def watch() -> None:
                alone_since: float | None = None
                while True:
                    await anyio.sleep(WORKER_CHECK_S)
                    try:
                        workers = await client.nthreads()
                        # The worker says when it starts a task (the STARTED topic); in case
                        # that word were lost (or never sent: see _executing), the scheduler
                        # is asked too, so a timeout always applies, at worst this much late.
                        if not start.is_set() and await _executing(client, future.key):
                            start.set()
                    except Exception:  # a lost scheduler fails the future by itself
                        continue
                    self._workers = sorted(workers)
                    if workers:
                        alone_since = None
                    elif alone_since is None:
                        alone_since = time.monotonic()
                    elif time.monotonic() - alone_since >= NO_WORKERS_S:
                        tg.cancel_scope.cancel()

            tg.start_soon(watch)
            if limit is not None:
                tg.start_soon(timer, limit.total_seconds())
            try:
                got.append(await future)
            except Exception as exc:
                raised.append(exc)
            tg.cancel_scope.cancel()
        if raised:
            raise raised[0]
        if timed_out:
            raise _TimedOut
        return got[0] if got else None

    def _task(self, job: Job) -> DaskTask:
        return DaskTask(
            definitions=self._definitions,
            source=self._runner.defs.source,
            store=self._store,
            values_root=str(self._values or ""),
            private=self._runner.private,
            asset=job.asset.key,
            partition=job.partition,
            run_id=job.run_id,
            now=job.now,
            inputs=job.inputs,
            code_version=job.code_version,
            small=dict(job.small),
            instance=self._runner.defs.instance,
            stored=job.stored,
        )

    def _fence(self, run_id: str) -> Path | None:
        return None if self._values is None else self._values / ".tmp" / f"{FENCE_PREFIX}{run_id}"

    def _supersede(self, fence: Path) -> None:
        store = self._runner.store
        assert isinstance(store, FilesystemStore)
        with store.publishing(exclusive=True):
            _remove(fence)
        _remove(_claimed(fence))

    def _received(self, job: Job, started: float, result: object) -> Outcome:
        """The worker's outcome, what the run printed logged as lines of the run and the tail
        of its stderr in a failed outcome (as under processes); a failed one saying why if
        the worker could not run the task."""
        if isinstance(result, Ran):
            fields = {"asset": job.asset.key, "partition": job.partition,
                      "run_id": job.run_id, "worker": result.worker}  # fmt: skip
            return with_stderr(result.outcome, result.printed.log(fields))
        if isinstance(result, tuple) and len(result) == 3 and result[0] == _UNLOADABLE:
            _, where, why = result
            return self._failed(
                started,
                f"the Dask worker {where} cannot run headwater's task: {why} "
                "(deploy the same code and headwater version to every worker)",
            )
        return self._failed(started, f"the Dask worker returned {type(result).__name__}")

    def _failed(self, started: float, error: str) -> Outcome:
        return Outcome(False, (time.perf_counter() - started) * 1000, error=error)

    def _why(self, exc: BaseException) -> str:
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            self._lost += 1
            worker = getattr(getattr(exc, "last_worker", None), "address", None)
            times = getattr(exc, "allowed_failures", None)
            # Without a fence (a store other than the state directory's) nothing stops Dask
            # running it again: say how often it did, so a function that ends its process
            # is recognisable.
            again = f" (Dask ran it on {times + 1} workers, each lost)" if times else ""
            return (
                f"worker {worker or 'of the Dask cluster'} lost: it died or was lost while "
                f"running it{again}; the function may exit or crash its process"
            )
        return (
            f"the Dask cluster could not run it ({type(exc).__name__}: {exc}); "
            f"scheduler tcp://{self.address}"
        )


_ENTRY = _worker_entry()


async def _executing(client: Any, key: str) -> list[str]:
    """The workers executing a task, as they say (only those: a worker that merely holds it
    queued drops it when it is cancelled, and its time there is no part of the timeout).

    A function that keeps the GIL (a loop in C) freezes its worker's event loop: that worker
    may not even have said it started, and does not answer. Then the workers the scheduler
    sent the task to stand for it: most likely it is running there."""
    with anyio.move_on_after(ANSWER_TIMEOUT_S):
        stacks = await client.call_stack(keys=[key])
        return sorted(w for w, keys in stacks.items() if key in keys)
    processing = await client.processing()
    return sorted(w for w, keys in processing.items() if key in keys)


async def probe(address: str) -> None:
    """Connect to the scheduler and let go (ConfigError, naming it, if it does not answer)."""
    client = await _connect(address)
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await client.close(timeout=2)


async def _connect(address: str) -> Any:
    """A client of the scheduler; ConfigError, saying why, without the extra or an answer."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(
            f"executor 'dask://{address}' needs Dask distributed: pip install 'headwater[dask]'"
        ) from None

    client = Client(  # type: ignore[no-untyped-call]
        f"tcp://{address}", asynchronous=True, timeout=CONNECT_TIMEOUT_S
    )
    try:
        # Bounded here too: something else listening there (an HTTP server, a silent port)
        # held the handshake, and the daemon's start, for ever.
        with anyio.fail_after(2 * CONNECT_TIMEOUT_S):
            return await client
    except (OSError, TimeoutError) as exc:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await client.close(timeout=1)  # type: ignore[no-untyped-call]
        raise ConfigError(
            f"executor 'dask://{address}': cannot reach the Dask scheduler at "
            f"tcp://{address} ({type(exc).__name__}: {exc})"
        ) from None


def _make_fence(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    os.close(fd)


def _claimed(fence: Path) -> Path:
    return fence.with_name(fence.name + CLAIM_SUFFIX)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
