"""Two-tower training: in-batch sampled softmax over the train split's positive impressions.

Each positive (user row, item) is a class among the batch's items: logits u·v / temperature, the
other rows' items are the negatives. Popular items appear as in-batch negatives in proportion to
their frequency, so the plain softmax learns to push them down; the log-Q correction (Yi et al.,
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys 2019)
subtracts log(sampling probability) from each column's logit, the probability being the item's
share of the train positives (exact here: the data is in memory, no streaming frequency
estimate needed). A column holding the row's own item again (an accidental hit) is masked.

The epoch and the query-time popularity weight are chosen together on the VALID split's Recall@100
(the test split is never looked at); the best epoch's weights are kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import faiss
import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.errors import DataError
from recsys.features.batch import Encoded
from recsys.features.pipeline import FeaturePipeline
from recsys.features.transforms import as_str
from recsys.retrieval.catalog import Catalog
from recsys.retrieval.evaluation import Queries, make_queries, recall_at, unseen_top
from recsys.retrieval.two_tower import TwoTower, TwoTowerConfig, tower_columns
from recsys.spec import FeatureSpec, OptimizerConfig, RetrievalConfig

__all__ = ["TrainedRetrieval", "POPULARITY_WEIGHTS", "two_tower_config", "item_positives", "popularity_scale",
           "augmented_items", "select_popularity_weight", "train_retrieval"]

# Query-time weights of the popularity column tried on the valid split (0 = the towers alone).
POPULARITY_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
SELECT_K = 100


@dataclass
class TrainedRetrieval:
    model: TwoTower
    popularity_weight: float
    popularity_scale: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def two_tower_config(spec: FeatureSpec, pipeline: FeaturePipeline) -> TwoTowerConfig:
    r = spec.retrieval
    user, item = spec.tower_features("user"), spec.tower_features("item")
    for side, names in (("user", user), ("item", item)):
        if not names:
            raise DataError(f"the {side} tower has no features (fix: list some under retrieval.{side}_features, or "
                            f"declare {'user or context' if side == 'user' else 'content'} features in the spec)")
    return TwoTowerConfig(embedding_rows=pipeline.layout.embedding_rows, embedding_dim=spec.model.embedding_dim,
                          hidden=tuple(r.hidden), output_dim=r.embedding_dim, temperature=r.temperature,
                          user=tower_columns(pipeline, user), item=tower_columns(pipeline, item))


def item_positives(meta: pd.DataFrame, spec: FeatureSpec) -> pd.Series:
    """Train positives per item id (str), the popularity both the log-Q correction and the query-time
    popularity column use."""
    pos = meta[meta[spec.label].to_numpy() > 0]
    return pd.Series(1.0, index=as_str(pos[spec.item_key].to_numpy())).groupby(level=0).sum()


def popularity_scale(positives: pd.Series) -> float:
    """log1p of the largest count: the popularity column then lies in [0, 1], like a cosine."""
    return float(max(np.log1p(positives.max()) if len(positives) else 1.0, 1e-6))


def augmented_items(vectors: np.ndarray, item_ids: np.ndarray, positives: pd.Series, scale: float) -> np.ndarray:
    counts = positives.reindex(pd.Index(item_ids, dtype=object)).fillna(0.0).to_numpy()
    column = (np.log1p(counts) / scale).astype(np.float32)[:, None]
    return np.ascontiguousarray(np.hstack([vectors, column]), dtype=np.float32)


def _top(users: np.ndarray, items: np.ndarray, weight: float, q: Queries, k: int) -> np.ndarray:
    queries = np.hstack([users, np.full((len(users), 1), weight, np.float32)])
    fetch = min(len(items), k + q.max_seen)
    _, idx = faiss.knn(np.ascontiguousarray(queries, np.float32), items, fetch, metric=faiss.METRIC_INNER_PRODUCT)
    return unseen_top(np.asarray(idx), q, k)


def select_popularity_weight(users: np.ndarray, items: np.ndarray, q: Queries,
                             weights: tuple[float, ...]) -> tuple[float, dict[float, float]]:
    """The weight with the best Recall@100 on `q` (the smallest among ties) and every weight's recall."""
    table = {w: recall_at(_top(users, items, w, q, SELECT_K), q, SELECT_K) for w in weights}
    return max(table, key=lambda w: (table[w], -w)), table


def _optimizer(params: list[torch.Tensor], opt: OptimizerConfig) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.name == "adagrad":
        return torch.optim.Adagrad(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)


def _rows(enc: Encoded, rows: np.ndarray, cols: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return TwoTower.tensors(cols.select(enc.take(rows)))


def train_retrieval(spec: FeatureSpec, pipeline: FeaturePipeline, train: tuple[Encoded, pd.DataFrame],
                    valid: tuple[Encoded, pd.DataFrame], catalog: Catalog, log: Callable[[str], None] = print,
                    progress: bool = True) -> TrainedRetrieval:
    r: RetrievalConfig = spec.retrieval
    cfg = two_tower_config(spec, pipeline)
    torch.manual_seed(r.seed)
    rng = np.random.default_rng(r.seed)
    enc, meta = train
    pos_rows = np.flatnonzero(meta[spec.label].to_numpy() > 0)
    if len(pos_rows) < 2:
        raise DataError("the train split has fewer than 2 positive impressions: a two-tower model cannot learn "
                        "from it (fix: more data, or a label with more positives)")
    item_code, uniques = pd.factorize(as_str(meta[spec.item_key].to_numpy()[pos_rows]))
    log_q = torch.from_numpy(np.log(np.bincount(item_code) / len(pos_rows))[item_code].astype(np.float32))
    code_t = torch.from_numpy(item_code.astype(np.int64))
    user_t = TwoTower.tensors(cfg.user.select(enc.take(pos_rows)))
    item_t = TwoTower.tensors(cfg.item.select(enc.take(pos_rows)))

    positives = item_positives(meta, spec)
    scale = popularity_scale(positives)
    v_enc, v_meta = valid
    q = make_queries(v_meta, spec, catalog.item_ids, [meta])
    if len(q) == 0:
        raise DataError("the valid split has no positive impressions: nothing to choose the epoch and the "
                        "popularity weight on (fix: a larger valid_fraction)")
    q_user = cfg.user.select(v_enc.take(q.rows))
    weights = POPULARITY_WEIGHTS if r.popularity_weight is None else (r.popularity_weight,)

    model = TwoTower(cfg)
    opt = _optimizer(list(model.parameters()), r.optimizer)
    best: tuple[float, int, float, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    log(f"two-tower: {len(pos_rows):,} train positives, {len(uniques):,} items among them, catalog "
        f"{len(catalog):,}; valid {len(q):,} users; dim {r.embedding_dim}, temperature {r.temperature}, "
        f"{r.optimizer.name} lr={r.optimizer.lr}, batch {r.batch_size}, ≤{r.epochs} epochs")
    for epoch in range(1, r.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(pos_rows)))
        total, steps = 0.0, 0
        for start in range(0, len(order), r.batch_size):
            b = order[start:start + r.batch_size]
            if len(b) < 2:
                continue
            u = model.user(*(t[b] for t in user_t))
            v = model.item(*(t[b] for t in item_t))
            logits = u @ v.T / cfg.temperature
            if r.logq_correction:
                logits = logits - log_q[b][None, :]
            codes = code_t[b]
            hit = (codes[:, None] == codes[None, :]) & ~torch.eye(len(b), dtype=torch.bool)
            logits = logits.masked_fill(hit, float("-inf"))
            loss = nn.functional.cross_entropy(logits, torch.arange(len(b)))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total, steps = total + loss.item(), steps + 1
        model.eval()
        items = augmented_items(model.embed("item", catalog.features), catalog.item_ids, positives, scale)
        weight, table = select_popularity_weight(model.embed("user", q_user), items, q, weights)
        row = {"epoch": float(epoch), "train_loss": total / max(steps, 1), f"valid_recall@{SELECT_K}": table[weight],
               "popularity_weight": weight, f"valid_recall@{SELECT_K}_towers_only": table.get(0.0, float("nan"))}
        history.append(row)
        log(f"  epoch {epoch}: loss {row['train_loss']:.4f}  valid Recall@{SELECT_K} {table[weight]:.4f} "
            f"(popularity weight {weight}; towers alone {row[f'valid_recall@{SELECT_K}_towers_only']:.4f})")
        if best is None or table[weight] > best[0]:
            best = (table[weight], epoch, weight, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] > r.patience:
            break
    assert best is not None
    model.load_state_dict(best[3])
    model.eval()
    return TrainedRetrieval(model=model, popularity_weight=best[2], popularity_scale=scale, best_epoch=best[1],
                            history=history, valid={f"valid.recall@{SELECT_K}": best[0]},
                            seconds=time.perf_counter() - t0)
