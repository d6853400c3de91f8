"""The object-store sensor: poll ListObjectsV2 per source, diff ETags against the state.

The last observed version of every partition is in the SQLite state (``current_state``), so a
listing is diffed against what the log already holds: an unchanged ETag is no event. Only a
complete listing (every page) can reveal a deletion; a failed one changes nothing and the
next poll backs off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from headwater import _s3
from headwater._errors import PartitionKeyError
from headwater._storage import StorageFailure
from headwater.definitions import ObjectSource
from headwater.execution import Engine
from headwater.execution._loaders import matching_keys
from headwater.versions import files_version

__all__ = ["ObjectSensor", "versions_from_listing"]

_log = structlog.get_logger("headwater.sensors.objects")
_MAX_BACKOFF = 8
_REPEAT_S = 300.0
"""Seconds between two warnings that a source still cannot be listed (the same error)."""


def versions_from_listing(
    source: ObjectSource, listing: dict[str, _s3.ObjectEntry], ignored: list[tuple[str, str]]
) -> dict[str | None, str]:
    """``{partition: version}`` from a complete listing; the version of an object is its ETag.
    Keys that match the pattern but name no partition go to ``ignored`` with the reason."""
    if source.partitions is None:
        if source.is_glob:
            keys = matching_keys(source, list(listing))
            return {None: files_version((k, listing[k][0]) for k in keys)} if keys else {}
        entry = listing.get(source.template)
        return {} if entry is None else {None: entry[0]}
    found: dict[str | None, str] = {}
    for key, (etag, _size) in listing.items():
        try:
            partition = source.partition_of(key)
        except PartitionKeyError as exc:
            ignored.append((key, str(exc)))
            continue
        if partition is not None:
            found[partition] = etag
    return found


class ObjectSensor:
    """Polls every ``ObjectSource`` at its ``poll`` interval, backing off on errors."""

    def __init__(self, engine: Engine, on_change: Callable[[], None]) -> None:
        self.engine = engine
        self.on_change = on_change
        self.sources = [s for s in engine.defs.sources.values() if isinstance(s, ObjectSource)]
        self._warned: set[tuple[str, str]] = set()
        self._started = time.monotonic()
        self._listed_at: dict[str, float] = {}
        self._warned_at: dict[str, float] = {}
        """When the last warning of each failing source was logged (monotonic)."""
        self.failing: dict[str, tuple[float, str]] = {}
        """Sources whose last listing failed -> since when (monotonic) and the last error; the
        next listing that works says so."""

    async def scan(self) -> None:
        """Poll every source once (at start, on reload, after a disk outage): a store that
        cannot be listed now is reported, and its own polling goes on trying."""
        for source in self.sources:
            try:
                await self.poll(source)
            except StorageFailure:
                continue  # our own disk: recovery scans again
            except Exception as exc:  # the store is down, refuses, or has no such bucket
                self._failed(source, exc, retry_in_s=source.poll.total_seconds())

    def _failed(self, source: ObjectSource, exc: Exception, *, retry_in_s: float) -> None:
        """Record a failed listing. A warning for the first one, for another error, and every
        ``_REPEAT_S`` while it lasts; the polls between are debug lines: a store down for a
        night is not a line every few seconds in the journal."""
        now = time.monotonic()
        error = f"{type(exc).__name__}: {exc}"
        since, before = self.failing.get(source.key, (now, ""))
        self.failing[source.key] = (since, error)
        warn = error != before or now - self._warned_at.get(source.key, -_REPEAT_S) >= _REPEAT_S
        if warn:
            self._warned_at[source.key] = now
        (_log.warning if warn else _log.debug)(
            "object_listing_failed",
            source=source.key,
            error=error,
            failing_for_s=round(now - since, 3),
            retry_in_s=retry_in_s,
        )

    async def poll(self, source: ObjectSource) -> bool:
        """One listing and diff; raises when the store cannot be listed."""
        since = self.engine.observation_mark()
        # Abandoned if the daemon stops meanwhile: a store that hangs must not hold the stop
        # for boto3's timeouts and retries (minutes); the thread ends with them, unheard.
        listing = await anyio.to_thread.run_sync(_s3.list_objects, source, abandon_on_cancel=True)
        if (failed := self.failing.pop(source.key, None)) is not None:
            self._warned_at.pop(source.key, None)
            _log.info("object_listing_recovered", source=source.key,
                      failed_for_s=round(time.monotonic() - failed[0], 3))  # fmt: skip
        if self.engine.store_answered(source.key):  # runs it did not answer go again
            self.on_change()
        ignored: list[tuple[str, str]] = []
        found = versions_from_listing(source, listing, ignored)
        for key, why in ignored:
            if (key, why) not in self._warned:  # once per key, not once per poll
                self._warned.add((key, why))
                _log.warning("object_ignored", source=source.key, key=key, reason=why)
        changed = await self.engine.reconcile(source.key, found, since)
        self._listed_at[source.key] = time.monotonic()
        for o in changed:  # what changed a version: news to someone tailing the log
            if o.version is None:
                _log.info("object_deleted", source=o.key, partition=o.partition)
            else:
                _log.info("object_observed", source=o.key, partition=o.partition,
                          data_version=o.version)  # fmt: skip
        if changed:
            self.on_change()
        return bool(changed)

    def unreadable(self) -> list[dict[str, object]]:
        """The sources whose store cannot be listed now: for ``health``."""
        now = time.monotonic()
        return [
            {"source": key, "for_s": round(now - since, 3), "error": error}
            for key, (since, error) in sorted(self.failing.items())
        ]

    def lags(self) -> list[tuple[str, float]]:
        """Per source, seconds since its last successful listing (since the sensor started
        when there has been none)."""
        now = time.monotonic()
        return [(s.key, now - self._listed_at.get(s.key, self._started)) for s in self.sources]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for source in self.sources:
                tg.start_soon(self._poll_forever, source)
            task_status.started()

    async def _poll_forever(self, source: ObjectSource) -> None:
        interval = source.poll.total_seconds()
        failures = 0
        while True:
            await anyio.sleep(interval * min(2**failures, _MAX_BACKOFF))
            try:
                await self.poll(source)
            except StorageFailure:
                continue  # our own disk, not the store: the daemon rides it out
            except Exception as exc:  # the store is down or refuses: report, back off, go on
                failures += 1
                self._failed(source, exc, retry_in_s=interval * min(2**failures, _MAX_BACKOFF))
            else:
                failures = 0
