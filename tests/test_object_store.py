"""``hw.ObjectStore``: values in a bucket of a real S3-compatible server (moto's server mode on
127.0.0.1), with the threads executor and on a real Dask cluster: the same data versions as
the filesystem store, values in the bucket, nothing partial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from servers import dask_cluster, moto_bucket

from headwater._loading import load_definitions
from headwater.testing import Harness

PIPELINE = """
import pandas as pd

import headwater as hw

days = hw.StaticPartitions(["eu", "us"])
raw = hw.source("raw", partitions=days)


@hw.asset(partitions=days)
def cleaned(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.dropna()


@hw.asset
def labels(cleaned: dict[str, pd.DataFrame]) -> pd.DataFrame:
    mixed = [1, "two", 3.0]  # an object column Parquet re-types: the version is of what is stored
    return pd.DataFrame({"region": sorted(cleaned), "note": mixed[: len(cleaned)]})


defs = hw.Definitions([raw, cleaned, labels], executor=EXECUTOR, io=IO)
"""

STORE = (
    'hw.ObjectStore("s3://lake/values", storage_options={{"endpoint_url": "{endpoint}", '
    '"key": "testing", "secret": "testing", "region_name": "us-east-1"}})'
)


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with moto_bucket("lake") as running:
        yield running


def _defs(folder: Path, executor: str, io: str) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    text = PIPELINE.replace("EXECUTOR", repr(executor)).replace("IO)", f"{io})")
    (folder / "pipeline.py").write_text(text)
    return load_definitions(str(folder / "pipeline.py"))


def _run(defs: Any, state: Path, executor: str | None = None) -> dict[Any, Any]:
    with Harness(defs, now="2026-01-05T00:00:00Z", state_dir=state, executor=executor) as h:
        for region, amount in (("eu", 1.5), ("us", 2.0)):
            h.observe("raw", value=pd.DataFrame({"amount": [amount, None]}), partition=region)
        tick = h.tick()
        assert tick.failed == {}
        assert h.value("labels")["note"].tolist() == [1, "two"]
        return {(e.asset, e.partition): e.data_version for e in h.events(kind="materialization")}


def test_values_go_to_the_bucket_with_the_versions_of_the_filesystem_store(
    tmp_path: Path, s3: tuple[str, Any]
) -> None:
    endpoint, client = s3
    on_disk = _run(_defs(tmp_path / "fs", "threads", "None"), tmp_path / "fs-state")
    in_bucket = _run(
        _defs(tmp_path / "s3", "threads", STORE.format(endpoint=endpoint)), tmp_path / "s3-state"
    )
    assert in_bucket == on_disk
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix="values/")["Contents"]}
    assert keys == {"values/cleaned/p=eu", "values/cleaned/p=us", "values/labels/value"}
    assert not (tmp_path / "s3-state" / "values" / "cleaned").exists()


def test_dask_workers_store_in_the_bucket(tmp_path: Path, s3: tuple[str, Any]) -> None:
    endpoint, client = s3
    on_disk = _run(_defs(tmp_path / "fs", "threads", "None"), tmp_path / "fs-state")
    client.delete_objects(
        Bucket="lake",
        Delete={"Objects": [{"Key": k} for k in ("values/cleaned/p=eu", "values/cleaned/p=us",
                                                  "values/labels/value")]},
    )  # fmt: skip
    with dask_cluster(workers=2) as cluster:
        dask = f"dask://{cluster.address}"
        defs = _defs(tmp_path / "dask", dask, STORE.format(endpoint=endpoint))
        on_workers = _run(defs, tmp_path / "dask-state", executor=dask)
    assert on_workers == on_disk
    listed = client.list_objects_v2(Bucket="lake", Prefix="values/cleaned/")["Contents"]
    assert len(listed) == 2
