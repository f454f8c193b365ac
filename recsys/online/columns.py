"""Store records + request → the raw columns `FeaturePipeline.transform` reads, vectorized.

Shared by the service (scoring), by `POST /v1/events` (which counters an event increments) and by
`materialize` (the counter field names), so the three cannot drift apart. Offline, a row's raw
columns are its impression's keys, timestamp and context, the joined user and item attributes, and
its statistics' counters computed strictly before it; online the same columns come from the request
(keys, timestamp, context) and from the store (attributes, counters). A missing record or field is
a cold start: empty attributes and zero counters, exactly what the offline join gives an unseen id.

Loops here run over distinct users or distinct statistic sub-keys (a user's categories), never over
candidates; per-candidate work is numpy, or C iteration (`map`, `zip`, `dict.fromkeys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.features.statistics import counter_field, sub_key
from recsys.features.transforms import as_float, as_str, finite_or_zero
from recsys.online.plan import ColumnKind, OnlinePlan
from recsys.store.base import Fetched
from recsys.store.keys import KeySpace

__all__ = ["Rows", "Read", "plan_read", "assemble", "counter_updates", "counter_fields", "typed"]


@dataclass
class Rows:
    """The (user, item, timestamp, context) rows of one request; users deduplicated for the fetch."""

    user_ids: np.ndarray  # (m,) distinct user ids, object str
    row_user: np.ndarray  # (n,) int64 index into user_ids
    item_ids: np.ndarray  # (n,) object str
    timestamp: np.ndarray  # (n,) int64 unix seconds
    context: dict[str, np.ndarray]  # context column → (n,) raw request values

    def __len__(self) -> int:
        return len(self.item_ids)

    def take(self, index: slice | np.ndarray) -> "Rows":
        """The rows at `index` (a slice or positions), users deduplicated again."""
        codes, uniques = pd.factorize(self.row_user[index])
        return Rows(user_ids=self.user_ids[uniques], row_user=codes.astype(np.int64), item_ids=self.item_ids[index],
                    timestamp=self.timestamp[index], context={c: v[index] for c, v in self.context.items()})

    @classmethod
    def for_user(cls, user_id: str, item_ids: np.ndarray, timestamp: int,
                 context: Mapping[str, Any]) -> "Rows":
        """One user, many candidates, one context: the ranking request."""
        n = len(item_ids)
        return cls(
            user_ids=np.array([user_id], dtype=object),
            row_user=np.zeros(n, dtype=np.int64),
            item_ids=item_ids,
            timestamp=np.full(n, timestamp, dtype=np.int64),
            context={c: np.full(n, v, dtype=object) for c, v in context.items()},
        )

    @classmethod
    def from_records(cls, user_ids: Sequence[str], item_ids: Sequence[str], timestamps: Sequence[int],
                     contexts: Sequence[Mapping[str, Any]], context_columns: Sequence[str]) -> "Rows":
        """Row-oriented request bodies (/v1/score, /v1/events) → columns."""
        codes, uniques = pd.factorize(np.asarray(user_ids, dtype=object))
        return cls(
            user_ids=np.asarray(uniques, dtype=object),
            row_user=codes.astype(np.int64),
            item_ids=np.asarray(item_ids, dtype=object),
            timestamp=np.asarray(timestamps, dtype=np.int64),
            context={c: np.array([ctx.get(c) for ctx in contexts], dtype=object) for c in context_columns},
        )


@dataclass
class Read:
    """One round trip's worth of keys and fields, and where each item counter lands in the reply."""

    whole: list[str]  # user records, read whole (all of a user's counters come with it)
    keys: list[str]  # one item record per row
    fields: list[str]  # item fields: attributes, then item-keyed counters
    context: dict[str, np.ndarray]  # typed context columns
    # statistic → (n, w) positions in `fields` of each row's count and positives fields: the w time
    # buckets of its window, summed (w = 1 without a window)
    item_counters: dict[str, tuple[np.ndarray, np.ndarray]]
    counters: bool = True  # False: attributes only (what events need to key their counters)


_NONE = np.array(None, dtype=object)  # np.equal(values, _NONE): elementwise `is None` for object arrays


def _fill_none(values: np.ndarray, fill: object) -> np.ndarray:
    missing = np.equal(values, _NONE)
    if not missing.any():
        return values
    out = values.copy()
    out[missing] = fill
    return out


def typed(kind: ColumnKind, values: np.ndarray) -> np.ndarray:
    """Raw values (str from the store, JSON scalars from a request, None = missing) typed like the
    offline columns: categories as canonical str ('' = missing), numbers as float64 (NaN = missing)."""
    if kind == "text":
        return as_str(values)
    if kind == "number":
        if values.dtype.kind in "fiub":
            return values.astype(np.float64)
        try:  # float() of the stored repr is exact; pandas' parser is the fallback for odd input
            return _fill_none(values, np.nan).astype(np.float64)
        except (TypeError, ValueError):
            return as_float(values)
    return values


def _sub_array(plan_sub: tuple[str, ...], columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return sub_key([columns[c] for c in plan_sub]) if plan_sub else None


def _distinct(*columns: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct combination of the columns, each row's combination number).
    Hash-based (pandas factorize), so the Python work that follows runs per combination — a user's
    few categories, one window — instead of per candidate. None and constant columns are skipped:
    a ranking request has one user, one timestamp and one context."""
    varying = [c for c in columns if c is not None and len(c) and not (c == c[0]).all()]
    n = next((len(c) for c in columns if c is not None), 0)
    if not varying:
        return np.zeros(min(n, 1), dtype=np.int64), np.zeros(n, dtype=np.int64)
    combo, uniques = pd.factorize(varying[0])
    for col in varying[1:]:
        codes, more = pd.factorize(col)
        combo, uniques = pd.factorize(combo.astype(np.int64) * len(more) + codes)
    first = np.zeros(len(uniques), dtype=np.int64)
    first[combo[::-1]] = np.arange(n - 1, -1, -1)  # the last write wins: each combination's first row
    return first, combo


def counter_fields(statistic: str, subs: list[str], kind: str, buckets: list[int] | None = None) -> list[str]:
    """`counter_field` for every row ('c' count, 'p' positives; bucket -1 or None = no window),
    formatted once per distinct (sub-key, bucket)."""
    pairs = list(zip(subs, buckets if buckets is not None else [-1] * len(subs), strict=True))
    names = {(s, b): counter_field(statistic, s, kind, None if b < 0 else b) for s, b in dict.fromkeys(pairs)}
    return list(map(names.__getitem__, pairs))


def plan_read(plan: OnlinePlan, keys: KeySpace, rows: Rows, counters: bool = True) -> Read:
    """What to fetch for `rows` in one round trip: each user's whole record, and for each row's
    item the attribute fields plus the item-keyed counter fields its context and window need."""
    n = len(rows)
    context = {c: typed(plan.kind(c), rows.context.get(c, np.full(n, None, dtype=object)))
               for c in plan.context_columns}
    fields = list(plan.item_columns)
    item_counters: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    at: dict[str, int] = {}  # counter field → position in `fields`
    for s in plan.statistics if counters else ():
        if s.entity != "item":
            continue
        # Per distinct (sub-key, window) of the request: its w bucket fields (w = 1 without a
        # window); per row, the positions of its combination's fields in the reply.
        window = s.buckets(rows.timestamp)
        sub = _sub_array(s.sub_columns, context)  # context-only by construction (OnlinePlan)
        first, combo = _distinct(sub, window[:, 0])
        pos = np.empty((2, len(first), window.shape[1]), dtype=np.int64)
        for j, r in enumerate(first.tolist()):
            for k, kind in enumerate(("c", "p")):
                for t, b in enumerate(window[r].tolist()):
                    name = counter_field(s.name, "" if sub is None else sub[r], kind, None if b < 0 else b)
                    pos[k, j, t] = at.setdefault(name, len(fields) + len(at))
        item_counters[s.name] = (pos[0][combo], pos[1][combo])
    fields += list(at)
    return Read(whole=keys.users(rows.user_ids), keys=keys.items(rows.item_ids), fields=fields,
                context=context, item_counters=item_counters, counters=counters)


def _as_float(v: str | None) -> float:
    if v is None:
        return 0.0
    try:
        return float(v)
    except ValueError:
        return float("nan")  # not a number: the pipeline treats it as 0 like a missing counter


def _integers(values: np.ndarray, missing: np.ndarray) -> np.ndarray | None:
    """Counter strings (HINCRBY keeps integers) parsed as int, ~3x faster than a float() per
    string; missing = 0, as the pipeline reads a missing counter. None when any value is not an
    integer: the caller's float parse then decides, as for every other number."""
    try:
        return np.where(missing, "0", values).astype(np.int64).astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        return None


def _item_matrix(plan: OnlinePlan, read: Read, flat: list[str | None],
                 n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The items' reply, typed in bulk: one None scan and one parse for every numeric field
    (attributes and counters), instead of one pass per column. Store values are str or None, so
    text needs no canonicalization. Returns the attribute columns and the float matrix (NaN =
    missing or not a number) that the counters are read from."""
    items = np.array(flat, dtype=object).reshape(n, len(read.fields))
    missing = np.equal(items, _NONE)
    n_attr = len(plan.item_columns)
    numeric = [j for j, c in enumerate(plan.item_columns) if plan.kind(c) == "number"]
    numbers = np.full(items.shape, np.nan)
    counters = _integers(items[:, n_attr:], missing[:, n_attr:])
    if counters is None:
        numeric += list(range(n_attr, items.shape[1]))  # not all integers: the float parse below
    else:
        numbers[:, n_attr:] = counters
    if numeric:
        part = items[:, numeric]
        part[missing[:, numeric]] = "nan"
        try:
            numbers[:, numeric] = part.astype(np.float64)
        except (TypeError, ValueError):  # something else wrote a non-number: pandas coerces it to NaN
            numbers[:, numeric] = np.stack([as_float(part[:, k]) for k in range(part.shape[1])], axis=1)
    cols: dict[str, np.ndarray] = {}
    for j, c in enumerate(plan.item_columns):
        kind = plan.kind(c)
        if kind == "number":
            cols[c] = numbers[:, j]
        elif kind == "text" and missing[:, j].any():
            cols[c] = np.where(missing[:, j], "", items[:, j])
        else:
            cols[c] = items[:, j]
    return cols, numbers


def assemble(plan: OnlinePlan, rows: Rows, read: Read, fetched: Fetched) -> dict[str, np.ndarray]:
    """The raw columns of `rows` from the store's reply to `read` (see the module docstring)."""
    records, flat = fetched
    n = len(rows)
    item_cols, numbers = _item_matrix(plan, read, flat, n)
    cols: dict[str, np.ndarray] = {
        plan.user_key: rows.user_ids[rows.row_user],
        plan.item_key: rows.item_ids,
        plan.timestamp: rows.timestamp,
        **item_cols,
    }
    for c in plan.user_columns:  # one value per distinct user, then spread over its rows
        kind, per_user = plan.kind(c), [r.get(c) for r in records]
        if kind == "number":
            cols[c] = np.array([_as_float(v) if v is not None else np.nan for v in per_user])[rows.row_user]
        else:
            values = ["" if v is None and kind == "text" else v for v in per_user]
            cols[c] = np.array(values, dtype=object)[rows.row_user]
    cols.update(read.context)
    at = np.arange(n)[:, None]
    for s in plan.statistics if read.counters else ():
        if s.entity == "item":
            for column, index in zip((s.count_column, s.pos_column), read.item_counters[s.name], strict=True):
                # One combination (the ranking request): plain column slices, no per-row gather.
                picked = numbers[:, index[0]] if (index == index[0]).all() else numbers[at, index]
                cols[column] = finite_or_zero(picked).sum(axis=1)
            continue
        # A user's counters are fields of its record: sum each distinct (user, sub-key, window) once.
        window = s.buckets(rows.timestamp)
        sub = _sub_array(s.sub_columns, cols)
        first, combo = _distinct(rows.row_user, sub, window[:, 0])
        vals = np.empty((len(first), 2), dtype=np.float64)
        for j, r in enumerate(first.tolist()):
            rec, key = records[rows.row_user[r]], "" if sub is None else sub[r]
            if window[r, 0] < 0:
                vals[j] = (_as_float(rec.get(counter_field(s.name, key, "c"))),
                           _as_float(rec.get(counter_field(s.name, key, "p"))))
            else:
                bks = window[r].tolist()
                vals[j] = (sum(_as_float(rec.get(counter_field(s.name, key, "c", b))) for b in bks),
                           sum(_as_float(rec.get(counter_field(s.name, key, "p", b))) for b in bks))
        cols[s.count_column], cols[s.pos_column] = vals[combo, 0], vals[combo, 1]
    return cols


def counter_updates(plan: OnlinePlan, keys: KeySpace, columns: Mapping[str, np.ndarray], counts: np.ndarray,
                    positives: np.ndarray) -> tuple[list[str], list[str], list[int]]:
    """The HINCRBYs that events (rows with assembled attributes) make: per statistic, count += counts
    and positives += positives on the entity record's (sub-key) fields, in the bucket of the row's
    timestamp; duplicates summed, zeros dropped, in order of first appearance. An impression is
    counts 1 and positives its label (0 while the label is pending); a late label is counts 0 and
    positives its label, on its impression's row. Summed by factorize + bincount: a pandas groupby over the same few
    hundred rows costs ~10x more, and events run on the service's event loop beside ranking."""
    n = len(counts)
    if n == 0 or not plan.statistics:
        return [], [], []
    key_parts, field_parts, amount_parts = [], [], []
    for s in plan.statistics:
        entity = columns[plan.user_key] if s.entity == "user" else columns[plan.item_key]
        key = np.array(keys.users(entity) if s.entity == "user" else keys.items(entity), dtype=object)
        sub = _sub_array(s.sub_columns, columns)
        subs = [""] * n if sub is None else sub.tolist()
        # An event lands in the bucket of its own timestamp (the last column of its window).
        bucket = s.buckets(columns[plan.timestamp])[:, -1].tolist()
        for kind, amount in (("c", counts.astype(np.int64)), ("p", positives.astype(np.int64))):
            key_parts.append(key)
            field_parts.append(np.array(counter_fields(s.name, subs, kind, bucket), dtype=object))
            amount_parts.append(amount)
    key_codes, key_names = pd.factorize(np.concatenate(key_parts))
    field_codes, field_names = pd.factorize(np.concatenate(field_parts))
    pair, first = pd.factorize(key_codes.astype(np.int64) * len(field_names) + field_codes)
    total = np.bincount(pair, weights=np.concatenate(amount_parts), minlength=len(first)).astype(np.int64)
    keep = total != 0
    first = first[keep]
    return (np.asarray(key_names, dtype=object)[first // len(field_names)].tolist(),
            np.asarray(field_names, dtype=object)[first % len(field_names)].tolist(), total[keep].tolist())
