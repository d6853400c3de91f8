"""A value folder replaced by a symbolic link, after values were written there: no process of
headwater writes or reads a value through it, whenever it is planted. A worker process keeps
its own store (the daemon's look at the values checks only the daemon's), so it is the one
made to meet the link here: one worker, which wrote the folder before the link was planted."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import headwater as hw
from headwater._loading import load_definitions
from headwater.execution import FilesystemStore, NoValueError
from headwater.execution._store import UnsafePath
from headwater.testing import Harness

PROJECT = """
import headwater as hw

src = hw.source("src")


@hw.asset
def big(src: int) -> list[int]:
    return [src] * 20_000  # too large for the event log to keep: a file


@hw.asset
def reader(big: list[int]) -> int:
    return sum(big)


defs = hw.Definitions([src, big, reader], executor="processes", max_concurrency=1)
"""


@pytest.fixture
def project(tmp_path: Path) -> hw.Definitions:
    (tmp_path / "project.py").write_text(PROJECT)
    return load_definitions(str(tmp_path / "project.py"))


def _plant_link(folder: Path, elsewhere: Path) -> None:
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere, target_is_directory=True)


def test_a_worker_never_writes_through_a_link_planted_at_a_folder_it_wrote(
    project: hw.Definitions, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "state" / "values" / "big"
    with Harness(project, state_dir=tmp_path / "state", executor="processes") as h:
        h.observe("src", value=1)
        assert sorted(h.tick().assets) == ["big", "reader"]
        assert (folder / "value.pickle").is_file()
        _plant_link(folder, elsewhere)
        tick = h.materialize("big", force=True)
        assert tick.failed[("big", None)] == (
            f"UnsafePath: [Errno 40] {folder} is not a folder of the value store (a link?)"
        )
    assert list(elsewhere.iterdir()) == []
    assert folder.is_symlink()


def test_a_worker_never_reads_through_a_link_planted_at_a_folder_it_read(
    project: hw.Definitions, tmp_path: Path
) -> None:
    """The link leads to a file that says the version the log records, with another value in
    it: a worker that followed the link would read it."""
    elsewhere = tmp_path / "elsewhere"
    folder = tmp_path / "state" / "values" / "big"
    with Harness(project, state_dir=tmp_path / "state", executor="processes") as h:
        h.observe("src", value=1)
        h.tick()
        assert h.value("reader") == 20_000
        (made,) = h.events(kind="materialization", asset="big")
        assert made.data_version is not None
        version = made.data_version
        FilesystemStore(elsewhere).store("big", None, [1000] * 20_000, version=version)
        _plant_link(folder, elsewhere / "big")
        tick = h.materialize("reader", force=True)
        # Its input counts as lost, and runs again: that is the write refused.
        assert tick.materialized == []
        assert tick.failed[("big", None)].endswith(
            f"{folder} is not a folder of the value store (a link?)"
        )
        assert h.value("reader") == 20_000
        assert len(h.events(kind="value_lost", asset="big")) == 1


def test_a_link_planted_at_a_folder_after_its_first_value_is_never_followed(
    tmp_path: Path,
) -> None:
    """One store, one process: the folder was checked (and written, and read) before the link
    took its place."""
    store = FilesystemStore(tmp_path / "values")
    version = store.store("a/b", None, [1] * 20_000)
    assert store.load("a/b", None, version) == [1] * 20_000
    elsewhere = tmp_path / "elsewhere"
    FilesystemStore(elsewhere).store("b", None, [2] * 20_000, version=version)
    planted = set((elsewhere / "b").iterdir())
    folder = tmp_path / "values" / "a" / "b"
    _plant_link(folder, elsewhere / "b")

    with pytest.raises(NoValueError):
        store.load("a/b", None, version)
    with pytest.raises(
        UnsafePath, match=f"{re.escape(str(folder))} is not a folder of the value store"
    ):
        store.store("a/b", None, [3] * 20_000)
    store.drop("a/b", None)
    store.discard("a/b", None, version)
    assert set((elsewhere / "b").iterdir()) == planted
    assert FilesystemStore(elsewhere).load("b", None, version) == [2] * 20_000
    assert store.mismatched([(("a/b", None), version)]) == [("a/b", None)]

    _plant_link(tmp_path / "values" / "a", elsewhere)  # a folder above it, too
    with pytest.raises(UnsafePath, match=re.escape(f"{tmp_path / 'values' / 'a'} is not a folder")):
        store.store("a/b", None, [3] * 20_000)
    with pytest.raises(NoValueError):
        store.load("a/b", None, version)
    assert set((elsewhere / "b").iterdir()) == planted
