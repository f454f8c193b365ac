"""Materialization: the latest user and item rows and the impression statistics → the online store.

One HASH per user and per item under the artifact's versioned keys (`recsys.store.keys`):
- attributes: the raw columns the spec reads from the users / items tables, written as the
  canonical strings of `as_str` (missing values are left out), which the service parses back to the
  very values the offline pipeline saw;
- counters: for every statistic, the count and positives of the events strictly before `as_of`
  (all events when omitted), in the record of the key's entity, named by `counter_field`; a windowed
  statistic gets one pair per time bucket that an impression at `as_of` can still see.

Beside them, the popularity ranking (a sorted set, `KeySpace.popular`): every item with an impression
before `as_of`, scored by its positive events. The service ranks its top items when a request brings
no candidates, and POST /v1/events keeps adding to it.

Every record is replaced whole (DEL + HSET in one transaction per chunk), so a second run with the
same inputs changes nothing, and readers never see half a record. The meta record is written last;
the service's /readyz and /admin/reload look for it before trusting the keys. Events posted after
`as_of` (POST /v1/events) then keep the counters current; re-running materialize resets them to
what the impression log says.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

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

CHUNK = 1000  # records per transaction: big enough to amortize the round trip, small enough to not stall Redis


@dataclass
class EntityRecords:
    """Long format (entity, field, value), sorted by entity: records are built chunk by chunk."""

    kind: str  # "users" | "items"
    ids: np.ndarray  # (m,) distinct entity ids
    starts: np.ndarray  # (m + 1,) row ranges of each entity in fields/values
    fields: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, keys: KeySpace, size: int = CHUNK) -> Iterator[tuple[list[str], list[dict[str, str]]]]:
        key_of = keys.users if self.kind == "users" else keys.items
        for a in range(0, len(self.ids), size):
            b = min(a + size, len(self.ids))
            records = [dict(zip(self.fields[s:e].tolist(), self.values[s:e].tolist(), strict=True))
                       for s, e in zip(self.starts[a:b], self.starts[a + 1:b + 1], strict=True)]
            yield key_of(self.ids[a:b].tolist()), records


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


def _long(ids: np.ndarray, fields: list[np.ndarray], values: list[np.ndarray], kind: str) -> EntityRecords:
    f = np.concatenate(fields) if fields else np.empty(0, dtype=object)
    v = np.concatenate(values) if values else np.empty(0, dtype=object)
    codes, uniques = pd.factorize(ids)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return EntityRecords(kind, np.asarray(uniques, dtype=object), starts, f[order], v[order])


def _attributes(spec: FeatureSpec, raw_dir: str | Path, table: str, key: str,
                columns: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
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
    return (np.concatenate(out_ids) if out_ids else np.empty(0, dtype=object)), fields, values


def collect_records(spec: FeatureSpec, raw_dir: str | Path,
                    as_of: int | None = None) -> tuple[dict[str, EntityRecords], Popularity]:
    """Read the raw tables and compute the statistics' totals and the popularity ranking: the CPU
    part, no store involved."""
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {}
    for kind, key in (("users", spec.user_key), ("items", spec.item_key)):
        ids, fields, values = _attributes(spec, raw_dir, kind, key, spec.source_columns(kind))  # type: ignore[arg-type]
        # One id entry per (entity, field) row; users without attributes still get their counters below.
        parts[kind] = ([ids], fields, values)
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
            parts[kind][0].append(entity)
            parts[kind][1].append(np.array(counter_fields(name, subs, field_kind, buckets), dtype=object))
            parts[kind][2].append(totals[column].to_numpy().astype(np.int64).astype(str).astype(object))
    records = {kind: _long(np.concatenate(ids), fields, values, kind) for kind, (ids, fields, values) in parts.items()}
    return records, Popularity.of(frame, spec, as_of)


async def write_records(store: OnlineStore, keys: KeySpace, records: dict[str, EntityRecords],
                        as_of: int | None = None, ttl_s: int | None = None,
                        progress: Callable[[int], None] | None = None, *,
                        popular: Popularity) -> dict[str, int]:
    """Replace every record in chunks and the popularity ranking, then write the meta record that
    marks the keys complete."""
    for recs in records.values():
        for chunk_keys, chunk in recs.chunks(keys):
            await store.write(chunk_keys, chunk, ttl_s)
            if progress:
                progress(len(chunk_keys))
    await store.write_ranking(keys.popular, popular.items.tolist(), popular.positives.tolist(), ttl_s)
    counts = {kind: len(r) for kind, r in records.items()}
    meta = {"feature_version": keys.feature_version, "as_of": "" if as_of is None else str(as_of),
            "materialized_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{kind: str(n) for kind, n in counts.items()}}
    await store.write([keys.meta], [meta], ttl_s)
    return counts


async def materialize(spec: FeatureSpec, raw_dir: str | Path, store: OnlineStore, keys: KeySpace,
                      as_of: int | None = None, ttl_s: int | None = None, progress: bool = False,
                      log: Callable[[str], None] = print) -> dict[str, int]:
    """collect_records (in a worker thread: it is pandas work) + write_records, with a progress bar."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    records, popular = await asyncio.to_thread(collect_records, spec, raw_dir, as_of)
    total = sum(len(r) for r in records.values())
    with tqdm(total=total, desc="materialize", unit="rec", disable=not progress, leave=False) as bar:
        counts = await write_records(store, keys, records, as_of, ttl_s, bar.update, popular=popular)
    seconds = time.perf_counter() - t0
    log(f"materialized {counts.get('users', 0):,} users + {counts.get('items', 0):,} items into {store.name} "
        f"({keys.base}*) in {seconds:.1f}s, {total / max(seconds, 1e-9):,.0f} records/s"
        + (f", statistics as of {as_of}" if as_of is not None else ""))
    return counts
