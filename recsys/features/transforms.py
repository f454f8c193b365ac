"""Fitted, vectorized column transforms. Each is a small object whose fitted state is plain JSON
data (`to_dict` / `from_dict`), fitted on the train split only, and applied identically to a whole
parquet split offline and to one request's candidates online.

Id conventions (shared by every sparse transform): local id 0 means unseen / missing / padding, so
unseen values never raise; real values get ids 1..n.

Inputs are plain arrays (a request's few hundred rows) or pandas Categoricals (a 10 M-row split whose
string columns were read dictionary-encoded). Every string transform works on the distinct values
(`as_dictionary`) and broadcasts by code, so both take the same path and a big split costs one pass
over small integer codes instead of one string hash per row.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import NotFittedError

__all__ = [
    "as_str",
    "as_dictionary",
    "as_float",
    "finite_or_zero",
    "Vocabulary",
    "MultiHotVocabulary",
    "hash_strings",
    "hash_cross",
    "NumericTransform",
    "hour_of_day",
    "day_of_week",
]


def as_str(values: Any) -> np.ndarray:
    """Raw categorical values as an object array of str; None/NaN become '' (never in a vocabulary)."""
    if not _is_categorical(values):
        arr = np.asarray(values, dtype=object)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if pd.api.types.infer_dtype(arr, skipna=False) in ("string", "empty"):
            return arr  # every value already a str (none missing): no copy
    codes, uniques = as_dictionary(values)
    return np.take(uniques, codes, axis=0)


def as_dictionary(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) with `as_str(values) == uniques[codes]`, codes ≥ 0 and uniques distinct.

    A Categorical is used as it is, so a 10 M-row split never materializes one Python string per
    row; anything else is factorized first. Either way only the distinct values are converted."""
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        codes, raw = values.codes, values.categories.to_numpy(dtype=object)
    else:
        if not isinstance(values, pd.api.extensions.ExtensionArray):
            values = np.atleast_1d(np.asarray(values))
        codes, raw = pd.factorize(values)  # missing values get code -1
    uniques, distinct = _canonical(raw)
    if len(codes) and codes.min() < 0:  # missing → ''
        empty = np.flatnonzero(uniques == "")
        if not (distinct and len(empty)):
            uniques, empty = np.append(uniques, np.array([""], dtype=object)), np.array([len(uniques)])
        codes = np.where(codes < 0, empty[0], codes)
    if not distinct:  # canonical forms can collide: 1 and 1.0 are both '1'
        merged, uniques = pd.factorize(uniques)
        return merged[codes], np.asarray(uniques, dtype=object)
    return codes, uniques


def _is_categorical(values: Any) -> bool:
    return isinstance(values, (pd.Categorical, pd.Series)) and isinstance(values.dtype, pd.CategoricalDtype)


def _canonical(raw: Any) -> tuple[np.ndarray, bool]:
    """Distinct raw values → (str, whether they are still distinct for sure), one Python call per
    distinct value at most (never per row). Strings and integers stay distinct; floats, bytes and
    mixed objects may collide ('1' from 1.0 and from 1)."""
    arr = np.asarray(raw)
    if arr.dtype.kind in "iub":
        return arr.astype(str).astype(object), True
    arr = arr.astype(object)
    if pd.api.types.infer_dtype(arr, skipna=False) in ("string", "empty"):
        return arr, True
    return pd.Series(arr, dtype=object).map(_canonical_str, na_action="ignore").fillna("").to_numpy(dtype=object), False


def _canonical_str(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # integers that went through a float column (1.0) encode like the int (1)
    if isinstance(v, bytes):
        return v.decode()
    return str(v)


def as_float(values: Any) -> np.ndarray:
    """Raw numeric values as float64; unparsable strings and None become NaN."""
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        return np.take(np.append(as_float(values.categories.to_numpy(dtype=object)), np.nan), values.codes, axis=0)
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(dtype=np.float64)


def finite_or_zero(values: np.ndarray) -> np.ndarray:
    """Counters as float64 with NaN / inf (missing, or not a number) as 0, like a missing counter.
    (np.nan_to_num costs ~10x more per call on a request's few hundred rows.)"""
    x = as_float(values)
    return np.where(np.isfinite(x), x, 0.0)


class Vocabulary:
    """Value → id with a min-count and an optional cap; ids follow descending train frequency."""

    def __init__(self, min_count: int = 1, max_size: int | None = None) -> None:
        self.min_count = min_count
        self.max_size = max_size
        self.values: list[str] | None = None
        self._index: pd.Index | None = None  # built on first use: bulk lookups of distinct values
        self._ids: dict[str, int] | None = None  # built on first use: a request's per-value lookups

    def fit(self, values: np.ndarray) -> "Vocabulary":
        codes, uniques = as_dictionary(values)
        return self.fit_counts(uniques, np.bincount(codes, minlength=len(uniques)))

    def fit_counts(self, uniques: np.ndarray, counts: np.ndarray) -> "Vocabulary":
        """Fit from distinct canonical strings and their train counts (a multi-hot column's tokens
        arrive this way, weighted by how often each distinct row occurs)."""
        keep = (uniques != "") & (counts >= self.min_count)
        uniques, counts = uniques[keep], counts[keep]
        # Stable order: by count desc, then value, so refits on the same data give the same ids.
        order = np.lexsort((uniques.astype(str), -counts))
        kept = uniques[order]
        if self.max_size is not None:
            kept = kept[: self.max_size]
        self.values = [str(v) for v in kept]
        self._index = self._ids = None
        return self

    @property
    def size(self) -> int:
        """Number of ids including the shared unseen id 0."""
        return len(self._require()) + 1

    def _require(self) -> list[str]:
        if self.values is None:
            raise NotFittedError("Vocabulary used before fit()")
        return self.values

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Ids of raw values: unseen map to 0, never raise.

        A request's few hundred str values take one C-level dict lookup each (`map`), ~20x cheaper
        than factorizing them; only values that miss AND are not str (numbers, None) go through the
        canonical path, so the result is exactly that of `encode_distinct(as_str(values))`.
        (Unhashable values, e.g. a list inside an object array, raise TypeError on either path.)
        Categoricals (a whole split read dictionary-encoded) are encoded per category instead."""
        arr = values if _is_categorical(values) else np.asarray(values)
        if arr.dtype != object or arr.ndim != 1:
            codes, uniques = as_dictionary(arr)
            return np.take(self.encode_distinct(uniques), codes, axis=0)
        n = len(arr)
        if n > 1 and arr[0] is arr[-1] and (arr == arr[0]).all():
            # One value on every row (a ranking request's user and context columns): look it up once.
            return np.full(n, self.encode(arr[:1])[0], dtype=np.int64)
        ids = np.fromiter(map(self._lookup().get, arr, repeat(-1, n)), dtype=np.int64, count=n)
        missed = np.flatnonzero(ids < 0)
        if len(missed):
            is_str = np.fromiter(map(isinstance, arr[missed], repeat(str)), dtype=bool, count=len(missed))
            odd = missed[~is_str]
            ids[missed] = 0  # a str that misses is unseen
            if len(odd):
                codes, uniques = as_dictionary(arr[odd])
                ids[odd] = self.encode_distinct(uniques)[codes]
        return ids

    def _lookup(self) -> dict[str, int]:
        if self._ids is None:
            values = self._require()
            self._ids = dict(zip(values, range(1, len(values) + 1), strict=True))
        return self._ids

    def encode_distinct(self, uniques: np.ndarray) -> np.ndarray:
        """Ids of canonical strings (as `as_str` gives them)."""
        if self._index is None:
            self._index = pd.Index(self._require(), dtype=object)
        # An object Index target: a bare ndarray sends pandas 3 through dtype inference (5x slower).
        return self._index.get_indexer(pd.Index(uniques, dtype=object)).astype(np.int64) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "max_size": self.max_size, "values": self._require()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vocabulary":
        v = cls(d["min_count"], d.get("max_size"))
        v.values = list(d["values"])
        return v


def _split_tokens(uniques: np.ndarray, separator: str) -> pa.ListArray:
    """Token lists of canonical strings."""
    return pc.split_pattern(pa.array(uniques, type=pa.string()), pattern=separator)


class MultiHotVocabulary:
    """Separator-joined tokens ('Action|Comedy') → padded id matrix [n, max_len]; 0 pads."""

    def __init__(self, separator: str, max_len: int, min_count: int = 1) -> None:
        self.separator = separator
        self.max_len = max_len
        self.vocab = Vocabulary(min_count)

    def fit(self, values: np.ndarray) -> "MultiHotVocabulary":
        codes, uniques = as_dictionary(values)
        lists = _split_tokens(uniques, self.separator)
        # Each distinct row's tokens count as often as the row occurs.
        weight = np.repeat(np.bincount(codes, minlength=len(uniques)), np.diff(lists.offsets.to_numpy()))
        tok_codes, tokens = pd.factorize(lists.flatten().to_numpy(zero_copy_only=False))
        self.vocab.fit_counts(np.asarray(tokens, dtype=object), np.bincount(tok_codes, weights=weight,
                                                                              minlength=len(tokens)).astype(np.int64))
        return self

    @property
    def size(self) -> int:
        return self.vocab.size

    def encode(self, values: np.ndarray) -> np.ndarray:
        codes, uniques = as_dictionary(values)
        return np.take(self._encode_distinct(uniques), codes, axis=0)  # rows: [n, max_len]

    def _encode_distinct(self, uniques: np.ndarray) -> np.ndarray:
        lists = _split_tokens(uniques, self.separator)
        n = len(lists)
        offsets = lists.offsets.to_numpy()
        ids = self.vocab.encode(lists.flatten().to_numpy(zero_copy_only=False))
        row = np.repeat(np.arange(n), np.diff(offsets))
        pos = np.arange(len(ids)) - offsets[:-1][row]
        # Unseen tokens are dropped (they would only add noise to the pooled embedding).
        keep = (pos < self.max_len) & (ids > 0)
        out = np.zeros((n, self.max_len), dtype=np.int64)
        # Compact kept tokens to the left so that padding is always at the end.
        kept_row = row[keep]
        kept_pos = np.zeros(len(kept_row), dtype=np.int64)
        if len(kept_row):
            starts = np.r_[0, np.flatnonzero(np.diff(kept_row)) + 1]
            run = np.repeat(starts, np.diff(np.r_[starts, len(kept_row)]))
            kept_pos = np.arange(len(kept_row)) - run
        out[kept_row, kept_pos] = ids[keep]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"separator": self.separator, "max_len": self.max_len, "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MultiHotVocabulary":
        m = cls(d["separator"], d["max_len"])
        m.vocab = Vocabulary.from_dict(d["vocab"])
        return m


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a fixed, well-spread integer hash (identical in every process)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def hash_strings(values: np.ndarray, buckets: int) -> np.ndarray:
    """Stable string hash → 1..buckets-1 (0 stays the missing id). Needs no fitting."""
    codes, uniques = as_dictionary(values)
    h = pd.util.hash_array(uniques, categorize=False)
    ids = (h % np.uint64(buckets - 1)).astype(np.int64) + 1
    ids[uniques == ""] = 0
    return np.take(ids, codes, axis=0)


def hash_cross(components: list[np.ndarray], buckets: int) -> np.ndarray:
    """Hashed cross of already-encoded ids → 1..buckets-1."""
    h = np.full(len(components[0]), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for ids in components:
            h = _mix64(h ^ ids.astype(np.uint64))
    return (h % np.uint64(buckets - 1)).astype(np.int64) + 1


class NumericTransform:
    """fill → optional log1p → optional standardize, plus optional quantile-bucket ids."""

    def __init__(self, log: bool, standardize: bool, buckets: int, fill: float | None) -> None:
        self.log = log
        self.standardize = standardize
        self.buckets = buckets
        self.fill = fill
        self.mean: float | None = None
        self.std: float | None = None
        self.boundaries: list[float] | None = None

    def _prepare(self, values: np.ndarray, fill: float) -> np.ndarray:
        x = as_float(values)
        x = np.where(np.isfinite(x), x, fill)
        if self.log:
            x = np.log1p(np.maximum(x, 0.0))
        return x

    def fit(self, values: np.ndarray) -> "NumericTransform":
        raw = as_float(values)
        finite = raw[np.isfinite(raw)]
        if self.fill is None:
            self.fill = float(finite.mean()) if finite.size else 0.0
        x = self._prepare(raw, self.fill)
        self.mean = float(x.mean()) if x.size else 0.0
        std = float(x.std()) if x.size else 1.0
        self.std = std if std > 1e-12 else 1.0
        if self.buckets:
            qs = np.quantile(x, np.linspace(0, 1, self.buckets + 1)[1:-1]) if x.size else np.array([])
            self.boundaries = [float(b) for b in np.unique(qs)]
        return self

    def _require(self) -> tuple[float, float, float]:
        if self.mean is None or self.std is None or self.fill is None:
            raise NotFittedError("NumericTransform used before fit()")
        return self.fill, self.mean, self.std

    def dense(self, values: np.ndarray) -> np.ndarray:
        fill, mean, std = self._require()
        x = self._prepare(values, fill)
        if self.standardize:
            x = (x - mean) / std
        return x.astype(np.float32)

    @property
    def bucket_count(self) -> int:
        """Ids including 0 (unused: every finite value falls in a bucket 1..len(boundaries)+1)."""
        return len(self.boundaries or []) + 2

    def bucket_ids(self, values: np.ndarray) -> np.ndarray:
        fill, _, _ = self._require()
        x = self._prepare(values, fill)
        return np.searchsorted(np.asarray(self.boundaries or [], dtype=np.float64), x, side="right") + 1

    def to_dict(self) -> dict[str, Any]:
        self._require()
        return {
            "log": self.log, "standardize": self.standardize, "buckets": self.buckets, "fill": self.fill,
            "mean": self.mean, "std": self.std, "boundaries": self.boundaries,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NumericTransform":
        t = cls(d["log"], d["standardize"], d["buckets"], d["fill"])
        t.mean, t.std, t.boundaries = d["mean"], d["std"], d["boundaries"]
        return t


def hour_of_day(ts: np.ndarray) -> np.ndarray:
    """UTC hour 0..23 of unix seconds, as ids 1..24."""
    return (as_float(ts).astype(np.int64) // 3600) % 24 + 1


def day_of_week(ts: np.ndarray) -> np.ndarray:
    """UTC weekday of unix seconds, Monday=1 .. Sunday=7 (1970-01-01 was a Thursday)."""
    return (as_float(ts).astype(np.int64) // 86400 + 3) % 7 + 1
