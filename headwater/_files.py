"""Reading files that other people drop into a watched folder, safely.

Only regular files are observed and opened: a FIFO, a socket or a device is skipped (opening a
FIFO blocks; ``/dev/zero`` never ends), and so is a folder. A symbolic link is followed only as
its source's ``symlinks=`` policy allows: ``"inside"`` (the default) when its target resolves
inside the source's root, ``"follow"`` anywhere except ``/proc``, ``/sys``, ``/dev`` and the
state directory, ``"ignore"`` never. A file is opened without following links and without
blocking, checked again after opening (the same file, still regular), and read no further than
the size it had then, so a file that grows while it is read cannot hold a reader forever.

Content versions are cached by (device, inode, size, mtime, ctime): a rescan re-hashes only
files that changed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from headwater.versions import chunks_version

__all__ = [
    "FORBIDDEN_ROOTS",
    "FileCache",
    "Found",
    "Skipped",
    "SymlinkPolicy",
    "examine",
    "read_bytes",
    "under",
]

SymlinkPolicy = Literal["inside", "follow", "ignore"]
SYMLINK_POLICIES: tuple[SymlinkPolicy, ...] = ("inside", "follow", "ignore")
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
_CHUNK = 1 << 20

Signature = tuple[int, int, int, int, int]
"""(device, inode, size, mtime_ns, ctime_ns) of the file as last seen."""


class Skipped(Exception):
    """A path that is not observed, with the reason in words a user can act on."""


@dataclass(frozen=True, slots=True)
class Found:
    path: str
    """The path as it appears in the watched folder (a link's own path for a link)."""
    target: str
    """The regular file to read (a link's resolved target; else ``path``)."""
    signature: Signature
    link: bool = False


def under(path: str, root: str) -> bool:
    """Is ``path`` the folder ``root`` or below it (compared as strings, no filesystem)?"""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def examine(
    path: str, *, policy: SymlinkPolicy, root: str, private: tuple[str, ...] = ()
) -> Found | None:
    """What ``path`` is: a regular file (or an allowed link to one), None when it is gone.

    Raises :class:`Skipped` saying why it is not observed and how to allow it where that is
    possible. ``root`` is the source's fixed folder; ``private`` holds folders never read
    (the state directory).
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISLNK(st.st_mode):
        if not stat.S_ISREG(st.st_mode):
            raise Skipped(f"it is {_kind(st.st_mode)}; only regular files are observed")
        return Found(path, path, _signature(st))
    if policy == "ignore":
        raise Skipped('it is a symbolic link and the source has symlinks="ignore"')
    target = os.path.realpath(path)
    forbidden = next((r for r in (*FORBIDDEN_ROOTS, *private) if under(target, r)), None)
    if forbidden is not None:
        raise Skipped(f"it is a symbolic link to {target}, under {forbidden}, which is never read")
    if policy == "inside" and not under(target, root):
        raise Skipped(
            f"it is a symbolic link to {target}, outside the source's folder {root}; "
            'to follow links anywhere, declare the source with symlinks="follow"'
        )
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        return None  # a dangling link: nothing there (yet)
    if not stat.S_ISREG(st.st_mode):
        raise Skipped(f"it is a symbolic link to {_kind(st.st_mode)}; only regular files are read")
    return Found(path, target, _signature(st), link=True)


@contextlib.contextmanager
def _open_checked(found: Found) -> Iterator[tuple[int, int]]:
    """The file opened without following links or blocking, if it is still what was examined:
    yields the descriptor and the number of bytes to read."""
    try:
        fd = os.open(found.target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Skipped("it was replaced by a symbolic link while being read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Skipped(f"it was replaced by {_kind(st.st_mode)} while being read")
        yield fd, st.st_size
    finally:
        os.close(fd)


def _chunks(found: Found) -> Iterator[bytes]:
    with _open_checked(found) as (fd, size):
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                break
            yield chunk
            left -= len(chunk)


def read_bytes(found: Found) -> bytes:
    """The file's content, up to the size it had when opened."""
    return b"".join(_chunks(found))


def _hash(found: Found) -> str:
    return chunks_version(_chunks(found))


class FileCache:
    """Content versions by file signature, so a rescan hashes only what changed (LRU; shared
    by the sensor's and the runs' threads)."""

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._versions: OrderedDict[str, tuple[Signature, str]] = OrderedDict()
        self._lock = threading.Lock()

    def version(self, found: Found) -> str:
        with self._lock:
            cached = self._versions.get(found.target)
            if cached is not None and cached[0] == found.signature:
                self._versions.move_to_end(found.target)
                return cached[1]
        version = _hash(found)
        with self._lock:
            self._versions[found.target] = (found.signature, version)
            if len(self._versions) > self._size:
                self._versions.popitem(last=False)
        return version
