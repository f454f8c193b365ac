"""Recommendations from the whole catalog: the retrieval stage in front of the Ranker.

    user features (one store round trip, with the user's seen set beside it)
      → user tower → ANN top-N (`retrieve_n`, RECSYS_RETRIEVE_N)  ∪ the store's popular items
      → minus the items the user engaged with (`exclude_seen`)
      → Ranker.rank (the Wide&Deep score of every candidate) → top-k, each with its source

The seen set is a sorted set per user and feature version (`KeySpace.seen`, in the user record's slot),
member = item id, score = positive events: `materialize_seen` fills it from the log (positives
strictly before `as_of`), POST /v1/events and /v1/labels add each positive (`recsys.online.events`);
a request reads its `seen_limit` most engaged items (the cap on what one request filters); a TTL
bounds its memory.

An artifact without a retrieval part is served as before (popular candidates); `OnlineRetriever`
is built with the Ranker of the same artifact and swapped with it on reload.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.errors import StoreError
from recsys.features.raw import load_raw
from recsys.features.transforms import as_str
from recsys.online.columns import Rows
from recsys.online.ranker import Degraded, Ranker, Timings
from recsys.retrieval.retriever import Retriever
from recsys.spec import FeatureSpec
from recsys.store.base import OnlineStore
from recsys.store.keys import KeySpace

__all__ = ["Source", "Recommended", "OnlineRetriever", "materialize_seen"]

Source = Literal["ann", "popular", "given"]


@dataclass
class Recommended:
    item_ids: list[str]
    scores: list[float]
    sources: list[Source]
    candidates: int
    timings: Timings
    retrieve_s: float = 0.0
    degraded: Degraded | None = None
    store_error: str | None = None


class OnlineRetriever:
    def __init__(self, ranker: Ranker, retriever: Retriever, retrieve_n: int = 500, seen_limit: int = 1000) -> None:
        self.ranker, self.retriever = ranker, retriever
        self.retrieve_n, self.seen_limit = retrieve_n, seen_limit

    async def _seen(self, store: OnlineStore, user_id: str, budget_s: float | None) -> list[str]:
        try:
            async with asyncio.timeout(budget_s):
                return await store.top(self.ranker.keys.seen(user_id), self.seen_limit)
        except (StoreError, TimeoutError):
            return []  # the user-features read reports the store's trouble; filtering nothing is the cold answer

    async def candidates(self, store: OnlineStore, user_id: str, timestamp: int, context: Mapping[str, Any],
                         exclude_seen: bool, budget_s: float | None) -> tuple[np.ndarray, np.ndarray, Any]:
        """(item ids, sources, the user-row read) of the candidates: ANN ∪ popular, seen items removed."""
        probe = Rows.for_user(user_id, np.array([""], dtype=object), timestamp, context)
        reads: list[Any] = [self.ranker.features(store, probe, budget_s)]  # the user tower's input, unscored
        if exclude_seen:
            reads.append(self._seen(store, user_id, budget_s))
        got = await asyncio.gather(*reads)
        user_row = got[0]
        _, idx = self.retriever.search(self.retriever.user_vectors(user_row.encoded), self.retrieve_n)
        ann = self.retriever.item_ids[idx[0][idx[0] >= 0]]
        popular = self.ranker.popular
        ids = np.concatenate([ann, popular]).astype(object)
        sources = np.array(["ann"] * len(ann) + ["popular"] * len(popular), dtype=object)
        keep = ~pd.Index(ids).duplicated(keep="first")
        if exclude_seen and got[1]:
            keep &= ~np.isin(ids, np.asarray(got[1], dtype=object))
        return ids[keep], sources[keep], user_row

    async def recommend(self, store: OnlineStore, user_id: str, candidates: Sequence[str] | None, timestamp: int,
                        context: Mapping[str, Any], k: int, exclude_seen: bool = True,
                        budget_s: float | None = None) -> Recommended:
        t0 = time.perf_counter()
        if candidates is not None:
            ranked = await self.ranker.rank(store, user_id, candidates, timestamp, context, k, budget_s)
            return Recommended(ranked.item_ids, ranked.scores, ["given"] * len(ranked.item_ids), ranked.candidates,
                               ranked.timings, 0.0, ranked.degraded, ranked.store_error)
        ids, sources, user_row = await self.candidates(store, user_id, timestamp, context, exclude_seen, budget_s)
        retrieve_s = time.perf_counter() - t0
        if not len(ids):  # the user engaged with every candidate
            return Recommended([], [], [], 0, user_row.timings, retrieve_s, user_row.degraded, user_row.store_error)
        ranked = await self.ranker.rank(store, user_id, ids.tolist(), timestamp, context, k, budget_s)
        where = pd.Index(ids).get_indexer(pd.Index(ranked.item_ids, dtype=object))
        return Recommended(ranked.item_ids, ranked.scores, sources[where].tolist(), ranked.candidates, ranked.timings,
                           retrieve_s, ranked.degraded, ranked.store_error)


async def materialize_seen(spec: FeatureSpec, raw_dir: str | Path, store: OnlineStore, keys: KeySpace,
                           as_of: int | None = None, ttl_s: int | None = None) -> int:
    """Every user's seen set from the log: the items with positive events strictly before `as_of`
    (all of them without it), scored by their count. Returns the number of users written."""
    frame = load_raw(spec, raw_dir).frame
    ts, label = frame[spec.timestamp].to_numpy(), frame[spec.label].to_numpy()
    keep = (label > 0) & (ts < as_of if as_of is not None else True)
    pairs = pd.DataFrame({"u": as_str(frame[spec.user_key].array[keep]),
                          "i": as_str(frame[spec.item_key].array[keep])})
    counts = pairs.groupby(["u", "i"], sort=False).size()
    users = 0
    for user, part in counts.groupby(level=0, sort=False):
        await store.write_ranking(keys.seen(str(user)), part.index.get_level_values(1).tolist(),
                                  part.to_numpy(dtype=np.float64).tolist(), ttl_s)
        users += 1
    return users
