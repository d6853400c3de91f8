"""A small pipeline for the CLI tests: a file source, a daily asset, a roll-up, a failing asset."""

from typing import Any

import pandas as pd

import headwater as hw

daily = hw.DailyPartitions(start="2026-01-01", end="2026-01-04")

orders = hw.FileSource("orders", "data/{partition}.csv", partitions=daily)


@hw.asset(partitions=daily)
def orders_clean(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.dropna()


@hw.asset
def totals(orders_clean: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(orders_clean.values()).groupby("region", as_index=False)["amount"].sum()


@hw.asset(policy=hw.manual())
def broken(totals: Any) -> Any:
    raise RuntimeError("this asset always fails")


@hw.asset(partitions=daily, policy=hw.manual())
def flaky_days(context: hw.Context) -> str:
    if context.partition == "2026-01-02":
        raise ValueError("no data for the 2nd")
    return str(context.partition)


@hw.asset(policy=hw.manual(), freshness=hw.Freshness(max_age="1ms"))
def always_late() -> int:
    return 1


defs = hw.Definitions([orders, orders_clean, totals, broken, flaky_days, always_late])
