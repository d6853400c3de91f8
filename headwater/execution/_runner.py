"""One materialization, run synchronously in a worker thread: load, call, fingerprint, store."""

from __future__ import annotations

import contextlib
import pickle
import sysconfig
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from headwater import _s3
from headwater._files import FileCache, Skipped
from headwater._jsonsafe import plain_json
from headwater._storage import StorageFailure
from headwater.definitions import (
    AssetDef,
    CheckDef,
    CheckResult,
    Definitions,
    EdgeMapping,
    FileSource,
    ObjectSource,
    Output,
    SourceDef,
)
from headwater.eventlog import SmallValue
from headwater.execution._context import Context
from headwater.execution._loaders import (
    SourceFileGone,
    file_source_version,
    load_file_source,
    load_object_source,
)
from headwater.execution._object_store import ObjectStore
from headwater.execution._publishing import Superseded, guarded
from headwater.execution._store import (
    SMALL_VALUE_MAX,
    FilesystemStore,
    IOManager,
    NoValueError,
    StaleValue,
    prepare,
    table_metadata,
)
from headwater.planning import InputVersions, NodeKey, node_label
from headwater.versions import data_version

__all__ = ["CheckOutcome", "Job", "Outcome", "Runner", "describe_error"]

_log = structlog.get_logger("headwater.run")


@dataclass(frozen=True, slots=True)
class Job:
    asset: AssetDef
    partition: str | None
    run_id: str
    now: datetime
    inputs: InputVersions
    """The input partitions that exist and their versions, as decided when the run started."""
    code_version: str = ""
    """The code version the run is recorded with (a worker checks it runs that code)."""
    small: Mapping[NodeKey, SmallValue] = field(default_factory=dict)
    """Inputs whose value the event log keeps, as the engine read them from it: a worker
    (another process, another machine) never opens the log."""
    stored: frozenset[NodeKey] = frozenset()
    """Inputs of plain sources observed with a value (the record says where it is stored):
    one whose value is not there was lost, not observed with a version only."""


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    duration_ms: float
    data_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    checks: tuple[CheckOutcome, ...] = ()
    lost: tuple[tuple[str, str | None], ...] = ()
    """Asset inputs whose stored value was gone when the run loaded them."""
    gone: tuple[tuple[str, str | None], ...] = ()
    """File (object) source partitions whose file (object) was not there when the run read
    them (deleted after they were observed, before the run got to them)."""
    unreadable: tuple[tuple[str, str | None], ...] = ()
    """Object source partitions whose store did not answer when the run read them (down,
    refusing, timing out): not the function's failure; they are read again once it does."""
    lost_damaged: bool = False
    """A lost input's file was there, under the right name, but damaged (cut short, zeroed,
    unreadable), as opposed to holding another version or not being there at all."""
    where: str | None = None
    """``file:line`` in the user's code where a failed run raised."""
    storage: StorageFailure | None = None
    """The value could not be stored: the state directory refuses writes."""
    inputs: InputVersions | None = None
    """The versions of the input partitions as actually read (a file replaced after the run
    was planned is recorded with the version of the bytes the function got)."""
    stderr: str | None = None
    """The last lines the function's worker wrote to stderr (processes and dask; threads log
    theirs only)."""
    small: SmallValue | None = None
    """The value, if small enough for the event log to keep (nothing was stored)."""


def _run_check(check: CheckDef, value: Any, context: Context) -> CheckOutcome:
    """A check that raises, or returns neither bool nor CheckResult, has failed."""
    kwargs = {"context": context} if check.wants_context else {}
    try:
        result = check.fn(value, **kwargs)
    except BaseException as exc:  # whatever a check raises fails it, as for a function
        return CheckOutcome(check.name, False, check.blocking, error=describe_error(exc))
    if isinstance(result, CheckResult):
        try:  # a pandas Series for ``passed``, a list for ``metadata``: the check's fault
            passed, metadata = bool(result.passed), dict(result.metadata or {})
        except Exception as exc:
            error = f"returned a CheckResult that cannot be read: {describe_error(exc)}"
            return CheckOutcome(check.name, False, check.blocking, error=error)
        return CheckOutcome(check.name, passed, check.blocking, metadata)
    if isinstance(result, bool):
        return CheckOutcome(check.name, result, check.blocking)
    return CheckOutcome(
        check.name,
        False,
        check.blocking,
        error=f"returned {type(result).__name__}, not bool or hw.CheckResult",
    )


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one paragraph: no trailing newlines, an empty message named."""
    try:
        text = str(exc).strip()
    except BaseException as broken:  # a message that itself raises: the run still fails
        text = f"(its message could not be read: {type(broken).__name__} in __str__)"
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (no message)"


_OWN_CODE = str(Path(__file__).resolve().parent.parent)
_LIBRARIES = tuple(
    {sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
)


def _failed(started: float, error: str, **details: Any) -> Outcome:
    """A failed run's outcome, timed from ``started`` (``time.perf_counter()``)."""
    return Outcome(
        ok=False, duration_ms=(time.perf_counter() - started) * 1000, error=error, **details
    )


def _where(exc: BaseException, user_dir: Path) -> str | None:
    """``file:line`` of the deepest frame in the user's code: under the definitions' folder if
    any is, else outside headwater and the installed libraries."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_OWN_CODE)
    ]
    mine = [f for f in frames if f.filename.startswith(str(user_dir))]
    if not mine:
        mine = [f for f in frames if not f.filename.startswith(_LIBRARIES)]
    return f"{mine[-1].filename}:{mine[-1].lineno}" if mine else None


@dataclass(slots=True)
class _Reads:
    """A run's input versions as the log records them, and those its reads told."""

    expected: Mapping[NodeKey, str | None]
    small: Mapping[NodeKey, SmallValue]
    stored: frozenset[NodeKey] = frozenset()
    read: dict[NodeKey, str] = field(default_factory=dict)


class _InputError(Exception):
    """Loading an input failed; the message names the input."""


class _GoneSource(Exception):
    """A source's own file or object is not there: not the function's failure, and no value
    to read."""

    def __init__(self, node: tuple[str, str | None], gone: SourceFileGone) -> None:
        super().__init__(str(gone))
        self.node = node


class _UnreadableSource(Exception):
    """An object source's store, or an ObjectStore holding an asset's value, did not answer
    the read (down, refusing, timing out)."""

    def __init__(self, node: tuple[str, str | None], error: BaseException) -> None:
        super().__init__(
            f"input {node_label(*node)}: its store did not answer: {describe_error(error)}"
        )
        self.node = node


class _UnwritableStore(_UnreadableSource):
    """The ObjectStore that keeps the run's own value did not answer its write."""

    def __init__(self, node: tuple[str, str | None], error: BaseException) -> None:
        Exception.__init__(
            self, f"storing its value: its store did not answer: {describe_error(error)}"
        )
        self.node = node


class _LostInput(Exception):
    """An input's stored value is gone (deleted, or lost with its disk)."""

    def __init__(self, node: tuple[str, str | None], gone: NoValueError) -> None:
        why = f" ({gone})" if isinstance(gone, StaleValue) else ""
        super().__init__(f"{node_label(*node)}'s stored value is gone{why}")
        self.node = node
        self.damaged = isinstance(gone, StaleValue) and gone.found is None


def _load(io: IOManager, key: str, partition: str | None, version: str | None) -> Any:
    if isinstance(io, FilesystemStore | ObjectStore):
        return io.load(key, partition, version)
    return io.load(key, partition)


class Runner:
    """Runs jobs against the definitions, reading inputs from and writing values to stores.

    ``private`` holds folders no source may read through a link (the state directory).
    """

    def __init__(self, defs: Definitions, store: IOManager, private: tuple[str, ...] = ()) -> None:
        self.defs = defs
        self.store = store
        self.private = private
        self.files = FileCache()
        self.small_max = SMALL_VALUE_MAX if isinstance(store, FilesystemStore) else 0
        """Values of the default store pickled to at most this many bytes go back to the
        engine, which keeps them in the event log (0: never)."""
        self.small_lookup: Callable[[NodeKey], SmallValue | None] | None = None
        """Reads a value the log keeps (the engine's process only)."""

    def io_for(self, key: str) -> IOManager:
        node = self.defs.nodes.get(key)
        own = node.io if isinstance(node, AssetDef) else None
        return own or self.defs.io or self.store

    def load(self, key: str, partition: str | None, version: str | None = None) -> Any:
        """The current value of an asset or source partition (given the ``version`` the log
        records, a stored value that is not that version counts as gone)."""
        kept = self.small_lookup((key, partition)) if self.small_lookup is not None else None
        if kept is not None and (version is None or kept.version == version):
            return pickle.loads(kept.data)
        return self.read(key, partition, version)[0]

    def read(
        self, key: str, partition: str | None, version: str | None = None
    ) -> tuple[Any, str | None]:
        """The current value of an asset or source partition, and the version of what was
        read where the read itself tells it (files, objects); None where the log does."""
        node = self.defs.nodes[key]
        if isinstance(node, FileSource):
            return load_file_source(node, self.defs.base_dir, partition, self.files, self.private)
        if isinstance(node, ObjectSource):
            return load_object_source(node, partition)
        if isinstance(node, SourceDef):
            try:
                return _load(self.store, key, partition, version), None
            except StaleValue:
                raise
            except NoValueError:
                return None, None  # a plain source observed with a version only has no value
        return _load(self.io_for(key), key, partition, version), None

    def source_versions(
        self, nodes: Sequence[tuple[str, str | None]]
    ) -> dict[tuple[str, str | None], str | None]:
        """The version now of each file or object source partition (None: not there). A file
        no sensor would observe (a FIFO, a link not followed) is left out; an object whose
        store does not answer counts as not there (the next listing observes it if it is),
        so a store that keeps failing cannot have the run decided again and again."""
        found: dict[tuple[str, str | None], str | None] = {}
        for key, partition in nodes:
            node = self.defs.nodes[key]
            if isinstance(node, ObjectSource):
                try:
                    found[(key, partition)] = _s3.head_etag(node, node.render(partition))
                except Exception:
                    found[(key, partition)] = None
                continue
            assert isinstance(node, FileSource)
            with contextlib.suppress(Skipped):
                found[(key, partition)] = file_source_version(
                    node, self.defs.base_dir, partition, self.files, self.private
                )
        return found

    def _load_input(self, key: str, partition: str | None, reads: _Reads) -> Any:
        expected = reads.expected.get((key, partition))
        kept = reads.small.get((key, partition))
        if kept is not None and kept.version == expected:
            return pickle.loads(kept.data)
        try:
            if (key, partition) in reads.stored:  # a plain source's value: never None
                value, version = _load(self.store, key, partition, expected), None
            else:
                value, version = self.read(key, partition, expected)
        except SourceFileGone as gone:
            raise _GoneSource((key, partition), gone) from None
        except NoValueError as gone:
            if isinstance(self.defs.nodes[key], AssetDef | SourceDef):
                raise _LostInput((key, partition), gone) from None
            raise
        except Exception as exc:
            node = self.defs.nodes[key]
            in_a_bucket = isinstance(node, ObjectSource) or (
                isinstance(node, AssetDef) and isinstance(self.io_for(key), ObjectStore)
            )
            if in_a_bucket and _s3.is_store_failure(exc):
                raise _UnreadableSource((key, partition), exc) from exc
            raise
        if version is not None:
            reads.read[(key, partition)] = version
        return value

    def _input_value(self, job: Job, param: str, upstream: str, read: _Reads) -> Any:
        how = self.defs.read_maps[(job.asset.key, param)]
        if how.kind is EdgeMapping.ALL:
            present = [p for a, p, _ in job.inputs if a == upstream]
            return {p: self._load_input(upstream, p, read) for p in present}
        if how.kind is EdgeMapping.MAPPED and how.mapping is not None:
            assert job.partition is not None
            if how.mapping.many:  # the present partitions this parameter's window holds
                covered = [
                    p
                    for a, p, _ in job.inputs
                    if a == upstream and p is not None and how.mapping.covers(job.partition, p)
                ]
                return {p: self._load_input(upstream, p, read) for p in covered}
            keys, _ = how.mapping.upstream(job.partition, None)
            if not keys:
                return None  # an optional input's window outside the upstream's partitions
            return self._load_input(upstream, keys[0], read)
        partition = job.partition if how.kind is EdgeMapping.IDENTITY else None
        return self._load_input(upstream, partition, read)

    def _kwargs(self, job: Job, context: Context, read: _Reads) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for param, upstream in job.asset.inputs.items():
            try:
                kwargs[param] = self._input_value(job, param, upstream, read)
            except (_LostInput, _GoneSource, _UnreadableSource):
                raise
            except Exception as exc:
                label = node_label(upstream, job.partition)
                raise _InputError(
                    f"loading input {param!r} ({label}): {describe_error(exc)}"
                ) from exc
        if job.asset.wants_context:
            kwargs["context"] = context
        return kwargs

    def _store(self, job: Job, value: Any, version: str | None) -> tuple[str, SmallValue | None]:
        """Store the value (or return it, small, for the event log to keep); return its data
        version (``version`` if the function gave one), which fingerprints the content as
        readers will load it: Parquet keeps a table's types except in object columns (it
        infers a type for their values), so those are read back."""
        key, partition = job.asset.key, job.partition
        io = self.io_for(key)
        if isinstance(io, FilesystemStore):
            prepared = prepare(value)
            if io is self.store and 0 < len(prepared.data) <= self.small_max:
                version = version or data_version(value)
                # A value that shrank: its file holds an older one now (drop asks the guard).
                io.drop(key, partition)
                return version, SmallValue(version, prepared.data)
            return io.store(key, partition, value, version, prepared), None  # asks the guard
        if isinstance(io, ObjectStore):
            try:
                return io.store(key, partition, value, version), None  # asks the guard itself
            except Exception as exc:
                if _s3.is_store_failure(exc):  # not the function's failure: tried again later
                    raise _UnwritableStore((key, partition), exc) from exc
                raise
        with guarded():
            io.save(key, partition, value)
        return version or data_version(value), None

    def run(self, job: Job) -> Outcome:
        started = time.perf_counter()
        log = _log.bind(asset=job.asset.key, partition=job.partition, run_id=job.run_id)
        versions = {(a, p): v for a, p, v in job.inputs}
        context = Context(job.asset.key, job.partition, job.run_id, job.now, log, versions)
        with structlog.contextvars.bound_contextvars(
            asset=job.asset.key, partition=job.partition, run_id=job.run_id
        ):
            try:
                read = _Reads(versions, job.small, job.stored)
                result = job.asset.fn(**self._kwargs(job, context, read))
                value, version, user_metadata = result, None, None
                if isinstance(result, Output):
                    value, version, user_metadata = (
                        result.value,
                        result.data_version,
                        result.metadata,
                    )
                version, small = self._store(job, value, version)
            except StorageFailure as failure:  # the state directory's disk, not the function
                return _failed(started, f"could not store its value: {failure}", storage=failure)
            except _LostInput as lost:
                return _failed(started, str(lost), lost=(lost.node,), lost_damaged=lost.damaged)
            except _GoneSource as gone:
                return _failed(started, str(gone), gone=(gone.node,))
            except _UnreadableSource as unread:
                return _failed(started, str(unread), unreadable=(unread.node,))
            except Superseded as exc:
                return _failed(started, str(exc))
            except BaseException as exc:
                # Whatever a function raises fails its run: SystemExit, KeyboardInterrupt,
                # GeneratorExit, asyncio's CancelledError or a BaseException of its own would
                # otherwise end the daemon (threads) or pass for a cancellation of the run.
                message = str(exc) if isinstance(exc, _InputError) else describe_error(exc)
                return _failed(
                    started,
                    message,
                    traceback="".join(traceback.format_exception(exc)).rstrip(),
                    where=_where(exc, self.defs.base_dir),
                )
            checks = self._checks(
                job, self.io_for(job.asset.key), context, None if small is None else small.data
            )
        metadata = table_metadata(value)
        if user_metadata:
            metadata.update(user_metadata)
        inputs = tuple(sorted((a, p, read.read.get((a, p), v)) for a, p, v in job.inputs))
        return Outcome(
            ok=True,
            duration_ms=(time.perf_counter() - started) * 1000,
            data_version=version,
            metadata=metadata,
            checks=checks,
            inputs=inputs,
            small=small,
        )

    def _checks(
        self, job: Job, io: IOManager, context: Context, small: bytes | None
    ) -> tuple[CheckOutcome, ...]:
        """Run the asset's checks against the value as stored (what readers will get)."""
        checks = self.defs.checks.get(job.asset.key, ())
        if not checks:
            return ()
        try:
            stored = pickle.loads(small) if small else io.load(job.asset.key, job.partition)
        except Exception as exc:
            error = f"loading the stored value: {describe_error(exc)}"
            return tuple(CheckOutcome(c.name, False, c.blocking, error=error) for c in checks)
        return tuple(_run_check(c, stored, context) for c in checks)


def plain_outcome(outcome: Outcome) -> Outcome:
    """Metadata the log stores as JSON anyway, as the log would write it: an outcome whose
    metadata does not pickle cannot leave its worker, and a run whose function returned
    (and whose value was stored) was failed."""
    checks = tuple(replace(c, metadata=plain_json(c.metadata)) for c in outcome.checks)
    return replace(outcome, metadata=plain_json(outcome.metadata), checks=checks)
