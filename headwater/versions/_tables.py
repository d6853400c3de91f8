"""Typed encodings of numpy arrays, pandas objects and Arrow data, for :mod:`._data`.

A table is its shape, its column labels and index as typed values, each column's dtype in full
(categories and their order, time zones, units) and each column's values. Values are fed as
bytes where the dtype fixes their meaning (numbers, times, booleans: NaN made canonical),
through pandas' fixed-key hashing where a column holds only strings, and value by value
(typed) otherwise. The result does not depend on memory layout or Arrow chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["encoder_for"]

Encode = Callable[[Any, Any], None]


def _tag(h: Any, tag: str, payload: bytes = b"") -> None:
    h.update(f"{tag}:{len(payload)}:".encode())
    h.update(payload)


def _numeric_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    if arr.dtype.kind in "mM":
        arr = arr.view("i8")
    elif arr.dtype.kind in "fc":
        arr = np.array(arr, copy=True)  # an array even for a scalar (`arr + 0` would not be)
        arr += 0  # -0.0 -> 0.0
        arr[np.isnan(arr)] = np.nan  # one NaN payload
    return np.ascontiguousarray(arr).tobytes()


def _encode_objects(h: Any, values: np.ndarray[Any, Any], encode: Encode) -> None:
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string":  # only str: the fixed-key string hash is exact for them
        _tag(h, "strings", str(len(values)).encode())
        h.update(pd.util.hash_array(values, categorize=False).tobytes())
        return
    _tag(h, "objects", str(len(values)).encode())
    for v in values:
        encode(h, v)


def _encode_array(h: Any, values: Any, encode: Encode) -> None:
    """One column's values, whatever holds them (numpy, pandas extension array)."""
    if isinstance(values, pd.arrays.NumpyExtensionArray):  # plain numpy behind pandas' wrapper
        values = values.to_numpy()
    if isinstance(values, pd.Categorical):
        _encode_dtype(h, values.dtype, encode)
        _encode_array(h, np.asarray(values.codes), encode)
        return
    if hasattr(values, "asi8"):  # datetimes (with a time zone), timedeltas, periods
        _tag(h, "i8", np.ascontiguousarray(values.asi8).tobytes())
        return
    if isinstance(values, pd.api.extensions.ExtensionArray):
        mask = np.asarray(pd.isna(values), dtype=bool)
        _tag(h, "mask", mask.tobytes())
        _encode_objects(h, np.asarray(values.astype(object), dtype=object)[~mask], encode)
        return
    arr = np.asarray(values)
    _tag(h, "array", f"{arr.dtype.str}|{arr.shape}".encode())
    if arr.dtype.kind == "O":
        _encode_objects(h, arr.ravel(), encode)
    elif arr.dtype.kind in "biufcmMSU?":
        h.update(_numeric_bytes(arr))
    else:  # structured or void dtypes
        h.update(np.ascontiguousarray(arr).tobytes())


def _encode_dtype(h: Any, dtype: Any, encode: Encode) -> None:
    if isinstance(dtype, pd.CategoricalDtype):
        _tag(h, "category", b"ordered" if dtype.ordered else b"unordered")
        _encode_index(h, dtype.categories, encode)
    else:
        _tag(h, "dtype", repr(dtype).encode())


def _encode_index(h: Any, index: pd.Index, encode: Encode) -> None:
    names = list(index.names)
    _tag(h, "index", str(index.nlevels).encode())
    encode(h, names)
    if isinstance(index, pd.MultiIndex):
        for level in range(index.nlevels):
            _encode_index(h, index.get_level_values(level), encode)
        return
    if isinstance(index, pd.RangeIndex):  # as its values: a RangeIndex equals its int64 twin
        index = pd.Index(np.asarray(index), name=index.name)
    _encode_dtype(h, index.dtype, encode)
    _encode_array(h, index.array, encode)


def _encode_frame(h: Any, df: pd.DataFrame, encode: Encode) -> None:
    _tag(h, "frame", f"{df.shape}".encode())
    _encode_index(h, df.columns, encode)
    _encode_index(h, df.index, encode)
    for i in range(df.shape[1]):
        column = df.iloc[:, i]
        _encode_dtype(h, column.dtype, encode)
        _encode_array(h, column.array, encode)


def _encode_series(h: Any, series: pd.Series, encode: Encode) -> None:
    _tag(h, "series", str(len(series)).encode())
    encode(h, series.name)
    _encode_index(h, series.index, encode)
    _encode_dtype(h, series.dtype, encode)
    _encode_array(h, series.array, encode)


def _encode_arrow_column(h: Any, column: pa.ChunkedArray | pa.Array, encode: Encode) -> None:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    _tag(h, "arrow", str(column.type).encode())
    mask = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    _tag(h, "mask", mask.tobytes())
    values = column.drop_null().to_numpy(zero_copy_only=False)
    _encode_array(h, values, encode)


def _encode_arrow(h: Any, table: pa.Table | pa.RecordBatch, encode: Encode) -> None:
    schema = table.schema.remove_metadata()  # pandas' notes on how it was built are not content
    _tag(h, type(table).__name__, str(schema).encode())
    _tag(h, "rows", str(table.num_rows).encode())
    for column in table.columns:
        _encode_arrow_column(h, column, encode)


def encoder_for(value: Any, encode: Encode) -> Callable[[Any, Any], None] | None:
    """How to encode ``value`` (a numpy, pandas or Arrow object), or None to fall back."""

    def bind(fn: Callable[[Any, Any, Encode], None]) -> Callable[[Any, Any], None]:
        return lambda h, v: fn(h, v, encode)

    if isinstance(value, pd.DataFrame):
        return bind(_encode_frame)
    if isinstance(value, pd.Series):
        return bind(_encode_series)
    if isinstance(value, pd.Index):
        return bind(_encode_index)
    if isinstance(value, pa.Table | pa.RecordBatch):
        return bind(_encode_arrow)
    if isinstance(value, pa.Array | pa.ChunkedArray):
        return bind(_encode_arrow_column)
    if isinstance(value, np.ndarray | pd.api.extensions.ExtensionArray):
        return bind(_encode_array)
    if isinstance(value, np.generic):
        return lambda h, v: _tag(h, "np:" + v.dtype.str, _numeric_bytes(np.asarray(v)))
    if value is pd.NaT:
        return lambda h, v: _tag(h, "NaT")
    if isinstance(value, pd.Timestamp | pd.Timedelta | pd.Period | pd.Interval):
        return lambda h, v: _tag(h, type(v).__name__, repr(v).encode())
    if value is pd.NA:
        return lambda h, v: _tag(h, "NA")
    return None
