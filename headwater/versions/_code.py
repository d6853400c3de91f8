"""Code versions: a fingerprint of a function's syntax tree.

Formatting, comments, docstrings and decorators do not count: re-indenting a function or
changing its policy does not make its data stale; changing what it computes does.
"""

from __future__ import annotations

import ast
import dis
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from types import CodeType
from typing import Any

__all__ = ["code_version", "constant_text", "from_bytecode"]

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


def from_bytecode(code: CodeType) -> str:
    """For functions without source (``exec``, a REPL): the instructions and the constants
    they load. A docstring is a constant no instruction loads, so it does not count; nor do
    line numbers."""
    h = hashlib.blake2b(digest_size=16)
    for ins in dis.get_instructions(code):
        if ins.opname in ("RESUME", "NOP", "CACHE", "EXTENDED_ARG"):
            continue
        value = ins.argval
        if isinstance(value, CodeType):
            argument = from_bytecode(value)
        elif ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
            argument = str(value)  # a jump target: an offset within this code
        else:
            argument = constant_text(value)
        h.update(f"{ins.opname}({argument})\n".encode())
    return h.hexdigest()


def constant_text(value: object) -> str:
    """A code constant as text, the same under any hash seed: ``{"a", "b"}`` in a function
    is a frozenset constant, whose ``repr`` lists its items in hash order."""
    if isinstance(value, frozenset):
        return "frozenset({" + ", ".join(sorted(constant_text(v) for v in value)) + "})"
    if isinstance(value, tuple):  # as its repr, but with its items' texts
        return "(" + ", ".join(constant_text(v) for v in value) + ("," * (len(value) == 1)) + ")"
    return repr(value)


def code_version(fn: Callable[..., Any]) -> str:
    """The fingerprint of ``fn``'s syntax tree (its bytecode when the source is not available)."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    key = None if code is None else (code.co_filename, code)
    if key is not None and key in _cache:
        return _cache[key]
    if code is None:  # an object with __call__, a functools.partial: not its repr (an
        # address that differs in every process would make each run's check of the code fail)
        from headwater.versions._callables import callable_version  # it builds on this

        return callable_version(target)
    # A lambda's source is its whole line: the decorator's arguments, or another lambda
    # beside it, would count as its code. Its own instructions and constants are the code.
    lambda_ = getattr(target, "__name__", "") == "<lambda>"
    version = (None if lambda_ else _from_source(target)) or from_bytecode(code)
    if key is not None:
        _cache[key] = version
    return version
