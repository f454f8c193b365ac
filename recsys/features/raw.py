"""Raw tables → one time-sorted frame of impressions joined with their user and item attributes.

Shared by every consumer of raw data (the arrow feature engine, `materialize`, the replay tests), so
the join, the key canonicalization and the timestamp parsing are defined once.

Memory is bounded for 10 M+ impressions: string columns are held as Categoricals (user and item
attributes are joined by code, never as one Python string per row) and `RawData.columns` hands the
pipeline one column at a time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import DataError, SpecError
from recsys.features.times import to_seconds
from recsys.features.transforms import as_dictionary, as_str
from recsys.io import read_table, table_columns
from recsys.spec import FeatureSpec, Table

__all__ = ["RawData", "RawColumns", "column_values", "as_slice", "load_raw", "entity_table", "check_columns",
           "label_times", "LABEL_TIME"]

LABEL_TIME = "__label_time"  # with delayed labels: each label's time (`label_times`), int64 seconds


@dataclass
class RawData:
    """Impressions joined with user and item attributes, sorted by time. String columns (keys
    included) are Categoricals of canonical str (`as_str`), numbers stay numpy."""

    frame: pd.DataFrame
    context_columns: list[str]
    fingerprint: str | None  # None: a subset of the columns was loaded (`load_raw(only=...)`)
    # user and item key column -> the row of each of its categories in the deduplicated table
    # (`entity_table`; -1: no row there), the join's lookup kept for `materialize`
    entity_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def columns(self, index: np.ndarray | slice = slice(None)) -> "RawColumns":
        return RawColumns(self.frame, as_slice(index))


class RawColumns(Mapping[str, Any]):
    """The raw columns of some rows, each taken only when the pipeline reads it: a whole split's
    columns at once would not fit the memory budget at 10 M rows."""

    def __init__(self, frame: pd.DataFrame, index: np.ndarray | slice) -> None:
        self._frame, self._index = frame, index

    def __getitem__(self, name: str) -> Any:
        return column_values(self._frame[name])[self._index]

    def __contains__(self, name: object) -> bool:
        return name in self._frame.columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._frame.columns)

    def __len__(self) -> int:
        return len(self._frame.columns)


def column_values(series: pd.Series) -> Any:
    """A frame column as the transforms take it: the Categorical itself (codes, no per-row strings)
    or the numpy array."""
    return series.array if isinstance(series.dtype, pd.CategoricalDtype) else series.to_numpy()


def as_slice(index: np.ndarray | slice) -> np.ndarray | slice:
    """A sorted run of consecutive row numbers (every time-split part) as a slice: views, not copies."""
    if isinstance(index, slice) or len(index) == 0:
        return index
    first, last = int(index[0]), int(index[-1])
    if last - first + 1 == len(index) and (len(index) < 2 or bool(np.all(np.diff(index) == 1))):
        return slice(first, last + 1)
    return index


def _timestamps(values: Any, table: str, name: str) -> np.ndarray:
    """The impression timestamp as int64 unix seconds (`recsys.features.times`); none may be missing."""
    seconds = to_seconds(values, table, name)
    missing = np.isnan(seconds)
    if missing.any():
        raise DataError(f"timestamp column '{name}' has {int(missing.sum())} missing values "
                        f"(fix: unix seconds, ISO-8601 or a datetime on every row)")
    return seconds.astype(np.int64)


def label_times(spec: FeatureSpec, values: Any, ts: np.ndarray, label: np.ndarray) -> np.ndarray:
    """When each impression's label became known, as int64 unix seconds: `ts + label_delay`, or the
    `label_timestamp` column (a negative may leave it empty: its label time is then its impression
    time, which changes no counter). A label known before its impression, or a positive without a
    label time, is refused with the column named."""
    if spec.label_timestamp is None:
        return ts + spec.label_delay_s
    col = spec.label_timestamp
    seconds = to_seconds(values, spec.tables["impressions"], col)
    missing = np.isnan(seconds)
    if bool((missing & (label == 1)).any()):
        raise DataError(f"label_timestamp column '{col}': {int((missing & (label == 1)).sum())} positive "
                        f"impressions have no label time (fix: the time each positive label became known)")
    out = np.where(missing, ts, seconds).astype(np.int64)
    early = out < ts
    if early.any():  # the example: the earliest such impression, then its smallest label time
        rows = np.flatnonzero(early)
        i = int(rows[np.lexsort((out[rows], ts[rows]))[0]])
        raise DataError(f"label_timestamp column '{col}': {int(early.sum())} labels are known before their "
                        f"impression, e.g. label time {int(out[i])} < timestamp {int(ts[i])} (fix: a label time "
                        f"at or after the impression's '{spec.timestamp}')")
    return out


def _fingerprint(frames: list[pd.DataFrame]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(str(len(f)).encode())
        h.update(pd.util.hash_pandas_object(f, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _unique_by(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = frame.assign(**{key: as_str(frame[key].to_numpy())})
    return frame.drop_duplicates(key, keep="last").set_index(key)


def _categorical(values: Any) -> pd.Categorical:
    """Canonical str categories (`as_str`), one code per row: 1-4 bytes a row instead of a string."""
    codes, uniques = as_dictionary(values)
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object), validate=False)


def _compact(series: pd.Series) -> Any:
    """Numbers stay numpy; strings and anything else become a canonical Categorical."""
    if series.dtype.kind in "iufb":
        return series.to_numpy()
    return _categorical(series)


def _join(keys: pd.Categorical, entities: pd.DataFrame, rows: np.ndarray, columns: list[str]) -> dict[str, Any]:
    """Attributes of each impression's entity (`entities`: `entity_table`'s, `rows`: the table row of each
    key category), looked up once per distinct key and broadcast by code; unknown entities get
    missing values (NaN), as a left join would."""
    row = rows[keys.codes]
    unknown = bool((row < 0).any())
    out: dict[str, Any] = {}
    for c in columns:
        col = _compact(entities[c])
        if isinstance(col, pd.Categorical):
            out[c] = pd.Categorical.from_codes(np.append(col.codes, -1)[row], categories=col.categories, validate=False)
        else:
            out[c] = np.append(col.astype(np.float64), np.nan)[row] if unknown else col[row]
    return out


def entity_table(spec: FeatureSpec, raw_dir: str | Path, table: Table, columns: list[str]) -> pd.DataFrame:
    """The users or items table: these attribute columns (times as float unix seconds), one row per
    entity (its last row winning), indexed by the canonical key."""
    key = spec.user_key if table == "users" else spec.item_key
    return _unique_by(_parse_times(spec, table, _read(raw_dir, spec.tables[table], [key, *columns], spec)), key)


def _rows(entities: pd.DataFrame, keys: pd.Categorical) -> np.ndarray:
    """The row of each key category in an `entity_table` (-1: none). Both are canonical str, looked up
    by arrow's hash table: pandas' `get_indexer` over 1 M ids took about four times longer."""
    found = pc.index_in(pa.array(keys.categories.to_numpy(dtype=object), pa.large_string()),
                        value_set=pa.array(entities.index.to_numpy(dtype=object), pa.large_string()))
    rows: np.ndarray = found.fill_null(-1).to_numpy().astype(np.int64)
    return rows


def load_raw(spec: FeatureSpec, raw_dir: str | Path, only: Sequence[str] | None = None,
             entities: Mapping[Table, pd.DataFrame] | None = None) -> RawData:
    """Read and validate the three tables, join attributes onto impressions, sort by time.
    `only`: just these attribute, context and passthrough columns (keys, timestamp and labels
    always), and no fingerprint: `materialize` needs the statistics' keys alone, and joining and
    hashing every column took a third of its reading time. `entities` (with `only`): the users and
    items tables already read (`entity_table`, holding at least the wanted columns), which
    `materialize` reads once for the join and for the records' attributes."""

    def wanted(cols: list[str]) -> list[str]:
        return [c for c in cols if only is None or c in only]

    ctx, passthrough = wanted(spec.source_columns("impressions")), wanted(spec.passthrough)
    need = [spec.user_key, spec.item_key, spec.timestamp, spec.label, *ctx, *passthrough,
            *([spec.label_timestamp] if spec.label_timestamp else [])]
    imp = _read(raw_dir, spec.tables["impressions"], list(dict.fromkeys(need)), spec)
    if imp.empty:
        raise DataError(f"impressions table '{spec.tables['impressions']}' has no rows")
    labels = pd.to_numeric(imp[spec.label], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        found = sorted(map(str, imp.loc[bad, spec.label].unique()[:5]))
        raise DataError(f"label column '{spec.label}' must be 0/1; found {found} (fix: binarize it, e.g. rating >= 4)")
    ucols, icols = wanted(spec.source_columns("users")), wanted(spec.source_columns("items"))
    # Strings as categories first: the fingerprint then hashes each distinct value once.
    imp = imp.assign(**{c: imp[c].astype("category") for c in imp.columns
                        if c not in (spec.timestamp, spec.label) and imp[c].dtype.kind not in "iufbmM"})
    fingerprint = None
    if entities is None:
        users = _read(raw_dir, spec.tables["users"], [spec.user_key, *ucols], spec)
        items = _read(raw_dir, spec.tables["items"], [spec.item_key, *icols], spec)
        fingerprint = _fingerprint([imp, users, items]) if only is None else None
        entities = {"users": _unique_by(_parse_times(spec, "users", users), spec.user_key),
                    "items": _unique_by(_parse_times(spec, "items", items), spec.item_key)}
    user, item = _categorical(imp[spec.user_key]), _categorical(imp[spec.item_key])
    rows = {spec.user_key: _rows(entities["users"], user), spec.item_key: _rows(entities["items"], item)}
    ts = _timestamps(imp[spec.timestamp], spec.tables["impressions"], spec.timestamp)
    y = labels.to_numpy().astype(np.int8)
    columns: dict[str, Any] = {
        spec.user_key: user,
        spec.item_key: item,
        spec.timestamp: ts,
        spec.label: y,
    }
    if spec.delayed_labels:
        columns[LABEL_TIME] = label_times(spec, imp[spec.label_timestamp] if spec.label_timestamp else None, ts, y)
    imp = _parse_times(spec, "impressions", imp.drop(columns=[spec.timestamp, *([spec.label_timestamp] if
                                                                              spec.label_timestamp else [])]))
    for c in ctx + passthrough:
        columns.setdefault(c, _compact(imp[c]))
    del imp, labels
    for c, values in {**_join(user, entities["users"], rows[spec.user_key], ucols),
                      **_join(item, entities["items"], rows[spec.item_key], icols)}.items():
        columns.setdefault(c, values)
    frame = pd.DataFrame(columns, copy=False)
    if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
        frame = frame.iloc[np.argsort(ts, kind="stable")].reset_index(drop=True)
    return RawData(frame=frame, context_columns=ctx, fingerprint=fingerprint, entity_rows=rows)


def _parse_times(spec: FeatureSpec, table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """The table's time columns (`FeatureSpec.time_columns`) as float unix seconds, NaN = missing."""
    stem = spec.tables[table]
    cols = [c for c in spec.time_columns(table) if c in frame.columns]
    return frame.assign(**{c: to_seconds(frame[c].array, stem, c) for c in cols}) if cols else frame


def _read(raw_dir: str | Path, stem: str, columns: list[str], spec: FeatureSpec) -> pd.DataFrame:
    check_columns(spec, stem, table_columns(raw_dir, stem), columns)
    return read_table(raw_dir, stem, columns)


def check_columns(spec: FeatureSpec, stem: str, have: list[str], columns: list[str]) -> None:
    """Every engine's check that table `stem` has the columns the spec reads."""
    missing = [c for c in columns if c not in have]
    for col in missing:
        # Name the feature that wants the column: that is what the user has to fix.
        for name, feat in spec.features.items():
            if col in (getattr(feat, "column", None) or name, name):
                raise SpecError(f"feature '{name}' reads column '{col}', which table '{stem}' lacks "
                                f"(it has {have}; fix: add the column or set the feature's `column:`)")
        raise DataError(f"table '{stem}' lacks column '{col}' required by the spec (it has {have})")
