"""Events into the online statistics: idempotent, for known items only, with labels that arrive late.

    impressions: (event id, user, item, timestamp, context, label or PENDING)
        1. one read (`OnlineStore.read`, one MGET): the users' and the items' records, whose
           attributes key the statistics and whose presence says an item outside the served
           model's item vocabulary is known to the store
        2. an item the model's vocabulary and the store both lack is `unknown`: it creates no key and
           never enters the popularity ranking (a typo or a made-up id must not become a candidate)
        3. claim each known event's id for `retention_s` (`OnlineStore.claim`): an id claimed before
           is a `duplicate` and changes nothing, so a retried or replayed batch is counted once
        4. impressions whose label is PENDING are kept under their id for `label_window_s`, a record
           whose attributes are user, item, timestamp and context (JSON), for the label to find;
           then the popularity ranking (positive labels), then the counters: count += 1, positives
           += label (0 while pending), in the bucket of the impression's timestamp
    labels: (impression id, label), later
        1. read the kept impressions; an id not kept (never posted, posted with its label, expired)
           is `unknown`
        2. claim the impression's label: a second label for one impression is a `duplicate`
        3. one read of the impressions' user and item records, then positives += label on the
           impression's keys, in the bucket of the impression's timestamp (count unchanged: the
           impression counted it; the expired buckets dropped are those before the impression's
           window), and the ranking

Each step is one store round trip for a whole chunk of `chunk` events; between chunks the event loop
runs other requests. If a write fails after the claim, the claims are released before the error is
raised (the client's retry is then applied, not reported as a duplicate). A write whose reply is
lost after Redis applied it is the one case a retry counts twice.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np
import pandas as pd

from recsys.errors import StoreError
from recsys.features.transforms import Vocabulary
from recsys.online.columns import Rows, assemble, counter_updates, plan_read
from recsys.online.plan import OnlinePlan
from recsys.store.base import OnlineStore
from recsys.store.keys import KeySpace

__all__ = ["PENDING", "EventPolicy", "Applied", "EventWriter"]

PENDING = -1  # the label of an impression whose label is posted later


@dataclass(frozen=True)
class EventPolicy:
    retention_s: int  # how long an applied event id (and an applied label) is remembered
    label_window_s: int  # how long an impression without a label waits for it
    ttl_s: int | None = None  # the expiry events (re)set on the records they count in
    chunk: int = 1000  # events per round trip; the loop serves other requests between chunks


@dataclass
class Applied:
    applied: int = 0
    duplicates: int = 0
    unknown: int = 0
    counters_updated: int = 0

    def add(self, other: "Applied") -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.unknown += other.unknown
        self.counters_updated += other.counters_updated


async def _chunked(n: int, chunk: int, apply: Callable[[slice], Awaitable[Applied]]) -> Applied:
    """`apply` to each chunk of n events in turn, the event loop free for other requests between them."""
    out = Applied()
    for a in range(0, n, chunk):
        if a:
            await asyncio.sleep(0)
        out.add(await apply(slice(a, a + chunk)))
    return out


async def _release(store: OnlineStore, claims: list[str], err: StoreError) -> StoreError:
    """Undo the claims of events that were not applied, so that the client's retry applies them."""
    try:
        await store.write(claims, [{}] * len(claims), [{}] * len(claims))  # an empty record: deleted
    except StoreError:
        return StoreError(f"{err}; and {len(claims)} event claims could not be released: until they expire, "
                          f"a retry of these events reports them as duplicates (check the counters)")
    return err


class EventWriter:
    def __init__(self, plan: OnlinePlan, keys: KeySpace, items: Vocabulary | None) -> None:
        self.plan = plan
        self.keys = keys
        self.items = items  # the served model's item-id vocabulary, if it has one

    def _in_vocabulary(self, item_ids: np.ndarray) -> np.ndarray:
        if self.items is None:
            return np.zeros(len(item_ids), dtype=bool)
        return np.asarray(self.items.encode(item_ids) > 0)

    async def impressions(self, store: OnlineStore, rows: Rows, labels: np.ndarray, event_ids: np.ndarray,
                          policy: EventPolicy) -> Applied:
        """Count impressions (label 0/1, or PENDING when it comes later); see the module docstring."""
        return await _chunked(len(rows), policy.chunk, lambda part: self._impressions(
            store, rows.take(part), labels[part], event_ids[part], policy))

    async def _impressions(self, store: OnlineStore, rows: Rows, labels: np.ndarray, event_ids: np.ndarray,
                           policy: EventPolicy) -> Applied:
        keys = self.keys
        read = plan_read(self.plan, keys, rows, counters=False)
        records = await store.read(read.keys)  # the users' and every row's item record, whole
        stored = np.fromiter(map(bool, records[read.users:]), dtype=bool, count=len(rows))
        idx = np.flatnonzero(self._in_vocabulary(rows.item_ids) | stored)
        claims = keys.events(event_ids[idx])
        first = np.array(await store.claim(claims, policy.retention_s), dtype=bool)
        take = idx[first]
        claimed = [c for c, f in zip(claims, first.tolist(), strict=True) if f]
        if not len(take):
            return Applied(0, len(idx), len(rows) - len(idx))
        cols = {c: v[take] for c, v in assemble(self.plan, rows, read, records).items()}
        label = labels[take]
        try:
            pending = take[label == PENDING]
            if len(pending):
                await store.write(keys.impressions(event_ids[pending]), self._kept(rows, pending),
                                  [{}] * len(pending), ttl_s=policy.label_window_s)
            updated = await self._count(store, cols, np.ones(len(take), dtype=np.int64), np.maximum(label, 0),
                                        policy)
        except StoreError as err:
            raise await _release(store, claimed, err) from None
        return Applied(len(take), len(idx) - len(take), len(rows) - len(idx), updated)

    def _kept(self, rows: Rows, at: np.ndarray) -> list[dict[str, str]]:
        """What a late label needs of its impression: its keys, timestamp and context (JSON values,
        so a number or a boolean comes back as itself)."""
        names = self.plan.context_columns
        values = [rows.context[c][at].tolist() for c in names]
        ctx = [json.dumps(dict(zip(names, v, strict=True))) for v in zip(*values, strict=True)] if names \
            else ["{}"] * len(at)
        users = rows.user_ids[rows.row_user[at]].tolist()
        return [{"user": u, "item": i, "timestamp": str(t), "context": c}
                for u, i, t, c in zip(users, rows.item_ids[at].tolist(), rows.timestamp[at].tolist(), ctx,
                                      strict=True)]

    async def _count(self, store: OnlineStore, cols: dict[str, np.ndarray], counts: np.ndarray,
                     positives: np.ndarray, policy: EventPolicy) -> int:
        clicked = positives > 0
        # The popularity ranking first: if the counters then fail, the claims are released and the
        # retry counts the ranking twice (a default-candidates list), never the statistics (model inputs).
        await store.add_to_ranking(self.keys.popular, cols[self.plan.item_key][clicked].tolist(),
                                   positives[clicked].tolist(), policy.ttl_s)
        await self._seen(store, cols[self.plan.user_key][clicked], cols[self.plan.item_key][clicked], policy)
        updates = counter_updates(self.plan, self.keys, cols, counts, positives)
        await store.increment(updates.keys, updates.amounts, updates.expired_before, policy.ttl_s)
        return len(updates.keys)

    async def _seen(self, store: OnlineStore, users: np.ndarray, items: np.ndarray, policy: EventPolicy) -> None:
        """The positives into their users' seen sets (what retrieval filters out), one ranking
        write per distinct user of the chunk."""
        frame = pd.DataFrame({"u": users, "i": items})
        for user, part in frame.groupby("u", sort=False)["i"]:
            await store.add_to_ranking(self.keys.seen(str(user)), part.tolist(), [1.0] * len(part), policy.ttl_s)

    async def labels(self, store: OnlineStore, impression_ids: np.ndarray, labels: np.ndarray,
                     policy: EventPolicy) -> Applied:
        """Join late labels to their kept impressions; see the module docstring."""
        return await _chunked(len(impression_ids), policy.chunk, lambda part: self._labels(
            store, impression_ids[part], labels[part], policy))

    async def _labels(self, store: OnlineStore, ids: np.ndarray, labels: np.ndarray, policy: EventPolicy) -> Applied:
        keys = self.keys
        kept = await store.read(keys.impressions(ids))
        idx = np.flatnonzero(np.fromiter(map(bool, kept), dtype=bool, count=len(kept)))
        claims = keys.labels(ids[idx])
        first = np.array(await store.claim(claims, policy.retention_s), dtype=bool)
        take = idx[first]
        claimed = [c for c, f in zip(claims, first.tolist(), strict=True) if f]
        result = Applied(len(take), len(idx) - len(take), len(ids) - len(idx))
        positive = take[labels[take] > 0]
        if not len(positive):  # a 0 label changes no counter: the impression counted itself
            return result
        imp = [r["a"] for r in map(kept.__getitem__, positive.tolist()) if r is not None]
        rows = Rows.from_records([r["user"] for r in imp], [r["item"] for r in imp],
                                 [int(r["timestamp"]) for r in imp], [json.loads(r["context"]) for r in imp],
                                 self.plan.context_columns)
        try:
            read = plan_read(self.plan, keys, rows, counters=False)
            cols = assemble(self.plan, rows, read, await store.read(read.keys))
            result.counters_updated = await self._count(store, cols, np.zeros(len(positive), dtype=np.int64),
                                                        labels[positive].astype(np.int64), policy)
        except StoreError as err:
            raise await _release(store, claimed, err) from None
        return result

