"""Materialization: the latest user and item rows and the impression statistics → the online store.

One record per user and per item under the artifact's versioned keys (`recsys.store.keys`):
- attributes: the raw columns the spec reads from the users / items tables, written as the
  canonical strings of `as_str` (missing values are left out), which the service parses back to the
  very values the offline pipeline saw;
- counters: for every statistic, the count and positives of the events strictly before `as_of`
  (all events when omitted), in the record of the key's entity, named by `counter_field`; a windowed
  statistic gets one pair per time bucket that an impression at `as_of` can still see.

Beside them, the popularity ranking (a sorted set, `KeySpace.popular`): every item with an impression
before `as_of`, scored by its positive events. The service ranks its top items when a request brings
no candidates, and POST /v1/events keeps adding to it.

Records are written in pipelined chunks of `CHUNK`, `IN_FLIGHT` chunks at a time (per node on a
cluster), each record atomically. A re-run against a live service MERGES by default: attributes are
replaced, and the counters already stored (what POST /v1/events counted since the last run) are kept,
the log's totals only filling the counters that are absent; `keep_counters=False` (`recsys
materialize --counters replace`) resets them to what the impression log says. The meta record is
written last; the service's /readyz and /admin/reload look for it before trusting the keys.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from recsys.features.raw import load_raw
from recsys.features.statistics import sub_key, totals_before
from recsys.features.times import to_seconds
from recsys.features.transforms import as_str
from recsys.io import read_table
from recsys.online.columns import counter_fields
from recsys.spec import FeatureSpec
from recsys.store.base import OnlineStore
from recsys.store.keys import KeySpace

__all__ = ["EntityRecords", "Popularity", "collect_records", "write_records", "materialize"]

CHUNK = 2000  # records per pipelined batch: amortizes the round trip without stalling Redis
IN_FLIGHT = 4  # batches written concurrently (a cluster's nodes work in parallel)


@dataclass
class _Long:
    """(entity, field, value) rows grouped by entity: entity i's rows are starts[i]:starts[i + 1]."""

    starts: np.ndarray
    fields: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray, n: int, fields: list[np.ndarray], values: list[np.ndarray],
           dtype: type) -> "_Long":
        f = np.concatenate(fields) if fields else np.empty(0, dtype=object)
        v = np.concatenate(values) if values else np.empty(0, dtype=dtype)
        order = np.argsort(codes, kind="stable")
        return cls(np.searchsorted(codes[order], np.arange(n + 1)), f[order], v[order])

    def dicts(self, a: int, b: int) -> list[dict[str, Any]]:
        lo, hi = int(self.starts[a]), int(self.starts[b])
        fields, values = self.fields[lo:hi].tolist(), self.values[lo:hi].tolist()
        cut = (self.starts[a:b + 1] - lo).tolist()
        return [dict(zip(fields[s:e], values[s:e], strict=True)) for s, e in zip(cut[:-1], cut[1:], strict=True)]


@dataclass
class EntityRecords:
    """The records of every user (or item): attributes and counters, built chunk by chunk."""

    kind: str  # "users" | "items"
    ids: np.ndarray  # (m,) distinct entity ids
    attributes: _Long  # canonical strings
    counters: _Long  # int64

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, keys: KeySpace, size: int = CHUNK) -> Iterator[tuple[list[str], list[dict[str, Any]],
                                                                         list[dict[str, Any]]]]:
        key_of = keys.users if self.kind == "users" else keys.items
        for a in range(0, len(self.ids), size):
            b = min(a + size, len(self.ids))
            yield key_of(self.ids[a:b].tolist()), self.attributes.dicts(a, b), self.counters.dicts(a, b)


@dataclass
class Popularity:
    """Items with an impression before `as_of`, and their positive events (the ranking's scores)."""

    items: np.ndarray  # canonical str ids
    positives: np.ndarray  # float64

    @classmethod
    def of(cls, frame: pd.DataFrame, spec: FeatureSpec, as_of: int | None) -> "Popularity":
        seen = frame[[spec.item_key, spec.label]]
        if as_of is not None:
            seen = seen[frame[spec.timestamp].to_numpy() < as_of]
        positives = seen.groupby(spec.item_key, observed=True, sort=False)[spec.label].sum()
        items = as_str(positives.index.to_numpy())
        known = items != ""  # a missing item id is no candidate
        return cls(items[known], positives.to_numpy(dtype=np.float64)[known])


def _attributes(spec: FeatureSpec, raw_dir: str | Path, table: str, key: str,
                columns: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(every entity id, and per column the ids, field names and values of its non-missing cells)."""
    frame = read_table(raw_dir, spec.tables[table], [key, *columns])  # type: ignore[index]
    frame = frame.assign(**{key: as_str(frame[key].to_numpy())}).drop_duplicates(key, keep="last")
    # Times as the unix seconds that the offline loader parses (the service reads them as numbers).
    frame = frame.assign(**{c: to_seconds(frame[c].array, spec.tables[table], c)  # type: ignore[index]
                            for c in spec.time_columns(table) if c in columns})  # type: ignore[arg-type]
    ids = frame[key].to_numpy(dtype=object)
    out_ids, fields, values = [], [], []
    for c in columns:
        vals = as_str(frame[c].to_numpy())
        keep = vals != ""
        out_ids.append(ids[keep])
        fields.append(np.full(int(keep.sum()), c, dtype=object))
        values.append(vals[keep])
    return ids, out_ids, fields, values


def collect_records(spec: FeatureSpec, raw_dir: str | Path,
                    as_of: int | None = None) -> tuple[dict[str, EntityRecords], Popularity]:
    """Read the raw tables and compute the statistics' totals and the popularity ranking: the CPU
    part, no store involved."""
    attrs: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {}
    counts: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {}
    for kind, key in (("users", spec.user_key), ("items", spec.item_key)):
        ids, a_ids, a_fields, a_values = _attributes(spec, raw_dir, kind, key, spec.source_columns(kind))  # type: ignore[arg-type]
        attrs[kind] = (a_ids, a_fields, a_values)
        counts[kind] = ([ids], [], [])  # every listed entity gets a record, with or without events
    frame = load_raw(spec, raw_dir).frame
    ts, label = frame[spec.timestamp].to_numpy(), frame[spec.label].to_numpy()
    for name, stat in spec.statistics.items():
        cols = spec.statistic_key_columns(name)
        totals = totals_before([frame[c].to_numpy() for c in cols], ts, label, as_of, stat.window_s, stat.bucket_s)
        kind = "users" if cols[0] == spec.user_key else "items"
        entity = totals["key0"].to_numpy(dtype=object)
        subs = sub_key([totals[f"key{i}"].to_numpy() for i in range(1, len(cols))]).tolist() \
            if len(cols) > 1 else [""] * len(totals)
        buckets = totals["bucket"].astype(np.int64).tolist() if "bucket" in totals else None
        for field_kind, column in (("c", "count"), ("p", "positives")):
            counts[kind][0].append(entity)
            counts[kind][1].append(np.array(counter_fields(name, subs, field_kind, buckets), dtype=object))
            counts[kind][2].append(totals[column].to_numpy().astype(np.int64))
    records = {}
    for kind in ("users", "items"):
        attr_ids, counter_ids = np.concatenate(attrs[kind][0] or [np.empty(0, object)]), np.concatenate(counts[kind][0])
        codes, uniques = pd.factorize(np.concatenate([counter_ids, attr_ids]))
        n = len(uniques)
        # the first id array of `counts` lists every entity without values: no field rows for it
        c_codes = codes[len(counts[kind][0][0]):len(counter_ids)]
        records[kind] = EntityRecords(
            kind, np.asarray(uniques, dtype=object),
            _Long.of(codes[len(counter_ids):], n, attrs[kind][1], attrs[kind][2], object),
            _Long.of(c_codes, n, counts[kind][1], counts[kind][2], np.int64))
    return records, Popularity.of(frame, spec, as_of)


async def write_records(store: OnlineStore, keys: KeySpace, records: dict[str, EntityRecords],
                        as_of: int | None = None, ttl_s: int | None = None,
                        progress: Callable[[int], None] | None = None, *, popular: Popularity,
                        keep_counters: bool = True) -> dict[str, int]:
    """Write every record in pipelined chunks (a few in flight) and the popularity ranking, then the
    meta record that marks the keys complete. `keep_counters`: merge with what events counted
    since an earlier run (attributes replaced, stored counters kept); else replace them."""
    pending: set[asyncio.Task[int]] = set()
    for recs in records.values():
        for chunk_keys, attributes, counters in recs.chunks(keys):
            if len(pending) >= IN_FLIGHT:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    n = t.result()
                    if progress:
                        progress(n)
            pending.add(asyncio.ensure_future(store.write(chunk_keys, attributes, counters, keep_counters, ttl_s)))
    for n in await asyncio.gather(*pending):
        if progress:
            progress(n)
    await store.write_ranking(keys.popular, popular.items.tolist(), popular.positives.tolist(), ttl_s)
    counts = {kind: len(r) for kind, r in records.items()}
    meta = {"feature_version": keys.feature_version, "as_of": "" if as_of is None else str(as_of),
            "materialized_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counters": "kept" if keep_counters else "replaced",
            **{kind: str(n) for kind, n in counts.items()}}
    await store.write([keys.meta], [meta], [{}], False, ttl_s)
    return counts


async def materialize(spec: FeatureSpec, raw_dir: str | Path, store: OnlineStore, keys: KeySpace,
                      as_of: int | None = None, ttl_s: int | None = None, progress: bool = False,
                      log: Callable[[str], None] = print, keep_counters: bool = True) -> dict[str, int]:
    """collect_records (in a worker thread: it is pandas work) + write_records, with a progress bar
    (`progress`; shown only on a terminal)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    records, popular = await asyncio.to_thread(collect_records, spec, raw_dir, as_of)
    t1 = time.perf_counter()
    total = sum(len(r) for r in records.values())
    with tqdm(total=total, desc="materialize", unit="rec", disable=not progress or not sys.stderr.isatty(),
              leave=False) as bar:
        counts = await write_records(store, keys, records, as_of, ttl_s, bar.update, popular=popular,
                                     keep_counters=keep_counters)
    t2 = time.perf_counter()
    log(f"materialized {counts.get('users', 0):,} users + {counts.get('items', 0):,} items into {store.name} "
        f"({keys.base}*) in {t2 - t0:.1f}s ({t1 - t0:.1f}s reading and counting, writes at "
        f"{total / max(t2 - t1, 1e-9):,.0f} records/s); counters "
        + ("merged: those already stored (events since an earlier run) were kept" if keep_counters
           else "replaced by the log's")
        + (f"; statistics as of {as_of}" if as_of is not None else ""))
    return counts
