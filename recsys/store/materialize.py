"""Materialization: the latest user and item rows and the impression statistics → the online store.

One record per user and per item under the artifact's versioned keys (`recsys.store.keys`):
- attributes: the raw columns the spec reads from the users / items tables, written as the
  canonical strings of `as_str` (missing values are left out; the columns the service parses as
  numbers, as the same digits unquoted: JSON numbers), which the service parses back to the very
  values the offline pipeline saw;
- counters: for every statistic, the count and positives of the events strictly before `as_of`
  (all events when omitted), in the record of the key's entity, named by `counter_field`; a windowed
  statistic gets one pair per time bucket that an impression at `as_of` can still see.

Beside them, the popularity ranking (a sorted set, `KeySpace.popular`): every item with an impression
before `as_of`, scored by its positive events. The service ranks its top items when a request brings
no candidates, and POST /v1/events keeps adding to it.

The records are built as JSON by arrow kernels over integer key codes (no dict or Python call per
record), and the users' records are written while the items' are computed. They are written in
pipelined chunks of `CHUNK`, `IN_FLIGHT` chunks at a time, ordered by cluster slot (`_write_order`:
a cluster merges one slot's records in one call, and a chunk spans every node), each record
atomically. A re-run against a live service MERGES by default: attributes are
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
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.features.raw import RawData, column_values, entity_table, load_raw
from recsys.features.statistics import key_codes, radix_order, sub_key, totals_by_code
from recsys.features.transforms import as_dictionary, as_float, as_str
from recsys.online.columns import counter_fields
from recsys.online.plan import OnlinePlan
from recsys.spec import FeatureSpec, Table
from recsys.store.base import OnlineStore
from recsys.store.keys import SLOTS, KeySpace, hash_slots

__all__ = ["EntityRecords", "Batches", "Popularity", "collect_records", "entity_records", "write_batches",
           "materialize"]

CHUNK = 2000  # records per pipelined batch: amortizes the round trip without stalling Redis
IN_FLIGHT = 4  # batches written concurrently (a cluster's nodes work in parallel)
KINDS: tuple[Table, Table] = ("users", "items")
T = TypeVar("T")
_STRIDE = 128  # `_write_order`: a chunk's slots lie 128 apart


@dataclass
class EntityRecords:
    """The records of every user (or item): attributes and counters, each one JSON object per entity
    (built column-wise by arrow kernels, never a dict per record)."""

    kind: str  # "users" | "items"
    ids: np.ndarray  # (m,) distinct entity ids (canonical str)
    attributes: pa.Array  # (m,) large_string: {"column": "canonical string", ...}, missing values left out
    counters: pa.Array  # (m,) large_string: {"counter field": int, ...}

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, keys: KeySpace) -> "Batches":
        """The records under their keys, in `_write_order`, encoded as the store takes them."""
        all_keys = np.array((keys.users if self.kind == "users" else keys.items)(self.ids.tolist()), dtype=object)
        order = _write_order(all_keys)
        return Batches(all_keys[order], self.attributes.take(order).cast(pa.large_binary()),
                       self.counters.take(order).cast(pa.large_binary()))


@dataclass
class Batches:
    """Records ready to write: keys, attributes and counters (JSON objects, UTF-8)."""

    keys: np.ndarray
    attributes: pa.Array
    counters: pa.Array

    def __len__(self) -> int:
        return len(self.keys)

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[list[str], list[bytes], list[bytes]]]:
        for a in range(0, len(self.keys), size):
            yield (self.keys[a:a + size].tolist(), self.attributes.slice(a, size).to_pylist(),
                   self.counters.slice(a, size).to_pylist())


def _write_order(keys: np.ndarray) -> np.ndarray:
    """Records of one cluster slot next to each other (a cluster merges a slot's records in one call),
    the slots strided over the slot range (slot 0, 128, 256, ..., then 1, 129, ...) so that a chunk
    spreads over every node of the cluster and the nodes write in parallel."""
    slots = hash_slots(keys.tolist())
    return np.argsort((slots % _STRIDE) * SLOTS + slots, kind="stable")


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


def _json_strings(values: np.ndarray | list[str]) -> pa.Array:
    """Each string as a JSON string literal: quoted, with `\\`, `"` and control characters escaped."""
    out = pc.replace_substring(pa.array(values, type=pa.large_string()), "\\", "\\\\")
    out = pc.replace_substring(out, '"', '\\"')
    if pc.any(pc.match_substring_regex(out, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            out = pc.replace_substring(out, chr(code), f"\\u{code:04x}")
    return _concat('"', out, '"')


def _concat(*parts: str | pa.Array | pa.Scalar, separator: str = "", skip_nulls: bool = False) -> pa.Array:
    """Element-wise concatenation of large_string arrays and constants (a null part: a null result,
    or left out with `skip_nulls`)."""
    big = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*big, pa.scalar(separator, pa.large_string()),
                                       null_handling="skip" if skip_nulls else "emit_null")


def _members(names: pa.Array, values: pa.Array) -> pa.Array:
    """`"name":value` of each pair (names already JSON strings, values JSON values)."""
    return _concat(names, values, separator=":")


# A canonical string that is also a JSON number ("12.5", "-3", "1e+20"; not "inf", "012" or "0x1").
JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


def _table_attributes(frame: pd.DataFrame, columns: list[str], numbers: set[str]) -> pa.Array:
    """The attributes of each row of an `entity_table` as one JSON object. The values of `numbers`
    (the columns the service parses as floats, times included: the unix seconds that the offline
    loader parses) are written as JSON numbers, the same digits unquoted, so the service's parse
    gives floats directly (~70 us less per 200 values than float() of strings); a value that is not
    a JSON number stays a string, which the service parses as before."""
    members = []
    for c in columns:  # each distinct value escaped once, then taken by code; missing ('') left out
        codes, uniques = as_dictionary(frame[c].to_numpy())
        values = _json_strings(uniques)
        if c in numbers:  # a JSON number that parses to a finite double ('1e400' would fail the parse)
            bare = pa.array(uniques, pa.large_string())
            number = pc.and_(pc.match_substring_regex(bare, JSON_NUMBER), pa.array(np.isfinite(as_float(uniques))))
            values = pc.if_else(number, bare, values)
        named = _members(pa.repeat(_json_strings([c])[0], len(uniques)), values)
        members.append(pc.if_else(pa.array(uniques != ""), named, None).take(codes))
    return _objects(members, len(frame))


def _objects(members: list[pa.Array], n: int) -> pa.Array:
    """One JSON object per row from columns of members (null: left out)."""
    body = _concat(*members, separator=",", skip_nulls=True) if members else \
        pa.repeat(pa.scalar("", pa.large_string()), n)
    return _concat("{", body, "}")


def _counter_members(name: str, totals: pd.DataFrame, subs: list[np.ndarray]) -> list[pa.Array]:
    """The count and positives members of each row of a statistic's totals (`totals_by_code`); each
    field name is formatted (`counter_fields`) and escaped once per distinct (sub-key, bucket)."""
    parts = [totals[f"key{i}"].to_numpy() for i in range(1, len(subs) + 1)]
    if "bucket" in totals:
        parts.append(totals["bucket"].to_numpy())
    field = key_codes(parts) if parts else np.zeros(len(totals), dtype=np.int64)
    _, first = np.unique(field, return_index=True)
    sub = sub_key([uniques[totals[f"key{i}"].to_numpy()[first]] for i, uniques in enumerate(subs, 1)]).tolist() \
        if subs else [""] * len(first)
    buckets = totals["bucket"].to_numpy()[first].astype(np.int64).tolist() if "bucket" in totals else None
    return [_members(_json_strings(counter_fields(name, sub, kind, buckets)).take(field),
                     pc.cast(pa.array(totals[column].to_numpy().astype(np.int64)), pa.large_string()))
            for kind, column in (("c", "count"), ("p", "positives"))]


def statistic_columns(spec: FeatureSpec) -> list[str]:
    """The columns of the impressions (joined with their users and items) that the statistics' keys read."""
    return list(dict.fromkeys(c for name in spec.statistics for c in spec.statistic_key_columns(name)))


def collect_records(spec: FeatureSpec, raw_dir: str | Path,
                    as_of: int | None = None) -> tuple[dict[str, EntityRecords], Popularity]:
    """Read the raw tables and compute the statistics' totals and the popularity ranking: the CPU
    part, no store involved."""
    tables, raw = read_raw(spec, raw_dir)
    return ({kind: entity_records(spec, raw, tables[kind], kind, as_of) for kind in KINDS},
            Popularity.of(raw.frame, spec, as_of))


def read_raw(spec: FeatureSpec, raw_dir: str | Path) -> tuple[dict[Table, pd.DataFrame], RawData]:
    """The users and items tables (`entity_table`), each read once, and the impressions joined with
    the statistics' key columns from them (`load_raw`)."""
    tables = {kind: entity_table(spec, raw_dir, kind, spec.source_columns(kind)) for kind in KINDS}
    return tables, load_raw(spec, raw_dir, statistic_columns(spec), tables)


def entity_records(spec: FeatureSpec, raw: RawData, table: pd.DataFrame, kind: Table,
                   as_of: int | None = None) -> EntityRecords:
    """The records of the users or the items: the attributes of the table (`read_raw`'s) and the
    counters of the statistics keyed by that entity. Keys are integer codes until the JSON of the
    records is built."""
    key, frame = spec.user_key if kind == "users" else spec.item_key, raw.frame
    ts, label = frame[spec.timestamp].to_numpy(), frame[spec.label].to_numpy()
    plan = OnlinePlan.from_spec(spec)
    numbers = {c for c in spec.source_columns(kind) if plan.kind(c) in ("number", "time")}
    ids, attributes = table.index.to_numpy(dtype=object), _table_attributes(table, spec.source_columns(kind), numbers)
    entity, entities = as_dictionary(column_values(frame[key]))
    counted = np.zeros(len(entities), dtype=bool)
    rows, members = [], []
    for name, stat in spec.statistics.items():
        cols = spec.statistic_key_columns(name)
        if cols[0] != key:
            continue
        dictionaries = [as_dictionary(column_values(frame[c])) for c in cols[1:]]
        totals = totals_by_code([entity, *(codes for codes, _ in dictionaries)], ts, label, as_of,
                                stat.window_s, stat.bucket_s)
        counted[totals["key0"].to_numpy()] = True
        for m in _counter_members(name, totals, [uniques for _, uniques in dictionaries]):
            rows.append(totals["key0"].to_numpy())
            members.append(m)
    # every entity of the table gets a record, and so does every entity counted without a row there
    where = raw.entity_rows[key].copy()  # the key's categories are `entities`, in order
    extra = np.flatnonzero((where < 0) & counted)
    where[extra] = len(ids) + np.arange(len(extra))
    ids = np.concatenate([ids, entities[extra]])
    attributes = pa.concat_arrays([attributes, pa.repeat(pa.scalar("{}", pa.large_string()), len(extra))])
    return EntityRecords(kind, ids, attributes, _grouped(where, rows, members, len(ids)))


def _grouped(where: np.ndarray, rows: list[np.ndarray], members: list[pa.Array], n: int) -> pa.Array:
    """The members of each of n entities joined into one JSON object (entity = where[rows])."""
    entity = where[np.concatenate(rows)] if rows else np.zeros(0, dtype=np.int64)
    order = radix_order(entity)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(entity, minlength=n), out=offsets[1:])
    values = pa.concat_arrays(members).take(order) if members else pa.array([], pa.large_string())
    body = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values),
                          pa.scalar(",", pa.large_string()))
    return _concat("{", body, "}")


async def write_batches(store: OnlineStore, batches: Batches, keep_counters: bool = True,
                        ttl_s: int | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Write records in pipelined chunks, `IN_FLIGHT` at a time. `keep_counters`: merge with what
    events counted since an earlier run (attributes replaced, stored counters kept); else replace."""
    pending: set[asyncio.Task[int]] = set()
    for chunk in batches.chunks():
        if len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if progress:
                    progress(t.result())
        pending.add(asyncio.ensure_future(store.write_json(*chunk, keep_counters, ttl_s)))
    for n in await asyncio.gather(*pending):
        if progress:
            progress(n)


async def materialize(spec: FeatureSpec, raw_dir: str | Path, store: OnlineStore, keys: KeySpace,
                      as_of: int | None = None, ttl_s: int | None = None, progress: bool = False,
                      log: Callable[[str], None] = print, keep_counters: bool = True) -> dict[str, int]:
    """The users' and the items' records (`entity_records`, in a worker thread: it is pandas and
    arrow work), each kind written while the next is computed, the popularity ranking beside the
    items, and last the meta record that marks the keys complete; with a progress bar (`progress`;
    shown only on a terminal)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    counting = 0.0  # seconds of reading and counting (the writes overlap them)

    async def work(fn: Callable[..., T], *args: Any) -> T:
        nonlocal counting
        t = time.perf_counter()
        out = await asyncio.to_thread(fn, *args)
        counting += time.perf_counter() - t
        return out

    counts: dict[str, int] = {}
    writing: asyncio.Future[None] | None = None
    tables, raw = await work(read_raw, spec, raw_dir)
    with tqdm(total=0, desc="materialize", unit="rec", disable=not progress or not sys.stderr.isatty(),
              leave=False) as bar:
        for kind in KINDS:
            batches = await work(lambda k: entity_records(spec, raw, tables[k], k, as_of).batches(keys), kind)
            counts[kind] = len(batches)
            bar.total += len(batches)
            bar.refresh()
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(write_batches(store, batches, keep_counters, ttl_s, bar.update))
        popular = await work(Popularity.of, raw.frame, spec, as_of)
        await asyncio.gather(store.write_ranking(keys.popular, popular.items.tolist(), popular.positives.tolist(),
                                                 ttl_s), *([writing] if writing is not None else []))
    meta = {"feature_version": keys.feature_version, "as_of": "" if as_of is None else str(as_of),
            "materialized_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counters": "kept" if keep_counters else "replaced",
            **{kind: str(n) for kind, n in counts.items()}}
    await store.write([keys.meta], [meta], [{}], False, ttl_s)
    seconds = time.perf_counter() - t0
    log(f"materialized {counts['users']:,} users + {counts['items']:,} items into {store.name} "
        f"({keys.base}*) in {seconds:.1f}s, {sum(counts.values()) / max(seconds, 1e-9):,.0f} records/s "
        f"({counting:.1f}s of reading and counting, the writes of one kind overlapping the next's); counters "
        + ("merged: those already stored (events since an earlier run) were kept" if keep_counters
           else "replaced by the log's")
        + (f"; statistics as of {as_of}" if as_of is not None else ""))
    return counts
