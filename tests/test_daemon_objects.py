"""The object-store sensor against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pandas as pd
import pytest
from cli_process import hw_project
from daemon_process import DaemonProcess
from servers import free_port, moto_bucket, moto_server

import headwater as hw
from headwater._clock import SystemClock
from headwater.eventlog import EventLogReader
from headwater.execution import Engine, TickResult
from headwater.sensors.objects import ObjectSensor

DEFS = textwrap.dedent(
    """
    import pandas as pd
    import headwater as hw

    orders_keys = hw.DynamicPartitions("orders")
    orders = hw.ObjectSource("orders", "s3://lake/orders/{partition}.csv",
                             partitions=orders_keys, poll="200ms")

    @hw.asset(partitions=orders_keys)
    def order_rows(orders: pd.DataFrame) -> pd.DataFrame:
        return orders

    defs = hw.Definitions([orders, order_rows])
    """
)

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3() -> Iterator[tuple[str, Any]]:
    with moto_bucket("lake") as running:
        yield running


def _start(tmp_path: Path, endpoint: str, daemons: list[object]) -> DaemonProcess:
    (tmp_path / "defs.py").write_text(DEFS)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "HEADWATER_LOG_LEVEL": "debug"}
    daemon = DaemonProcess(tmp_path, tmp_path / "defs.py", tmp_path / "state", env=env)
    daemons.append(daemon)
    return daemon.start()


def _events(tmp_path: Path, kind: str, partition: str) -> list[Any]:
    return EventLogReader(tmp_path / "state").events(kind=kind, partition=partition)


def test_objects_added_modified_and_rewritten_unchanged(
    tmp_path: Path, s3: tuple[str, Any], daemons: list[object]
) -> None:
    endpoint, client = s3
    client.put_object(Bucket="lake", Key="orders/early.csv", Body=b"id\n1\n")
    daemon = _start(tmp_path, endpoint, daemons)
    daemon.wait_notify("READY=1")
    assert len(_events(tmp_path, "observation", "early")) == 1  # seen by the start-up scan
    daemon.wait_event("materialized", asset="order_rows", partition="early")

    since = daemon.mark()
    client.put_object(Bucket="lake", Key="orders/a.csv", Body=b"id\n1\n2\n")
    daemon.wait_event("materialized", asset="order_rows", partition="a", since=since)
    (first,) = _events(tmp_path, "materialization", "a")
    assert first.payload["metadata"]["rows"] == 2

    since = daemon.mark()
    client.put_object(Bucket="lake", Key="orders/a.csv", Body=b"id\n1\n2\n3\n")
    daemon.wait_event("materialized", asset="order_rows", partition="a", since=since)
    assert _events(tmp_path, "materialization", "a")[-1].payload["metadata"]["rows"] == 3

    since = daemon.mark()
    client.put_object(Bucket="lake", Key="orders/a.csv", Body=b"id\n1\n2\n3\n")  # same bytes
    client.put_object(Bucket="lake", Key="orders/sentinel.csv", Body=b"id\n9\n")
    daemon.wait_event("materialized", asset="order_rows", partition="sentinel", since=since)
    assert len(_events(tmp_path, "observation", "a")) == 2
    assert len(_events(tmp_path, "materialization", "a")) == 2
    # the log says what changed, once: not the object rewritten with the same bytes
    told = [(ln["event"], ln.get("partition")) for ln in daemon.lines[since:]
            if ln.get("event", "").startswith("object_")]  # fmt: skip
    assert told == [("object_observed", "sentinel")], told

    client.delete_object(Bucket="lake", Key="orders/a.csv")
    since = daemon.mark()
    client.put_object(Bucket="lake", Key="orders/sentinel2.csv", Body=b"id\n8\n")
    daemon.wait_event("materialized", asset="order_rows", partition="sentinel2", since=since)
    assert _events(tmp_path, "observation", "a")[-1].data_version is None  # the deletion
    daemon.wait_event("object_deleted", source="orders", partition="a")


def test_an_unreachable_store_backs_off_and_reports_no_deletions(
    tmp_path: Path, daemons: list[object]
) -> None:
    with moto_server() as endpoint:
        client = _client(endpoint)
        client.put_object(Bucket="lake", Key="orders/kept.csv", Body=b"id\n1\n")
        daemon = _start(tmp_path, endpoint, daemons)
        daemon.wait_notify("READY=1")
        daemon.wait_event("materialized", asset="order_rows", partition="kept")
    since = daemon.mark()  # the server is gone now
    failure = daemon.wait_event("object_listing_failed", since=since)
    assert failure["source"] == "orders" and failure["retry_in_s"] > 0.2
    # the same error again and again: one warning, then debug lines (not a warning a poll)
    since = daemon.lines.index(failure) + 1
    for _ in range(2):
        since = daemon.lines.index(daemon.wait_event("object_listing_failed", since=since)) + 1
    levels = [ln["level"] for ln in daemon.lines if ln.get("event") == "object_listing_failed"]
    assert levels[0] == "warning" and set(levels[1:]) == {"debug"}, levels
    observations = _events(tmp_path, "observation", "kept")
    assert len(observations) == 1 and observations[0].data_version is not None
    assert daemon.terminate() == 0


def test_a_store_that_cannot_be_listed_at_start_is_reported_and_found_later(
    tmp_path: Path, daemons: list[object]
) -> None:
    """The bucket does not exist yet (or the store is down) when the daemon starts: it gets
    ready, says the listing failed, and once the bucket is there it says so and counts its
    objects. The start-up scan raised, and the daemon died with a traceback."""
    with moto_server() as endpoint:
        daemon = _start(tmp_path, endpoint, daemons)
        daemon.wait_notify("READY=1")
        failure = daemon.wait_event("object_listing_failed", source="orders")
        assert "NoSuchBucket" in failure["error"]
        health = hw_project(tmp_path, "health")  # what the daemon cannot see, it says
        assert health.returncode == 1, health.stdout
        assert (
            "CANNOT LIST object source orders" in health.stdout and "NoSuchBucket" in health.stdout
        )
        client = _client(endpoint)
        client.put_object(Bucket="lake", Key="orders/late.csv", Body=b"id\n1\n")
        daemon.wait_event("object_listing_recovered", source="orders", timeout=60)
        daemon.wait_event("materialized", asset="order_rows", partition="late")
        health = hw_project(tmp_path, "health", "--json")
        assert health.returncode == 0 and json.loads(health.stdout)["unreadable_sources"] == []
        assert daemon.terminate() == 0
    assert daemon.bad_lines == []


@pytest.mark.asyncio
async def test_a_run_whose_store_does_not_answer_waits_for_it_and_spends_nothing(
    tmp_path: Path,
) -> None:
    """The store is down when a run reads its object: not the function's failure. The run is
    abandoned (no run_failed, no retry spent, no failed state for ever) and runs again once a
    listing of the source works, though the object did not change meanwhile."""
    body = b"id\n1\n2\n"
    port = free_port()
    defs, orders = _row_counts(f"http://127.0.0.1:{port}")
    async with Engine.open(defs, tmp_path / "state", SystemClock()) as engine:
        # as a listing made while the store answered would have recorded it
        await engine.observe("orders", hashlib.md5(body).hexdigest(), partition="a")
        with anyio.fail_after(60):
            first = await engine.tick()
        assert first.materialized == [] and first.failed == {}
        assert "its store did not answer" in first.skipped[("rows", "a")]
        assert engine.status("rows", "a").state != "failed"
        with moto_server(port=port) as endpoint:
            client = await anyio.to_thread.run_sync(_client, endpoint)
            await anyio.to_thread.run_sync(
                lambda: client.put_object(Bucket="lake", Key="orders/a.csv", Body=body)
            )
            changed = anyio.Event()
            with anyio.fail_after(60):
                assert await ObjectSensor(engine, changed.set).poll(orders) is False  # same
                await changed.wait()  # the store answered: what it did not answer goes again
                again = await engine.tick()
        assert again.materialized == [("rows", "a")]
    reader = EventLogReader(tmp_path / "state")
    events = await anyio.to_thread.run_sync(lambda: reader.events(asset="rows"))
    assert [e.kind for e in events] == ["run_started", "run_abandoned", "run_started",
                                        "materialization"]  # fmt: skip


def _row_counts(endpoint: str) -> tuple[hw.Definitions, hw.ObjectSource]:
    """An object source of partitions under s3://lake/orders/ at ``endpoint``, and an asset
    counting each one's rows, run in threads (the engine in the test's own process)."""
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
               "region_name": "us-east-1"}  # fmt: skip
    keys = hw.DynamicPartitions("orders")
    orders = hw.ObjectSource("orders", "s3://lake/orders/{partition}.csv", partitions=keys,
                             storage_options=options)  # fmt: skip

    @hw.asset(partitions=keys)
    def rows(orders: pd.DataFrame) -> int:
        return len(orders)

    return hw.Definitions([orders, rows], executor="threads"), orders


def _client(endpoint: str) -> Any:
    """A client of the moto server at ``endpoint``, its bucket "lake" made."""
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.create_bucket(Bucket="lake")
    return client


@pytest.mark.asyncio
async def test_a_run_that_reads_an_object_newer_than_the_listing_observes_it(
    s3: tuple[str, Any], tmp_path: Path
) -> None:
    """The object changed after the last listing, before the run read it: the run records the
    version it read, and the source is observed at that version too, as the next listing
    would (until then status said the run's input changed from what it read back to the
    older version, and the source's other readers waited for the listing)."""
    endpoint, client = s3
    defs, orders = _row_counts(endpoint)
    old, new = b"id\n1\n", b"id\n1\n2\n"
    put = functools.partial(client.put_object, Bucket="lake", Key="orders/b.csv")
    async with Engine.open(defs, tmp_path / "state", SystemClock()) as engine:
        await anyio.to_thread.run_sync(lambda: put(Body=old))
        await ObjectSensor(engine, lambda: None).poll(orders)
        await anyio.to_thread.run_sync(lambda: put(Body=new))  # no listing sees it
        with anyio.fail_after(60):
            await engine.tick()
        assert engine.state.version(("orders", "b")) == hashlib.md5(new).hexdigest()
        assert engine.status("rows", "b").state == "fresh"
        assert await engine.tick() == TickResult()  # nothing left to do


def test_a_glob_source_covers_objects_not_folder_markers() -> None:
    """``s3://bkt/in/*``: the empty ``in/`` and ``in/sub/`` objects consoles make for folders
    entered the source's version and its list of URLs (a loader reading each choked on
    them); a template with ``[`` that is itself a key covers that key."""
    from headwater.sensors.objects import versions_from_listing

    every = hw.ObjectSource("every", "s3://bkt/in/*")
    listing = {
        "in/": ("m0", 0),
        "in/a.csv": ("e1", 9),
        "in/sub/": ("m1", 0),
        "in/sub/b.csv": ("e2", 9),
    }
    with_markers = versions_from_listing(every, listing, [])
    without = versions_from_listing(
        every, {k: v for k, v in listing.items() if not k.endswith("/")}, []
    )
    assert with_markers == without != {}
    literal = hw.ObjectSource("literal", "s3://bkt/reports[2026]/latest.json")
    assert versions_from_listing(literal, {"reports[2026]/latest.json": ("e3", 9)}, []) != {}
