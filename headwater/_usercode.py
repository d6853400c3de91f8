"""The user's code, as opposed to headwater's, the standard library's and installed packages'.

Fingerprints read only the user's code and values (a library's objects hold process state),
and a reload imports the user's modules afresh (a library is not edited between reloads).
"""

from __future__ import annotations

import contextlib
import functools
import os
import site
import sys
import sysconfig
from pathlib import Path

__all__ = ["in_a_worker", "mark_worker", "users_file", "users_module"]

_IN_WORKER = False


def mark_worker() -> None:
    """This process runs functions for an engine elsewhere (a worker, a Dask task): it must
    open no engine of its own (see :func:`in_a_worker`)."""
    global _IN_WORKER
    _IN_WORKER = True


def in_a_worker() -> bool:
    """Whether this process is a worker: a definitions file that opens a ``Harness`` at its top
    level, imported in one, would start workers that import it again, without end."""
    return _IN_WORKER


def users_module(module: str | None) -> bool:
    """Whether a module is the user's code: not headwater's, not installed (site-packages,
    dist-packages, the user site), not the standard library. Code of no module (``exec``
    without a ``__name__``) and the ``__main__`` script are."""
    if module is None or module == "__main__":
        return True
    if module.partition(".")[0] == "headwater":
        return False
    found = sys.modules.get(module)
    path = getattr(found, "__file__", None)
    if not isinstance(path, str):
        return False  # built in, or a namespace package
    return users_file(path)


@functools.cache
def users_file(path: str) -> bool:
    """Whether a source file is the user's: not under an installed or standard folder."""
    real = os.path.realpath(path)
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(real.startswith(folder + os.sep) for folder in _installed())


@functools.cache
def _installed() -> tuple[str, ...]:
    paths = {p for k, p in sysconfig.get_paths().items()
             if k in ("stdlib", "platstdlib", "purelib", "platlib")}  # fmt: skip
    with contextlib.suppress(Exception):  # a site module without them (embedded Pythons)
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    return tuple(sorted(os.path.realpath(p) for p in paths))
