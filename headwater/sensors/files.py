"""The file sensor: watchdog (inotify) events on the folders of every FileSource.

A file counts once it is complete: on close-after-write, or when it is moved into place. When
files are written into a folder created a moment earlier, the watch on that folder arrives late
and most such files show only a ``created`` event; files in such new folders get a stability
check (size and mtime unchanged for ``settle`` seconds). In folders already watched, a file is
never counted before its writer closes it, however long the writer pauses. watchdog only logs an inotify queue overflow, so a
logging handler turns that warning into an immediate reconciliation rescan; the same rescan
also runs every ``rescan_interval`` seconds and diffs the tree against the versions in the log.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.from_thread import run_sync as run_on_loop
from anyio.lowlevel import current_token
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from headwater._errors import HeadwaterError
from headwater.definitions import FileSource
from headwater.execution import Engine
from headwater.sensors._scan import scan_file_source, sync_file_sources
from headwater.versions import file_version

__all__ = ["FileSensor", "match_path", "watch_roots"]

_log = structlog.get_logger("headwater.sensors.files")
_RESCAN = "rescan"
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
_INTERESTING = {"created", "closed", "moved", "deleted"}
_NEW_DIR_WINDOW = 10.0
"""Seconds after a folder appears during which its files may lack close events."""

Signature = tuple[int, int]
"""(size, mtime_ns)"""


class _Forward(FileSystemEventHandler):
    """Runs in watchdog's thread: hands each event to the loop, never blocking on a full queue."""

    def __init__(self, push: Callable[[object], None]) -> None:
        self._push = push

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _INTERESTING:
            self._push(event)


class _OverflowAlarm(logging.Handler):
    """watchdog reports a lost-events overflow only as a log warning; turn it into a rescan."""

    def __init__(self, alarm: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._alarm = alarm

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._alarm()


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _fixed_folder(source: FileSource, base: Path) -> Path:
    """The folder above a pattern's first placeholder or glob character."""
    prefix = source.static_prefix
    folder = Path(prefix) if prefix.endswith("/") else Path(prefix).parent
    return folder if folder.is_absolute() else base / folder


def watch_roots(sources: list[FileSource], base: Path) -> list[Path]:
    """The folders to watch: each pattern's fixed folder, or its nearest existing parent."""
    found: set[Path] = set()
    for source in sources:
        folder = _fixed_folder(source, base)
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        found.add(folder.resolve())
    return sorted(r for r in found if not any(r != o and r.is_relative_to(o) for o in found))


def match_path(
    sources: list[FileSource], base: Path, path: str
) -> list[tuple[FileSource, str | None]]:
    """The sources (and partitions) a path belongs to; an unpartitioned glob source matches
    anything below its fixed folder, and its version is then recomputed from all its files."""
    out: list[tuple[FileSource, str | None]] = []
    target = Path(path)
    for source in sources:
        if source.partitions is None:
            if source.is_glob:
                if target.is_relative_to(_fixed_folder(source, base)):
                    out.append((source, None))
            elif source.resolve(base, None) == target:
                out.append((source, None))
            continue
        if Path(source.template).is_absolute():
            name = path
        elif target.is_relative_to(base):
            name = target.relative_to(base).as_posix()
        else:
            continue
        if (partition := source.partition_of(name)) is not None:
            out.append((source, partition))
    return out


def _files_under(folder: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]


class FileSensor:
    def __init__(
        self,
        engine: Engine,
        on_change: Callable[[], None],
        *,
        settle: float = 0.5,
        rescan_interval: float = 300.0,
    ) -> None:
        self.engine = engine
        self.on_change = on_change
        self.settle = settle
        self.rescan_interval = rescan_interval
        self.base = engine.defs.base_dir
        self.sources = [s for s in engine.defs.sources.values() if isinstance(s, FileSource)]
        self._settling: dict[str, tuple[Signature | None, float]] = {}
        self._new_dirs: dict[str, float] = {}

    def roots(self) -> list[Path]:
        return watch_roots(self.sources, self.base)

    def match(self, path: str) -> list[tuple[FileSource, str | None]]:
        return match_path(self.sources, self.base, path)

    # -- observing -----------------------------------------------------------------------

    async def scan(self) -> None:
        """Observe every file source as it is on disk (start-up and reconciliation)."""
        if await sync_file_sources(self.engine):
            self.on_change()

    async def _observe_path(self, path: str) -> None:
        changed = False
        engine = self.engine
        for source, partition in self.match(path):
            try:
                if source.is_glob:
                    found = await anyio.to_thread.run_sync(scan_file_source, source, self.base)
                    version = found.get(None)
                else:
                    try:
                        version = await anyio.to_thread.run_sync(file_version, Path(path))
                    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                        version = None
                if version is None:
                    if engine.state.version((source.key, partition)) is not None:
                        changed |= await engine.observe(
                            source.key, partition=partition, deleted=True
                        )
                else:
                    changed |= await engine.observe(
                        source.key, version, partition=partition, payload={"path": path}
                    )
            except (HeadwaterError, OSError) as exc:
                _log.warning(
                    "file_observation_failed", path=path, source=source.key, error=str(exc)
                )
        if changed:
            self.on_change()

    def _settle_later(self, path: str, signature: Signature | None) -> None:
        self._settling[path] = (signature, time.monotonic() + self.settle)

    async def _settle_due(self) -> None:
        """Created-only files: count them once size and mtime stood still for ``settle``."""
        now = time.monotonic()
        due = [p for p, (_, at) in self._settling.items() if at <= now]
        for path in due:
            before, _ = self._settling.pop(path)
            after = await anyio.to_thread.run_sync(_signature, path)
            if after is not None and after != before:
                self._settle_later(path, after)
            else:
                await self._observe_path(path)

    async def _process(self, item: object) -> None:
        if item == _RESCAN:
            _log.warning("rescan", reason="inotify queue overflow")
            await self.scan()
            return
        assert isinstance(item, FileSystemEvent)
        src = os.fsdecode(item.src_path)
        kind = item.event_type
        if item.is_directory:
            if kind == "created":
                # The watch on a new folder arrives late: files written into it meanwhile show
                # at most a `created` event, so they are counted once they stand still.
                self._new_dirs[src] = time.monotonic()
                for path in await anyio.to_thread.run_sync(_files_under, src):
                    self._settle_later(path, await anyio.to_thread.run_sync(_signature, path))
            elif kind == "moved":  # a folder moved into place holds complete files
                for path in await anyio.to_thread.run_sync(
                    _files_under, os.fsdecode(item.dest_path)
                ):
                    await self._observe_path(path)
            if kind in ("deleted", "moved"):
                await self.scan()
            return
        if kind == "closed":
            self._settling.pop(src, None)
            await self._observe_path(src)
        elif kind == "moved":
            await self._observe_path(src)
            dest = os.fsdecode(item.dest_path)
            self._settling.pop(dest, None)
            await self._observe_path(dest)
        elif kind == "deleted":
            self._settling.pop(src, None)
            await self._observe_path(src)
        elif kind == "created" and self._in_new_dir(src):
            self._settle_later(src, await anyio.to_thread.run_sync(_signature, src))
        # Otherwise a created or modified file in a watched folder is still being written:
        # its close-after-write event says when it is complete.

    def _in_new_dir(self, path: str) -> bool:
        now = time.monotonic()
        for folder, at in list(self._new_dirs.items()):
            if now - at > _NEW_DIR_WINDOW:
                del self._new_dirs[folder]
        parent = os.path.dirname(path)
        return any(parent == f or parent.startswith(f + os.sep) for f in self._new_dirs)

    async def _consume(self, receive: Any) -> None:
        while True:
            timeout = math.inf
            if self._settling:
                timeout = max(0.0, min(at for _, at in self._settling.values()) - time.monotonic())
            item: object = None
            with anyio.move_on_after(timeout):  # only the wait is timed: processing never is
                item = await receive.receive()
            if item is not None:
                await self._process(item)
            await self._settle_due()

    async def _rescan_forever(self) -> None:
        while True:
            await anyio.sleep(self.rescan_interval)
            await self.scan()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``started`` once the watches are armed (events then queue)."""
        send, receive = anyio.create_memory_object_stream[object](math.inf)
        token = current_token()

        def push(item: object) -> None:
            # If the loop is shutting down the item is dropped; the next start-up scan catches up.
            with contextlib.suppress(
                RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError
            ):
                run_on_loop(send.send_nowait, item, token=token)

        observer = Observer()

        def arm() -> None:  # stats folders and adds inotify watches: off the loop
            for root in self.roots():
                observer.schedule(_Forward(push), str(root), recursive=True)
            observer.start()

        alarm = _OverflowAlarm(lambda: push(_RESCAN))
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(alarm)
        await anyio.to_thread.run_sync(arm)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._consume, receive)
                tg.start_soon(self._rescan_forever)
                task_status.started()
        finally:
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(alarm)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_stop, observer)
                send.close()
                receive.close()


def _stop(observer: Any) -> None:
    observer.stop()
    observer.join(timeout=10)
