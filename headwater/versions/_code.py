"""Code versions: a fingerprint of a function's syntax tree.

Formatting, comments, docstrings and decorators do not count: re-indenting a function or
changing its policy does not make its data stale; changing what it computes does.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import inspect
import re
import textwrap
import types
from collections.abc import Callable
from types import CodeType
from typing import Any

from headwater.versions._data import data_version

__all__ = ["callable_version", "code_version"]

_cache: dict[tuple[str, CodeType], str] = {}
"""Keyed by file too: code objects compare equal across files (the filename is not compared),
and one from a file with source must not lend its version to one without."""


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            node.decorator_list = []


def _from_source(fn: Callable[..., Any]) -> str | None:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    _strip_docstrings(tree)
    dumped = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.blake2b(dumped.encode(), digest_size=16).hexdigest()


def _from_bytecode(code: CodeType) -> str:
    """For functions without source (``exec``, a REPL): the instructions and the constants
    they load. A docstring is a constant no instruction loads, so it does not count; nor do
    line numbers."""
    h = hashlib.blake2b(digest_size=16)
    for ins in dis.get_instructions(code):
        if ins.opname in ("RESUME", "NOP", "CACHE", "EXTENDED_ARG"):
            continue
        value = ins.argval
        if isinstance(value, CodeType):
            argument = _from_bytecode(value)
        elif ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
            argument = str(value)  # a jump target: an offset within this code
        else:
            argument = repr(value)
        h.update(f"{ins.opname}({argument})\n".encode())
    return h.hexdigest()


def code_version(fn: Callable[..., Any]) -> str:
    """The fingerprint of ``fn``'s syntax tree (its bytecode when the source is not available)."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    key = None if code is None else (code.co_filename, code)
    if key is not None and key in _cache:
        return _cache[key]
    version = _from_source(target) or (
        _from_bytecode(code)
        if code is not None
        else hashlib.blake2b(repr(target).encode(), digest_size=16).hexdigest()
    )
    if key is not None:
        _cache[key] = version
    return version


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _settings(value: object) -> str:
    """A fingerprint of a loader's arguments or attributes, the same in every process: their
    typed content where it can be taken (order-free for sets and dicts, whatever the hash
    seed), else their ``repr`` without memory addresses (``<function f at 0x7f...>``). One
    that differed from process to process would make every reader stale at every start."""
    try:
        return data_version(value)
    except Exception:  # whatever pickling raises (a lambda, a lock): each part on its own
        pass
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return "{" + ",".join(f"{k!r}:{_settings(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_settings(v) for v in value) + "]"
    if isinstance(value, types.FunctionType | functools.partial):  # a function among them
        return callable_version(value)
    return _ADDRESS.sub("", repr(value))


def _state(obj: object) -> str:
    return _settings(vars(obj)) if hasattr(obj, "__dict__") else ""


def callable_version(fn: Callable[..., Any]) -> str:
    """A fingerprint of any callable (a source's ``loader=``), the same in every process: a
    function's :func:`code_version`; a partial's function and arguments; a method's function
    and its object's attributes; a callable object's class, ``__call__`` and attributes; a
    builtin's qualified name."""
    target = inspect.unwrap(fn)
    if isinstance(target, types.FunctionType):
        return code_version(target)
    if isinstance(target, functools.partial):
        parts = [callable_version(target.func), _settings((target.args, target.keywords))]
    elif isinstance(target, types.MethodType):
        owner = target.__self__
        parts = [callable_version(target.__func__), type(owner).__qualname__, _state(owner)]
    elif isinstance(target, types.BuiltinFunctionType | types.BuiltinMethodType):
        owner = getattr(target, "__self__", None)
        where = type(owner).__qualname__ if owner is not None else target.__module__
        parts = [f"{where}.{target.__qualname__}"]
    else:
        kind = type(target)
        call = getattr(kind, "__call__", None)  # noqa: B004 (the class's function, not callable())
        parts = [f"{kind.__module__}.{kind.__qualname__}", _state(target)]
        if isinstance(call, types.FunctionType):
            parts.append(code_version(call))
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
