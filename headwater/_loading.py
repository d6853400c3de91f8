"""Loading a :class:`Definitions` from a Python file or ``module:attribute``."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import linecache
import marshal
import os
import posix
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import NoReturn, cast

from headwater._errors import DefinitionError, HeadwaterError
from headwater._usercode import users_file, users_module
from headwater.definitions import Definitions

__all__ = ["LoadError", "absolute_target", "importable_target", "load_definitions"]


class LoadError(HeadwaterError):
    """The definitions could not be loaded; the message names the file and the cause."""


ModuleTexts = dict[str, tuple[str, bytes]]
"""Per module name, its file and text: the user's modules as a load imported them."""

_RUN_TIME: set[str] | None = None
"""In a process that serves one definitions (the daemon): the modules there were right after
its last load, so that the next load (a reload) also imports afresh the user's modules its
functions imported while running (``from . import helper`` inside a function, under the
threads executor), not only those the import of the definitions brought in."""


_HELPERS: dict[Path | str, list[str]] = {}
"""Per definitions file (or module named), the modules of the user's own code its last
import brought in (a helper beside it; for a module, itself). Loading it again (a reload)
imports them afresh: kept in ``sys.modules``, the daemon would go on running their old code,
with the old code versions, while workers started since import the new, and fail every run
asking for the reload that had just been done."""


class _ExitAtImport(BaseException):
    def __init__(self, status: int, where: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.where = where

    def __str__(self) -> str:
        return f"called os._exit({self.status}){self.where}"


@contextlib.contextmanager
def _no_exit() -> Iterator[None]:
    """While the definitions import, ``os._exit`` called by the import raises instead: it
    cannot be caught, and would end whoever imports them with the status it was given (0:
    `validate` passes a CI gate saying nothing, the daemon stops "successfully" and systemd
    does not restart it). A call from a thread the import started fails the import too once
    it returns, as does a refusal the file caught. A thread that was there before (the
    daemon told to stop while it loads), a child forked meanwhile (multiprocessing), and any
    call after the import (through a name bound to ``os._exit`` meanwhile) exit for real.
    ``posix._exit`` is the same function under its own module's name: refused too."""
    real, pid, thread = os._exit, os.getpid(), threading.get_ident()
    before = {t.ident for t in threading.enumerate()} - {thread}
    refused: list[_ExitAtImport] = []
    importing = True

    def refuse(status: int) -> NoReturn:
        caller = threading.get_ident()
        if not importing or os.getpid() != pid or caller in before:
            real(status)
        refusal = _ExitAtImport(status, "" if caller == thread else " in a thread it started")
        refused.append(refusal)
        if caller != thread:
            raise SystemExit(status)  # ends that thread, quietly; the import fails once done
        raise refusal

    os._exit = posix._exit = refuse
    try:
        yield
    finally:
        os._exit = posix._exit = real
        importing = False
    if refused:
        raise refused[0]


def _raised(exc: BaseException) -> str:
    """What an import that failed did, in words."""
    if isinstance(exc, _ExitAtImport):
        return str(exc)
    return f"raised {type(exc).__name__}: {exc}"


def _user_frame(exc: BaseException, filename: str) -> str:
    """``file:line`` of the deepest frame in the user's file, to point at their mistake."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == Path(filename).resolve():
            where = f" (line {frame.lineno})"
    return where


def _import_file(path: Path, source: bytes | None) -> tuple[ModuleType, bytes]:
    """Import the file as a module; ``source`` instead of what is on disk now, if given.

    The source is read once and kept: ``linecache`` holds it (so code versions and tracebacks
    come from the code that runs, not from a file edited since), and a worker process runs
    exactly this text rather than whatever the file holds when the worker starts."""
    # The same name in every process (not hash(), which the hash seed changes): pickled
    # values of its classes load in workers and after a restart, and fingerprints that name
    # them stay the same.
    name = "headwater_definitions_" + hashlib.blake2b(os.fsencode(path), digest_size=8).hexdigest()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: cannot be imported as a Python file")
    try:
        data = path.read_bytes() if source is None else source
    except OSError as exc:
        raise LoadError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    _cache_lines(str(path), data)
    module = importlib.util.module_from_spec(spec)
    _forget(_HELPERS.pop(path, ()))
    before = set(sys.modules)
    sys.modules[name] = module
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # so the definitions file can import its neighbours
    try:
        with _no_exit(), _dropped_on_failure(before):
            exec(compile(data, str(path), "exec", dont_inherit=True), module.__dict__)
    except DefinitionError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"{path}: invalid definitions: {exc}") from exc
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"{path}: syntax error on line {exc.lineno}: {exc.msg}") from exc
    except BaseException as exc:
        # sys.exit(), an interrupt or any BaseException raised by the file itself is its
        # failure to load, not a request to stop whoever loads it (a reload keeps the old).
        sys.modules.pop(name, None)
        raise LoadError(
            f"{path}: importing it {_raised(exc)}{_user_frame(exc, str(path))}"
        ) from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):  # the file may have emptied sys.path
                sys.path.remove(folder)
    _HELPERS[path] = [n for n in set(sys.modules) - before if n != name and _reloadable(n)]
    return module, data


def _reloadable(name: str) -> bool:
    """Whether a module is the user's, to import afresh at the next load: their code, or a
    namespace package (a folder without ``__init__.py``) of their folders, whose attributes
    hold the submodules imported through it (``from . import helper`` answers from there)."""
    if users_module(name):
        return True
    module = sys.modules.get(name)
    if module is None or getattr(module, "__file__", None) is not None:
        return False
    folders = list(getattr(module, "__path__", None) or ())
    return bool(folders) and all(users_file(str(Path(f) / "__init__.py")) for f in folders)


class _TextLoader(importlib.machinery.SourceFileLoader):
    """Runs a module's text as a load read it, whatever its file holds now: a file loader
    otherwise (``importlib.resources`` reads the package's files). Its bytecode cache is
    keyed by that text's hash, not the file's time: a ``.pyc`` of the file as it is now
    would run the newer code."""

    def __init__(self, fullname: str, path: str, data: bytes) -> None:
        super().__init__(fullname, path)
        self.data = data

    def get_data(self, path: str) -> bytes:
        if path == self.path:
            return self.data
        return super().get_data(path)

    def get_code(self, fullname: str) -> CodeType:
        """The module's code from a bytecode cache keyed by its text's hash (PEP 552, as
        ``python -m py_compile --invalidation-mode checked-hash`` writes it, valid for plain
        imports too), compiled and cached when none matches: compiled at each start and
        reload, a large helper cost each worker seconds (hostile36d bug3)."""
        digest = importlib.util.source_hash(self.data)
        try:
            cached = importlib.util.cache_from_source(self.path)
        except NotImplementedError:  # sys.implementation.cache_tag is None
            return self.source_to_code(self.data, self.path)
        try:
            blob = Path(cached).read_bytes()
        except OSError:
            blob = b""
        if (
            blob[:4] == importlib.util.MAGIC_NUMBER
            and int.from_bytes(blob[4:8], "little") & _HASH_BASED
            and blob[8:16] == digest
        ):
            with contextlib.suppress(ValueError, EOFError, TypeError):  # a torn file
                return cast(CodeType, marshal.loads(blob[16:]))
        code = self.source_to_code(self.data, self.path)
        if not sys.dont_write_bytecode:
            blob = importlib.util.MAGIC_NUMBER + _CHECKED_HASH.to_bytes(4, "little") + digest
            temporary = Path(f"{cached}.{os.getpid()}.tmp")
            try:
                temporary.parent.mkdir(exist_ok=True)
                temporary.write_bytes(blob + marshal.dumps(code))
                temporary.replace(cached)  # workers starting together: whole files
            except OSError:  # a read-only project: compiled each time, as without a cache
                temporary.unlink(missing_ok=True)
        return code


_HASH_BASED, _CHECKED_HASH = 0b01, 0b11
"""PEP 552 flags: the cache is keyed by the source's hash; checked against it on import."""


class _Served(importlib.abc.MetaPathFinder):
    def __init__(self, modules: ModuleTexts) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = self.modules.get(fullname)
        if found is None:
            return None
        file, data = found
        package = [str(Path(file).parent)] if Path(file).name == "__init__.py" else None
        return _text_spec(fullname, file, data, package)


def _text_spec(
    fullname: str, file: str, data: bytes, package: list[str] | None
) -> importlib.machinery.ModuleSpec | None:
    """The spec of a module run from ``data``, its text (``package``: where its submodules
    are, for a package)."""
    return importlib.util.spec_from_file_location(
        fullname, file, loader=_TextLoader(fullname, file, data), submodule_search_locations=package
    )


@contextlib.contextmanager
def _in_front(finder: importlib.abc.MetaPathFinder) -> Iterator[None]:
    """``finder`` asked before the usual ones while the definitions import."""
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # the import removed it itself
            sys.meta_path.remove(finder)


@contextlib.contextmanager
def _serving(modules: ModuleTexts | None) -> Iterator[None]:
    """While the definitions import, the user's modules named in ``modules`` are imported from
    their text there: a worker runs the code the daemon loaded, not what the files hold now
    (an edit that broke a helper, a reload that failed and kept the old code: every worker
    started since could not import it). Their lines are what tracebacks and code versions
    read, as for the definitions file."""
    if not modules:
        yield
        return
    for file, data in modules.values():
        _cache_lines(file, data)
    with _in_front(_Served(modules)):
        yield


class _Recording(importlib.abc.MetaPathFinder):
    """Imports the user's modules found on ``sys.path`` from a text read once and kept: the
    text shipped to workers is the one that ran here, not the file read again after the
    import (a deploy racing a reload: hostile36c bug5)."""

    def __init__(self) -> None:
        self.texts: ModuleTexts = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = found.origin if found is not None else None
        if (
            found is None
            or not isinstance(found.loader, importlib.machinery.SourceFileLoader)
            or not isinstance(origin, str)
            or not users_file(origin)
        ):
            return None  # the usual finders, as if this one were not there
        try:
            data = Path(origin).read_bytes()
        except OSError:
            return None
        self.texts[fullname] = (origin, data)
        _cache_lines(origin, data)
        return _text_spec(fullname, origin, data, found.submodule_search_locations)


@contextlib.contextmanager
def _recording(on: bool) -> Iterator[ModuleTexts]:
    """While the definitions import (``on``: in the daemon), the text of each module of the
    user's it imports, as it ran."""
    if not on:
        yield {}
        return
    finder = _Recording()
    with _in_front(finder):
        yield finder.texts


def _cache_lines(file: str, data: bytes) -> None:
    # Decoded as Python decodes it (a coding cookie: latin-1 text read as UTF-8 made every
    # accented letter the same replacement character, and an edit of one no change of the
    # code version: hostile36d bug2); lines end where Python's do (\n, \r\n, \r), not also
    # at a form feed as str.splitlines has it (hostile36c bug2).
    try:
        text = importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        text = data.decode("utf-8", "replace")  # Python will refuse it: say what it can
    lines = io.StringIO(text, newline=None).readlines()
    linecache.cache[file] = (len(data), None, lines, file)  # never re-read


def _texts(names: Iterable[str], recorded: ModuleTexts) -> ModuleTexts:
    """The text of each of the user's modules named (Python files only), kept as the lines
    tracebacks and code versions read: what workers are then given to import. As it was
    ``recorded`` while it ran, else as its file holds it now."""
    out: ModuleTexts = {}
    for name in names:
        if name in recorded:
            out[name] = recorded[name]
            continue
        file = getattr(sys.modules.get(name), "__file__", None)
        if not isinstance(file, str) or not file.endswith(".py"):
            continue  # a namespace package, an extension module
        try:
            data = Path(file).read_bytes()
        except OSError:
            continue  # gone since: a worker imports it as it can
        _cache_lines(file, data)
        out[name] = (file, data)
    return out


def _forget_run_time() -> None:
    """Forget the user's modules imported since the last load, by its functions at run time
    (in a process that serves one definitions: see ``_RUN_TIME``)."""
    if _RUN_TIME is not None:
        _forget(n for n in set(sys.modules) - _RUN_TIME if _reloadable(n))


def _forget(modules: Iterable[str]) -> None:
    """Drop ``modules`` from ``sys.modules``: the next import runs their code as it is now."""
    for name in modules:
        gone = sys.modules.pop(name, None)
        if isinstance(file := getattr(gone, "__file__", None), str):
            linecache.checkcache(file)  # fingerprints read the new source, not the cached
    importlib.invalidate_caches()


def _import_module(name: str) -> ModuleType:
    """``importlib.import_module``, afresh for the user's own modules: a module of theirs
    imported before (the last load, a reload's) is imported again, with the helpers of theirs
    it brought in. Else a reload of ``module:attribute`` kept the code it started with (and
    a Dask worker ran it: hostile34b bug5) while saying it had reloaded."""
    earlier = _HELPERS.pop(name, [])
    # The target and its package are imported afresh even if installed (`pip install` of a
    # new version, then a reload): the definitions are what a reload is asked for.
    top = name.partition(".")[0]
    ours = [m for m in sys.modules if m == top or m.startswith(top + ".")]
    _forget([*earlier, *ours] if top != "headwater" else earlier)
    before = set(sys.modules)
    with _dropped_on_failure(before):
        module = importlib.import_module(name)
    _HELPERS[name] = [
        n for n in set(sys.modules) - before if _reloadable(n) or n.partition(".")[0] == top
    ]
    return module


@contextlib.contextmanager
def _dropped_on_failure(before: set[str]) -> Iterator[None]:
    """An import that fails forgets the user's modules it brought in: kept in
    ``sys.modules`` (with no load listing them), the next reload would find them there and
    run their text of that failed attempt (hostile36c bug1)."""
    try:
        yield
    except BaseException:
        _forget(n for n in set(sys.modules) - before if _reloadable(n))
        raise


def _find(module: ModuleType, attribute: str | None, where: str) -> Definitions:
    if attribute is not None:
        value = getattr(module, attribute, None)
        if not isinstance(value, Definitions):
            raise LoadError(f"{where}: attribute {attribute!r} is not an hw.Definitions")
        return value
    found = [v for v in vars(module).values() if isinstance(v, Definitions)]
    if len(found) != 1:
        raise LoadError(
            f"{where}: expected one hw.Definitions at module level, found {len(found)}; "
            "name it with FILE.py:attribute"
        )
    return found[0]


def _split(target: str) -> tuple[str, str | None, bool]:
    """``(file or module, attribute, whether it names a file)``. A target that exists as a
    path is one (a file's name may hold ':'); before ``:attribute``, a ``.py`` name or a file
    is one, and so is a folder named alone (to be refused as not a file); ``pkg:attr`` whose
    ``pkg`` is a folder (a package in the working directory) is a module."""
    if Path(target).exists():
        return target, None, True
    path, _, attribute = target.partition(":")
    named = path.endswith(".py") or Path(path).is_file() or (Path(path).exists() and not attribute)
    return path, attribute or None, named


def absolute_target(target: str) -> str:
    """``target`` with a file path made absolute (resolved once at start: a function that
    changes the working directory cannot move the definitions under the daemon)."""
    path, attribute, named = _split(target)
    if named:
        return str(Path(path).absolute()) + (f":{attribute}" if attribute else "")
    return target


def load_definitions(
    target: str,
    source: bytes | None = None,
    modules: ModuleTexts | None = None,
    *,
    serving: bool = False,
) -> Definitions:
    """Load ``path/to/defs.py``, ``path/to/defs.py:attr`` or ``package.module:attr``.

    ``source`` and ``modules``: the file's text and the user's modules' as an earlier load
    read them (``Definitions.source``, ``Definitions.modules``), so that a worker process runs
    what the daemon loaded even if the files have changed since. ``serving``: this process
    serves these definitions alone (the daemon): the user's modules imported at run time
    since the last load are imported afresh too."""
    global _RUN_TIME
    if serving:
        _forget_run_time()
    with _serving(modules), _recording(serving and modules is None) as recorded:
        defs = _load(target, source)
    # a worker keeps what it was given: read again, the files may hold newer text
    if modules is None:
        modules = _texts(_HELPERS[_helpers_key(target)], recorded)
    defs.modules = modules
    if serving:
        _RUN_TIME = set(sys.modules)
    return defs


def _helpers_key(target: str) -> Path | str:
    path_text, _, named = _split(target)
    return _file_path(path_text) if named else path_text


def _file_path(path_text: str) -> Path:
    """The definitions file as named, made absolute, its symlinks kept: a deploy that points
    ``current`` at a new release, then reloads, loads the same definitions (the same module
    name, so values pickled from its classes still load; the same helpers to import afresh),
    not another file beside the one loaded before."""
    return Path(os.path.abspath(path_text))  # noqa: PTH100 (resolve() follows symlinks)


def _load(target: str, source: bytes | None) -> Definitions:
    path_text, attribute, named = _split(target)
    if named:
        path = _file_path(path_text)
        if not path.is_file():
            what = (
                "is not a regular file"
                if path.exists()  # a folder, a FIFO (reading it would block)
                else "does not exist"
            )
            raise LoadError(f"definitions file {path_text!r} {what}")
        module, data = _import_file(path, source)
        defs = _find(module, attribute or None, str(path))
        defs.base_dir = path.parent
        defs.source = data
        defs.origin = f"{path}:{attribute}" if attribute else str(path)
        return defs
    try:
        with _no_exit():
            module = _import_module(path_text)
    except DefinitionError as exc:
        raise LoadError(f"module {path_text!r}: invalid definitions: {exc}") from exc
    except ImportError as exc:
        top = path_text.split(".")[0]
        hint = (
            f"; the folder {top}/ here is not on the import path: set PYTHONPATH=. or install it"
            if isinstance(exc, ModuleNotFoundError) and exc.name == top and Path(top).is_dir()
            else ""
        )
        raise LoadError(f"cannot import module {path_text!r}: {exc}{hint}") from exc
    except BaseException as exc:  # as for a file: see _import_file
        raise LoadError(f"module {path_text!r}: importing it {_raised(exc)}") from exc
    defs = _find(module, attribute or None, f"module {path_text!r}")
    defs.origin = target
    return defs


def source_digest(defs: Definitions) -> str | None:
    """A fingerprint of the definitions file's text as loaded (None: loaded as a module):
    whether the file a command reads is the one the daemon serves."""
    if defs.source is None:
        return None
    return hashlib.blake2b(defs.source, digest_size=16).hexdigest()


def importable_target(defs: Definitions) -> str:
    """Where a worker process imports ``defs`` from: what they were loaded from, else the
    module-level name they have in the module that built them."""
    if defs.origin is not None:
        return defs.origin
    module = sys.modules.get(defs.module or "")
    names = [n for n, v in vars(module).items() if v is defs] if module is not None else []
    filename = getattr(module, "__file__", None)
    if not names or not isinstance(filename, str):
        raise LoadError(
            "executor='processes' imports the definitions again in each worker process: "
            "build the hw.Definitions at the top level of a module (a file), not inside a "
            "function"
        )
    return f"{Path(filename).resolve()}:{names[0]}"
