"""An asset moved to another value store (``io=``) between runs: its record names the store
the value went to, so the asset is stale until it has stored its value where readers now
look, and no reader is ever given what an earlier switch left in a store of the user's (which
headwater cannot ask for a version) or an object another state directory wrote over."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, moto_bucket, moto_server

from headwater._loading import LoadError, load_definitions
from headwater.execution import NoValueError
from headwater.testing import Harness

PIPELINE = """
import pickle
from pathlib import Path

import headwater as hw


class FolderStore:
    \"\"\"A store of the user's: a pickle per asset partition in a folder.\"\"\"

    def __init__(self, root):
        self.root = Path(root)

    def save(self, asset, partition, value):
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / f"{asset}-{partition}").write_bytes(pickle.dumps(value))

    def load(self, asset, partition):
        return pickle.loads((self.root / f"{asset}-{partition}").read_bytes())


src = hw.source("src")


@hw.asset(io=IO)
def a(src: int) -> int:
    return src


@hw.asset
def b(a: int) -> int:
    return a * 10 + BUMP


defs = hw.Definitions([src, a, b])
"""


def _defs(tmp_path: Path, io: str, bump: int) -> Any:
    folder = tmp_path / f"defs-{len(list(tmp_path.glob('defs-*')))}"
    folder.mkdir()
    text = PIPELINE.replace("IO", io).replace("BUMP", str(bump))
    (folder / "pipeline.py").write_text(text)
    return load_definitions(str(folder / "pipeline.py"))


def test_an_asset_moved_back_to_a_store_of_the_users_runs_before_anything_reads_it(
    tmp_path: Path,
) -> None:
    """``a`` stores in the user's folder store, then in the state directory, then in the
    folder store again, which still holds a = 1 from the first time while the log says 2:
    ``a`` is stale for its store and runs again first, so b reads 2, not 1."""
    state = tmp_path / "state"
    mine = f"FolderStore({str(tmp_path / 'mine')!r})"
    with Harness(_defs(tmp_path, mine, 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
        assert h.value("b") == 10
    with Harness(_defs(tmp_path, "None", 0), now="2026-01-05T00:01:00Z", state_dir=state) as h:
        h.observe("src", value=2)
        assert h.tick().failed == {}
        assert h.value("b") == 20
    with Harness(_defs(tmp_path, mine, 1), now="2026-01-05T00:02:00Z", state_dir=state) as h:
        assert h.state("a") == "stale"
        assert "its value store changed (the state directory -> FolderStore)" in h.why("a")
        tick = h.tick()
        assert tick.failed == {}
        assert [node for node, _ in tick.materialized] == ["a", "b"]
        assert h.value("b") == 21


def test_an_asset_moved_to_another_store_is_stale_and_fresh_once_it_stored_there(
    tmp_path: Path,
) -> None:
    """Moved out of the state directory and back: each move makes it stale once (its value
    is not where readers look), its run stores it there, and then nothing is left to do; the
    same value leaves b fresh (early cutoff)."""
    state = tmp_path / "state"
    mine = f"FolderStore({str(tmp_path / 'mine')!r})"
    with Harness(_defs(tmp_path, "None", 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
    for io, minute in ((mine, 1), ("None", 2)):
        at = f"2026-01-05T00:0{minute}:00Z"
        with Harness(_defs(tmp_path, io, 0), now=at, state_dir=state) as h:
            assert h.state("a") == "stale"
            tick = h.tick()
            assert [node for node, _ in tick.materialized] == ["a"]
            assert (h.state("a"), h.state("b")) == ("fresh", "fresh")
            assert h.tick().materialized == []
            assert h.value("b") == 10


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """A real S3-compatible server (moto's server mode on 127.0.0.1): an ObjectStore on it
    (under ``PREFIX``, as definitions write it) and a client."""
    with moto_bucket("lake") as (endpoint, client):
        yield (
            (
                f'hw.ObjectStore("s3://lake/PREFIX", storage_options={{"endpoint_url": "{endpoint}", '
                '"key": "testing", "secret": "testing", "region_name": "us-east-1"})'
            ),
            client,
        )


def test_an_object_another_state_directory_wrote_over_is_never_read_as_current(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    """Two state directories store ``a`` under one prefix (staging and production sharing a
    bucket by mistake): the object holds the other one's value, not the version this log
    records. A reader must not get it (b = 50 from the other's a = 5): it counts as gone, so
    ``a`` runs again and b reads this directory's a = 1."""
    bucket = s3[0].replace("PREFIX", "shared")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for state, value in ((ours, 1), (theirs, 5)):
        with Harness(_defs(tmp_path, bucket, 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
            h.observe("src", value=value)
            assert h.tick().failed == {}
    with Harness(_defs(tmp_path, bucket, 1), now="2026-01-05T00:02:00Z", state_dir=ours) as h:
        tick = h.tick()  # b's code changed: it runs, reading a
        assert tick.failed == {}
        assert h.value("b") == 11
        assert [node for node, _ in tick.materialized] == ["a", "b"]
        assert h.value("a") == 1


def test_an_object_uploaded_over_by_another_program_is_never_read_as_current(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    """A plain upload over ``a``'s object (``aws s3 cp``: no metadata of headwater's): a
    reader must not get it (b = 70 from the uploaded 7); it counts as gone, ``a`` runs
    again and b reads a = 1."""
    bucket, client = s3[0].replace("PREFIX", "uploaded"), s3[1]
    state = tmp_path / "state"
    with Harness(_defs(tmp_path, bucket, 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
    client.put_object(Bucket="lake", Key="uploaded/a/value", Body=pickle.dumps(7))
    with Harness(_defs(tmp_path, bucket, 1), now="2026-01-05T00:02:00Z", state_dir=state) as h:
        tick = h.tick()
        assert tick.failed == {}
        assert h.value("b") == 11
        assert [node for node, _ in tick.materialized] == ["a", "b"]


def test_stores_of_two_modules_whose_classes_share_a_name_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lake33.Store`` and ``archive33.Store`` were both recorded as "Store": moving ``a``
    from one to the other went unnoticed and b read the archive's old value (hostile33a
    bug11). A class outside the definitions file is named with its module."""
    for name in ("lake33", "archive33"):
        (tmp_path / f"{name}.py").write_text(
            PIPELINE.split("src = hw.source")[0].replace("FolderStore", "Store")
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    state = tmp_path / "state"

    def defs(module: str, bump: int) -> Any:
        io = f"__import__({module!r}).Store({str(tmp_path / module)!r})"
        return _defs(tmp_path, io, bump)

    (tmp_path / "archive33").mkdir()
    (tmp_path / "archive33" / "a-None").write_bytes(pickle.dumps(-1))  # last year's a
    with Harness(defs("lake33", 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
    with Harness(defs("archive33", 1), now="2026-01-05T01:00:00Z", state_dir=state) as h:
        assert "its value store changed (lake33.Store -> archive33.Store)" in h.why("a")
        assert h.tick().failed == {}
        assert h.value("b") == 11


@pytest.mark.parametrize(
    ("io", "error"),
    [
        ("object()", "asset 'a': io=object has no save() method; a value store has save("),
        ("Located()", "asset 'a': io=Located: reading its location raised OSError: offline"),
        ("Located(5)", "asset 'a': io=Located: its location is 5, not non-empty text"),
    ],
)
def test_a_value_store_that_cannot_serve_is_refused_with_the_definitions(
    tmp_path: Path, io: str, error: str
) -> None:
    """``io=object()`` passed ``validate`` and failed every run; a store whose ``location``
    raised stopped the daemon at its first status (hostile33a bug12). Both are refused when
    the definitions are made, naming the asset."""
    located = """
class Located(FolderStore):
    def __init__(self, where=None):
        self.where = where

    @property
    def location(self):
        if self.where is None:
            raise OSError("offline")
        return self.where
"""
    text = PIPELINE.replace("src = hw.source", located + "\n\nsrc = hw.source")
    (tmp_path / "pipeline.py").write_text(text.replace("IO", io).replace("BUMP", "0"))
    with pytest.raises(LoadError) as raised:
        load_definitions(str(tmp_path / "pipeline.py"))
    assert f"pipeline.py: invalid definitions: {error}" in str(raised.value), raised.value


def test_an_object_deleted_from_the_bucket_is_found_gone_when_asked_for(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    """``materialize a`` after its object was deleted: the request called ``a`` fresh and did
    nothing (hostile33a bug8); as with the state directory, it now finds the value gone, so
    ``a`` is missing and runs, and its object is back. The missing partition has no value
    to show, whatever a store still holds (bug15)."""
    bucket, client = s3[0].replace("PREFIX", "deleted"), s3[1]
    with Harness(_defs(tmp_path, bucket, 0), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        assert h.tick().failed == {}
        client.delete_object(Bucket="lake", Key="deleted/a/value")
        assert h.materialize("a").materialized == [("a", None)]
        assert "Contents" in client.list_objects_v2(Bucket="lake", Prefix="deleted/a/")
        assert h.value("a") == 1
        lost = h.engine.value_lost_event(("a", None), "found gone")  # as a reader finds it
        h._call(h.engine.append, [lost])
        assert h.state("a") == "missing"
        with pytest.raises(NoValueError, match=r"^a has no current value: it is missing$"):
            h.value("a")  # not what the bucket holds
        assert h.materialize("a").materialized == [("a", None)]
        assert (h.value("a"), h.value("b")) == (1, 10)


def test_two_assets_whose_object_stores_overlap_on_one_object_are_refused(
    tmp_path: Path,
) -> None:
    """``a`` under ``s3://lake/values`` and ``values/a`` under ``s3://lake`` are one object:
    each run made the other's value lost, and they ran each other for ever (hostile33a
    bug2). The definitions are refused, naming both and the object."""
    text = """
import headwater as hw

@hw.asset(io=hw.ObjectStore("s3://lake/values"))
def a() -> int:
    return 1

@hw.asset(key="values/a", io=hw.ObjectStore("s3://lake/"))
def other() -> int:
    return 2

defs = hw.Definitions([a, other])
"""
    (tmp_path / "pipeline.py").write_text(text)
    with pytest.raises(LoadError) as raised:
        load_definitions(str(tmp_path / "pipeline.py"))
    assert (
        "assets 'a' and 'values/a' store their values in one object, s3://lake/values/a/value"
        in str(raised.value)
    ), raised.value


FORGETFUL = """
import headwater as hw


class Forgetful(hw.FilesystemStore):
    \"\"\"A store whose folder something empties right after each write (a cleaner).\"\"\"

    def store(self, asset, partition, value, version=None, prepared=None):
        version = super().store(asset, partition, value, version, prepared)
        for stored in (self.root / asset).iterdir():
            stored.unlink()
        return version


src = hw.source("src")


@hw.asset(io=Forgetful(ROOT))
def a(src: int) -> list[int]:
    return [src] * 10_000


@hw.asset
def b(a: list[int]) -> int:
    return len(a)


defs = hw.Definitions([src, a, b])
"""


def test_a_value_its_store_loses_again_and_again_fails_instead_of_running_for_ever(
    tmp_path: Path,
) -> None:
    """A store that does not keep what it is given: ``b`` found ``a``'s value gone, ``a`` ran
    again, ``b`` found it gone again, for ever, the log growing all the while (hostile33a
    bug2). After five losses in ten minutes ``a`` fails, saying why, and waits for a change
    of its inputs or code, or a request."""
    (tmp_path / "pipeline.py").write_text(FORGETFUL.replace("ROOT", repr(str(tmp_path / "lost"))))
    with Harness(load_definitions(str(tmp_path / "pipeline.py")), state_dir=tmp_path / "s") as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert tick.skipped[("b", None)] == "waiting: input a failed"
        assert h.state("a") == "failed"
        assert any("lost its value 5 times within 10 minutes" in line for line in h.why("a"))
        assert len(h.events(kind="value_lost", asset="a")) == 5
        assert h.state("b") == "missing"
        assert h.tick().materialized == []  # it stays failed, and b waits


def _bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1",
                 ).create_bucket(Bucket="lake")  # fmt: skip


def _store_on(port: int) -> str:
    return (
        f'hw.ObjectStore("s3://lake/down", storage_options={{"endpoint_url": '
        f'"http://127.0.0.1:{port}", "key": "testing", "secret": "testing", '
        '"region_name": "us-east-1"})'
    )


def test_a_reader_of_an_object_store_that_is_down_waits_for_it_without_failing(
    tmp_path: Path,
) -> None:
    """The bucket holding ``a``'s value does not answer while ``b`` reads it: ``b``'s run was
    failed, charged to its function, and stayed failed after the store was back (hostile33a
    bug10). It is abandoned, spends no retry, and is tried again after a while."""
    port = free_port()
    io, bucket = _store_on(port), _bucket
    state = tmp_path / "state"
    with moto_server(port=port) as endpoint:
        bucket(endpoint)
        with Harness(_defs(tmp_path, io, 0), now="2026-01-05T00:00:00Z", state_dir=state) as h:
            h.observe("src", value=1)
            assert h.tick().failed == {}
    with Harness(_defs(tmp_path, io, 1), now="2026-01-05T01:00:00Z", state_dir=state) as h:
        tick = h.tick()  # b's code changed: it reads a, and the store is down
        assert tick.failed == {}
        assert "it is tried again in 30 s" in tick.skipped[("b", None)]
        assert h.state("b") == "stale"
        with moto_server(port=port) as endpoint:  # back (empty: a is lost, and runs again)
            bucket(endpoint)
            h.advance("31s")
            assert (h.state("a"), h.state("b")) == ("fresh", "fresh")
            assert h.value("b") == 11


def test_a_run_whose_object_store_is_down_waits_for_it_without_failing(
    tmp_path: Path,
) -> None:
    """The bucket that keeps ``a``'s value does not answer its write: the run failed, charged
    to its function (a retry spent, then failed for good). It is abandoned, spends no retry,
    and is tried again after a while; its reader waits meanwhile."""
    port = free_port()
    with Harness(_defs(tmp_path, _store_on(port), 0), now="2026-01-05T00:00:00Z") as h:
        h.observe("src", value=1)
        tick = h.tick()  # no server yet: the store does not answer
        assert tick.failed == {}
        assert "storing its value: its store did not answer" in tick.skipped[("a", None)]
        assert "it is tried again in 30 s" in tick.skipped[("a", None)]
        with moto_server(port=port) as endpoint:
            _bucket(endpoint)
            h.advance("31s")
            assert (h.state("a"), h.state("b")) == ("fresh", "fresh")
            assert h.value("b") == 10
