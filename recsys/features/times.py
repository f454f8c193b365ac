"""The one time parser: every timestamp the project reads becomes unix seconds (UTC) here.

Used by raw loading (both feature engines: the impression timestamp, a label-time column and every
`part: age` column of any table), by `materialize` (which writes an age column's seconds into the
store) and online (request timestamps and context age columns). So one instant encodes identically
whether it arrives as

- unix seconds: int, float (fractions are floored), or a string of digits ("1767225600");
- a naive datetime (numpy / pandas datetime64, `datetime.datetime`, parquet timestamp without a
  time zone): taken as UTC;
- a time-zone-aware datetime (parquet timestamp with a zone, `pd.Timestamp(..., tz=...)`):
  converted to UTC, never to local wall time;
- an ISO-8601 string: '2026-01-01T12:00:00Z', '2026-01-01T14:00:00+02:00', '2026-01-01 12:00:00'
  (no offset = UTC) or a date '2026-01-01' (midnight UTC).

Whole seconds everywhere (floor, also before 1970). Missing values (None, NaN, NaT, '') stay
missing (NaN); anything else that is not a time is an error that names the table, the column and
an example value — never a silent constant. Vectorized: strings are parsed per distinct value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import DataError

__all__ = ["parse_times", "to_seconds", "bad_times_error"]


def parse_times(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds as float64 whole numbers, NaN where missing; mask of values that are present
    but not a time)."""
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        seconds, bad = parse_times(values.categories.to_numpy(dtype=object))
        codes = values.codes
        return (np.where(codes < 0, np.nan, seconds[codes]) if len(seconds) else np.full(len(codes), np.nan),
                (codes >= 0) & (bad[codes] if len(bad) else False))
    if isinstance(values, pd.arrays.DatetimeArray) or (isinstance(values, np.ndarray) and values.dtype.kind == "M"):
        return _datetimes(pd.Series(values)), np.zeros(len(values), dtype=bool)
    arr = np.atleast_1d(np.asarray(values))
    if arr.dtype.kind == "b":  # true / false is no time (though it would pass as 1 / 0)
        return np.full(len(arr), np.nan), np.ones(len(arr), dtype=bool)
    if arr.dtype.kind in "iu":
        return arr.astype(np.float64), np.zeros(len(arr), dtype=bool)
    if arr.dtype.kind == "f":
        return np.floor(arr.astype(np.float64)), np.zeros(len(arr), dtype=bool)
    codes, uniques = pd.factorize(arr.astype(object), use_na_sentinel=True)
    seconds, bad = _parse_objects(np.asarray(uniques, dtype=object))
    return (np.where(codes < 0, np.nan, np.append(seconds, np.nan)[codes]),
            (codes >= 0) & np.append(bad, False)[codes])


def _datetimes(series: pd.Series) -> np.ndarray:
    """datetime64 (naive = UTC, aware = converted) → floored unix seconds, NaT → NaN. Integer
    arithmetic in the data's own unit: years outside 1677-2262 (beyond nanoseconds) parse too."""
    utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[utc.dt.unit]
    seconds: np.ndarray = (utc.array.asi8 // per_second).astype(np.float64)
    seconds[utc.isna().to_numpy()] = np.nan
    return seconds


def _parse_objects(uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-null objects: numbers (or strings of numbers) as unix seconds, the rest as
    datetimes or ISO-8601 strings."""
    text = np.array([v.decode() if isinstance(v, bytes) else v for v in uniques], dtype=object)
    blank = np.array([isinstance(v, str) and not v.strip() for v in text], dtype=bool)
    is_bool = np.array([isinstance(v, (bool, np.bool_)) for v in text], dtype=bool)
    maybe_numbers = text.copy()
    maybe_numbers[is_bool] = None  # True is no time, though pandas reads it as 1
    numbers = pd.to_numeric(pd.Series(maybe_numbers), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    seconds = np.floor(numbers)
    rest = np.isnan(numbers) & ~blank & ~is_bool
    if rest.any():
        parsed = pd.to_datetime(pd.Series(text[rest], dtype=object), utc=True, format="ISO8601", errors="coerce")
        seconds[rest] = _datetimes(parsed)
    bad = np.isnan(seconds) & ~blank
    return seconds, bad


def bad_times_error(table: str, column: str, count: int, example: str) -> DataError:
    """The one message for a column with values that are not times (both engines raise it)."""
    return DataError(f"table '{table}' column '{column}': {count} values are not times, e.g. {example!r} "
                     f"(fix: unix seconds, ISO-8601 such as 2026-01-01T12:00:00Z, or a datetime column)")


def to_seconds(values: Any, table: str, column: str) -> np.ndarray:
    """`parse_times`, refusing values that are not times (see `bad_times_error`; the example is the
    smallest bad value as text, so every engine names the same one)."""
    seconds, bad = parse_times(values)
    if bad.any():
        raw = np.atleast_1d(np.asarray(values.astype(object) if isinstance(values, pd.Categorical) else values,
                                       dtype=object))
        raise bad_times_error(table, column, int(bad.sum()), min(map(str, raw[bad])))
    return seconds
