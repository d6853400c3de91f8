"""One owner per state directory: an exclusive lock that the kernel releases when its holder dies.

The owner (the daemon; or a CLI command or Harness that writes while no daemon runs) holds
``flock(LOCK_EX)`` on ``owner.lock`` and writes into that same file who it is and where its
control socket listens; every other process is a client. The kernel drops the lock when the
process dies (kill -9 included), so a crash never leaves a stale lock. The file's text can
outlive its writer, so a reader trusts it only after failing to take the lock itself, or after
the socket it names has answered.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from headwater._errors import StateDirError
from headwater._storage import storage_failure

__all__ = [
    "LOCK_NAME",
    "PRIVATE_FILES",
    "SOCKET_NAME",
    "WORKERS_LOCK",
    "OwnerInfo",
    "Ownership",
    "StateDirBusy",
    "check_private",
    "control_socket_path",
    "linked",
    "read_owner",
    "short_socket_path",
]

_log = structlog.get_logger("headwater.statedir")

LOCK_NAME = "owner.lock"
WORKERS_LOCK = "workers.lock"
"""Held shared by every worker process while it lives; see :func:`wait_for_old_workers`."""
SOCKET_NAME = "headwater.sock"
_SUN_PATH_MAX = 107
"""Bytes of a unix socket path the kernel accepts (``sun_path`` is 108 with the NUL)."""


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    pid: int
    role: str
    """``daemon``, ``cli`` or ``harness``."""
    command: str
    """How the owner was started (its command line)."""
    started_at: str
    socket: str | None = None
    """The daemon's control socket, once it listens."""
    definitions: str | None = None

    def describe(self) -> str:
        return f"PID {self.pid} ({self.command}, since {self.started_at})"

    @classmethod
    def from_text(cls, text: str) -> OwnerInfo | None:
        try:
            raw = json.loads(text)
            return cls(
                pid=int(raw["pid"]),
                role=str(raw["role"]),
                command=str(raw.get("command", "")),
                started_at=str(raw.get("started_at", "")),
                socket=raw.get("socket"),
                definitions=raw.get("definitions"),
            )
        except (ValueError, KeyError, TypeError):
            return None


class StateDirBusy(StateDirError):
    """Another live process owns the state directory."""

    def __init__(self, state_dir: Path, owner: OwnerInfo | None) -> None:
        self.owner = owner
        who = owner.describe() if owner else "another process"
        super().__init__(
            f"the state directory {state_dir} is owned by {who}; only one process may write "
            "to it at a time. Stop that process first, or use another --state-dir"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _read_info(path: Path) -> OwnerInfo | None:
    try:
        with open(path, encoding="utf-8") as f:
            return OwnerInfo.from_text(f.read())
    except (OSError, ValueError):  # unreadable, or not text: no usable record
        return None


def read_owner(state_dir: Path) -> OwnerInfo | None:
    """The recorded owner of ``state_dir`` if its process is alive (it may be finishing)."""
    info = _read_info(state_dir / LOCK_NAME)
    return info if info is not None and _pid_alive(info.pid) else None


def lock_held_by(state_dir: Path, pid: int) -> bool | None:
    """Whether process ``pid`` holds the lock of ``state_dir`` itself (not of a copy whose
    record names it), from the kernel's table of locks; None when that cannot be read."""
    try:
        inode = (state_dir / LOCK_NAME).lstat().st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF" ("->" marks a waiter: skip)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[2] != "->":
            holder, where = fields[4], fields[5]
            if holder == str(pid) and where.rsplit(":", 1)[-1] == str(inode):
                return True
    return False


def control_socket_path(state_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``$RUNTIME_DIRECTORY/headwater.sock`` under systemd, else in the state directory."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else state_dir).absolute() / SOCKET_NAME


@contextlib.contextmanager
def short_socket_path(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits in ``sun_path``: itself, or a ``/proc/self/fd`` alias
    through an open descriptor of its folder (deep test or home folders exceed 107 bytes)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class Ownership:
    """The exclusive lock on a state directory, and the owner's published record.

    The lock is held twice: on the directory itself (deleting ``owner.lock``, as users do with
    locks they think are stale, lets no second owner in) and on ``owner.lock`` (the file the
    record lives in). :meth:`check` notices a directory deleted or replaced under its owner.
    """

    def __init__(self, state_dir: Path, dir_fd: int, fd: int, info: OwnerInfo) -> None:
        self.state_dir = state_dir
        self._dir_fd: int | None = dir_fd
        self._fd: int | None = fd
        self.info = info
        self.written = False

    @classmethod
    def acquire(cls, state_dir: Path, role: str, *, definitions: str | None = None) -> Ownership:
        """Take the lock now or raise :class:`StateDirBusy` naming the current owner.

        Creates the directory (0700) if needed; refuses one that others may write, or whose
        files are links to elsewhere (exit 3, saying how to fix it)."""
        state_dir = state_dir.absolute()
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_CLOEXEC: a child process (a worker) never inherits the lock.
            dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _unusable(state_dir, exc) from exc
        try:
            check_private(state_dir)
            _lock(dir_fd, state_dir)
            fd = _open_lock_file(state_dir)
            try:
                _lock(fd, state_dir)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(dir_fd)
            raise
        info = OwnerInfo(
            pid=os.getpid(),
            role=role,
            command=_command_line() or role,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            definitions=definitions,
        )
        ownership = cls(state_dir, dir_fd, fd, info)
        try:
            _refuse_an_unlocked_daemon(state_dir)
            wait_for_old_workers(state_dir)
        except BaseException:
            ownership.release()
            raise
        ownership._write()
        return ownership

    def check(self) -> bool:
        """Whether the directory is still the one locked; a deleted ``owner.lock`` is made
        again (the directory lock kept everyone out meanwhile)."""
        if self._dir_fd is None or self._fd is None:
            return False
        try:
            if self.state_dir.stat().st_ino != os.fstat(self._dir_fd).st_ino:
                return False
        except OSError:
            return False  # gone
        try:
            current: int | None = (self.state_dir / LOCK_NAME).lstat().st_ino
        except FileNotFoundError:
            current = None
        except OSError:
            return False
        if current != os.fstat(self._fd).st_ino:
            with contextlib.suppress(OSError, StateDirError):
                fd = _open_lock_file(self.state_dir)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.close(self._fd)
                self._fd = fd
                self._write()
        return True

    def publish(self, **changes: Any) -> None:
        """Update the owner's record (e.g. the socket, once it listens)."""
        self.info = replace(self.info, **changes)
        self._write()

    def _write(self) -> None:
        """Write the record; on a full disk the lock still holds, and the owner writes the
        record again once the disk takes writes (``written`` says whether it is there)."""
        assert self._fd is not None
        data = json.dumps(asdict(self.info)).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            self.written = False
        else:
            self.written = True

    def release(self) -> None:
        """Forget the record and drop the locks (the kernel would drop them at exit anyway)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> Ownership:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _refuse_an_unlocked_daemon(state_dir: Path) -> None:
    """Versions of 2026-11-24 took no lock: one of those daemons still running here (its
    start logged without its stop, its process alive with this event log open) is an owner
    the lock cannot see. Two owners ran every new file twice, and each abandoned the other's
    runs. Anything that cannot be read says nothing (a process of another user, no log)."""
    log = state_dir / "events.db"
    if not log.is_file():
        return
    try:
        conn = sqlite3.connect(f"{log.as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            newest = [
                conn.execute(_NEWEST, (kind,)).fetchone()
                for kind in ("daemon_started", "daemon_stopped")
            ]
        finally:
            conn.close()
        started, stopped = newest
        if started is None or (stopped is not None and stopped[0] > started[0]):
            return
        pid = int(json.loads(started[1]).get("pid", 0))
    except (sqlite3.Error, ValueError, TypeError, AttributeError):
        return
    if pid in (0, os.getpid()) or not _pid_alive(pid) or not _runs_headwater(pid):
        return
    if not _has_open(pid, log):
        return
    raise StateDirError(
        f"the state directory {state_dir} is used by PID {pid}, a headwater daemon of an "
        "earlier version, which takes no lock; only one process may write to it at a time. "
        "Stop that process first"
    )


_NEWEST = "SELECT id, payload FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1"


def _runs_headwater(pid: int) -> bool:
    """Whether process ``pid`` is a headwater daemon (``… headwater … run …``): its PID, if
    that daemon was killed, may now be another reader's of the log (a shell, a dashboard)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    named = [i for i, a in enumerate(args) if b"headwater" in a]
    return bool(named) and b"run" in args[named[0] + 1 :]


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has the file ``path`` open (False when that cannot be read)."""
    target = Path(os.path.realpath(path))
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if fd.readlink() == target:
                return True
    return False


_OLD_WORKERS_WAIT = 30.0


def wait_for_old_workers(state_dir: Path) -> None:
    """Wait until no worker process of a previous owner is alive.

    Workers die with their daemon (PR_SET_PDEATHSIG), but not in the same instant: one could
    still be renaming a value into place when a new owner has the lock. Each worker holds
    ``workers.lock`` shared for its whole life; the new owner takes it exclusively once
    (then lets go, so its own workers can take it). POSIX record locks, not flock: a process
    the function forked does not inherit them, so a stray grandchild cannot hold a new
    owner up."""
    path = state_dir / WORKERS_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise linked(path) from None
        raise _unusable(state_dir, exc) from exc
    try:
        deadline = time.monotonic() + _OLD_WORKERS_WAIT
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise _unusable(state_dir, exc) from exc
                if time.monotonic() > deadline:
                    raise StateDirError(
                        f"a worker process of the previous owner of {state_dir} is still "
                        f"alive after {_OLD_WORKERS_WAIT:.0f}s (it holds {path}): "
                        f"find it with `fuser {path}` and kill it"
                    ) from None
                time.sleep(0.01)  # they die within milliseconds of their daemon
    finally:
        os.close(fd)


def _unusable(state_dir: Path, exc: OSError) -> Exception:
    if (failure := storage_failure(exc, state_dir)) is not None:
        return failure
    return StateDirError(f"cannot use the state directory {state_dir}: {exc.strerror or exc}")


def _lock(fd: int, state_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateDirError(f"cannot lock {state_dir}: {exc}") from exc
        raise StateDirBusy(state_dir, _current_owner(state_dir)) from None


def _open_lock_file(state_dir: Path) -> int:
    path = state_dir / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise linked(path) from None
        raise _unusable(state_dir, exc) from exc


PRIVATE_FILES = (
    LOCK_NAME, WORKERS_LOCK, "events.db", "events.db-wal", "events.db-shm", "starts.journal"
)  # fmt: skip


def linked(path: Path) -> StateDirError:
    return StateDirError(
        f"{path} is a symbolic link: the state directory's files must be its own, or another "
        f"file would be read or overwritten through it. Remove the link (rm {path})"
    )


def check_private(state_dir: Path) -> None:
    """PostgreSQL's rule for its data directory: refuse a state directory that others may
    write to, or whose log files are links; warn when others may read it."""
    st = state_dir.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"the state directory {state_dir} may be written by others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): anyone who can write there can plant values that "
            f"headwater loads. Make it private: chmod 700 {state_dir}"
        )
    for name in PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            if (state_dir / name).is_symlink():
                raise linked(state_dir / name)
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH) and str(state_dir) not in _warned:
        _warned.add(str(state_dir))
        _log.warning(
            "state_dir_readable_by_others",
            state_dir=str(state_dir),
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
            fix=f"chmod 700 {state_dir}",
        )


_warned: set[str] = set()


def _command_line() -> str:
    """This process's command line as a user would type it."""
    if not sys.argv or not sys.argv[0]:
        return ""
    program = Path(sys.argv[0])
    name = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    return " ".join([name, *(shlex.quote(a) for a in sys.argv[1:])])


def _current_owner(state_dir: Path) -> OwnerInfo | None:
    """The owner's record; it writes it right after locking, so allow it a moment."""
    deadline = time.monotonic() + 1.0
    while True:
        info = read_owner(state_dir)
        if info is not None or time.monotonic() > deadline:
            return info
        time.sleep(0.01)
