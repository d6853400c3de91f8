"""Loading definitions in this process, from real files: what a reload imports afresh, and
the text of the user's modules a worker is given (it must be what ran here)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater._loading import LoadError, load_definitions


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` on the import path for the test, and the modules imported from it
    forgotten after it (the next test's files have the same names)."""
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]


DEFS = """
import headwater as hw
import helper_{n}

answer = hw.asset("answer", policy=hw.manual())(helper_{n}.answer)
defs = hw.Definitions([answer])
"""


def _answer(defs: object) -> int:
    fn = defs.assets["answer"].fn  # type: ignore[attr-defined]
    return int(fn())


def test_a_failed_load_forgets_the_helper_it_imported(importable: Path) -> None:
    """The helper edited, then the definitions fail after importing it (the daemon's import
    failing where the reload's check passed): the next load imports the helper afresh, not
    the text of the failed attempt left in ``sys.modules`` (hostile36c bug1)."""
    helper, defs_file = importable / "helper_1.py", importable / "defs.py"
    helper.write_text("def answer() -> int:\n    return 1\n")
    defs_file.write_text(DEFS.format(n=1))
    assert _answer(load_definitions(str(defs_file))) == 1
    helper.write_text("def answer() -> int:\n    return 2\n")
    defs_file.write_text(DEFS.format(n=1) + "raise RuntimeError('not today')\n")
    with pytest.raises(LoadError, match="not today"):
        load_definitions(str(defs_file))
    helper.write_text("def answer() -> int:\n    return 3\n")
    defs_file.write_text(DEFS.format(n=1))
    assert _answer(load_definitions(str(defs_file))) == 3


def test_a_form_feed_in_a_helper_leaves_its_functions_code_versions_their_own(
    importable: Path,
) -> None:
    """Lines end where Python's do: a form feed (a page break) is not one. Split there,
    every line after it was off by one: the function's source read as another line, and its
    code version stayed the same when it was edited (hostile36c bug2)."""
    helper, defs_file = importable / "helper_2.py", importable / "defs.py"
    defs_file.write_text(DEFS.format(n=2))
    versions = []
    for value in (1, 2):
        helper.write_text(
            f"# page one\n\x0c\n# page two\ndef answer() -> int:\n    return {value}\n"
        )
        defs = load_definitions(str(defs_file))
        assert _answer(defs) == value
        versions.append(defs.code_version("answer"))
    assert versions[0] != versions[1]


def test_a_worker_given_the_text_of_a_package_reads_its_resources(importable: Path) -> None:
    """A worker imports the package from the text the daemon loaded; ``importlib.resources``
    still finds the files beside it (every worker failed "Can't open orphan path":
    hostile36c bug3)."""
    package = importable / "respkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "query.sql").write_text("select 42")
    (package / "defs.py").write_text(
        "import importlib.resources\n"
        "import headwater as hw\n"
        "QUERY = importlib.resources.files(__package__).joinpath('query.sql').read_text()\n"
        "answer = hw.asset('answer', policy=hw.manual())(lambda: len(QUERY))\n"
        "defs = hw.Definitions([answer])\n"
    )
    daemons = load_definitions("respkg.defs:defs", serving=True)
    assert set(daemons.modules) == {"respkg", "respkg.defs"}
    workers = load_definitions("respkg.defs:defs", daemons.source, daemons.modules)
    assert _answer(workers) == len("select 42")


def test_a_module_target_of_an_installed_package_is_imported_afresh(importable: Path) -> None:
    """``pip install`` of a new version, then a reload: the target is the definitions asked
    for, installed or not (the daemon kept the old, and shipped nothing: hostile36c bug4)."""
    installed = importable / "venv" / "lib" / "site-packages"
    (installed / "mypipe").mkdir(parents=True)
    (installed / "mypipe" / "__init__.py").write_text("")
    sys.path.insert(0, str(installed))
    try:
        for version in (1, 2):
            (installed / "mypipe" / "defs.py").write_text(
                "import headwater as hw\n"
                f"answer = hw.asset('answer', policy=hw.manual())(lambda: {version})\n"
                "defs = hw.Definitions([answer])\n"
            )
            defs = load_definitions("mypipe.defs:defs", serving=True)
            assert _answer(defs) == version
            assert "mypipe.defs" in defs.modules
    finally:
        sys.path.remove(str(installed))


def test_the_text_given_to_workers_is_the_text_that_ran(importable: Path) -> None:
    """The helper's file changes while the definitions import (a deploy racing the reload):
    workers are given the text the daemon ran, not the file read again afterwards (hostile36c
    bug5)."""
    helper, defs_file = importable / "helper_5.py", importable / "defs.py"
    helper.write_text("def answer() -> int:\n    return 1\n")
    defs_file.write_text(
        DEFS.format(n=5)
        + "import pathlib\n"
        + "pathlib.Path(helper_5.__file__).write_text('def answer() -> int:\\n    return 2\\n')\n"
    )
    defs = load_definitions(str(defs_file), serving=True)
    assert _answer(defs) == 1
    file, text = defs.modules["helper_5"]
    assert Path(file) == helper and text == b"def answer() -> int:\n    return 1\n"


def test_a_deploy_that_points_a_symlink_at_a_new_release_loads_all_of_it(
    importable: Path,
) -> None:
    """``current`` points at ``v1``, then at ``v2``, and the definitions are loaded again (a
    reload): the helper beside them is v2's too (v1's kept running: hostile36d bug4), and the
    definitions module keeps its name, so values pickled from its classes still load
    (hostile36d bug5)."""
    releases = importable / "releases"
    for version in (1, 2):
        release = releases / f"v{version}"
        release.mkdir(parents=True)
        (release / "helper_6.py").write_text(f"def answer() -> int:\n    return {version}\n")
        (release / "defs.py").write_text(DEFS.format(n=6))
    current = importable / "current"
    current.symlink_to(releases / "v1")
    first = load_definitions(str(current / "defs.py"))
    current.unlink()
    current.symlink_to(releases / "v2")
    second = load_definitions(str(current / "defs.py"))
    assert (_answer(first), _answer(second)) == (1, 2)
    assert second.module == first.module and first.module is not None
    assert first.module.startswith("headwater_definitions_")


def test_an_edit_of_an_accented_letter_in_a_latin_1_helper_changes_its_code_version(
    importable: Path,
) -> None:
    """The helper declares its encoding: its text is read as Python reads it (as UTF-8, each
    accented letter was the same replacement character: hostile36d bug2)."""
    helper, defs_file = importable / "helper_7.py", importable / "defs.py"
    defs_file.write_text(DEFS.format(n=7))
    versions = []
    for word in ("café", "cafè"):
        helper.write_bytes(
            f"# -*- coding: latin-1 -*-\ndef answer() -> int:\n    return len('{word}')\n".encode(
                "latin-1"
            )
        )
        defs = load_definitions(str(defs_file))
        assert _answer(defs) == 4
        versions.append(defs.code_version("answer"))
    assert versions[0] != versions[1]


def test_the_users_modules_run_from_their_text_use_a_bytecode_cache_keyed_by_it(
    importable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from the text the daemon recorded, a module is not compiled again at each start,
    reload and worker (a large helper cost each worker seconds: hostile36d bug3): the cache
    is a checked-hash ``.pyc`` (PEP 552) of that text, which a worker then reads."""
    import importlib.util
    import marshal

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # PYTHONDONTWRITEBYTECODE unset
    helper, defs_file = importable / "helper_8.py", importable / "defs.py"
    text = b"def answer() -> int:\n    return 1\n"
    helper.write_bytes(text)
    defs_file.write_text(DEFS.format(n=8))
    daemons = load_definitions(str(defs_file), serving=True)
    cached = Path(importlib.util.cache_from_source(str(helper)))
    blob = cached.read_bytes()
    assert int.from_bytes(blob[4:8], "little") == 0b11  # hash-based, checked
    assert blob[8:16] == importlib.util.source_hash(text)
    # A cache of that text's hash that says otherwise is what runs: it is read, not compiled.
    other = compile("def answer() -> int:\n    return 99\n", str(helper), "exec")
    cached.write_bytes(blob[:16] + marshal.dumps(other))
    workers = load_definitions(str(defs_file), daemons.source, daemons.modules)
    assert _answer(workers) == 99
