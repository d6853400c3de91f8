"""Small values live in the event log, committed with the materialization that records them.

A value that is not a table and pickles to at most 16 KiB never becomes a file: it is written in
the transaction of its `materialization` event, so a crash or a power loss can take it back only
together with its record. These tests look at the real SQLite file and the real value folders.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from cli_process import hw_project

import headwater as hw
from headwater.testing import Harness

BIG = 20_000  # list items: a pickle larger than 16 KiB


def _kept(state_dir: Path) -> dict[tuple[str, str], str]:
    with sqlite3.connect(state_dir / "events.db") as conn:
        rows = conn.execute("SELECT asset, partition, version FROM small_values").fetchall()
    return {(a, p): v for a, p, v in rows}


def _files(state_dir: Path, asset: str) -> list[str]:
    folder = state_dir / "values" / asset
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _defs() -> hw.Definitions:
    src = hw.source("src")

    @hw.asset
    def sized(src: int) -> Any:
        return [src] * BIG if src < 0 else {"n": src}

    @hw.asset
    def reader(sized: Any) -> int:
        return sum(sized) if isinstance(sized, list) else int(sized["n"])

    return hw.Definitions([src, sized, reader])


def test_a_small_value_is_kept_with_its_record_and_read_back(tmp_path: Path) -> None:
    with Harness(_defs(), state_dir=tmp_path) as h:
        h.observe("src", value=7)
        assert h.tick().assets == {"sized", "reader"}
        assert h.value("sized") == {"n": 7} and h.value("reader") == 7
        (materialized,) = h.events(kind="materialization", asset="sized")
    assert _files(tmp_path, "sized") == [] and _files(tmp_path, "reader") == []
    assert _kept(tmp_path)[("sized", "")] == materialized.data_version
    with Harness(_defs(), state_dir=tmp_path) as again:  # a new owner reads the log's copy
        assert again.value("sized") == {"n": 7}
        assert again.state("reader") == "fresh"


def test_a_value_that_grows_becomes_a_file_and_back(tmp_path: Path) -> None:
    """The log's copy and the file never disagree about which one is current: growing deletes
    the kept copy in the same transaction; shrinking deletes the file (an earlier version of
    headwater, run on the state directory again, read it as current: hostile34a bug2)."""
    with Harness(_defs(), state_dir=tmp_path) as h:
        h.observe("src", value=1)
        h.tick()
        h.observe("src", value=-1)
        assert h.tick().assets == {"sized", "reader"}
        assert h.value("reader") == -BIG
        assert ("sized", "") not in _kept(tmp_path)
        assert _files(tmp_path, "sized") == ["value.pickle"]
        h.observe("src", value=3)
        assert h.tick().assets == {"sized", "reader"}
        assert h.value("sized") == {"n": 3} and h.value("reader") == 3
        assert ("sized", "") in _kept(tmp_path)
        assert _files(tmp_path, "sized") == []


def test_prune_values_drops_kept_values_of_removed_assets_and_superseded_files(
    tmp_path: Path,
) -> None:
    project = tmp_path
    defs_text = """
        import headwater as hw

        src = hw.source("src")

        @hw.asset
        def sized(src: int) -> object:
            return [src] * 20_000 if src < 0 else {"n": src}

        @hw.asset
        def extra(src: int) -> int:
            return src

        defs = hw.Definitions([src, sized, MORE])
    """
    (project / "defs.py").write_text(textwrap.dedent(defs_text.replace("MORE", "extra")))
    state = project / "state"
    with Harness(_load(project / "defs.py"), state_dir=state) as h:
        h.observe("src", value=-1)  # sized: a file
        h.tick()
        older = (state / "values" / "sized" / "value.pickle").read_bytes()
        h.observe("src", value=2)  # sized: kept in the log; its file goes
        h.tick()
    (state / "values" / "sized" / "value.pickle").write_bytes(older)  # as earlier versions left it
    assert _files(state, "sized") == ["value.pickle"]
    assert set(_kept(state)) == {("sized", ""), ("extra", "")}
    (project / "defs.py").write_text(textwrap.dedent(defs_text.replace(", MORE", "")))

    result = hw_project(project, "prune", "--values")
    assert result.returncode == 0, result.stderr
    assert "extra (kept in the event log)" in result.stdout
    assert "value.pickle" in result.stdout
    assert set(_kept(state)) == {("sized", "")}
    assert _files(state, "sized") == []
    with Harness(_load(project / "defs.py"), state_dir=state) as h:
        assert h.value("sized") == {"n": 2} and h.state("sized") == "fresh"


def test_prune_values_leaves_the_temp_files_of_values_being_written(tmp_path: Path) -> None:
    """The daemon prunes while it runs: ``prune --values`` walked ``values/.tmp/`` as an asset
    folder and deleted the temp files of values being written, and their runs failed at the
    rename (hostile33a bug13). It leaves ``.tmp/`` (opening clears it) and a temp file beside
    the values until nothing can own it any more (an hour), and still takes what is stale."""
    (tmp_path / "defs.py").write_text(
        "import headwater as hw\n\n\n@hw.asset\ndef sized() -> list[int]:\n"
        "    return [1] * 20_000\n\n\ndefs = hw.Definitions([sized])\n"
    )
    state = tmp_path / "state"
    values = state / "values"
    with Harness(_load(tmp_path / "defs.py"), state_dir=state) as h:
        h.tick()  # sized: a file
        writing = values / ".tmp" / ".tmp-0123456789abcdef"
        writing.write_bytes(b"half a value")
        beside, left = values / "sized" / ".tmp-beside", values / "sized" / ".tmp-left"
        beside.write_bytes(b"being written")
        left.write_bytes(b"from a crash")
        os.utime(left, (time.time() - 7200, time.time() - 7200))
        unheld = values / "gone" / "value.pickle"
        unheld.parent.mkdir()
        unheld.write_bytes(b"of an asset the definitions no longer hold")
        # What the daemon does for `headwater prune --values` while it runs.
        done = h._call(functools.partial(h.engine.maintain, None, values=True))
    assert sorted(done["values"]) == sorted([str(left), str(unheld)])
    assert writing.exists() and beside.exists()
    assert _files(state, "sized") == [".tmp-beside", "value.pickle"]


def test_prune_values_leaves_the_value_of_a_run_under_way(tmp_path: Path) -> None:
    """``prune --values`` while a backfill ran deleted values that runs had stored and not
    yet recorded: the log said materialized, the file was gone, and the next start found
    them lost (hostile33b bug5). A partition with a run under way holds its file."""
    started, release = threading.Event(), threading.Event()
    days = hw.StaticPartitions(["d1", "d2"])

    @hw.asset(partitions=days, policy=hw.manual())
    def slow(context: hw.Context) -> list[int]:
        started.set()
        release.wait(30)
        return [1] * 20_000

    state = tmp_path / "state"
    with Harness(hw.Definitions([slow]), state_dir=state, executor="threads") as h:
        running = threading.Thread(target=h.materialize, args=("slow",), kwargs={"partition": "d1"})
        running.start()
        try:
            assert started.wait(30)
            stored = state / "values" / "slow" / "p=d1.pickle"  # as if stored, not recorded
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(b"stored by the run")
            os.utime(stored, (time.time() - 7200, time.time() - 7200))
            other = state / "values" / "slow" / "p=d2.pickle"
            other.write_bytes(b"of no run")
            os.utime(other, (time.time() - 7200, time.time() - 7200))
            done = h._call(functools.partial(h.engine.maintain, None, values=True))
        finally:
            release.set()
            running.join(30)
    assert done["values"] == [str(other)]


def test_prune_values_drops_the_values_of_partitions_removed_from_the_definitions(
    tmp_path: Path,
) -> None:
    """SPEC §5: values of partitions the owner's definitions no longer hold go with
    `prune --values`; a static key removed kept both its file and its copy in the log
    (hostile32b bug14). What the remaining keys hold stays."""
    project = tmp_path
    defs_text = """
        import headwater as hw

        keys = hw.StaticPartitions(KEYS)

        @hw.asset(partitions=keys)
        def small(context: hw.Context) -> str:
            return str(context.partition)

        @hw.asset(partitions=keys)
        def big(context: hw.Context) -> list[str]:
            return [str(context.partition)] * 20_000

        defs = hw.Definitions([small, big])
    """
    (project / "defs.py").write_text(textwrap.dedent(defs_text.replace("KEYS", '["a", "b"]')))
    state = project / "state"
    with Harness(_load(project / "defs.py"), state_dir=state) as h:
        assert len(h.tick().materialized) == 4
    assert set(_kept(state)) == {("small", "a"), ("small", "b")}
    assert len(_files(state, "big")) == 2
    (project / "defs.py").write_text(textwrap.dedent(defs_text.replace("KEYS", '["a"]')))

    result = hw_project(project, "prune", "--values")
    assert result.returncode == 0, result.stderr
    assert "small[b] (kept in the event log)" in result.stdout, result.stdout
    assert set(_kept(state)) == {("small", "a")}
    assert len(_files(state, "big")) == 1
    with Harness(_load(project / "defs.py"), state_dir=state) as h:
        assert h.value("small", "a") == "a" and h.value("big", "a") == ["a"] * 20_000


def _load(path: Path) -> hw.Definitions:
    from headwater._loading import load_definitions

    return load_definitions(str(path))


def test_a_reader_of_many_kept_partitions_gets_them_all_after_a_restart(tmp_path: Path) -> None:
    """Forty kept values, none remembered by a new owner: read by one query in a thread."""
    keys = [f"k{i:02}" for i in range(40)]

    @hw.asset(partitions=hw.StaticPartitions(keys))
    def part(context: hw.Context) -> int:
        assert context.partition is not None
        return int(context.partition[1:])

    @hw.asset
    def total(part: dict[str, int]) -> int:
        return sum(part.values())

    defs = hw.Definitions([part, total])
    with Harness(defs, state_dir=tmp_path) as h:
        h.tick()
        assert h.value("total") == sum(range(40))
    assert _files(tmp_path, "part") == [] and len(_kept(tmp_path)) == 41
    with Harness(defs, state_dir=tmp_path) as again:
        assert again.materialize("total", force=True).assets == {"total"}
        assert again.value("total") == sum(range(40))
        assert again.events(kind="value_lost") == []


def test_a_backup_carries_the_kept_values(tmp_path: Path) -> None:
    """`headwater backup` with no daemon (the CLI owns the state directory, named relative to
    the working directory): the copy is a state directory whose kept values read back."""
    (tmp_path / "defs.py").write_text(
        textwrap.dedent(
            """
            import headwater as hw

            @hw.asset
            def one() -> dict:
                return {"a": 1}

            defs = hw.Definitions([one])
            """
        )
    )
    assert hw_project(tmp_path, "materialize", "one").returncode == 0
    done = hw_project(tmp_path, "backup", "copy")
    assert done.returncode == 0, done.stderr
    assert ("one", "") in _kept(tmp_path / "copy")
    with Harness(_load(tmp_path / "defs.py"), state_dir=tmp_path / "copy") as h:
        assert h.value("one") == {"a": 1} and h.state("one") == "fresh"
