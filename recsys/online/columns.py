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
from itertools import repeat
from operator import itemgetter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.features.statistics import counter_field, sub_key
from recsys.features.times import parse_times
from recsys.features.transforms import as_float, as_str
from recsys.online.plan import ColumnKind, OnlinePlan
from recsys.store.base import Record
from recsys.store.keys import KeySpace

__all__ = ["Rows", "Read", "CounterUpdates", "plan_read", "assemble", "counter_updates", "counter_fields", "typed"]


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
    """One round trip's worth of keys: each distinct user's record, then one item record per row."""

    keys: list[str]
    users: int  # how many of `keys` are users
    context: dict[str, np.ndarray]  # typed context columns
    counters: bool = True  # False: attributes only (what events need to key their counters)


_NONE = np.array(None, dtype=object)  # np.equal(values, _NONE): elementwise `is None` for object arrays
_EMPTY = Record(a={}, c={})  # a missing record: a cold start


def _fill_none(values: np.ndarray, fill: object) -> np.ndarray:
    missing = np.equal(values, _NONE)
    if not missing.any():
        return values
    out = values.copy()
    out[missing] = fill
    return out


def typed(kind: ColumnKind, values: np.ndarray) -> np.ndarray:
    """Raw values (str from the store, JSON scalars from a request, None = missing) typed like the
    offline columns: categories as canonical str ('' = missing), numbers as float64 (NaN = missing),
    times as unix seconds by the offline loader's parser (`parse_times`; the service refuses a value
    that is not a time before it gets here)."""
    if kind == "text":
        return as_str(values)
    if kind == "time":
        return parse_times(values)[0]
    if kind == "number":
        if values.dtype.kind in "fiub":
            return values.astype(np.float64)
        try:  # float() of the stored repr is exact; pandas' parser is the fallback for odd input
            return _fill_none(values, np.nan).astype(np.float64)
        except (TypeError, ValueError):
            return as_float(values)
    return values


# What an absent attribute reads as.
_MISSING: dict[ColumnKind, object] = {"text": "", "number": np.nan, "time": np.nan, "raw": None}


def _stored(kind: ColumnKind, dicts: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """`typed` for an attribute of store records, which are canonical strings already, or JSON
    numbers for the columns parsed as numbers (`recsys.store.materialize`; strings there still parse,
    more slowly): the absent ones read as '' (text) or NaN (number) in the same C pass that gathers
    the values. Times are stored as the unix seconds that materialize parsed: numbers here."""
    values = np.array(list(map(dict.get, dicts, repeat(name), repeat(_MISSING[kind]))), dtype=object)
    if kind in ("number", "time"):
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):  # something else wrote a non-number: pandas coerces it to NaN
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
    """What to fetch for `rows` in one round trip: each user's record and each row's item record,
    whole: every counter an item statistic may need, whatever user attribute or context selects it,
    comes with it."""
    n = len(rows)
    context = {c: typed(plan.kind(c), rows.context.get(c, np.full(n, None, dtype=object)))
               for c in plan.context_columns}
    return Read(keys=keys.users(rows.user_ids) + keys.items(rows.item_ids), users=len(rows.user_ids),
                context=context, counters=counters)


def _counts(dicts: Sequence[dict[str, int]], statistic: str, sub: str, window: list[int]) -> np.ndarray:
    """(2, len(dicts)): count and positives of one (sub-key, window) in each counter dict, summed
    over the window's buckets (absent = 0)."""
    out = np.zeros((2, len(dicts)))
    for k, kind in enumerate(("c", "p")):
        for b in window:
            name = counter_field(statistic, sub, kind, None if b < 0 else b)
            out[k] += np.fromiter(map(dict.get, dicts, repeat(name), repeat(0)), np.float64,
                                  count=len(dicts))
    return out


def _one_counts(counters: dict[str, int], statistic: str, sub: str, window: list[int]) -> tuple[int, int]:
    """`_counts` of one record (a user's, for one of its sub-keys): plain dict lookups, since arrays
    built per (sub-key, window) cost more than the lookups (a ranking request has one per category
    among its candidates)."""
    return tuple(sum(counters.get(counter_field(statistic, sub, kind, None if b < 0 else b), 0)  # type: ignore[return-value]
                     for b in window) for kind in ("c", "p"))


def assemble(plan: OnlinePlan, rows: Rows, read: Read, records: Sequence[Record | None]) -> dict[str, np.ndarray]:
    """The raw columns of `rows` from the store's reply to `read` (see the module docstring)."""
    n = len(rows)
    users = [r or _EMPTY for r in records[:read.users]]
    items = [r or _EMPTY for r in records[read.users:]]
    item_attrs = list(map(itemgetter("a"), items))
    cols: dict[str, np.ndarray] = {
        plan.user_key: rows.user_ids[rows.row_user],
        plan.item_key: rows.item_ids,
        plan.timestamp: rows.timestamp,
        **{c: _stored(plan.kind(c), item_attrs, c) for c in plan.item_columns},
    }
    user_attrs = [u["a"] for u in users]
    for c in plan.user_columns:  # one value per distinct user, then spread over its rows
        cols[c] = _stored(plan.kind(c), user_attrs, c)[rows.row_user]
    cols.update(read.context)
    if not read.counters:
        return cols
    item_counters = list(map(itemgetter("c"), items))
    for s in plan.statistics:
        window = s.buckets(rows.timestamp)
        sub = _sub_array(s.sub_columns, cols)
        values = np.empty((2, n))
        if s.entity == "user":
            # A user's counters: each distinct (user, sub-key, window) summed once, spread to its rows.
            first, combo = _distinct(rows.row_user, sub, window[:, 0])
            per = np.array([_one_counts(users[rows.row_user[r]]["c"], s.name, "" if sub is None else sub[r],
                                        window[r].tolist()) for r in first.tolist()], dtype=np.float64)
            values = per.T[:, combo]
        else:
            # An item's counters, per distinct (sub-key, window) — one for a ranking request, whose
            # user and context are shared — over all the rows that have it, vectorized.
            first, combo = _distinct(sub, window[:, 0])
            for j, r in enumerate(first.tolist()):
                at = slice(None) if len(first) == 1 else np.flatnonzero(combo == j)
                dicts = item_counters if len(first) == 1 else [item_counters[i] for i in at.tolist()]  # type: ignore[union-attr]
                values[:, at] = _counts(dicts, s.name, "" if sub is None else sub[r], window[r].tolist())
        cols[s.count_column], cols[s.pos_column] = values[0], values[1]
    return cols


@dataclass
class CounterUpdates:
    """What events add to the store (`OnlineStore.increment`'s arguments)."""

    keys: list[str]
    amounts: list[dict[str, int]]  # per key: counter field → amount
    expired_before: dict[str, int]  # windowed statistic's field prefix → its first live bucket


def counter_updates(plan: OnlinePlan, keys: KeySpace, columns: Mapping[str, np.ndarray], counts: np.ndarray,
                    positives: np.ndarray) -> CounterUpdates:
    """What events (rows with assembled attributes) add: per statistic, count += counts and positives
    += positives on the entity record's (sub-key, bucket) field, in the bucket of the row's timestamp;
    duplicates summed, zeros dropped, keys in order of first appearance. An impression is counts 1
    and positives its label (0 while the label is pending); a late label is counts 0 and positives
    its label, on its impression's row (so in its impression's bucket). Summed by factorize +
    bincount: a pandas groupby over the same few hundred rows costs ~10x more, and events run on the
    service's event loop beside ranking. The buckets that left the window of the earliest row are
    dropped as the counters are written."""
    n = len(counts)
    if n == 0 or not plan.statistics:
        return CounterUpdates([], [], {})
    key_parts, field_parts, amount_parts = [], [], []
    expired_before: dict[str, int] = {}
    for s in plan.statistics:
        entity = columns[plan.user_key] if s.entity == "user" else columns[plan.item_key]
        key = np.array(keys.users(entity) if s.entity == "user" else keys.items(entity), dtype=object)
        sub = _sub_array(s.sub_columns, columns)
        subs = [""] * n if sub is None else sub.tolist()
        # An event lands in the bucket of its own timestamp (the last column of its window).
        window = s.buckets(columns[plan.timestamp])
        if s.window_s is not None:
            expired_before[f"{s.name}:"] = int(window[:, 0].min())
        bucket = window[:, -1].tolist()
        for kind, amount in (("c", counts.astype(np.int64)), ("p", positives.astype(np.int64))):
            key_parts.append(key)
            field_parts.append(np.array(counter_fields(s.name, subs, kind, bucket), dtype=object))
            amount_parts.append(amount)
    key_codes, key_names = pd.factorize(np.concatenate(key_parts))
    field_codes, field_names = pd.factorize(np.concatenate(field_parts))
    pair, first = pd.factorize(key_codes.astype(np.int64) * len(field_names) + field_codes)
    total = np.bincount(pair, weights=np.concatenate(amount_parts), minlength=len(first)).astype(np.int64)
    keep = total != 0
    first, total = first[keep], total[keep]
    key_of, field_of = first // len(field_names), first % len(field_names)
    # Group the (key, field, amount) triples by key: one stable sort, then one dict per key.
    order = np.argsort(key_of, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(key_of[order]) != 0, True])
    fields = np.asarray(field_names, dtype=object)[field_of[order]].tolist()
    amounts = total[order].tolist()
    per_key = [dict(zip(fields[a:b], amounts[a:b], strict=True)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return CounterUpdates(np.asarray(key_names, dtype=object)[key_of[order][bounds[:-1]]].tolist(), per_key,
                          expired_before)
