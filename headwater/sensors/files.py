"""The file sensor: watchdog (inotify) events on the folders of every FileSource.

A file counts once it is complete: on close-after-write, when it is moved into place (from a
watched folder or from anywhere else), or when it appears complete at once (a symbolic link, a
hard link). In a folder created a moment earlier the watch arrives late and most files show
only a ``created`` event, so files there count once their size and mtime stood still for
``settle`` seconds; in folders already watched a file is never counted before its writer closes
it. A source's own ``settle=`` additionally waits until a path has been quiet that long, so a
file appended to in steps counts once, with its final content.

Events are handled in batches: everything queued is gathered, each path examined and hashed
once (in one worker thread, with hashes cached by file signature), each glob source rescanned
once, and all observations committed in one transaction, so a burst of thousands of files does
not starve other sources. A symbolic link is followed as its source allows; a change to its
target is noticed too (the target's folder is watched if no source watches it). watchdog only
logs an inotify queue overflow, so a logging handler turns that warning into an immediate
reconciliation rescan; the same rescan runs every ``rescan_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import ObservedWatch
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_c import InotifyConstants

from headwater._errors import PartitionKeyError
from headwater._files import FileCache, Skipped, SymlinkPolicy, examine, under
from headwater._storage import StorageFailure
from headwater.definitions import FileSource
from headwater.execution import Engine, Observed
from headwater.sensors._scan import (
    UNLISTED,
    UNREADABLE,
    cannot_read,
    files_under,
    hidden_folder,
    match_path,
    scan_file_source,
)
from headwater.sensors._writers import held_for_writing

__all__ = ["FileSensor", "sync_file_sources", "watch_roots"]

_log = structlog.get_logger("headwater.sensors.files")
_RESCAN = "rescan"
_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
_INTERESTING = {"created", "closed", "moved", "deleted", "attrib"}
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileClosedEvent, FileMovedEvent, DirMovedEvent,
    FileDeletedEvent, DirDeletedEvent, FileAttribEvent, DirAttribEvent,
]  # fmt: skip
"""The inotify mask: no IN_OPEN/IN_ACCESS/IN_CLOSE_NOWRITE/IN_MODIFY. Readers of a watched
folder (the runs themselves) and every chunk of a write would otherwise flood the kernel's
queue until it overflows. IN_ATTRIB (see :class:`_Observer`): a file or folder that could not
be read counts once ``chmod`` makes it readable."""
_OVERFLOW = "inotify queue overflow"
_NEW_DIR_WINDOW = 10.0
"""Seconds after a folder appears during which its files may lack close events."""
_BATCH = 5_000
"""Events handled per batch at most, so that timers and other sources get their turn."""
_GLOB_PACE = 4.0
"""A glob source's version covers all its files, so each change lists them all again: the
next listing waits this many times as long as the last one took, so that a folder of 80,000
files receiving a file a second costs a fifth of a core, not all of it (changes meanwhile
are counted together); a small folder's listing takes a millisecond, and so does the wait."""
_WARNED_MAX = 10_000
"""Paths named in the log (as ignored) remembered at most, so each is named once."""
_GONE_NAMED_S = 10.0
"""How long a file named as ignored, gone when named, is not named again by later events."""

Signature = tuple[int, int]
"""(size, mtime_ns)"""


class _Forward(FileSystemEventHandler):
    """Runs in watchdog's thread: hands each event to the loop, never blocking on a full queue."""

    def __init__(self, push: Callable[[object], None]) -> None:
        self._push = push

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _INTERESTING:
            self._push(event)


class _Observer(InotifyObserver):
    """watchdog's observer, with IN_ATTRIB in its mask: watchdog adds it only along with
    IN_MODIFY (asking for modified events), which would bring every chunk of every write."""

    def __init__(self) -> None:
        super().__init__(generate_full_events=True)
        emitter: Any = self._emitter_class
        if hasattr(emitter, "get_event_mask_from_filter"):  # else: counted at the rescan

            def mask(self: Any) -> Any:
                return emitter.get_event_mask_from_filter(self) | InotifyConstants.IN_ATTRIB

            self._emitter_class = type(
                "_AttribEmitter", (emitter,), {"get_event_mask_from_filter": mask}
            )


class _OverflowAlarm(logging.Handler):
    """watchdog reports a lost-events overflow only as a log warning; turn it into a rescan."""

    def __init__(self, alarm: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._alarm = alarm

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._alarm()


def links_on_the_way(path: str, limit: int = 40) -> set[str]:
    """The symbolic links met in resolving ``path``: among its folders, then among those of
    where each link points (a loop, or more than ``limit``, ends the walk)."""
    found: set[str] = set()
    todo = [os.path.abspath(path)]
    while todo and len(found) < limit:
        path = todo.pop()
        prefix = ""
        for part in path.split("/")[1:]:
            prefix = f"{prefix}/{part}"
            if prefix in found or not os.path.islink(prefix):
                continue
            found.add(prefix)
            try:
                target = os.path.join(os.path.dirname(prefix), os.readlink(prefix))
            except OSError:  # replaced meanwhile: its event re-arms
                break
            todo.append(os.path.normpath(target) + path[len(prefix) :])
            break
    return found


def watch_roots(sources: list[FileSource], base: Path) -> list[Path]:
    """The folders to watch: each pattern's fixed folder, or its nearest existing parent."""
    found: set[Path] = set()
    for source in sources:
        # where it points, if it is (or lies under) a link: a link to a folder not made yet is
        # watched from that folder's parent, not from the link's. realpath: a link loop is
        # not an error here (it names no folder, so its parent is watched).
        folder = Path(os.path.realpath(source.root(base)))
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        found.add(folder)
    return sorted(r for r in found if not any(r != o and r.is_relative_to(o) for o in found))


@dataclass(slots=True)
class _Batch:
    """What one batch found, computed in a worker thread."""

    observed: list[Observed] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    unsettled: list[tuple[str, Signature | None]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    """link path -> resolved target, for links seen in this batch"""
    dangling: list[str] = field(default_factory=list)
    """Links among ``links`` whose target does not exist."""
    glob_seconds: dict[str, float] = field(default_factory=dict)
    """How long the listing of each glob source took."""


def _signature(path: str) -> Signature | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _appears_complete(path: str) -> bool:
    """A ``created`` file that will see no close event: a link, or a hard link to a file."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return os.path.islink(path) or st.st_nlink > 1


def _identity(folder: str) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _files_under(folder: str, unlisted: list[str]) -> list[str]:
    return list(files_under(folder, unlisted))


def _can_list(folder: str) -> bool:
    try:
        os.listdir(folder)
    except OSError:
        return False
    return True


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
        self.private = engine.runner.private
        self.cache: FileCache = engine.runner.files
        self.sources = [s for s in engine.defs.sources.values() if isinstance(s, FileSource)]
        self._roots: dict[str, str] = {}
        self._warned: dict[str, set[str]] = {}
        self._gone_named: dict[str, tuple[float, set[str]]] = {}
        """Files named as ignored that were gone when named: their later events (a next
        batch) name them no more, for ``_GONE_NAMED_S``."""
        """Path -> the reasons it was named for: each once, and forgotten with the file (an
        uploader's temporary names would otherwise pile up for the process's life)."""
        self._unreadable: set[str] = set()
        """Matching files that could not be read: a change of their mode (``chmod``) makes
        them looked at again. Other files' IN_ATTRIB (``touch``, ``cp -p``) is ignored."""
        self._glob_next: dict[str, float] = {}
        """Glob source -> when (monotonic) its next listing may run (see :data:`_GLOB_PACE`)."""
        self._blind: set[str] = set()
        """Folders that could not be listed, and so have no watch: inotify refuses to watch
        what it cannot read, and watchdog drops that refusal for good. A change of their mode
        (or the rescan) looks at them again."""
        self._late_watches: dict[str, ObservedWatch] = {}
        """A watch of its own for each folder that could be listed only once it was there."""
        self._settling: dict[str, tuple[Signature | None, float]] = {}
        self._unclosed: dict[str, float] = {}
        """Files created in a watched folder with no close event yet -> when to look at them."""
        self._behind_since: float | None = None
        """When the oldest file event not yet recorded arrived (monotonic; None: caught up)."""
        self._quiet: dict[str, float] = {}
        """Paths of sources with their own ``settle``, waiting to be quiet until then."""
        self._new_dirs: dict[str, float] = {}
        self._targets: dict[str, set[str]] = {}
        """A link's resolved target -> the links that point at it."""
        self._watched: set[str] = set()
        """Folders watched (alone, not below) for links' targets, beside the roots."""
        self._awaited: set[str] = set()
        """Folders of links' targets that do not exist yet (a parent is watched meanwhile)."""
        self._root_watches: dict[str, tuple[ObservedWatch, tuple[int, int] | None]] = {}
        """Each watched root -> its watch and the (device, inode) of the folder it was armed on."""
        self._parent_watches: dict[str, ObservedWatch] = {}
        """Each root's parent, watched alone, to see the root moved away or into place."""
        self._observer: InotifyObserver | None = None
        self._source_roots: list[str] = []
        """Where each source's files live (resolved), to tell which folder events move a root."""
        self._aliases: list[tuple[str, str]] = []
        """(where it points, the link) for each source folder reached through a link: inotify
        names paths where they are, the source's pattern names them through the link."""
        self._named_roots: set[str] = set()
        """Each source's folder as its pattern names it, and every folder above: a link among
        them pointed elsewhere (``ln -sfn``) is a file event, and moves a root."""
        self._handler = _Forward(lambda item: None)

    def roots(self) -> list[Path]:
        return watch_roots(self.sources, self.base)

    # -- watching ------------------------------------------------------------------------

    def _schedule(self, folder: str, *, recursive: bool) -> ObservedWatch | None:
        if self._observer is None:
            return None
        with contextlib.suppress(OSError):  # a folder that vanished meanwhile
            return self._observer.schedule(
                self._handler, folder, recursive=recursive, event_filter=_EVENTS
            )
        return None

    def _watch_link_folder(self, folder: str) -> str | None:
        """Watch ``folder``, or its nearest existing parent; return the folder watched."""
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        return folder if self._schedule(folder, recursive=False) is not None else None

    def _unschedule(self, watch: ObservedWatch) -> None:
        if self._observer is not None:
            with contextlib.suppress(KeyError, ValueError):  # already gone with its folder
                self._observer.unschedule(watch)

    def _arm(self, dead: Iterable[str] = ()) -> None:
        """In a worker thread: watch every root as it is now.

        A root folder removed (``rm -rf inbox && mkdir inbox``) ends its watch for good: watchdog
        stops that emitter, and scheduling the same path again would reuse the dead one. So the
        dead watch is dropped and the root, or its nearest existing parent while it is absent,
        is watched afresh; a folder moved away, or replaced by another (a new inode), is noticed
        here too. New watches are armed before old ones are dropped, so no moment is unwatched.
        """
        for folder in dead:
            held = self._root_watches.pop(folder, None)
            if held is not None:
                self._unschedule(held[0])
        named = [s.root(self.base).absolute() for s in self.sources]
        self._source_roots = [os.path.realpath(folder) for folder in named]
        self._aliases = sorted(
            {
                (real, str(folder))
                for folder, real in zip(named, self._source_roots, strict=True)
                if real != str(folder)
            }
        )
        # A link on the way to a source folder (a link's target may hold links too) pointed
        # elsewhere moves it: each one is a path whose events re-arm, in a folder watched.
        home = self.base.absolute()
        links = {
            link
            for folder in named
            for link in links_on_the_way(str(folder))
            if not home.is_relative_to(link)  # the machine's layout, not something that moves
        }
        self._named_roots = {str(p) for folder in named for p in (folder, *folder.parents)}
        self._named_roots |= links
        for _ in range(3):  # a root that appears while arming is looked at once more
            wanted = [str(root) for root in self.roots()]
            armed: list[str] = []
            for folder in wanted:
                identity = _identity(folder)
                held = self._root_watches.get(folder)
                if held is not None and held[1] == identity:
                    continue
                if held is not None:
                    self._unschedule(held[0])  # same path, other folder: the old watch is blind
                watch = self._schedule(folder, recursive=True)
                if watch is not None:
                    self._root_watches[folder] = (watch, identity)
                    armed.append(folder)
            for folder in [f for f in self._root_watches if f not in wanted]:
                self._unschedule(self._root_watches.pop(folder)[0])
            if not armed:
                break
        # watchdog drops a watched folder's IN_MOVE_SELF and goes on watching it under its new
        # name, reporting paths under the old one: only the parent's watch sees it move away.
        # A source folder reached through links is watched where they lead; each link's own
        # folder is watched alone too, to see it pointed elsewhere.
        roots = self._root_watches
        parents = {
            parent
            for parent in map(os.path.dirname, [*roots, *links])
            if not any(under(parent, r) for r in roots)
        }
        for parent in parents - self._parent_watches.keys():
            watch = self._schedule(parent, recursive=False)
            if watch is not None:
                self._parent_watches[parent] = watch
        for parent in [p for p in self._parent_watches if p not in parents]:
            self._unschedule(self._parent_watches.pop(parent))
        self._roots.clear()  # a source folder that is a link may point elsewhere now

    def _moves_a_root(self, path: str) -> bool:
        """Is ``path`` a watched root, or a folder at or above where a source's files live?"""
        return (
            path in self._root_watches
            or path in self._named_roots
            or any(under(root, path) for root in self._source_roots)
        )

    # -- observing -----------------------------------------------------------------------

    def _warn_ignored(self, ignored: Iterable[tuple[str, str]]) -> None:
        if self._gone_named:
            moment = time.monotonic() - _GONE_NAMED_S
            self._gone_named = {p: e for p, e in self._gone_named.items() if e[0] > moment}
        for path, why in ignored:
            if why.startswith(UNREADABLE):
                self._unreadable.add(path)  # looked at again when its mode changes
            elif why == UNLISTED and (real := os.path.realpath(path)) not in self._root_watches:
                # as inotify names it (a source folder may be reached through a link); a
                # root is armed again by each rescan instead
                self._blind.add(real)
            said = self._warned.get(path) or self._gone_named.get(path, (0.0, None))[1]
            if said is None or why not in said:  # once per path and reason, not per event
                _log.warning("file_ignored", path=path, reason=why)
                if not os.path.lexists(path):
                    # gone already (its deletion may be in this batch): not kept for good,
                    # but a later batch may still hold its events, for a moment
                    self._gone_named[path] = (time.monotonic(), {*(said or ()), why})
                    continue
                if said is None and len(self._warned) >= _WARNED_MAX:
                    self._warned.clear()  # at worst a file still there is named again
                self._warned.setdefault(path, set()).add(why)

    async def scan(self) -> None:
        """Observe every file source as it is on disk, deletions included."""
        try:
            changed, ignored = await sync_file_sources(self.engine, self.cache)
        except StorageFailure:
            return  # the state directory refuses writes: the rescan after recovery catches up
        self._warn_ignored(ignored)
        _log_changes(changed, changed)
        if changed:
            self.on_change()
        if self._blind:  # readable since, perhaps, with no event that said so (a group)
            await self._see_into(sorted(self._blind))

    async def _see_into(self, folders: list[str]) -> None:
        """Folders that could not be listed may be readable now: watch each that is, and count
        what it holds once it stands still (it landed unseen, perhaps still being written)."""
        unlisted: list[str] = []

        def look() -> list[str]:  # in a worker thread: lists folders and adds inotify watches
            found: list[str] = []
            for folder in folders:
                if not _can_list(folder):  # still blind
                    continue
                self._blind.discard(folder)
                # Watched before it is listed, so what lands meanwhile is seen either way.
                watch = self._schedule(folder, recursive=True)
                if watch is not None:
                    self._late_watches[folder] = watch
                found += _files_under(folder, unlisted)
            return found

        found = await anyio.to_thread.run_sync(look)
        self._warn_ignored((folder, UNLISTED) for folder in unlisted)
        now = time.monotonic()
        for folder in folders:
            if folder not in self._blind:
                self._new_dirs[folder] = now  # its files written before the watch: no close
        for path in found:
            for (named,) in self._names(path):
                self._settle_later(named, None)

    def _forget_under(self, folder: str) -> None:
        """``folder`` was removed or moved away: what was blind or watched below it is gone
        (a folder moved within a watched one is watched there by the watch that moved it)."""
        self._blind = {f for f in self._blind if not under(f, folder)}
        for late in [f for f in self._late_watches if under(f, folder)]:
            self._unschedule(self._late_watches.pop(late))

    def _examine(
        self,
        paths: Iterable[str],
        checks: Iterable[tuple[str, Signature | None]],
        unclosed: Iterable[str] = (),
    ) -> _Batch:
        """In a worker thread: every path's source, partition and version (None if gone)."""
        batch = _Batch()
        paths = list(paths)
        still: list[str] = []
        for path, before in checks:  # files in new folders: count them once they stand still
            after = _signature(path)
            if after is not None and after != before:
                batch.unsettled.append((path, after))
            else:
                still.append(path)
        unclosed = list(unclosed)
        real = {p: os.path.realpath(p) for p in (*still, *unclosed)}  # as /proc names them
        writers = held_for_writing(set(real.values()))
        # A writer that still holds the file will close it, and its close event counts it.
        paths += [p for p in still if real[p] not in writers.held]
        # A file created with no close event and held by nobody is complete (a hard link
        # published by os.link then unlinking the temporary name). If /proc cannot see every
        # process, the close may still come: the rescan catches what it never brings.
        if writers.complete:
            paths += [p for p in unclosed if real[p] not in writers.held]
        globs: dict[str, FileSource] = {}
        for path in dict.fromkeys(paths):
            for source in self.sources:
                try:
                    matched, partition = match_path(source, self.base, path)
                except PartitionKeyError as exc:
                    batch.ignored.append((path, str(exc)))
                    continue
                if not matched:
                    continue
                if source.is_glob:
                    globs[source.key] = source
                    continue
                self._examine_one(batch, source, partition, path)
        for source in globs.values():
            began = time.perf_counter()
            listing = scan_file_source(source, self.base, self.cache, self.private)
            batch.glob_seconds[source.key] = time.perf_counter() - began
            batch.ignored.extend(listing.ignored)
            if not listing.complete:
                continue  # its version would cover only part of its files
            batch.observed.append(Observed(source.key, None, listing.found.get(None)))
            for found in listing.files.values():
                if found.link:
                    batch.links[found.path] = found.target
        return batch

    def _examine_one(
        self, batch: _Batch, source: FileSource, partition: str | None, path: str
    ) -> None:
        policy: SymlinkPolicy = source.symlinks  # type: ignore[assignment]
        try:
            root = self._roots.get(source.key)
            if root is None:  # resolved in the worker thread: it touches the filesystem
                root = self._roots[source.key] = os.path.realpath(source.root(self.base))
            found = examine(path, policy=policy, root=root, private=self.private)
            version = None if found is None else self.cache.version(found)
        except Skipped as skipped:
            batch.ignored.append((path, str(skipped)))
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):  # ours, and passing
                batch.unsettled.append((path, None))  # looked at again once settled
                return
            batch.ignored.append((path, cannot_read(exc)))
            return
        if found is not None and found.link:
            batch.links[path] = found.target
        elif found is None and os.path.islink(path):
            # A dangling link: remember where it points, so the target landing counts for it.
            target = os.path.realpath(path)
            batch.links[path] = target
            batch.dangling.append(path)
            batch.ignored.append(
                (path, f"it is a symbolic link to {target}, which does not exist; "
                       "it counts once that file appears")
            )  # fmt: skip
        payload = {"path": path} if version is not None else {}
        batch.observed.append(Observed(source.key, partition, version, payload))

    async def _observe(
        self,
        paths: Iterable[str],
        checks: Iterable[tuple[str, Signature | None]] = (),
        unclosed: Iterable[str] = (),
        *,
        again: bool = True,
    ) -> None:
        paths, checks, unclosed = list(paths), list(checks), list(unclosed)
        if not paths and not checks and not unclosed:
            return
        if self._targets:
            present = set(paths)
            for target, links in self._targets.items():  # a link's target changed: the link did
                if target in present:
                    paths.extend(links)
        batch = await anyio.to_thread.run_sync(self._examine, paths, checks, unclosed)
        for path, signature in batch.unsettled:
            self._settle_later(path, signature)
        # Targets are watched before a dangling link is named: whoever reads that line and
        # then writes the target must be seen doing it. A target written before its folder's
        # watch came is looked at once more here.
        await self._follow_links(batch.links)
        self._warn_ignored(batch.ignored)
        now = time.monotonic()
        for key, seconds in batch.glob_seconds.items():
            self._glob_next[key] = now + _GLOB_PACE * seconds
        await self._record(batch.observed)
        if batch.dangling and again:  # after the batch's word on them is recorded
            there = await _links_to_what_exists({k: batch.links[k] for k in batch.dangling})
            if there:
                await self._observe(there, again=False)

    async def _record(self, observed: list[Observed]) -> None:
        engine = self.engine
        items = [
            o for o in observed
            if o.version is not None or engine.state.version((o.key, o.partition)) is not None
        ]  # fmt: skip
        if not items:
            return
        try:
            changed = await engine.observe_many(items)
        except StorageFailure:
            return  # not recorded: the rescan after recovery notices it again
        _log_changes(items, changed)
        if changed:
            self.on_change()

    async def _follow_links(self, links: dict[str, str]) -> None:
        """Remember which links point where, and watch targets' folders no source watches: the
        nearest one that exists while a target's folder does not (see :meth:`_awaited_made`)."""
        for link, target in links.items():
            self._targets.setdefault(target, set()).add(link)
            folder = os.path.dirname(target)
            if folder in self._watched or any(under(folder, r) for r in self._root_watches):
                continue
            watched = await anyio.to_thread.run_sync(self._watch_link_folder, folder)
            if watched is not None:
                self._watched.add(watched)
            if watched == folder:
                self._awaited.discard(folder)
            else:
                self._awaited.add(folder)

    async def _awaited_made(self, made: list[str], ready: list[str]) -> None:
        """Folders were made: the links whose target lies in a folder awaited below one of
        them are followed again (a level deeper, or there), and count if the target is
        there now (it may have been written before the folder's watch was)."""
        awaited = [f for f in self._awaited if any(under(f, m) for m in made)]
        if not awaited:
            return
        links = {
            link: target
            for target, linked in self._targets.items()
            if os.path.dirname(target) in awaited
            for link in linked
        }
        await self._follow_links(links)
        ready.extend(await _links_to_what_exists(links))

    def _settle_later(self, path: str, signature: Signature | None) -> None:
        self._settling[path] = (signature, time.monotonic() + self.settle)

    def _quiet_sources(self, path: str) -> float | None:
        """The longest wait of the sources ``path`` belongs to, if any waits: its ``settle``,
        or, for a glob, until its listing may run again (see :data:`_GLOB_PACE`)."""
        longest: float | None = None
        now = time.monotonic()
        for source in self.sources:
            paced = self._glob_next.get(source.key, now) - now if source.is_glob else 0.0
            if source.settle is None and paced <= 0:
                continue
            with contextlib.suppress(PartitionKeyError):
                matched, _ = match_path(source, self.base, path)
                if matched:
                    settle = 0.0 if source.settle is None else source.settle.total_seconds()
                    seconds = max(settle, paced)
                    longest = seconds if longest is None else max(longest, seconds)
        return longest

    async def _due(self) -> None:
        """Files whose waiting is over: settled new-folder files, quiet debounced paths."""
        now = time.monotonic()
        checks = [(p, sig) for p, (sig, at) in self._settling.items() if at <= now]
        for path, _ in checks:
            del self._settling[path]
        quiet = [p for p, at in self._quiet.items() if at <= now]
        for path in quiet:
            del self._quiet[path]
        unclosed = [p for p, at in self._unclosed.items() if at <= now]
        for path in unclosed:
            del self._unclosed[path]
        await self._observe(quiet, checks, unclosed)

    def _next_due(self) -> float:
        times = [at for _, at in self._settling.values()]
        times += [*self._quiet.values(), *self._unclosed.values()]
        return max(0.0, min(times) - time.monotonic()) if times else math.inf

    def _ready(self, path: str, ready: list[str]) -> None:
        """``path`` is complete: observe it now, or once it is quiet for its source."""
        wait = self._quiet_sources(path)
        if wait is None:
            ready.append(path)
        else:
            self._quiet[path] = time.monotonic() + wait

    async def _process(self, items: list[object]) -> None:
        ready: list[str] = []
        created: dict[str, None] = {}  # in order; one closed later in the batch is left out
        dead: list[str] = []
        rescan: str | None = None  # why the folders are looked at again now
        rearm = False
        made: list[str] = []  # folders created or moved into place
        blind: list[str] = []  # folders that could not be listed (nor watched)
        readable: list[str] = []  # blind folders whose mode changed
        for item in items:
            if item == _RESCAN:
                rescan = _OVERFLOW
                continue
            assert isinstance(item, FileSystemEvent)
            src = os.fsdecode(item.src_path)
            dest = os.fsdecode(item.dest_path) if item.dest_path else ""
            kind = item.event_type
            if item.is_directory:
                if kind == "attrib":
                    if src in self._blind:
                        readable.append(src)
                    continue
                if kind == "created" or (kind == "moved" and dest):
                    made.append(dest or src)
                if kind == "created":
                    # The watch on a new folder arrives late: files written into it meanwhile
                    # show at most a `created` event, so they are counted once they stand still.
                    for (folder,) in self._names(src):
                        self._new_dirs[folder] = time.monotonic()
                    for path in await anyio.to_thread.run_sync(_files_under, src, blind):
                        for (named,) in self._names(path):
                            self._settle_later(named, None)
                elif kind == "moved" and dest:  # a folder moved into place holds complete files
                    for path in await anyio.to_thread.run_sync(_files_under, dest, blind):
                        for (named,) in self._names(path):
                            self._ready(named, ready)
                if kind == "deleted" or (kind == "moved" and src):
                    self._forget_under(src)
                if (kind == "deleted" or (kind == "moved" and src)) and not all(
                    hidden_folder(s, self.base, name)
                    for s in self.sources
                    for (name,) in self._names(src)
                ):  # what was counted below it is gone from there
                    rescan = f"folder {src} was " + (f"moved to {dest}" if dest else "removed")
                    if src in self._root_watches:  # its watch ended, or follows it elsewhere
                        dead.append(src)
                rearm = rearm or any(self._moves_a_root(p) for p in (src, dest) if p)
                continue
            if (root := next((p for p in (dest, src) if p in self._named_roots), None)) is not None:
                rescan, rearm = f"{root} was pointed elsewhere or replaced", True  # a link
            for named_src, named_dest in self._names(src, dest):
                self._file_event(kind, named_src, named_dest, ready, created)
        if created:  # links and hard links see no close event: they are complete at once
            complete = await anyio.to_thread.run_sync(
                lambda: {p for p in created if _appears_complete(p)}
            )
            for path in created:
                if path in complete:
                    self._ready(path, ready)
                else:  # its close is awaited; if none comes, /proc is asked who writes it
                    self._unclosed[path] = time.monotonic() + self.settle
        if made and self._awaited:
            await self._awaited_made(made, ready)
        self._warn_ignored((folder, UNLISTED) for folder in blind)
        if readable:
            await self._see_into(readable)
        if rearm or dead:
            await anyio.to_thread.run_sync(self._arm, dead)
        if rescan:
            # Lost events are worth a warning; a folder moved or a link switched is routine.
            (_log.warning if rescan == _OVERFLOW else _log.info)("rescan", reason=rescan)
            await self.scan()
        await self._observe(ready)

    def _file_event(
        self, kind: str, src: str, dest: str, ready: list[str], created: dict[str, None]
    ) -> None:
        if kind == "attrib":
            if src in self._unreadable:
                # Readable now, perhaps: looked at at once unless a writer still holds it
                # (its close counts it then), as a file created with no close event is. If
                # still unreadable, it is named again only with another reason.
                self._unreadable.discard(src)
                self._unclosed[src] = time.monotonic()
            return
        if kind != "created":  # what became of a file created earlier, in this batch or not
            self._unclosed.pop(src, None)
            created.pop(src, None)
        if kind == "closed":
            self._settling.pop(src, None)
            self._ready(src, ready)
        elif kind == "moved":
            if src:
                self._warned.pop(src, None)
                ready.append(src)  # gone from here
            if dest:
                self._settling.pop(dest, None)
                self._unclosed.pop(dest, None)
                created.pop(dest, None)
                self._ready(dest, ready)
        elif kind == "deleted":
            self._warned.pop(src, None)
            self._settling.pop(src, None)
            self._quiet.pop(src, None)
            self._unreadable.discard(src)
            ready.append(src)
        elif kind == "created":
            self._gone_named.pop(src, None)  # a new file under a name once named
            if self._in_new_dir(src):
                self._settle_later(src, None)
            else:
                created[src] = None

    def _names(self, *paths: str) -> list[tuple[str, ...]]:
        """``paths`` as inotify named them, and as each source folder reached through a link
        names them (the same paths, through the link), for each such link they lie under."""
        out = [paths]
        for real, link in self._aliases:
            if any(p and under(p, real) for p in paths):
                out.append(tuple(link + p[len(real) :] if under(p, real) else p for p in paths))
        return out

    def lag(self) -> float:
        """Seconds since the oldest file event not yet recorded arrived (0 when caught up)."""
        since = self._behind_since
        return 0.0 if since is None else time.monotonic() - since

    def _in_new_dir(self, path: str) -> bool:
        now = time.monotonic()
        for folder, at in list(self._new_dirs.items()):
            if now - at > _NEW_DIR_WINDOW:
                del self._new_dirs[folder]
        parent = os.path.dirname(path)
        return any(under(parent, f) for f in self._new_dirs)

    async def _consume(self, receive: Any) -> None:
        while True:
            items: list[object] = []
            with anyio.move_on_after(self._next_due()):  # only the wait is timed, never the work
                items.append(await receive.receive())
            while len(items) < _BATCH:
                try:
                    items.append(receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            if items:
                if self._behind_since is None:
                    self._behind_since = time.monotonic()
                await self._process(items)
            await self._due()
            if not self._settling and not self._quiet and not self._unclosed:
                self._behind_since = None

    async def _rescan_forever(self) -> None:
        while True:
            await anyio.sleep(self.rescan_interval)
            await anyio.to_thread.run_sync(self._arm)  # a root moved away sends no event
            await self.scan()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``started`` once the watches are armed (events then queue)."""
        send, receive = anyio.create_memory_object_stream[object](math.inf)
        loop = asyncio.get_running_loop()  # anyio runs on asyncio here (see run_daemon)

        def deliver(item: object) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(item)

        def push(item: object) -> None:
            # Fire and forget: watchdog's thread never waits for the loop, so a burst of
            # thousands of events is queued at once. If the loop is shutting down the item is
            # dropped; the next start-up scan catches up.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, item)

        # full events: a file moved in from an unwatched folder is a move, not a creation
        self._observer = _Observer()
        self._handler = _Forward(push)

        def arm() -> None:  # stats folders and adds inotify watches: off the loop
            self._arm()
            assert self._observer is not None
            self._observer.start()

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
                await anyio.to_thread.run_sync(_stop, self._observer)
                send.close()
                receive.close()


def _stop(observer: Any) -> None:
    observer.stop()
    observer.join(timeout=10)


async def _links_to_what_exists(links: dict[str, str]) -> list[str]:
    """The links (of ``{link: target}``) whose target is there now: one written before its
    folder was watched showed no event, and is looked at once more."""
    return await anyio.to_thread.run_sync(
        lambda: [link for link, target in links.items() if os.path.exists(target)]
    )


def _log_changes(seen: Iterable[Observed], changed: Sequence[Observed]) -> None:
    """A line per observation that changed a version. Only those are news to someone tailing
    the log: a glob source is looked at again on every batch, and a file rewritten with the
    same bytes changes nothing (debug says it was seen)."""
    news = {id(o) for o in changed}
    for o in seen:
        path = o.payload.get("path")
        if id(o) not in news:
            _log.debug("file_unchanged", source=o.key, partition=o.partition,
                       data_version=o.version, path=path)  # fmt: skip
        elif o.version is None:
            _log.info("file_deleted", source=o.key, partition=o.partition)
        else:
            _log.info("file_observed", source=o.key, partition=o.partition,
                      data_version=o.version, path=path)  # fmt: skip


async def sync_file_sources(
    engine: Engine, cache: FileCache | None = None
) -> tuple[list[Observed], list[tuple[str, str]]]:
    """Observe every FileSource as it is on disk, deletions included: return the observations
    that changed a version (each with the file's path), and the files that match a pattern
    but are not observed (with why)."""
    cache = cache or engine.runner.files
    private = engine.runner.private
    base_dir = engine.defs.base_dir
    changed: list[Observed] = []
    ignored: list[tuple[str, str]] = []
    for key, node in engine.defs.sources.items():
        if not isinstance(node, FileSource):
            continue
        since = engine.observation_mark()
        listing = await anyio.to_thread.run_sync(scan_file_source, node, base_dir, cache, private)
        ignored += listing.ignored
        if node.is_glob and not listing.complete:
            continue  # its version would cover only part of its files
        observed = await engine.reconcile(key, listing.found, since, complete=listing.complete)
        for o in observed:
            found = listing.files.get(o.partition) if o.version is not None else None
            changed.append(o if found is None else replace(o, payload={"path": found.path}))
    return changed, ignored
