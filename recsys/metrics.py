"""Offline metrics as pure, vectorized functions on numpy arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["auc", "logloss", "ranking_at_k", "calibration_table", "roc_curve", "all_metrics"]


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the Mann–Whitney statistic with average ranks for ties."""
    y = np.asarray(label, dtype=np.float64)
    pos = y.sum()
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def logloss(label: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(label, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_curve(label: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(score), kind="stable")
    y = np.asarray(label, dtype=np.float64)[order]
    tps = np.r_[0.0, np.cumsum(y)]
    fps = np.r_[0.0, np.cumsum(1 - y)]
    return fps / max(fps[-1], 1.0), tps / max(tps[-1], 1.0)


def ranking_at_k(group: np.ndarray, label: np.ndarray, score: np.ndarray, k: int = 10) -> dict[str, float | int]:
    """Per-group (user) NDCG@k and Recall@k over the users whose rows a model can rank, with the
    counts of the users left out, so that no mean is silently inflated:

      users                     distinct users in the rows
      users_no_positive         left out of both means: nothing to find
      users_no_negative         left out of both means: every order is perfect, every model scores 1.0
      ndcg@k, ndcg@k_users      the mean over the users with a positive and a negative, and how many
      users_at_most_k_rows      of those, the users with k rows or fewer: all their positives are in
                                the top k whatever the order (recall 1.0 by construction), so they
                                are left out of Recall@k
      recall@k, recall@k_users  the mean over the remaining users, and how many

    Each user's rows are ranked by score; ties are broken by row order."""
    codes, _ = pd.factorize(np.asarray(group))
    y = np.asarray(label, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    order = np.lexsort((-s, codes))
    c, yo = codes[order], y[order]
    idx = np.arange(len(c))
    start = np.maximum.accumulate(np.where(np.r_[True, c[1:] != c[:-1]], idx, 0))
    rank = idx - start  # 0-based rank inside the user's list
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rows = np.bincount(c, minlength=n_groups)
    positives = np.bincount(c, weights=yo, minlength=n_groups)
    top = rank < k
    discount = 1.0 / np.log2(rank + 2.0)
    dcg = np.bincount(c, weights=yo * discount * top, minlength=n_groups)
    hits = np.bincount(c, weights=yo * top, minlength=n_groups)
    ideal_disc = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
    idcg = ideal_disc[np.minimum(positives, k).astype(int)]
    ranked = (positives > 0) & (positives < rows)
    recall_users = ranked & (rows > k)
    return {
        f"ndcg@{k}": float(np.mean(dcg[ranked] / idcg[ranked])) if ranked.any() else float("nan"),
        f"recall@{k}": float(np.mean(hits[recall_users] / positives[recall_users])) if recall_users.any()
        else float("nan"),
        "users": n_groups,
        "users_no_positive": int((positives == 0).sum()),
        "users_no_negative": int(((positives == rows) & (rows > 0)).sum()),
        f"ndcg@{k}_users": int(ranked.sum()),
        f"users_at_most_{k}_rows": int((ranked & (rows <= k)).sum()),
        f"recall@{k}_users": int(recall_users.sum()),
    }


def calibration_table(label: np.ndarray, prob: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table over equal-width probability bins (empty bins omitted)."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    b = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(b, minlength=bins)
    sp = np.bincount(b, weights=p, minlength=bins)
    sy = np.bincount(b, weights=y, minlength=bins)
    return [
        {"bin_low": i / bins, "bin_high": (i + 1) / bins, "count": int(n[i]),
         "mean_predicted": float(sp[i] / n[i]), "observed_rate": float(sy[i] / n[i])}
        for i in range(bins) if n[i] > 0
    ]


def all_metrics(group: np.ndarray, label: np.ndarray, prob: np.ndarray, k: int = 10) -> dict[str, float | int]:
    """The headline numbers for one model on one split (counts as ints)."""
    table = calibration_table(label, prob)
    total = sum(r["count"] for r in table)
    ece = sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in table) / max(total, 1)
    return {
        "auc": auc(label, prob),
        "logloss": logloss(label, prob),
        **ranking_at_k(group, label, prob, k),
        "mean_predicted": float(np.mean(prob)),
        "observed_rate": float(np.mean(label)),
        "ece": float(ece),
        "rows": int(len(label)),
    }
