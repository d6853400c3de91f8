"""Definitions validate on construction; every error names the asset(s) at fault."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

import headwater as hw


def test_unknown_dependency_in_deps_is_named() -> None:
    """deps= naming nothing is an error that names both the asset and the dependency."""

    @hw.asset(deps=["sales_rwa"])
    def report() -> int:
        return 1

    sales_raw = hw.source("sales_raw")
    with pytest.raises(
        hw.DefinitionError,
        match=r"asset 'report' depends on unknown dependency 'sales_rwa' \(did you mean 'sales_raw'\?\)",
    ):
        hw.Definitions([sales_raw, report])


def test_parameter_that_matches_no_asset_is_named() -> None:
    """A parameter with no asset of its name says how to map it."""

    @hw.asset
    def report(orders: Any) -> int:
        return 1

    with pytest.raises(
        hw.DefinitionError,
        match=r"asset 'report': parameter 'orders' matches no asset or source.*ins=",
    ):
        hw.Definitions([report])


def test_ins_mapping_to_unknown_key_is_named() -> None:
    """ins= pointing at an unknown key names the parameter and the key."""

    @hw.asset(ins={"data": "sales/raw"})
    def report(data: Any) -> int:
        return 1

    with pytest.raises(
        hw.DefinitionError,
        match=r"asset 'report': input 'data' maps to unknown dependency 'sales/raw'",
    ):
        hw.Definitions([report])


def test_ins_naming_a_missing_parameter_is_an_error() -> None:
    """ins= keys must be parameters of the function."""
    with pytest.raises(hw.DefinitionError, match=r"asset 'report': ins= names \['other'\]"):

        @hw.asset(ins={"other": "x"})
        def report(data: Any) -> int:
            return 1


def test_cycle_is_listed() -> None:
    """A cycle's message lists the assets on it in order."""

    @hw.asset
    def a(c: Any) -> int:
        return 1

    @hw.asset
    def b(a: Any) -> int:
        return 1

    @hw.asset
    def c(b: Any) -> int:
        return 1

    with pytest.raises(hw.DefinitionError, match="cycle in the asset graph") as err:
        hw.Definitions([a, b, c])
    message = str(err.value)
    cycle = message.split(": ", 1)[1].split(";")[0].split(" -> ")
    assert set(cycle) == {"a", "b", "c"} and cycle[0] == cycle[-1]
    for x, y in itertools.pairwise(cycle):
        # each step of the listed cycle is a real edge x -> y (y depends on x)
        assert {"a": "b", "b": "c", "c": "a"}[x] == y


def test_self_dependency_is_a_cycle() -> None:
    @hw.asset(deps=["a"])
    def a() -> int:
        return 1

    with pytest.raises(hw.DefinitionError, match="cycle in the asset graph: a -> a"):
        hw.Definitions([a])


def test_duplicate_key_is_named() -> None:
    """Two assets with one key are rejected, naming the key."""

    @hw.asset("same")
    def one() -> int:
        return 1

    @hw.asset("same")
    def two() -> int:
        return 2

    with pytest.raises(hw.DefinitionError, match="duplicate key 'same'"):
        hw.Definitions([one, two])


def test_partition_mismatch_is_named() -> None:
    """Static keys and days have no mapping between them (time partitionings do)."""
    raw = hw.source("raw", partitions=hw.StaticPartitions(["eu", "us"]))

    @hw.asset(partitions=hw.DailyPartitions(start="2026-01-01"))
    def clean(raw: Any) -> int:
        return 1

    with pytest.raises(
        hw.DefinitionError,
        match=r"partition mismatch: asset 'clean' \(DailyPartitions.*depends on 'raw' \(StaticPartitions",
    ):
        hw.Definitions([raw, clean])


def test_equal_partition_definitions_map_identically() -> None:
    """Two separately built but equal definitions are the same partitioning."""
    raw = hw.source("raw", partitions=hw.DailyPartitions(start="2026-01-01"))

    @hw.asset(partitions=hw.DailyPartitions(start="2026-01-01"))
    def clean(raw: Any) -> int:
        return 1

    assert hw.Definitions([raw, clean]).graph.mapping("raw", "clean").value == "identity"


def test_check_on_unknown_asset_is_named() -> None:
    @hw.check("ghost")
    def ghost_ok(ghost: Any) -> bool:
        return True

    with pytest.raises(
        hw.DefinitionError, match="check 'ghost_ok' targets 'ghost', which is not defined"
    ):
        hw.Definitions([], checks=[ghost_ok])


def test_non_asset_items_are_rejected_with_a_hint() -> None:
    def plain() -> int:
        return 1

    with pytest.raises(hw.DefinitionError, match=re.escape("decorate the function with @hw.asset")):
        hw.Definitions([plain])  # type: ignore[list-item]


@pytest.mark.parametrize("key", ["", "has space", "/leading", "trailing/", "a//b", "ü"])
def test_bad_keys_are_rejected(key: str) -> None:
    with pytest.raises(hw.DefinitionError, match="is not valid"):
        hw.source(key)


@pytest.mark.parametrize("key", ["rep/value.pickle", "a/b/value.frame.parquet"])
def test_a_key_that_is_the_path_of_another_keys_value_file_is_rejected(key: str) -> None:
    """``rep`` and ``rep/value.pickle`` shared a path in the value store: storing ``rep``
    removed the folder holding the other's value, which still showed fresh (hostile33a
    bug6). A key may still start with such a name, or use it elsewhere in a segment."""
    hw.source("value.pickle")
    hw.source("rep/value.pickle.old")
    with pytest.raises(hw.DefinitionError, match="names the file that holds the value of"):
        hw.source(key)


def test_a_key_segment_too_long_for_a_folder_name_is_rejected() -> None:
    """Each segment names a folder of the value store: one past 255 bytes passed validate and
    failed every run that stored a file ('File name too long')."""
    hw.source("s/" + "a" * 200)
    with pytest.raises(hw.DefinitionError, match="at most 200"):
        hw.source("s/" + "a" * 300)

    with pytest.raises(hw.DefinitionError, match="at most 200"):

        @hw.asset("b" * 201)
        def long_name() -> int:
            return 1


def test_async_and_generator_functions_are_not_assets() -> None:
    """Their runs all failed ('cannot pickle coroutine'); the definitions say so instead."""
    with pytest.raises(hw.DefinitionError, match="asset 'fetch': fetch is async"):

        @hw.asset
        async def fetch() -> int:
            return 1

    with pytest.raises(hw.DefinitionError, match="asset 'rows': rows is a generator"):

        @hw.asset
        def rows() -> Any:
            yield 1


def test_var_args_are_rejected() -> None:
    with pytest.raises(hw.DefinitionError, match=r"asset 'f': parameter 'rest' is \*args"):

        @hw.asset
        def f(*rest: Any) -> int:
            return 1


def test_file_source_patterns_must_match_partitioning() -> None:
    """A partitioned FileSource needs {partition}; an unpartitioned one must not have it."""
    daily = hw.DailyPartitions(start="2026-01-01")
    with pytest.raises(
        hw.DefinitionError, match=r"source 'raw': pattern 'data/\*.csv' must hold \{partition\}"
    ):
        hw.FileSource("raw", "data/*.csv", partitions=daily)
    with pytest.raises(hw.DefinitionError, match="not partitioned"):
        hw.FileSource("raw", "data/{partition}.csv")
    multi = hw.MultiPartitions({"date": daily, "region": hw.StaticPartitions(["eu"])})
    src = hw.FileSource("raw", "data/{region}/{date}.csv", partitions=multi)
    assert src.render("2026-01-02|eu") == "data/eu/2026-01-02.csv"
    assert src.partition_of("data/eu/2026-01-02.csv") == "2026-01-02|eu"


def test_object_source_url_is_checked() -> None:
    with pytest.raises(hw.DefinitionError, match="must look like s3://bucket/key"):
        hw.ObjectSource("obj", "http://bucket/key.csv")
    with pytest.raises(hw.DefinitionError, match="poll"):
        hw.ObjectSource("obj", "s3://bucket/key.csv", poll="soon")
    src = hw.ObjectSource(
        "obj", "s3://bucket/in/{partition}.csv", partitions=hw.StaticPartitions(["a"])
    )
    assert (src.bucket, src.render("a")) == ("bucket", "in/a.csv")


def test_asset_defaults_and_decorator_forms() -> None:
    """Bare @asset, a key argument, the eager default and the docstring as description."""

    @hw.asset
    def plain() -> int:
        """Says hello."""
        return 1

    @hw.asset("ns/named", group="g", tags={"team": "data"})
    def other(context: hw.Context) -> int:
        return 2

    assert (
        plain.key == "plain" and plain.policy.name == "eager" and plain.description == "Says hello."
    )
    assert other.key == "ns/named" and other.wants_context and other.inputs == {}
    assert plain() == 1  # still callable as a plain function
