"""Where materialized values live. The default store writes files atomically under the state dir.

DataFrames and Arrow tables are stored as Parquet; any other value, and a DataFrame that
Parquet cannot hold (an object column of mixed types), is pickled (the documented fallback:
fine for plain Python objects, not meant to be read by other programs).

Values are not synced to disk one by one (a file and a folder fsync cost more than the rest of
a small run): a process crash loses nothing (the page cache survives it), and after a power
loss a value may be lost, cut short or older than the log says. So each file carries the data
version it holds (a header before a pickle, key-value metadata in Parquet), a load given the
version the log records refuses anything else (:class:`StaleValue`: the partition is missing
again and runs again), and after the machine restarts the daemon checks every value's version
before trusting it (:meth:`FilesystemStore.checked_this_boot`). Files written by earlier
versions, which were synced, carry no version and are taken as they are.

The store's folders and files are private (0700/0600, whatever the umask), never followed
through a symbolic link (a link below ``values/`` counts as no value), and named so that any
valid partition key fits in a file name: keys too long for one are named by their hash.

pandas and pyarrow are imported where a table is stored or loaded, not at import: a CLI
command that never touches a table does not pay the second it takes to load them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pickle
import shutil
import stat
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote

from headwater._storage import storage_failure
from headwater.execution._publishing import guarded
from headwater.versions import data_version

__all__ = [
    "FORMATS",
    "SMALL_VALUE_MAX",
    "TEMP_PREFIX",
    "FilesystemStore",
    "IOManager",
    "NoValueError",
    "Prepared",
    "StaleValue",
    "UnsafePath",
    "decode_value",
    "encode_value",
    "prepare",
    "table_metadata",
]

TEMP_PREFIX = ".tmp-"
FENCE_PREFIX = "fence-"
"""In the temp folder: an attempt of a run on a Dask worker publishes only while its fence
stands (see executors/_dask.py)."""
PUBLISH_LOCK = ".publish.lock"
BOOT_MARK = ".boot-id"
"""The boot of the machine in which the values were last checked (``checked_this_boot``)."""
VERSIONED_MARK = ".versioned"
"""In a store's root: every value file there says the version it holds, so a file that says
none is not one headwater wrote (put there by hand, restored from a backup made before
values carried their version) and is no value. The store writes it when it makes its root
or finds it empty, and ``prune --values`` once no file of an earlier version is left;
without it such files load as they are, as an earlier version's (README)."""
VERSION_KEY = b"headwater.data_version"
"""The data version in a stored Parquet file's key-value metadata."""
_MAGIC = b"HWv1\n"
"""Starts a pickled value with its header: version length, body length, the body's CRC-32,
then the version. A pickle itself (an earlier version's file) starts with b"\x80"."""
_HEADER = struct.Struct(">HQI")
_HEADER_BEFORE_CRC = struct.Struct(">HQ")
"""The header as versions of 2026-11-30 wrote it for an hour, under the same magic: told
apart by the file's size, which is the header, the version and the body exactly."""
_LEGACY = b"\x80"
_DAMAGE = (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, struct.error,
           UnicodeDecodeError, OverflowError)  # fmt: skip
"""What unpickling damaged bytes raises (a class the code no longer has is not damage)."""
FORMATS = _FORMATS = ("frame.parquet", "arrow.parquet", "pickle")
_NAME_MAX = 255
_LONGEST_SUFFIX = max(len(f".{fmt}") for fmt in _FORMATS)


class NoValueError(LookupError):
    """No value is stored for an asset partition."""


class StaleValue(NoValueError):
    """The stored value is not the version the log records, or was cut short: a power loss
    took back its rename or its end (values are not synced one by one). It counts as gone."""

    def __init__(self, message: str, *, found: str | None = None) -> None:
        super().__init__(message)
        self.found = found
        """The other version the file holds, when that is what is wrong (not damage)."""


class UnsafePath(OSError):
    """A symbolic link where the store expects its own folder."""


@runtime_checkable
class IOManager(Protocol):
    """Stores and loads asset values. ``save`` must be atomic: a reader sees old or new."""

    def save(self, asset: str, partition: str | None, value: Any) -> None: ...

    def load(self, asset: str, partition: str | None) -> Any: ...


def table_metadata(value: Any) -> dict[str, Any]:
    """Row count and schema for tables; nothing for other values."""
    kind = type(value).__module__.split(".")[0]
    if kind == "pandas":
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            schema = {str(c): str(t) for c, t in value.dtypes.items()}
            return {"rows": len(value), "schema": schema}
    if kind == "pyarrow":
        import pyarrow as pa

        if isinstance(value, pa.Table):
            schema = {f.name: str(f.type) for f in value.schema}
            return {"rows": value.num_rows, "schema": schema}
    return {}


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A folder of the store, opened without following a link in its place."""


def _write_at(
    folder: int,
    name: str,
    write: Callable[[IO[bytes]], None],
    temp: int,
    publishing: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    *,
    sync: bool = True,
) -> None:
    """Write a private temp file in the folder open as ``temp`` (on the same filesystem), fsync
    (if ``sync``), rename it to ``name`` in the folder open as ``folder`` (inside
    ``publishing()``), fsync that folder (if ``sync``). Folders named by descriptors: a link put
    in the place of either since it was opened is not followed. The temp name is short and
    fixed-length, so a long name always fits; a link planted at ``name`` is replaced, never
    followed."""
    tmp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=temp)
    try:
        with open(fd, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        with publishing():
            os.replace(tmp, name, src_dir_fd=temp, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=temp)
        raise
    if sync:
        os.fsync(folder)


def _write_parquet(table: Any) -> Callable[[IO[bytes]], None]:
    import pyarrow.parquet as pq

    return lambda f: pq.write_table(table, f)


def _write_versioned(f: IO[bytes]) -> None:
    f.write(b"Every value file here says the data version it holds (see README: values).\n")


def _write_probe(f: IO[bytes]) -> None:
    f.write(b"\0" * 4096)


def _frame_table(value: Any) -> Any | None:
    """The Arrow table of a DataFrame, or None when Arrow cannot hold it (duplicate column
    labels, a sparse column, mixed types in one column: it raises all sorts of errors)."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(value, preserve_index=True)
    except Exception:
        return None


def _same_labels(before: Any, after: Any) -> bool:
    """Whether a frame read back has the columns it was stored with, types included
    (Parquet names columns by text: ``1`` comes back as ``"1"``)."""
    return len(before) == len(after) and all(
        type(a) is type(b) and a == b for a, b in zip(before, after, strict=True)
    )


def encode_value(value: Any) -> tuple[str, Callable[[IO[bytes]], None]]:
    """How a value is stored: its format, and what writes it. Tables as Parquet (unless
    Parquet cannot hold them faithfully), anything else pickled."""
    fmt, table, data, *_ = prepare(value)
    if table is not None:
        return fmt, _write_parquet(table)

    def write(f: IO[bytes]) -> None:
        f.write(data)

    return "pickle", write


def _table_of(value: Any) -> tuple[str, Any, Any, bytes] | None:
    """The format, the Arrow table, the value as readers will load it and its Parquet
    bytes, if it is stored as
    Parquet: only when Parquet holds it, that is, it can be written, read back, and comes
    back with the same column labels. Parquet re-types some columns (objects, categoricals,
    second-precision times): the version is that of what comes back."""
    kind = type(value).__module__.split(".")[0]
    if kind == "pandas":
        import pandas as pd

        if not isinstance(value, pd.DataFrame) or (table := _frame_table(value)) is None:
            return None
        fmt = "frame.parquet"
    elif kind == "pyarrow":
        import pyarrow as pa

        if not isinstance(value, pa.Table):
            return None
        fmt, table = "arrow.parquet", value
    else:
        return None
    try:
        loaded, parquet = _read_back(table, fmt)
    except Exception:  # written, but not readable (labels 1 and "1" both become "1")
        return None
    if fmt == "frame.parquet" and not _same_labels(value.columns, loaded.columns):
        return None
    return fmt, table, loaded, parquet


SMALL_VALUE_MAX = 16 * 1024
"""Values (other than tables) that pickle to at most this many bytes are kept in the event
log, in the transaction that records them: no file to create, rename or check."""


class Prepared(NamedTuple):
    """A value as it will be stored: a table as Parquet (``table``), anything else pickled
    (``data``). Made once: the pickle decides whether the event log can keep it."""

    fmt: str
    table: Any = None
    data: bytes = b""
    loaded: Any = None
    """A table as readers will load it (read back from Parquet): what its version is of."""
    parquet: bytes = b""
    """A table as Parquet, as it was read back (without the version: a store that keeps the
    version beside the bytes puts these as they are)."""


def prepare(value: Any) -> Prepared:
    found = _table_of(value)
    if found is not None:
        return Prepared(found[0], table=found[1], loaded=found[2], parquet=found[3])
    return Prepared("pickle", data=pickle.dumps(value, protocol=5))


def _encode_versioned(
    value: Any, version: str | None, prepared: Prepared | None = None
) -> tuple[str, Callable[[IO[bytes]], None], str]:
    """Like :func:`encode_value`, with the data version written into the file: ``version``
    if given, else the fingerprint of the value as a reader will load it."""
    fmt, table, data, loaded, _ = prepared or prepare(value)
    if table is None:
        version = version or data_version(value)
        named = version.encode()
        header = _MAGIC + _HEADER.pack(len(named), len(data), zlib.crc32(data)) + named

        def write(f: IO[bytes]) -> None:
            f.write(header)
            f.write(data)

        return "pickle", write, version
    if version is None:
        version = data_version(loaded)
    metadata = dict(table.schema.metadata or {})
    metadata[VERSION_KEY] = version.encode()
    return fmt, _write_parquet(table.replace_schema_metadata(metadata)), version


def _read_back(table: Any, fmt: str) -> tuple[Any, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    written = sink.getvalue()
    back = pq.read_table(pa.BufferReader(written))
    return back.to_pandas() if fmt == "frame.parquet" else back, written.to_pybytes()


class _Damaged(Exception):
    """A pickle this store wrote, cut or damaged before its body."""


def _header(f: IO[bytes]) -> tuple[str, int, int | None] | None:
    """The header of a pickled value: (version, body length, CRC-32 or None where the
    header had none), with ``f`` left at the body; None for a file of an earlier version (a
    plain pickle, ``f`` back at its start)."""
    head = f.read(len(_MAGIC) + _HEADER.size)
    if not head.startswith(_MAGIC):
        if not head.startswith(_LEGACY):  # empty, cut in the header, zeroed, garbage
            raise _Damaged
        f.seek(0)
        return None
    crc: int | None
    try:
        named_len, body_len, crc = _HEADER.unpack(head[len(_MAGIC) :])
    except struct.error:
        raise _Damaged from None
    early_len, early_body = _HEADER_BEFORE_CRC.unpack_from(head, len(_MAGIC))
    early = len(_MAGIC) + _HEADER_BEFORE_CRC.size
    size = os.fstat(f.fileno()).st_size
    if size == early + early_len + early_body != len(_MAGIC) + _HEADER.size + named_len + body_len:
        named_len, body_len, crc = early_len, early_body, None  # no CRC yet: length only
        f.seek(early)
    named = f.read(named_len)
    if len(named) != named_len:
        raise _Damaged
    return named.decode(errors="replace"), body_len, crc


def _load_checked(
    fmt: str, f: IO[bytes], version: str | None, label: str, versioned_only: Callable[[], bool]
) -> Any:
    """A value stored by :class:`FilesystemStore`; :class:`StaleValue` if it is not
    ``version`` (when given) or was cut short, or says no version where every value must
    (``versioned_only``, asked only then)."""
    if fmt == "pickle":
        try:
            header = _header(f)
        except _Damaged:
            raise StaleValue(f"the stored value of {label} is damaged or cut short") from None
        if header is None:
            _check_says(version, label, versioned_only)
            try:
                return pickle.load(f)  # written (and synced) by an earlier version
            except _DAMAGE as exc:
                raise StaleValue(f"the stored value of {label} is damaged: {exc}") from None
        stored, body_len, crc = header
        _check_version(stored, version, label)
        body = f.read()
        if len(body) != body_len or (crc is not None and zlib.crc32(body) != crc):
            raise StaleValue(f"the stored value of {label} is damaged or cut short")
        return pickle.loads(body)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(f)
        metadata = dict(table.schema.metadata or {})
        stored_version = metadata.pop(VERSION_KEY, None)
        if stored_version is not None:
            _check_version(stored_version.decode(errors="replace"), version, label)
            table = table.replace_schema_metadata(metadata or None)
        else:
            _check_says(version, label, versioned_only)
        return table.to_pandas() if fmt == "frame.parquet" else table
    except (pa.ArrowException, OSError, ValueError) as exc:  # only we write here: damage
        raise StaleValue(f"the stored value of {label} is unreadable: {exc}") from None


def _check_says(version: str | None, label: str, versioned_only: Callable[[], bool]) -> None:
    """A file that says no version is read as an earlier version's only where files of
    earlier versions may still be (see :data:`VERSIONED_MARK`)."""
    if version is not None and versioned_only():
        raise StaleValue(
            f"the stored value of {label} says no data version, so headwater did not write "
            "it (put there by hand, or restored from a backup of an earlier version?)"
        )


def _check_version(stored: str, version: str | None, label: str) -> None:
    if version is not None and stored != version:
        raise StaleValue(
            f"the stored value of {label} is version {stored[:12]}, the log records "
            f"{version[:12]} (taken back by a power loss?)",
            found=stored,
        )


def _stored_version(fmt: str, f: IO[bytes]) -> str | None:
    """The version a stored file says it holds; "" if it is cut short or unreadable; None
    for a file of an earlier version, which says nothing."""
    try:
        if fmt != "pickle":
            import pyarrow.parquet as pq

            found = (pq.read_schema(f).metadata or {}).get(VERSION_KEY)
            return None if found is None else found.decode(errors="replace")
        header = _header(f)
        if header is None:
            return None
        stored, body_len, _ = header
        whole = os.fstat(f.fileno()).st_size == f.tell() + body_len
        return stored if whole else ""
    except Exception:  # cut short, damaged, unreadable: not the recorded version
        return ""


def _says_no_version(path: Path) -> bool:
    """Whether a value file is an earlier version's, which says no version (one that cannot
    be read says nothing either way: it is damage, which readers find)."""
    fmt = next((f for f in _FORMATS if path.name.endswith(f".{f}")), None)
    if fmt is None:
        return False
    try:
        with open(path, "rb", opener=_no_follow) as f:
            return _stored_version(fmt, f) is None
    except OSError:
        return False


def _clear_folder_at(name: str, folder: int) -> None:
    """A folder where a value file belongs (planted: the store never makes one there) counts
    as no value; it goes, so that the value can be written (links inside are not followed)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(name, dir_fd=folder).st_mode):
            shutil.rmtree(name, dir_fd=folder)


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    """The open descriptor ``fd``, closed when the block ends (a folder of the store, the
    publishing lock): several in one ``with``, each closed if a later one fails to open."""
    try:
        yield fd
    finally:
        os.close(fd)


def _refused(exc: OSError, path: Path) -> OSError:
    """``exc``, raised opening the store's folder ``path`` without following a link, as
    :class:`UnsafePath` when something other than a folder (a link) is in its place."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePath(errno.ELOOP, f"{path} is not a folder of the value store (a link?)")
    return exc


def _open_at(folder: int, name: str) -> int | None:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=folder
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a link is no value of ours
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _find_value(
    folder: int, stem: str, *, unreadable_is_none: bool = False
) -> tuple[str, str, int] | None:
    """The name, format and an open descriptor of the file ``stem`` names in the open
    ``folder``, whichever format it has; None if there is none (a link, a FIFO or a folder is
    none; so is a file that cannot be opened, with ``unreadable_is_none``)."""
    for fmt in _FORMATS:
        name = f"{stem}.{fmt}"
        try:
            fd = _open_at(folder, name)
        except OSError:
            if not unreadable_is_none:
                raise
            fd = None
        if fd is not None:
            return name, fmt, fd
    return None


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # not Linux: every start checks (the cost of a read per value, once)


def decode_value(fmt: str, f: IO[bytes]) -> Any:
    """A value stored by :func:`encode_value` in format ``fmt``."""
    if fmt == "pickle":
        return pickle.load(f)
    import pyarrow.parquet as pq

    table = pq.read_table(f)
    return table.to_pandas() if fmt == "frame.parquet" else table


def _left_long_ago(path: Path) -> bool:
    """A temp file no write under way can still own (an hour without a change)."""
    try:
        return time.time() - path.lstat().st_mtime > 3600
    except FileNotFoundError:
        return False


class FilesystemStore:
    """``root/<asset key>/<partition>.<format>``; the default :class:`IOManager`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_text = str(self.root)
        self.temp_dir = self.root / ".tmp"
        """Where values are written before they are renamed into place: one folder, so that
        opening clears a crash's leftovers without walking every asset's (no key starts
        with a dot)."""
        self._root_made = False
        self._versioned = False
        """Whether :data:`VERSIONED_MARK` was found (once there, it stays)."""

    @property
    def location(self) -> str:
        """Where it keeps values (recorded with each materialization)."""
        return self.root.as_uri() if self.root.is_absolute() else str(self.root)

    def _name(self, partition: str | None) -> str:
        if partition is None:
            return "value"
        name = "p=" + quote(partition, safe="-_.:")
        if len(name.encode()) + _LONGEST_SUFFIX > _NAME_MAX:
            name = "h=" + hashlib.blake2b(partition.encode(), digest_size=20).hexdigest()
        return name

    def _asset_folder(self, asset: str) -> str:
        """The folder of ``asset``'s values, as text: no Path objects, for the checks each run
        makes of an asset that may have none."""
        return os.path.join(self._root_text, *asset.split("/"))  # noqa: PTH118

    def _stem(self, asset: str, partition: str | None) -> tuple[list[str], str]:
        """The folders of ``asset``'s values below the root, and the name its file starts with."""
        return asset.split("/"), self._name(partition)

    def _open_root(self, *, create: bool) -> int:
        """The root, opened: a link in its place is refused (its own folder may be one)."""
        if create:
            self._make_root()
        try:
            return os.open(self._root_text, _DIR)
        except OSError as exc:
            raise _refused(exc, self.root) from None

    def _open_below(self, root: int, parts: list[str], *, create: bool) -> int:
        """The folder ``parts`` below the open root, opened one folder at a time from it, each
        one made (0700) with ``create``. Each must be a real folder, never a link to somewhere
        else: checked at every use, not once and remembered, since the folder may be made a
        link at any time, and a worker process sees none of what the daemon checks; and
        through descriptors, so that what is checked is what is used."""
        fd, depth = root, 0
        try:
            for part in parts:
                depth += 1
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                    child = os.open(part, _DIR, dir_fd=fd)
                if fd != root:
                    os.close(fd)
                fd = child
        except OSError as exc:
            if fd != root:
                os.close(fd)
            raise _refused(exc, self.root.joinpath(*parts[:depth])) from None
        return fd

    def _open_folder(self, parts: list[str], *, create: bool) -> int:
        root = self._open_root(create=create)
        try:
            return self._open_below(root, parts, create=create)
        finally:
            os.close(root)

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        self.store(asset, partition, value)

    def store(
        self,
        asset: str,
        partition: str | None,
        value: Any,
        version: str | None = None,
        prepared: Prepared | None = None,
    ) -> str:
        """Store ``value`` (as ``prepared``, if it was) and return its data version:
        ``version`` if given, else the fingerprint of the value as readers will load it. Not
        synced (see the module)."""
        fmt, write, version = _encode_versioned(value, version, prepared)
        parts, stem = self._stem(asset, partition)
        name = f"{stem}.{fmt}"
        others = [f"{stem}.{f}" for f in _FORMATS if f != fmt]
        where = self.root.joinpath(*parts)
        for again in (False, True):
            try:
                self._store_at(parts, name, others, write)
            except FileNotFoundError as exc:
                if again:
                    raise storage_failure(exc, where) or exc from None
                # A folder made before was removed since (`rm -rf values` while the daemon
                # runs): made again, once (hostile37b bug1).
                self._forget_folders()
            except OSError as exc:
                raise storage_failure(exc, where) or exc from None
            else:
                break
        return version

    def _store_at(
        self, parts: list[str], name: str, others: list[str], write: Callable[[IO[bytes]], None]
    ) -> None:
        with (
            _closing(self._open_root(create=True)) as root,
            _closing(self._open_below(root, [self.temp_dir.name], create=True)) as temp,
            _closing(self._open_below(root, parts, create=True)) as folder,
        ):

            @contextlib.contextmanager
            def publishing() -> Iterator[None]:
                with _closing(self._lock_publishing(exclusive=False, root=root)), guarded():
                    yield
                    for other in others:  # a value of another format is replaced
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(other, dir_fd=folder)

            _clear_folder_at(name, folder)
            _write_at(folder, name, write, temp, publishing, sync=False)

    def drop(self, asset: str, partition: str | None) -> None:
        """Remove a partition's file, if it has one: its value is now kept in the event log,
        and a file left behind holds an older one (which an earlier version of headwater,
        run on this state directory again, would read as current). One stat for an asset that
        never had a file."""
        if not os.path.isdir(self._asset_folder(asset)):  # noqa: PTH112 (21 -> 3.6 us a run)
            return
        parts, stem = self._stem(asset, partition)
        try:
            root = self._open_root(create=False)
        except (FileNotFoundError, UnsafePath):
            return
        with _closing(root):
            try:
                folder = self._open_below(root, parts, create=False)
            except (FileNotFoundError, UnsafePath):
                return
            # not while a backup links; not if superseded
            with (
                _closing(folder),
                _closing(self._lock_publishing(exclusive=False, root=root)),
                guarded(),
            ):
                for fmt in _FORMATS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{stem}.{fmt}", dir_fd=folder)

    @contextlib.contextmanager
    def publishing(self, *, exclusive: bool = False) -> Iterator[None]:
        """Held (shared) while a value is renamed into place; a backup holds it exclusively
        while it takes its snapshot, so that no value changes under it. A file lock, so that
        it holds across worker processes too."""
        fd = self._lock_publishing(exclusive)
        try:
            yield
        finally:
            os.close(fd)

    def discard(self, asset: str, partition: str | None, version: str) -> None:
        """Delete the stored value of a partition if it holds ``version`` (a source now
        observed with a version only has no value). Under publishing, held exclusively: a
        newer value stored meanwhile holds another version, and stays."""
        parts, stem = self._stem(asset, partition)
        fd = self._lock_publishing(exclusive=True)
        try:
            try:
                folder = self._open_folder(parts, create=False)
            except (FileNotFoundError, UnsafePath):
                return
            try:
                if (found := _find_value(folder, stem)) is None:
                    return
                name, fmt, held = found
                with open(held, "rb") as f:
                    stored = _stored_version(fmt, f)
                if stored == version:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=folder)
            finally:
                os.close(folder)
        finally:
            os.close(fd)

    def hold_publishing(self) -> int:
        """Hold publishing exclusively until the returned descriptor is closed (blocking):
        no value is renamed into place meanwhile, as under a backup's snapshot."""
        return self._lock_publishing(exclusive=True)

    def _make_root(self) -> None:
        """A root made now holds only values that say their version."""
        if self._root_made:
            return
        try:
            self.root.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            self._root_made = True
        else:
            self._root_made = True
            self._mark_versioned()

    def mark_versioned_if_empty(self) -> None:
        """At open: a root that holds no value yet (nothing but its own dot files) will hold
        only values that say their version."""
        try:
            with os.scandir(self.root) as entries:
                if any(not e.name.startswith(".") for e in entries):
                    return
        except (FileNotFoundError, NotADirectoryError):
            return
        if not self._versioned_only():
            self._mark_versioned()

    def _mark_versioned(self) -> None:
        """Without the mark (a full disk, a read-only folder), files that say no version
        load as an earlier version's, as before: the next open or prune marks it."""
        try:
            self._write_mark(VERSIONED_MARK, _write_versioned)
        except OSError:
            return
        self._versioned = True

    def _versioned_only(self) -> bool:
        """Whether a file that says no version is no value here (:data:`VERSIONED_MARK`);
        asked only when one is met, so a store without the mark pays nothing else."""
        if not self._versioned:
            try:
                self._versioned = stat.S_ISREG(os.lstat(self.root / VERSIONED_MARK).st_mode)
            except OSError:
                return False
        return self._versioned

    def _lock_publishing(self, exclusive: bool, root: int | None = None) -> int:
        """``root``: the root, open (:meth:`_open_root`), for a writer that has it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        if root is None:
            self._make_root()
            fd = os.open(self.root / PUBLISH_LOCK, flags, 0o600)
        else:
            fd = os.open(PUBLISH_LOCK, flags, 0o600, dir_fd=root)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def load(self, asset: str, partition: str | None, version: str | None = None) -> Any:
        """The stored value; given the ``version`` the log records, :class:`StaleValue` for
        a file that holds another one or was cut short."""
        found = self._value_file(asset, partition)
        if found is None:
            return self._missing(asset, partition)
        fmt, fd = found
        with open(fd, "rb") as f:
            label = asset if partition is None else f"{asset}[{partition}]"
            return _load_checked(fmt, f, version, label, self._versioned_only)

    def _value_file(
        self, asset: str, partition: str | None, *, unreadable_is_none: bool = False
    ) -> tuple[str, int] | None:
        """The format of a partition's value and an open descriptor of its file; None if there
        is none (a link, a FIFO or a folder is none, and so is a link in the place of a folder
        above it; so is a file or a folder that cannot be opened, with
        ``unreadable_is_none``)."""
        try:
            # One stat, no Path objects, for an asset with no folder: a plain source observed
            # with a version only is looked for by each run of each reader (12 of a trivial
            # run's 34 us in its thread). What the walk below would also find none in.
            os.stat(self._asset_folder(asset))  # noqa: PTH116
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
        parts, stem = self._stem(asset, partition)
        try:
            folder = self._open_folder(parts, create=False)
        except (FileNotFoundError, UnsafePath):
            return None
        except OSError:
            if not unreadable_is_none:
                raise
            return None
        try:
            found = _find_value(folder, stem, unreadable_is_none=unreadable_is_none)
        finally:
            os.close(folder)
        return None if found is None else found[1:]

    def checked_this_boot(self) -> bool:
        """Whether the values were checked (:meth:`mismatched`) since the machine last
        started: if not, a power loss may have taken some back."""
        boot = _boot_id()
        try:
            with open(self.root / BOOT_MARK, opener=_no_follow) as f:
                return bool(boot) and f.read().strip() == boot
        except OSError:
            return False

    def mark_checked_this_boot(self) -> None:
        boot = _boot_id().encode()

        def write(f: IO[bytes]) -> None:
            f.write(boot)

        self._write_mark(BOOT_MARK, write)

    def _write_mark(self, name: str, write: Callable[[IO[bytes]], None]) -> None:
        """Write one of the store's own files in its root, atomically (a folder planted
        there goes first)."""
        with (
            _closing(self._open_root(create=True)) as root,
            # the temp folder, where opening clears what a crash left
            _closing(self._open_below(root, [self.temp_dir.name], create=True)) as temp,
        ):
            _clear_folder_at(name, root)
            _write_at(root, name, write, temp)

    def mismatched(
        self, expected: Iterable[tuple[tuple[str, str | None], str]]
    ) -> list[tuple[str, str | None]]:
        """The asset partitions among ``expected`` (``(node, version the log records)``) whose
        stored file is gone, cut short, or holds another version."""
        bad: list[tuple[str, str | None]] = []
        for (asset, partition), version in expected:
            found = self._value_file(asset, partition, unreadable_is_none=True)
            if found is None:
                bad.append((asset, partition))
                continue
            fmt, fd = found
            with open(fd, "rb") as f:
                stored = _stored_version(fmt, f)
            if stored != version and (stored is not None or self._versioned_only()):
                bad.append((asset, partition))
        return bad

    def _missing(self, asset: str, partition: str | None) -> Any:
        label = asset if partition is None else f"{asset}[{partition}]"
        raise NoValueError(f"no stored value for {label} under {self.root}")

    def absent(self, nodes: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """The asset partitions among ``nodes`` that have no stored value (one listing per
        folder, not one stat per value). A folder made a link holds no value. One that cannot
        be listed otherwise (no permission) says nothing of its values: they are not counted
        gone, and the other folders are still looked at."""
        listings: dict[str, set[str] | None] = {}
        gone: list[tuple[str, str | None]] = []
        for asset, partition in nodes:
            parts, stem = self._stem(asset, partition)
            if asset in listings:
                names = listings[asset]
            else:
                try:
                    folder = self._open_folder(parts, create=False)
                    try:
                        with os.scandir(folder) as entries:
                            names = {e.name for e in entries if e.is_file(follow_symlinks=False)}
                    finally:
                        os.close(folder)
                except (FileNotFoundError, UnsafePath):
                    names = set()
                    self._forget_folders()
                except OSError:
                    names = None
                listings[asset] = names
            if names is not None and not any(f"{stem}.{fmt}" in names for fmt in _FORMATS):
                gone.append((asset, partition))
        return gone

    def _forget_folders(self) -> None:
        """A folder of the store is gone, or is not one any more: the root is made again
        before the next value is written (the folders below it are checked at each use)."""
        self._root_made = False

    def prune_values(self, held: Mapping[str, Iterable[str | None]]) -> list[Path]:
        """Delete stored values no asset partition holds: files of keys not in ``held``
        (``{asset or source key: its partitions with a value}``), or of partitions it lacks.
        Returns what was removed. Links are not followed. The caller holds publishing
        (:meth:`hold_publishing`) from before it works out ``held``.

        Where files of earlier versions may be, the values kept are read for the version
        they say: once none is left that says none, the root is marked (:data:`VERSIONED_MARK`)."""
        expected = {key: {self._name(p) for p in parts} for key, parts in held.items()}
        removed: list[Path] = []
        if not self.root.is_dir() or self.root.is_symlink():
            return removed
        look = not self._versioned_only()  # for files of earlier versions
        earlier_left = False
        for folder, dirs, files in os.walk(self.root):
            if folder == str(self.root):
                # Values being written (the daemon prunes while it runs): opening clears it.
                dirs[:] = [d for d in dirs if d != self.temp_dir.name]
            key = Path(folder).relative_to(self.root).as_posix()
            names = expected.get(key, set())
            for name in files:
                base = (
                    name.rsplit(".", 2)[0] if name.endswith(".parquet") else name.rsplit(".", 1)[0]
                )
                if name in (PUBLISH_LOCK, BOOT_MARK, VERSIONED_MARK):
                    continue
                path = Path(folder, name)
                if name.startswith(TEMP_PREFIX):
                    if not _left_long_ago(path):  # one written beside its target right now
                        continue
                elif base in names:
                    if look and not earlier_left:
                        earlier_left = _says_no_version(path)
                    continue
                path.unlink(missing_ok=True)
                removed.append(path)
        if look and not earlier_left:
            self._mark_versioned()
        return removed

    def probe(self) -> None:
        """Write, sync and remove a small file: raises StorageFailure while the disk refuses."""
        try:
            temp = self._open_folder([self.temp_dir.name], create=True)
            try:  # the temp folder: what a crash leaves there goes at open
                _write_at(temp, f"{TEMP_PREFIX}probe", _write_probe, temp)
                os.unlink(f"{TEMP_PREFIX}probe", dir_fd=temp)
            finally:
                os.close(temp)
        except OSError as exc:
            raise storage_failure(exc, self.root) or exc from None

    def remove_temp_files(self) -> int:
        """Delete temp files a crash left behind; return how many. Links are not followed.
        (Temp files that earlier versions left beside the values go with ``prune --values``.)

        Fences too (:data:`FENCE_PREFIX`), under publishing held exclusively: the attempts
        they let publish belong to an owner that is gone, and were abandoned. A task of one
        still running on a Dask worker published over the value of the run that replaced it."""
        try:
            temp = self._open_folder([self.temp_dir.name], create=False)
        except (FileNotFoundError, UnsafePath):
            return 0
        try:
            with os.scandir(temp) as entries:
                names = [e.name for e in entries]
            left = [n for n in names if n.startswith(TEMP_PREFIX)]
            for name in left:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=temp)
            if fences := [n for n in names if n.startswith(FENCE_PREFIX)]:
                with self.publishing(exclusive=True):
                    for name in fences:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=temp)
        finally:
            os.close(temp)
        return len(left) + len(fences)
