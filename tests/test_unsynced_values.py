"""Values are not synced one by one: what a power loss can do to them is caught, never read.

A power loss may take back a value's rename (the file holds the version before), cut a file
short, or leave it empty, while the log's commit survived. Each case is made here by hand on
the real files, then a reader runs: the value counts as lost, is materialized again, and the
reader gets the right value. After the machine restarts, the daemon checks every value's
version (also those nobody reads).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from daemon_process import DaemonProcess

import headwater as hw
from headwater.eventlog import EventLogReader
from headwater.execution import FilesystemStore, NoValueError
from headwater.testing import Harness


def _defs(table: bool) -> hw.Definitions:
    src = hw.source("src")
    other = hw.source("other")

    @hw.asset
    def base(src: int) -> object:
        # a list too large for the event log to keep: it is a file, as a table is
        return pd.DataFrame({"n": [src] * 3}) if table else [src] * 3 + [0] * 20_000

    @hw.asset
    def reader(base: Any, other: int) -> int:
        return int(base["n"].sum() if isinstance(base, pd.DataFrame) else sum(base)) + other

    return hw.Definitions([src, other, base, reader])


def _damage(path: Path, how: str, older: bytes) -> None:
    data = path.read_bytes()
    if how == "older":
        path.write_bytes(older)
    elif how == "cut short":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "zeroed":  # what some filesystems leave of unsynced blocks
        path.write_bytes(bytes(len(data)))
    elif how == "a zeroed block":  # same length, a hole in the middle
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(4096) + data[middle + 4096 :])
    elif how == "a folder":
        path.unlink()
        (path / "inside").mkdir(parents=True)
    elif how == "replaced by hand":  # a file that says no version, as an earlier version's
        if path.name.endswith(".parquet"):
            pd.DataFrame({"n": [777] * 3}).to_parquet(path)
        else:
            path.write_bytes(pickle.dumps([777] * 3 + [0] * 20_000, protocol=5))


DAMAGE = ["older", "cut short", "empty", "zeroed", "a zeroed block", "a folder", "replaced by hand"]


@pytest.mark.parametrize("table", [False, True], ids=["pickle", "parquet"])
@pytest.mark.parametrize("how", DAMAGE)
def test_a_value_a_power_loss_took_back_is_materialized_again(
    tmp_path: Path, how: str, table: bool
) -> None:
    with Harness(_defs(table), state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.observe("other", value=1)
        assert h.tick().assets == {"base", "reader"}
        (value,) = (tmp_path / "values" / "base").glob("value.*")
        older = value.read_bytes()
        h.observe("src", value=2)
        assert h.tick().assets == {"base", "reader"}
        _damage(value, how, older)

        with pytest.raises(NoValueError):  # never the old value, never a traceback of pickle
            h.value("base")
        h.observe("other", value=5)
        tick = h.tick()
        assert tick.failed == {}
        assert tick.materialized == [("base", None), ("reader", None)]
        assert h.value("reader") == 2 * 3 + 5
        (lost,) = h.events(kind="value_lost")
        assert lost.asset == "base"
        (abandoned,) = h.events(kind="run_abandoned")
        reason = abandoned.payload["reason"]
        assert "base's stored value is gone" in reason
        if how == "older":
            assert "version" in reason
        elif how == "replaced by hand":
            assert "says no data version, so headwater did not write it" in reason
        elif how != "a folder":
            assert "damaged" in reason or "cut short" in reason or "unreadable" in reason


def test_the_restart_check_finds_damage_and_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """Every kind of damage and a FIFO where a value belongs: each is reported, and the check
    returns (opening a FIFO to read would wait for a writer for ever)."""
    store = FilesystemStore(tmp_path / "values")
    versions = {f"v{i}": store.store(f"v{i}", None, [i] * 20_000) for i in range(len(DAMAGE))}
    for i, how in enumerate(DAMAGE):
        if how != "older":
            (value,) = (tmp_path / "values" / f"v{i}").glob("value.*")
            _damage(value, how, b"")
    os.mkfifo(tmp_path / "fifo")
    versions["fifo"] = store.store("fifo", None, [0] * 20_000)
    (tmp_path / "values" / "fifo" / "value.pickle").unlink()
    os.mkfifo(tmp_path / "values" / "fifo" / "value.pickle")
    versions["ok"] = store.store("ok", None, [1] * 20_000)
    expected = [((k, None), v if k != "v0" else "another version") for k, v in versions.items()]
    bad = store.mismatched(expected)
    # A hole inside a body of the right length is found by its checksum when it is read (the
    # check reads headers and lengths, not every byte of every value).
    hole = f"v{DAMAGE.index('a zeroed block')}"
    assert sorted(a for a, _ in bad) == sorted(k for k in versions if k not in ("ok", hole))
    with pytest.raises(NoValueError, match="damaged"):
        store.load(hole, None, versions[hole])


def test_values_of_earlier_versions_without_a_header_are_read(tmp_path: Path) -> None:
    """Files written before values carried their version (and were synced) load as they are,
    whatever version is asked for: they say nothing to check against."""
    store = FilesystemStore(tmp_path / "values")
    folder = tmp_path / "values" / "old"
    folder.mkdir(parents=True)
    (folder / "value.pickle").write_bytes(pickle.dumps({"a": 1}, protocol=5))
    pd.DataFrame({"x": [1, 2]}).to_parquet(folder / "p=t.frame.parquet")
    assert store.load("old", None, version="anything") == {"a": 1}
    assert store.load("old", "t", version="anything")["x"].tolist() == [1, 2]


@pytest.mark.parametrize("made", ["by the store", "empty at open"])
def test_where_every_value_says_its_version_one_that_says_none_is_no_value(
    tmp_path: Path, made: str
) -> None:
    """A root the store made (or found empty when the engine opened it) holds only values that
    say their version: a file that says none (a plain pickle, a table pandas wrote) was put
    there by hand or restored from an old backup, and is no value; the restart check finds it.
    A load that asks no version still reads it."""
    root = tmp_path / "values"
    if made == "empty at open":
        root.mkdir()
        (root / ".tmp").mkdir()
        FilesystemStore(root).mark_versioned_if_empty()
    store = FilesystemStore(root)
    one, two = store.store("one", None, [1]), store.store("two", "t", pd.DataFrame({"x": [1]}))
    (root / "one" / "value.pickle").write_bytes(pickle.dumps([2], protocol=5))
    pd.DataFrame({"x": [2]}).to_parquet(root / "two" / "p=t.frame.parquet")
    for asset, partition, version in [("one", None, one), ("two", "t", two)]:
        with pytest.raises(NoValueError, match="says no data version"):
            FilesystemStore(root).load(asset, partition, version)
    assert FilesystemStore(root).load("one", None) == [2]
    expected = [(("one", None), one), (("two", "t"), two)]
    assert store.mismatched(expected) == [("one", None), ("two", "t")]


def test_prune_marks_a_root_once_no_value_of_an_earlier_version_is_left(tmp_path: Path) -> None:
    """A state directory from before values said their version: such files load as they are
    until ``prune --values`` finds none left; from then on, one that says none is no value."""
    root = tmp_path / "values"
    (root / "old").mkdir(parents=True)
    (root / "old" / "value.pickle").write_bytes(pickle.dumps([0], protocol=5))
    store = FilesystemStore(root)
    FilesystemStore(root).mark_versioned_if_empty()  # not empty: nothing marked
    version = store.store("new", None, [1])
    store.prune_values({"old": [None], "new": [None]})
    assert store.load("old", None, "anything") == [0]  # still an earlier version's file
    store.prune_values({"new": [None]})  # "old" is gone: every value left says its version
    assert not (root / "old" / "value.pickle").exists()
    (root / "new" / "value.pickle").write_bytes(pickle.dumps([1], protocol=5))
    with pytest.raises(NoValueError, match="says no data version"):
        FilesystemStore(root).load("new", None, version)


def test_values_stored_before_the_header_had_a_crc_are_read(tmp_path: Path) -> None:
    """Versions of 2026-11-30 wrote the header without the CRC for an hour, under the same
    magic: their values load (and pass the restart check) as the version they say; a file
    of today's header cut 4 bytes short is still no value."""
    import struct

    from headwater.execution._store import _MAGIC

    store = FilesystemStore(tmp_path / "values")
    version = store.store("new", None, {"n": 1})  # makes the root
    body = pickle.dumps({"n": 2}, protocol=5)
    named = b"v-early"
    early = _MAGIC + struct.pack(">HQ", len(named), len(body)) + named + body
    (tmp_path / "values" / "old").mkdir()
    (tmp_path / "values" / "old" / "value.pickle").write_bytes(early)
    assert store.load("old", None, "v-early") == {"n": 2}
    with pytest.raises(NoValueError, match="version v-early"):
        store.load("old", None, "v-other")
    assert store.mismatched([(("old", None), "v-early"), (("new", None), version)]) == []
    path = tmp_path / "values" / "new" / "value.pickle"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(NoValueError):
        store.load("new", None, version)
    assert store.mismatched([(("new", None), version)]) == [("new", None)]


def test_a_stored_table_reads_back_without_the_version_key(tmp_path: Path) -> None:
    """The version rides in the Parquet file's metadata; readers get the table as returned."""
    import pyarrow as pa

    store = FilesystemStore(tmp_path / "values")
    table = pa.table({"x": [1, 2]}).replace_schema_metadata({"mine": "kept"})
    version = store.store("t", None, table)
    loaded = store.load("t", None, version)
    assert loaded.equals(table) and loaded.schema.metadata == {b"mine": b"kept"}
    assert pd.read_parquet(tmp_path / "values" / "t" / "value.arrow.parquet")["x"].sum() == 3


def test_after_the_machine_restarts_every_value_is_checked(
    owner_project: Path, daemons: list[object]
) -> None:
    """A value nobody reads (parsed has no reader) that a power loss took back is found at
    the first start after the machine restarted, and materialized again."""
    project = owner_project

    def daemon() -> DaemonProcess:
        d = DaemonProcess(project, project / "defs.py", project / "state", args=("--settle", "0.2"))
        daemons.append(d)
        return d

    first = daemon().start()
    first.wait_notify("READY=1")
    (project / "inbox" / "a.csv").write_text("a,b\n1,2\n")
    first.wait_event("materialized", asset="parsed", partition="a")
    (value,) = (project / "state" / "values" / "parsed").glob("p=a.*")
    shutil.copy(value, project / "older")
    since = first.mark()
    (project / "inbox" / "a.csv").write_text("a,b\n3,4\n")
    first.wait_event("materialized", asset="parsed", partition="a", since=since)
    assert first.terminate() == 0
    shutil.copy(project / "older", value)  # the second rename, taken back
    (project / "state" / "values" / ".boot-id").write_text("a boot before this one\n")

    again = daemon().start()
    again.wait_event("materialized", asset="parsed", partition="a")
    lost = EventLogReader(project / "state").events(kind="value_lost")
    assert [(e.asset, e.partition) for e in lost] == [("parsed", "a")]
    assert "after the machine restarted" in lost[0].payload["reason"]
    assert pd.read_parquet(value)["a"].tolist() == [3]
    assert again.terminate() == 0
