"""Fingerprints of callables with what they hold: a source's ``loader=``, a check.

Readers record their sources' loaders (and assets their checks) by these, so a fingerprint
must be the same in every process and under any hash seed: one that changed from start to
start would make every reader stale at every start. So nothing here goes through ``repr`` of
an unknown object (memory addresses), ``pickle`` (sets in hash order, module names) or a
module's name. What cannot be encoded for certain counts by its type's name alone: an edit
there goes unseen, which is the lesser harm.

What counts:
- a function by its syntax tree (:func:`code_version`), a lambda by its own instructions and
  constants (its source line may hold other code, or other lambdas), either with the values of
  its defaults and of the variables it closes over (a factory's ``make_loader(";")``);
- a ``functools.partial`` by its function and arguments; a bound method by its function and
  its object; a class by its name and what its body defines;
- an object by its class and its attributes (``__dict__``, or what ``__reduce_ex__`` gives for
  ``__slots__`` and for ``operator.methodcaller`` and kin); a builtin by its qualified name;
- plain values by ``repr``, containers by their items (sets and dicts in sorted order),
  pandas, NumPy and Arrow data by :func:`data_version`.
"""

from __future__ import annotations

import copyreg
import functools
import hashlib
import types
from collections.abc import Callable
from typing import Any

from headwater.versions._code import code_version, from_bytecode
from headwater.versions._data import data_version

__all__ = ["callable_version"]

_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_BUILTINS = (
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_DATA = ("pandas", "numpy", "pyarrow")
_DEPTH = 16
"""Levels of attributes and items followed; deeper counts by type."""


def callable_version(fn: Callable[..., Any]) -> str:
    """The fingerprint of ``fn`` and what it holds (see the module's docstring)."""
    text = _Encoder().encode(fn, 0)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _name(kind: type) -> str:
    return kind.__qualname__


class _Encoder:
    def __init__(self) -> None:
        self._path: set[int] = set()
        """Objects being encoded, from the root to here: met again, they are a cycle."""

    def encode(self, value: object, depth: int) -> str:
        if isinstance(value, _PLAIN):
            return f"{_name(type(value))}:{value!r}"
        if depth > _DEPTH:
            return f"<{_name(type(value))}>"
        if id(value) in self._path:
            return "<cycle>"
        self._path.add(id(value))
        try:
            return self._compound(value, depth + 1)
        except Exception:  # an attribute that raises, a reduce that refuses: its type
            return f"<{_name(type(value))}>"
        finally:
            self._path.discard(id(value))

    def _items(self, values: Any, depth: int) -> list[str]:
        return [self.encode(v, depth) for v in values]

    def _compound(self, value: object, depth: int) -> str:
        kind = type(value)
        if isinstance(value, list | tuple):
            return f"{_name(kind)}[{','.join(self._items(value, depth))}]"
        if isinstance(value, set | frozenset):
            return f"{_name(kind)}{{{','.join(sorted(self._items(value, depth)))}}}"
        if isinstance(value, dict):
            pairs = sorted(f"{self.encode(k, depth)}:{self.encode(v, depth)}"
                           for k, v in value.items())  # fmt: skip
            return f"{_name(kind)}{{{','.join(pairs)}}}"
        if isinstance(value, types.FunctionType):
            return self._function(value, depth)
        if isinstance(value, functools.partial):
            parts = self._items((value.func, value.args, value.keywords), depth)
            return f"partial({','.join(parts)})"
        if isinstance(value, types.MethodType):
            return (
                f"method({self.encode(value.__func__, depth)},{self.encode(value.__self__, depth)})"
            )
        if isinstance(value, classmethod | staticmethod):
            return f"{_name(kind)}({self.encode(value.__func__, depth)})"
        if isinstance(value, _BUILTINS):
            owner = getattr(value, "__self__", None)
            bound = "" if owner is None or isinstance(owner, types.ModuleType) else (
                self.encode(owner, depth)
            )  # fmt: skip
            return f"builtin {value.__qualname__}({bound})"
        if isinstance(value, type):
            return self._class(value, depth)
        if isinstance(value, types.ModuleType):
            return f"module {value.__name__}"
        if kind.__module__.partition(".")[0] in _DATA:
            return f"{_name(kind)}:{data_version(value)}"
        return self._object(value, depth)

    def _function(self, fn: types.FunctionType, depth: int) -> str:
        code = fn.__code__
        body = from_bytecode(code) if fn.__name__ == "<lambda>" else code_version(fn)
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        held = self._items((fn.__defaults__, fn.__kwdefaults__, cells), depth)
        return f"function({body},{','.join(held)})"

    def _class(self, kind: type, depth: int) -> str:
        """Its name, and what its body defines (methods, class attributes)."""
        own = {k: v for k, v in vars(kind).items() if not k.startswith("__") or k in _DUNDERS}
        return f"class {_name(kind)}({self.encode(own, depth)})"

    def _object(self, value: object, depth: int) -> str:
        kind = type(value)
        state: object
        if hasattr(value, "__dict__") and not isinstance(value, type):
            state = vars(value)
        else:
            reduced = value.__reduce_ex__(4)
            if isinstance(reduced, str):  # a global's name: a singleton
                return f"<{_name(kind)} {reduced}>"
            maker, args, *rest = reduced
            newobj = maker is getattr(copyreg, "__newobj__", None)  # object's own reduce
            state = (args[1:] if newobj else (maker, args), rest[:1])
        return f"{self._class(kind, depth)}:{self.encode(state, depth)}"


_DUNDERS = frozenset({"__init__", "__call__", "__new__"})
"""The special methods of a class body that say what calling it, or an instance, does."""


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True
