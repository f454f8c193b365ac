"""Ranker: one artifact bound to the online store, the library half of the service.

    rank / score:  one store round trip → assemble raw columns → the artifact's FeaturePipeline →
                   one forward pass (Predictor) → top-k
                   degraded (store failed, past its budget, or lacking this feature version's
                   materialize marker): cold features, and the reason on the result
    events:        impressions and late labels into the statistics, idempotent (recsys/online/events.py)

It holds no connection and no global state: the service owns the store and swaps whole Rankers on
reload, so a request that started on the old model finishes on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from recsys.artifact import Artifact
from recsys.errors import ArtifactError, StoreError
from recsys.features.batch import Encoded
from recsys.inference import Predictor, top_k
from recsys.online.columns import Read, Rows, assemble, plan_read
from recsys.online.events import EventWriter
from recsys.online.plan import OnlinePlan
from recsys.spec import CategoricalFeature
from recsys.store.base import OnlineStore, Record
from recsys.store.keys import KeySpace

__all__ = ["Ranker", "Timings", "Features", "Scored", "Ranked", "Degraded", "STORE_UNAVAILABLE", "STORE_EMPTY"]

# Why a result was computed from cold features (`Scored.degraded`; None = from the store's features).
Degraded = Literal["store_unavailable", "store_empty"]
STORE_UNAVAILABLE: Degraded = "store_unavailable"  # the read failed or missed its budget
STORE_EMPTY: Degraded = "store_empty"  # the store answered without this feature version's materialize marker


@dataclass
class Timings:
    """Seconds per stage of one request (exported as the service's stage histogram)."""

    fetch: float = 0.0
    assemble: float = 0.0
    transform: float = 0.0
    score: float = 0.0
    topk: float = 0.0

    def items(self) -> list[tuple[str, float]]:
        return list(self.__dict__.items())


@dataclass
class Features:
    """A request's rows read from the store and encoded: what scoring, and the retriever's user
    tower, take as input."""

    encoded: Encoded
    columns: dict[str, np.ndarray]  # the raw columns
    timings: Timings = field(default_factory=Timings)
    degraded: Degraded | None = None
    store_error: str | None = None


@dataclass
class Scored:
    probabilities: np.ndarray
    columns: dict[str, np.ndarray]  # the raw columns the model saw (for `explain`)
    timings: Timings = field(default_factory=Timings)
    degraded: Degraded | None = None
    store_error: str | None = None  # what failed, when STORE_UNAVAILABLE (for logs, never for callers)


@dataclass
class Ranked:
    item_ids: list[str]
    scores: list[float]
    candidates: int
    timings: Timings
    degraded: Degraded | None = None
    store_error: str | None = None


def _cold(read: Read) -> list[Record | None]:
    """The store's reply when it holds nothing for these keys: every row a cold start."""
    return [None] * len(read.keys)


class Ranker:
    def __init__(self, artifact: Artifact, prefix: str = "rec", popular_limit: int = 200) -> None:
        self.artifact = artifact
        self.predictor = Predictor.from_artifact(artifact)
        self.plan = OnlinePlan.from_spec(artifact.pipeline.spec)
        self.keys = KeySpace(prefix, artifact.feature_version)
        spec = artifact.pipeline.spec
        item_vocab = next((artifact.pipeline.vocabulary(name) for name, f in spec.features.items()
                           if isinstance(f, CategoricalFeature) and (f.column or name) == spec.item_key), None)
        self.events = EventWriter(self.plan, self.keys, item_vocab)
        self.popular_limit = popular_limit
        popular = list(artifact.metadata.get("popular_items", []))[:popular_limit]
        # The candidates of requests without any: the artifact's train-time list until
        # `refresh_popular` finds the store's ranking (replaced whole: a request keeps the one it read).
        self.popular = np.array([str(i) for i in popular], dtype=object)
        self.popular_source = "artifact"

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def feature_version(self) -> str:
        return self.artifact.feature_version

    def warm_up(self, rows: int = 512) -> None:
        """Run the whole CPU path once on cold rows, so lazily built lookup tables and the first
        forward's allocations are paid before traffic, not by the first request. Also the smoke test
        of the degraded path, which serves exactly such rows: non-finite scores raise ArtifactError."""
        ids = self.popular[:rows] if len(self.popular) else np.array(["warm-up"], dtype=object)
        r = Rows.for_user("warm-up", ids, int(time.time()), {})
        read = plan_read(self.plan, self.keys, r)
        if not np.isfinite(self.predictor.score(assemble(self.plan, r, read, _cold(read)))).all():
            raise ArtifactError(f"artifact {self.artifact.path}: the model scores cold rows as NaN or infinity "
                                f"(fix: retrain; the weights or the fitted transforms are broken)")
        self.predictor.warm_up(rows)

    async def _fetch(self, store: OnlineStore, read: Read,
                     budget_s: float | None) -> tuple[list[Record | None], Degraded | None, str | None]:
        """`read` and this feature version's meta record in one round trip, within `budget_s`
        (pool waits included). Returns (reply, degraded reason, error): a failed or late read
        gives the cold reply; a store without the meta record (restarted empty, flushed, never
        materialized) gives what it has, flagged STORE_EMPTY."""
        try:
            async with asyncio.timeout(budget_s):
                records = await store.read([self.keys.meta, *read.keys])
        except StoreError as err:
            return _cold(read), STORE_UNAVAILABLE, str(err)
        except TimeoutError:
            return _cold(read), STORE_UNAVAILABLE, f"{store.name} did not answer within {(budget_s or 0) * 1e3:.0f} ms"
        return records[1:], (None if records[0] else STORE_EMPTY), None

    async def score(self, store: OnlineStore, rows: Rows, budget_s: float | None = None) -> Scored:
        """Probabilities of `rows`. Never raises for the store: when it fails, is slower than
        `budget_s` or lacks the features, the rows are scored as cold starts and `degraded` says why."""
        f = await self.features(store, rows, budget_s)
        t0 = time.perf_counter()
        probs = self.predictor.score_encoded(f.encoded)
        f.timings.score = time.perf_counter() - t0
        return Scored(probs, f.columns, f.timings, f.degraded, f.store_error)

    async def features(self, store: OnlineStore, rows: Rows, budget_s: float | None = None) -> Features:
        """`rows` read from the store (one round trip), assembled and encoded, under the same
        degraded-mode rules as `score`."""
        t = Timings()
        t0 = time.perf_counter()
        read = plan_read(self.plan, self.keys, rows)
        fetched, degraded, error = await self._fetch(store, read, budget_s)
        t1 = time.perf_counter()
        cols = assemble(self.plan, rows, read, fetched)
        t2 = time.perf_counter()
        encoded = self.predictor.pipeline.transform(cols)
        t.fetch, t.assemble, t.transform = t1 - t0, t2 - t1, time.perf_counter() - t2
        return Features(encoded, cols, t, degraded, error)

    async def rank(self, store: OnlineStore, user_id: str, candidates: Sequence[str] | None, timestamp: int,
                   context: Mapping[str, Any], k: int, budget_s: float | None = None) -> Ranked:
        """Top-k of `candidates` (or of the popular items) for one user in one context. A repeated
        candidate counts once, at its first position, so the top-k holds distinct items."""
        items = self.popular if candidates is None else np.asarray(list(dict.fromkeys(candidates)), dtype=object)
        scored = await self.score(store, Rows.for_user(user_id, items, timestamp, context), budget_s)
        t0 = time.perf_counter()
        best = top_k(scored.probabilities, k)
        out = Ranked(items[best].tolist(), scored.probabilities[best].tolist(), len(items), scored.timings,
                     scored.degraded, scored.store_error)
        out.timings.topk = time.perf_counter() - t0
        return out

    async def refresh_popular(self, store: OnlineStore) -> bool:
        """Take the store's top items by positive events as the default candidates (materialized
        from the log, kept current by POST /v1/events). False, and the list unchanged, when the
        store has no ranking for this feature version."""
        top = await store.top(self.keys.popular, self.popular_limit)
        if not top:
            return False
        self.popular, self.popular_source = np.array(top, dtype=object), "store"
        return True

    async def materialized(self, store: OnlineStore) -> dict[str, str]:
        """The `materialize` marker of this artifact's feature version ({} = never materialized)."""
        (meta,) = await store.read([self.keys.meta])
        return dict(meta["a"]) if meta else {}
