"""A source whose rows pass through an asset with a blocking check (not empty) and a
non-blocking one (at most 3 rows, raising beyond), read by another asset. raw.json beside
this file holds the rows."""

import headwater as hw

raw = hw.FileSource("raw", "raw.json")


@hw.asset
def rows(raw: list) -> list:
    return raw


@hw.check(rows, blocking=True)
def not_empty(rows: list) -> bool:
    return len(rows) > 0


@hw.check(rows)
def small(rows: list) -> bool:
    if len(rows) > 3:
        raise ValueError(f"{len(rows)} rows")
    return True


@hw.asset
def total(rows: list) -> int:
    return len(rows)


defs = hw.Definitions([raw, rows, total], checks=[not_empty, small])
