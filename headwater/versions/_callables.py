"""Fingerprints of callables with what they hold: a source's ``loader=``, a check.

Readers record their sources' loaders (and assets their checks) by these, so a fingerprint
must be the same in every process and under any hash seed: one that changed from start to
start would make every reader stale at every start, which is worse than an edit unseen. So it
reads *your* code and *your* values, never a library's internals: a logger, a filesystem
client or a thread pool holds process state (caches, process ids, counters, tokens that
depend on the hash seed), and counts by its type alone. Nothing goes through ``pickle`` or
the ``repr`` of an unknown object (sets in hash order, memory addresses).

What counts:
- a function by its syntax tree (:func:`code_version`); a lambda by its own instructions and
  constants (its source line may hold other code, or other lambdas); either with the values
  of its defaults and of the variables it closes over (a factory's ``make_loader(";")``);
- a ``functools.partial`` by its function and arguments; a bound method by its function and
  its object; a property by its functions;
- a class of your code (a module outside the standard library and site-packages) by its name
  and what the bodies of it and its bases of your code define (methods, class attributes);
  an object of such a class by its class and its attributes (``__dict__`` and slots);
- values: plain ones by ``repr``; containers by their items (sets and dicts sorted); an enum
  member by its name; a path, a compiled pattern, a date by their text;
  ``operator.methodcaller`` and kin by what they call, with what; pandas, NumPy and Arrow data
  by :func:`data_version` (objects inside them as it takes them: pickled);
- anything else (a library's class or object, a builtin) by its qualified name.
Each object is encoded once per fingerprint (shared ones are not walked again), and a parent
holds a digest of each long child's encoding, so the cost is linear in what the callable holds.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import functools
import hashlib
import operator
import os
import re
import struct
import types
import uuid
from collections.abc import Callable
from typing import Any, cast

from headwater._usercode import users_module
from headwater.versions._code import code_version, from_bytecode
from headwater.versions._data import data_version

__all__ = ["callable_version"]

_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})
_TEXTUAL = (dt.date, dt.time, dt.timedelta, dt.timezone, decimal.Decimal, uuid.UUID)
"""Values whose ``repr`` is their content."""
_BUILTINS = (
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_GETTERS = frozenset({operator.methodcaller, operator.attrgetter, operator.itemgetter})
_DATA = ("pandas", "numpy", "pyarrow")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_DEPTH = 100
"""Levels of attributes and items followed; deeper counts by type. Far beyond any loader's
settings (so the cut, which depends on where the walk met an object, is never met), and
within the interpreter's recursion limit."""


def callable_version(fn: Callable[..., Any]) -> str:
    """The fingerprint of ``fn`` and what it holds (see the module's docstring). Never
    raises: what cannot be read counts by its type."""
    try:
        text = _Encoder().encode(fn, 0)
    except Exception:  # a callable whose very type cannot be read
        text = "?"
    data = text.encode("utf-8", "backslashreplace")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _name(kind: type) -> str:
    return f"{kind.__qualname__}"


class _Encoder:
    """A depth-first walk that gives each object one text. An object on a cycle (in a
    strongly connected group of objects that reach each other, found as Tarjan's algorithm
    does, as the walk goes) counts by its type alone: its text would otherwise depend on
    where the walk entered the group, and through a set that is hash order."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[object, str]] = {}
        """Each object's text, with the object: held, it keeps its id to itself (the tuples
        and dicts made here to encode would otherwise lend theirs to others)."""
        self._path: list[int] = []
        """Objects being encoded, from the root to here."""
        self._order: dict[int, int] = {}
        self._low: dict[int, int] = {}
        """The earliest object (in walk order) each reaches among those still open."""
        self._open: list[int] = []
        self._opened: dict[int, int] = {}
        """Objects walked whose group is not complete yet (Tarjan's stack), and where."""
        self._looped: set[int] = set()

    def encode(self, value: object, depth: int) -> str:
        kind = type(value)  # not value.__class__, which a proxy or a mock may fake
        if kind in _PLAIN:
            return _short(self._plain(value, kind))
        key = id(value)
        if key in self._opened:  # back to an object whose group is still open: a cycle
            self._reach(self._order[key], key)
            return f"<{_name(kind)}>"
        if key in self._done:
            return self._done[key][1]
        if depth > _DEPTH:
            return f"<{_name(kind)}>"
        self._order[key] = self._low[key] = len(self._order)
        self._opened[key] = len(self._open)
        self._open.append(key)
        self._path.append(key)
        try:
            text = _short(self._compound(value, kind, depth + 1))
        except Exception:  # an attribute that raises, a repr that refuses: its type
            text = f"<{_name(kind)}>"
        finally:
            self._path.pop()
        self._done[key] = (value, text)
        if self._path:
            parent = self._path[-1]
            self._low[parent] = min(self._low[parent], self._low[key])
        if self._low[key] == self._order[key]:  # the first of its group: the group is whole
            group = self._open[self._opened[key] :]
            del self._open[self._opened[key] :]
            for member in group:
                del self._opened[member]
            if len(group) > 1 or key in self._looped:
                for member in group:
                    held = self._done[member][0]
                    self._done[member] = (held, f"<{_name(type(held))}>")
                text = self._done[key][1]
        return text

    def _reach(self, order: int, key: int) -> None:
        parent = self._path[-1]
        self._low[parent] = min(self._low[parent], order)
        if parent == key:
            self._looped.add(key)

    @staticmethod
    def _plain(value: object, kind: type) -> str:
        try:
            return f"{kind.__name__}:{value!r}"
        except ValueError:  # an int of more digits than repr will write
            return f"{kind.__name__}:#{hash(value)}"

    def _items(self, values: Any, depth: int) -> list[str]:
        return [self.encode(v, depth) if (t := _flat(v)) is None else t for v in values]

    def _compound(self, value: Any, kind: type, depth: int) -> str:
        if issubclass(kind, enum.Enum):
            return f"enum {_name(kind)}.{value.name}"
        for base in (str, bytes, int, float):  # a subclass: its value, by the base's repr
            if issubclass(kind, base):
                return f"{_name(kind)}:{base.__repr__(value)}"
        if issubclass(kind, list | tuple | collections.deque):
            return f"{_name(kind)}[{','.join(self._items(value, depth))}]"
        if issubclass(kind, set | frozenset):
            return f"{_name(kind)}{{{','.join(sorted(self._items(value, depth)))}}}"
        if issubclass(kind, dict | types.MappingProxyType):
            keys, values = self._items(value.keys(), depth), self._items(value.values(), depth)
            pairs = sorted(f"{k}:{v}" for k, v in zip(keys, values, strict=True))
            return f"{_name(kind)}{{{','.join(pairs)}}}"
        if issubclass(kind, types.FunctionType):
            return self._function(value, depth)
        if issubclass(kind, functools.partial):
            parts = self._items((value.func, value.args, value.keywords), depth)
            return f"partial({','.join(parts)})"
        if issubclass(kind, types.MethodType):
            return (
                f"method({self.encode(value.__func__, depth)},{self.encode(value.__self__, depth)})"
            )
        if issubclass(kind, classmethod | staticmethod):
            return f"{_name(kind)}({self.encode(value.__func__, depth)})"
        if issubclass(kind, property):
            return f"property({','.join(self._items((value.fget, value.fset, value.fdel), depth))})"
        if issubclass(kind, _BUILTINS):
            owner = getattr(value, "__self__", None)
            bound = "" if owner is None or isinstance(owner, types.ModuleType) else (
                self.encode(owner, depth)
            )  # fmt: skip
            return f"builtin {value.__qualname__}({bound})"
        if issubclass(kind, type):
            return self._class(value, depth)
        if issubclass(kind, types.ModuleType):
            return f"module {value.__name__}"
        if issubclass(kind, _TEXTUAL) or issubclass(kind, types.UnionType):
            return f"{_name(kind)}:{_ADDRESS.sub('', repr(value))}"  # a custom tzinfo's repr
        if kind in _GETTERS:  # what they call, and with what: as they pickle
            return f"{_name(kind)}:{self.encode(value.__reduce__(), depth)}"
        if issubclass(kind, re.Pattern):
            return f"pattern:{value.pattern!r}/{value.flags}"
        if issubclass(kind, os.PathLike):
            return f"{_name(kind)}:{os.fspath(value)!r}"
        if issubclass(kind, struct.Struct):
            return f"struct:{value.format!r}"
        if kind.__module__ == "_csv" and kind.__name__ == "Dialect":
            settings = {a: getattr(value, a) for a in _DIALECT}
            return f"dialect:{self.encode(settings, depth)}"
        if kind.__module__.partition(".")[0] in _DATA:
            return self._data(value, kind, depth)
        if users_module(kind.__module__):
            return f"{self._class(kind, depth)}:{self.encode(_attributes(value), depth)}"
        own = getattr(value, "__dict__", None)  # not getattr: a library's __getattr__ may act
        wrapped = own.get("__wrapped__") if isinstance(own, dict) else None
        inner = "" if wrapped is None else self.encode(wrapped, depth)  # lru_cache's function
        return f"<{kind.__module__}.{_name(kind)}>({inner})"

    def _data(self, value: Any, kind: type, depth: int) -> str:
        """By :func:`data_version`, unless Python objects are inside (an ``object`` dtype):
        it would pickle them, sets in hash order; they are encoded here instead."""
        if kind.__name__ == "CategoricalDtype":  # its categories may be objects of yours
            return f"categories:{self.encode((list(value.categories), value.ordered), depth)}"
        if kind.__name__ == "vectorize":  # numpy's: the function of yours it vectorizes
            return f"vectorize:{self.encode(value.pyfunc, depth)}"
        dtypes = getattr(value, "dtypes", None)
        dtype = getattr(value, "dtype", None)
        if dtype is not None:
            objects = _holds_objects(dtype)
        else:
            objects = dtypes is not None and any(_holds_objects(d) for d in dtypes)
        if not objects:
            return f"{_name(kind)}:{data_version(value)}"
        if hasattr(value, "columns"):  # a DataFrame
            parts: object = (list(value.columns), list(value.index),
                             [value[c].tolist() for c in value.columns])  # fmt: skip
        elif hasattr(value, "index"):  # a Series
            parts = (value.name, list(value.index), value.tolist())
        else:
            parts = (getattr(value, "shape", None), value.tolist())
        return f"{_name(kind)}:{self.encode(parts, depth)}"

    def _function(self, fn: types.FunctionType, depth: int) -> str:
        """Yours: its syntax, defaults and closed-over values. A library's: its name (what it
        holds is library state: ``singledispatch`` closes over a process-wide counter), and
        the function it wraps, if it says (``functools.wraps``)."""
        if not users_module(fn.__module__):
            wrapped = getattr(fn, "__wrapped__", None)
            inner = "" if wrapped is None else self.encode(wrapped, depth)
            return f"function {fn.__module__}.{fn.__qualname__}({inner})"
        code = fn.__code__
        body = from_bytecode(code) if fn.__name__ == "<lambda>" else code_version(fn)
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        held = self._items((fn.__defaults__, fn.__kwdefaults__, cells), depth)
        return f"function({body},{','.join(held)})"

    def _class(self, kind: type, depth: int) -> str:
        """Its name; for a class of your code, what its body and those of its bases of your
        code define (a method a loader inherits is what it runs)."""
        if not users_module(kind.__module__):
            return f"class {kind.__module__}.{_name(kind)}"
        bodies = [
            {k: v for k, v in vars(base).items() if not k.startswith("__") or k in _DUNDERS}
            for base in kind.__mro__
            if users_module(base.__module__)
        ]
        return f"class {_name(kind)}({self.encode(bodies, depth)})"


_DIALECT = ("delimiter", "doublequote", "escapechar", "lineterminator", "quotechar", "quoting",
            "skipinitialspace", "strict")  # fmt: skip


def _flat(value: object) -> str | None:
    """A plain value, or a tuple of them (a lookup table's rows), encoded without a walk:
    what a million of them cost is their text. None for anything else."""
    kind = type(value)
    if kind in _PLAIN:
        return _short(_Encoder._plain(value, kind))
    if kind is tuple:
        row = cast("tuple[object, ...]", value)
        if all(type(v) in _PLAIN for v in row):
            return _short("tuple[" + ",".join([_Encoder._plain(v, type(v)) for v in row]) + "]")
    return None


def _holds_objects(dtype: object) -> bool:
    """An ``object`` dtype, or categories that may hold objects (pandas' string dtype reports
    kind "O" too, and is typed)."""
    return getattr(dtype, "kind", None) == "O" and type(dtype).__name__ != "StringDtype"


def _short(text: str) -> str:
    """Text past 64 characters as its digest: a parent holds its children's digests, so a
    shared object met at every level (``[x] * 6``, twenty deep) costs its size, not 6**20."""
    if len(text) <= 64:
        return text
    data = text.encode("utf-8", "backslashreplace")
    return "#" + hashlib.blake2b(data, digest_size=16).hexdigest()


_DUNDERS = frozenset({"__init__", "__call__", "__new__", "__post_init__"})
"""The special methods of a class body that say what calling it, or an instance, does."""


def _attributes(value: object) -> dict[str, object]:
    """An object's own attributes: its ``__dict__`` and every slot of its classes."""
    found = dict(getattr(value, "__dict__", None) or {})
    for base in type(value).__mro__:
        slots = base.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                found[slot] = getattr(value, slot)
    return found


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True
