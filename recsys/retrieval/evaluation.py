"""What retrieval is worth, per user: Recall@K of a candidate list against the user's positives.

Protocol (the same for the two-tower, the popularity list, and retrieve + rank):
  - the users of a split who have at least one positive there; each is queried ONCE, with the
    features of their first impression in the split (user attributes, context and statistics as
    of then: what the service would know when the feed opens);
  - items the user engaged with (positives) in the earlier splits are excluded from every list,
    as the service's seen filter does;
  - Recall@K = |top-K ∩ the user's positives in the split| / |the user's positives in the split|,
    averaged over users (positives outside the catalog count as misses); NDCG@K with binary gains.
Vectorized: a (user, item) pair is the int64 key user · catalog size + item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.features.transforms import as_str
from recsys.spec import FeatureSpec

__all__ = ["Queries", "make_queries", "unseen_top", "recall_at", "ndcg_at", "popular_top"]


@dataclass
class Queries:
    users: np.ndarray  # (U,) str
    rows: np.ndarray  # (U,) row of the split whose features query for the user
    timestamps: np.ndarray  # (U,) that row's timestamp
    items: int  # catalog size (the key's base)
    positives: np.ndarray  # sorted keys of (user, catalog item) positives in the split
    n_positives: np.ndarray  # (U,) distinct positive items per user, out-of-catalog ones included
    seen: np.ndarray  # sorted keys of (user, catalog item) positives in the earlier splits
    max_seen: int

    def __len__(self) -> int:
        return len(self.users)


def _positive_pairs(meta: pd.DataFrame, spec: FeatureSpec, users: pd.Index,
                    catalog: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """(user number, catalog item number; -1 outside the catalog) of the distinct positives of `users`."""
    pos = meta[meta[spec.label].to_numpy() > 0]
    u = users.get_indexer(pd.Index(as_str(pos[spec.user_key].to_numpy()), dtype=object))
    i = catalog.get_indexer(pd.Index(as_str(pos[spec.item_key].to_numpy()), dtype=object))
    pairs = np.unique(np.stack([u, i], axis=1)[u >= 0], axis=0)
    return pairs[:, 0], pairs[:, 1]


def make_queries(meta: pd.DataFrame, spec: FeatureSpec, catalog_ids: np.ndarray,
                 earlier: list[pd.DataFrame]) -> Queries:
    user = as_str(meta[spec.user_key].to_numpy())
    ts = meta[spec.timestamp].to_numpy()
    has_pos = pd.Series(meta[spec.label].to_numpy() > 0).groupby(user).any()
    users = pd.Index(has_pos.index[has_pos.to_numpy()].to_numpy(dtype=object), dtype=object)
    code = users.get_indexer(pd.Index(user, dtype=object))
    order = np.lexsort((np.arange(len(user)), ts, code))
    order = order[code[order] >= 0]
    first = order[np.r_[True, code[order][1:] != code[order][:-1]]]
    catalog = pd.Index(catalog_ids, dtype=object)
    n = len(catalog)
    pu, pi = _positive_pairs(meta, spec, users, catalog)
    n_pos = np.bincount(pu, minlength=len(users))
    inside = pi >= 0
    seen_parts = [_positive_pairs(m, spec, users, catalog) for m in earlier]
    su = np.concatenate([p[0] for p in seen_parts]) if seen_parts else np.zeros(0, np.int64)
    si = np.concatenate([p[1] for p in seen_parts]) if seen_parts else np.zeros(0, np.int64)
    keep = si >= 0
    seen = np.unique(su[keep].astype(np.int64) * n + si[keep])
    per_user = np.bincount(su[keep], minlength=len(users)) if keep.any() else np.zeros(1, np.int64)
    return Queries(users=users.to_numpy(dtype=object), rows=first, timestamps=ts[first],
                   items=n, positives=np.sort(pu[inside].astype(np.int64) * n + pi[inside]), n_positives=n_pos,
                   seen=seen, max_seen=int(per_user.max()))


def _keys(q: Queries, items: np.ndarray) -> np.ndarray:
    keys: np.ndarray = np.arange(len(items), dtype=np.int64)[:, None] * q.items + items
    return keys


def unseen_top(candidates: np.ndarray, q: Queries, k: int) -> np.ndarray:
    """The first k candidates of each row (catalog numbers in rank order, -1 = none) that the user has
    not engaged with before; -1 pads a row that runs short."""
    bad = (candidates < 0) | np.isin(_keys(q, candidates), q.seen)
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(candidates, order, axis=1)
    out[np.take_along_axis(bad, order, axis=1)] = -1
    return out


def _hits(top: np.ndarray, q: Queries) -> np.ndarray:
    return (top >= 0) & np.isin(_keys(q, top), q.positives)


def recall_at(top: np.ndarray, q: Queries, k: int) -> float:
    hits = _hits(top[:, :k], q).sum(axis=1)
    return float(np.mean(hits / np.maximum(q.n_positives, 1)))


def ndcg_at(top: np.ndarray, q: Queries, k: int) -> float:
    hits = _hits(top[:, :k], q)
    dcg = (hits / np.log2(np.arange(2, hits.shape[1] + 2))).sum(axis=1)
    ideal = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))][np.minimum(q.n_positives, k)]
    return float(np.mean(dcg / np.maximum(ideal, 1e-12)))


def popular_top(positives: np.ndarray, q: Queries, k: int) -> np.ndarray:
    """Every user's list of the catalog's most popular items (train positives), seen ones removed."""
    fetch = min(len(positives), k + q.max_seen)
    best = np.argsort(-positives, kind="stable")[:fetch]
    return unseen_top(np.tile(best, (len(q), 1)), q, k)
