"""The ANN index over the catalog's item vectors (faiss, inner product), chosen by catalog size.

    below EXACT_BELOW items   IndexFlatIP: exact, and a query over 50k × 65 floats costs ~1 ms
    from there on             IVF-Flat (inner product), nlist ≈ 2·√n (a power of two; 8192 at 10 M),
                              k-means (10 iterations) on a 40·nlist sample; `nprobe` is tuned at
                              build time to the smallest value whose Recall@100 against exact
                              search reaches the target on sample queries

Why IVF-Flat and not HNSW or IVF-PQ at 10 M items on a 2-core machine (measured, docs/retrieval.md):
HNSW's build inserts item by item (hours at 10 M on 2 cores, graph memory on top of the vectors);
IVF-PQ cuts memory ~8-16x but needs re-ranking to reach Recall@100 ≥ 0.95, and 10 M × 65 float32
(2.6 GB) already fits the budget. IVF-Flat builds in minutes (k-means on a sample, then one
assignment pass) and its query cost is nprobe lists of ~n/nlist vectors each.

Indexes are written with faiss's own serializer (`faiss.write_index`), never pickled, into the
artifact's `retrieval/` folder, which `save_artifact` hashes and renames atomically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from recsys.errors import ArtifactError

__all__ = ["EXACT_BELOW", "IndexKind", "BuiltIndex", "build_index", "exact_top_k", "ann_recall", "write_index",
           "read_index", "set_nprobe"]

EXACT_BELOW = 50_000
IndexKind = Literal["auto", "flat", "ivf_flat"]
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class BuiltIndex:
    index: Any  # faiss.Index
    description: dict[str, Any]


def _nlist(n: int) -> int:
    return int(min(65_536, max(16, 2 ** round(math.log2(2 * math.sqrt(n))))))


def set_nprobe(index: Any, nprobe: int) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Item numbers of the exact inner-product top-k (faiss's blocked BLAS search)."""
    _, idx = faiss.knn(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(vectors, np.float32),
                       min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)
    return np.asarray(idx)


def ann_recall(index: Any, exact: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over the queries (`exact` from `exact_top_k`)."""
    _, got = index.search(np.ascontiguousarray(queries, np.float32), k)
    hits = [len(np.intersect1d(g[g >= 0], e)) for g, e in zip(got, exact[:, :k], strict=True)]
    return float(np.mean(hits)) / min(k, int(exact.shape[1]))


def build_index(vectors: np.ndarray, queries: np.ndarray, kind: IndexKind = "auto", target_recall: float = 0.97,
                k: int = 100, seed: int = 0, log: Any = print) -> BuiltIndex:
    """An inner-product index over `vectors` (n, d). For IVF, `nprobe` is the smallest in NPROBES whose
    Recall@k against exact search over `queries` (sample user vectors) reaches `target_recall`."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if kind == "auto":
        kind = "flat" if n < EXACT_BELOW else "ivf_flat"
    t0 = time.perf_counter()
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(d)
        index.add(vectors)
        return BuiltIndex(index, {"kind": "flat", "items": n, "dim": d, "build_seconds": time.perf_counter() - t0,
                                  "recall_at_100": 1.0})
    nlist = min(_nlist(n), max(1, n // 39))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.seed = 10, seed
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
    index.train(sample)
    trained = time.perf_counter()
    for start in range(0, n, 1_000_000):
        index.add(vectors[start:start + 1_000_000])
    built = time.perf_counter()
    exact = exact_top_k(vectors, queries, k)
    table: dict[int, float] = {}
    for nprobe in NPROBES:
        if nprobe > nlist:
            break
        set_nprobe(index, nprobe)
        table[nprobe] = ann_recall(index, exact, queries, k)
        if table[nprobe] >= target_recall:
            break
    chosen = next((p for p, r in table.items() if r >= target_recall), max(table))
    set_nprobe(index, chosen)
    log(f"IVF-Flat: nlist {nlist}, nprobe {chosen} (Recall@{k} vs exact {table[chosen]:.4f} on {len(queries)} "
        f"queries); train {trained - t0:.1f}s, add {built - trained:.1f}s")
    return BuiltIndex(index, {"kind": "ivf_flat", "items": n, "dim": d, "nlist": nlist, "nprobe": chosen,
                              "recall_by_nprobe": {str(p): r for p, r in table.items()},
                              f"recall_at_{k}": table[chosen], "train_seconds": trained - t0,
                              "add_seconds": built - trained, "build_seconds": built - t0})


def write_index(index: Any, path: Path) -> None:
    """faiss's own serializer (the artifact folder is the atomic unit: it is renamed whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))


def read_index(path: Path, items: int, dim: int, nprobe: int | None) -> Any:
    """Read and check an index against what the artifact says it holds."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        cause = (str(err).strip().splitlines() or ["unreadable"])[-1][:200]
        raise ArtifactError(f"artifact {path.parent.parent}: {path.name} is not a readable faiss index ({cause}) "
                            f"(fix: run `recsys index` again)") from None
    if index.ntotal != items or index.d != dim:
        raise ArtifactError(f"artifact {path.parent.parent}: {path.name} holds {index.ntotal} vectors of dimension "
                            f"{index.d}, the artifact expects {items} of {dim} (fix: run `recsys index` again)")
    if nprobe is not None:
        set_nprobe(index, nprobe)
    return index
