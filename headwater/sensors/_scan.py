"""One pass over a FileSource's files: the version of every partition found on disk.

Start-up, ``materialize`` without a daemon and the file sensor's reconciliation use it to notice
what changed while nobody was watching. It walks the pattern's fixed folder without following
links to folders, matches each path against the pattern, and examines each match as
:mod:`headwater._files` says (regular files only; links by the source's policy). What it skips
it reports, so that the caller can say why, once.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from headwater._errors import PartitionKeyError
from headwater._files import FileCache, Found, Skipped, SymlinkPolicy, examine, under
from headwater.definitions import (
    Definitions,
    FileSource,
    PartitionContext,
    SourceDef,
    dynamic_keys_in,
)
from headwater.planning import NodeKey, State
from headwater.versions import files_version

__all__ = [
    "UNLISTED",
    "UNREADABLE",
    "Listing",
    "cannot_read",
    "files_under",
    "glob_regex",
    "hidden_folder",
    "listed_gone",
    "match_path",
    "scan_file_source",
    "source_files",
    "unobserved_changes",
]


@dataclass(slots=True)
class Listing:
    found: dict[str | None, str] = field(default_factory=dict)
    """``{partition: content version}`` (None for an unpartitioned source)."""
    files: dict[str | None, Found] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    """``(path, why)`` for files that match the pattern but are not observed."""
    unlisted: list[str] = field(default_factory=list)
    """Folders that could not be listed: the listing is not complete (no deletion may be
    inferred from it, and a glob's version would cover only part of its files)."""

    @property
    def complete(self) -> bool:
        return not self.unlisted


UNREADABLE = "it cannot be read: "
UNLISTED = "the folder cannot be listed; what it holds is kept as it was until it can"


def cannot_read(exc: OSError) -> str:
    """Why a file that matches is not observed: it cannot be opened or read (permissions)."""
    return UNREADABLE + str(exc.strerror or exc)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell-style globbing on ``/``-separated paths: ``*`` and ``?`` stay within a folder,
    ``**`` as a whole segment spans any number of folders."""
    out = ""
    segments = pattern.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out += ".*" if last else "(?:[^/]*/)*"
            continue
        j = 0
        while j < len(segment):
            c = segment[j]
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "[" and (end := segment.find("]", j + 2)) != -1:
                body = segment[j + 1 : end]
                negate = body.startswith(("!", "^"))
                body = body[1:] if negate else body
                out += "[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]"
                j = end
            else:
                out += re.escape(c)
            j += 1
        if not last:
            out += "/"
    return re.compile(out, re.DOTALL)


def _name(source: FileSource, base_dir: Path, path: str) -> str | None:
    """The path as the pattern spells it: relative to the definitions' folder, or absolute."""
    if Path(source.template).is_absolute():
        return path
    rel = os.path.relpath(path, base_dir)
    return rel.replace(os.sep, "/")


def match_path(source: FileSource, base_dir: Path, path: str) -> tuple[bool, str | None]:
    """Whether ``path`` belongs to ``source``, and its partition (None if unpartitioned).

    Raises :class:`PartitionKeyError` for a path that matches the pattern but names no key.
    """
    name = _name(source, base_dir, path)
    if name is None or _hidden(source, name):
        return False, None
    if source.partitions is not None:
        partition = source.partition_of(name)
        return partition is not None, partition
    if source.is_glob:
        regex = source.__dict__.get("_glob")
        if regex is None:
            regex = source.__dict__["_glob"] = glob_regex(source.template)
        # the pattern itself where a file has that name: ``reports[2026].csv`` names one
        # file, not one of 2, 0 and 6 (as an object source takes a key)
        matched = name == source.template or regex.fullmatch(name) is not None
        if matched and any("\ud800" <= c <= "\udfff" for c in name):
            # its bytes would go into the source's version and the log as text
            raise PartitionKeyError(f"the name of {path!r} is not valid UTF-8; rename it")
        return matched, None
    return str(source.resolve(base_dir, None)) == path, None


def _hidden(source: FileSource, name: str) -> bool:
    """Whether ``name`` (as the pattern spells it) has a folder or file name that starts with a
    dot where the pattern has a placeholder or wildcard: a staging folder (``inbox/.tmp/``), an
    editor's or a copy's temporary file, as a shell's ``*`` leaves them out. A pattern that
    names dot files itself (``inbox/{partition}/.done``) takes them."""
    prefix = source.static_prefix
    folder = prefix[: prefix.rfind("/") + 1]
    rest = name[len(folder) :]
    if "." not in rest:
        return False
    names, spelled = rest.split("/"), source.template[len(folder) :].split("/")
    if "**" not in spelled and len(names) == len(spelled):  # name by name
        return any(n[0] == "." != s[0] for n, s in zip(names, spelled, strict=True) if n)
    if any(s.startswith(".") for s in spelled):  # ** spans folders: any dot name may be meant
        return False
    return any(n.startswith(".") for n in names)


def hidden_folder(source: FileSource, base_dir: Path, folder: str) -> bool:
    """Whether nothing under ``folder`` can be ``source``'s: it lies elsewhere, or below a
    hidden name (a staging folder renamed into place held nothing counted)."""
    root = str(source.root(base_dir))
    if not under(folder, root):
        return not under(root, folder)
    name = _name(source, base_dir, folder + "/x")
    return name is not None and _hidden(source, name)


def source_files(
    source: FileSource, base_dir: Path, unlisted: list[str] | None = None
) -> Iterator[str]:
    """Every path under the source's fixed folder that its pattern could match (files, links
    and anything else that is not a folder), without following links to folders. Folders
    that exist but cannot be listed (permissions) go to ``unlisted``."""
    if not source.partitions and not source.is_glob:
        path = source.resolve(base_dir, None)
        if os.path.lexists(path):
            yield str(path)
        return
    yield from files_under(str(source.root(base_dir)), unlisted)


def files_under(root: str, unlisted: list[str] | None = None) -> Iterator[str]:
    """Every path below ``root`` that is not a folder, without following links to folders.
    Folders that exist but cannot be listed (permissions) go to ``unlisted``."""

    def failed(exc: OSError) -> None:
        # A folder gone, a file in its place or a link loop names no folder: nothing is
        # there. One that is there but cannot be read holds what it held.
        if unlisted is not None and exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            unlisted.append(str(exc.filename or root))

    for folder, _, names in os.walk(root, onerror=failed):
        for name in names:
            yield os.path.join(folder, name)


def scan_file_source(
    source: FileSource,
    base_dir: Path,
    cache: FileCache,
    private: tuple[str, ...] = (),
) -> Listing:
    """Every partition of ``source`` on disk now, with its content version."""
    listing = Listing()
    root = os.path.realpath(source.root(base_dir))  # a link loop names no folder: no error
    policy: SymlinkPolicy = source.symlinks  # type: ignore[assignment]
    glob_files: list[tuple[str, str]] = []
    for path in source_files(source, base_dir, listing.unlisted):
        try:
            matched, partition = match_path(source, base_dir, path)
        except PartitionKeyError as exc:
            listing.ignored.append((path, str(exc)))
            continue
        if not matched:
            continue
        try:
            found = examine(path, policy=policy, root=root, private=private)
            if found is None:
                continue
            version = cache.version(found)
        except Skipped as skipped:
            listing.ignored.append((path, str(skipped)))
            continue
        except OSError as exc:  # unreadable (permissions, I/O): say so, do not stop the scan
            listing.ignored.append((path, cannot_read(exc)))
            continue
        if source.is_glob:
            glob_files.append((_name(source, base_dir, path) or path, version))
            listing.files[path] = found
        else:
            listing.found[partition] = version
            listing.files[partition] = found
    if listing.unlisted:
        listing.ignored += [(folder, UNLISTED) for folder in listing.unlisted]
    if source.is_glob and glob_files:
        listing.found[None] = files_version(glob_files)
    return listing


def unobserved_changes(
    defs: Definitions, state: State, now: datetime, private: tuple[str, ...] = ()
) -> tuple[list[tuple[NodeKey, str | None]], list[tuple[str, str]]]:
    """What a daemon starting now would observe of the file sources before deciding anything
    (as :func:`~headwater.sensors.files.sync_file_sources` does through the engine), without
    observing it: the partitions whose version on disk is not the recorded one (None: a file
    the log has that is gone), in a listing that is complete. Also the sources left as they
    were because a folder could not be listed, with that folder. Reads every file of the
    file sources (hashing each, as a starting daemon does)."""
    cache = FileCache()
    changes: list[tuple[NodeKey, str | None]] = []
    partial: list[tuple[str, str]] = []
    pctx = PartitionContext(now=now, dynamic_keys=state.dynamic_keys)
    for key, node in defs.sources.items():
        if not isinstance(node, FileSource):
            continue
        listing = scan_file_source(node, defs.base_dir, cache, private)
        if not listing.complete:
            partial += [(key, folder) for folder in listing.unlisted]
            if node.is_glob:
                continue  # its version would cover only part of its files
        parts = node.partitions
        for partition, version in listing.found.items():
            if state.version((key, partition)) == version:
                continue
            # a dynamic key is added by the observation; any other must exist now
            if (
                parts is not None
                and partition is not None
                and not dynamic_keys_in(parts, partition)
                and not parts.has_key(partition, pctx)
            ):
                continue
            changes.append(((key, partition), version))
        if listing.complete:
            changes += [((key, p), None) for p in listed_gone(node, listing.found, state, pctx)]
    return changes, partial


def listed_gone(
    source: SourceDef, found: Mapping[str | None, str], state: State, pctx: PartitionContext
) -> list[str | None]:
    """The partitions of ``source`` with a version that a complete listing (``found``) no
    longer has: deleted. A partition the definitions no longer hold (a key removed, a range
    that starts later) is not listed by design: it stays as it was, shown as removed."""
    parts = source.partitions
    known: list[str | None] = (
        [None] if parts is None else list(state.present_partitions(source.key))
    )
    return [
        p
        for p in known
        if p not in found
        and state.version((source.key, p)) is not None
        and (parts is None or (p is not None and parts.has_key(p, pctx)))
    ]
