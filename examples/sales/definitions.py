"""The sales example of the SPEC: raw daily CSVs -> cleaned partitions -> totals by region.

Run it on a copy (see the README quick start), or: headwater materialize sales_clean
sales_by_region --definitions examples/sales/definitions.py
Then drop a new file into data/raw/sales/ (say 2026-01-04.csv) and run it again: only the
new partition and the totals are computed; the other days stay fresh.
"""

import pandas as pd

import headwater as hw

daily = hw.DailyPartitions(start="2026-01-01")

sales_raw = hw.FileSource(
    "sales_raw",
    "data/raw/sales/{partition}.csv",
    partitions=daily,
    freshness=hw.Freshness(max_age="1d"),
)


@hw.asset(partitions=daily, freshness=hw.Freshness(max_lag="15m"))
def sales_clean(sales_raw: pd.DataFrame) -> pd.DataFrame:
    return sales_raw.dropna()


@hw.asset(policy=hw.on_cron("0 6 * * *"))
def sales_by_region(sales_clean: dict[str, pd.DataFrame]) -> pd.DataFrame:
    every_day = pd.concat(sales_clean.values(), ignore_index=True)
    return every_day.groupby("region", as_index=False)["amount"].sum()


@hw.check(sales_clean, blocking=True)
def sales_clean_not_empty(sales_clean: pd.DataFrame) -> bool:
    return len(sales_clean) > 0


defs = hw.Definitions(
    assets=[sales_raw, sales_clean, sales_by_region], checks=[sales_clean_not_empty]
)
