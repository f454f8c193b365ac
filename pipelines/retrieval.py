"""train-retrieval, index, and the retrieval half of evaluate.

    recsys train-retrieval --features DIR --model ARTIFACT [--raw DIR]
        two-tower on the train split's positives (the artifact's fitted transforms, one transform
        path); the epoch and the popularity weight chosen on the valid split; the candidates while
        validating are the items table's (with --raw) or the items seen in the splits
    recsys index --model ARTIFACT --raw DIR [--kind auto|flat|ivf_flat]
        every item of the items table through the item tower → faiss index inside the artifact
    recsys evaluate ... --raw DIR
        Recall@100/@500 of the two-tower and of the popularity list on the test split, the index's
        recall against exact search, and retrieve + rank beside popular + rank (NDCG@10, Recall@10)

Each command rewrites the artifact through `update_artifact`: one hashed, versioned, atomic folder.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import safetensors.torch
from tqdm.auto import tqdm

from pipelines.train import load_features
from recsys.artifact import Artifact, load_artifact, update_artifact
from recsys.errors import ArtifactError, DataError
from recsys.features.splits import read_split
from recsys.online import Ranker, Rows
from recsys.retrieval.catalog import from_items_table, from_splits, iter_items, read_items
from recsys.retrieval.evaluation import Queries, make_queries, ndcg_at, popular_top, recall_at, unseen_top
from recsys.retrieval.index import IndexKind, ann_recall, build_index, exact_top_k, write_index
from recsys.retrieval.retriever import INDEX, ITEMS, POPULARITY, TOWERS, Retriever, load_towers, read_ids, write_ids
from recsys.retrieval.training import augmented_items, item_positives, train_retrieval, two_tower_config
from recsys.store.materialize import materialize
from recsys.store.memory import MemoryStore

__all__ = ["run_train_retrieval", "run_index", "retrieval_metrics", "QUERY_SAMPLE", "RETRIEVE_KS"]

QUERY_SAMPLE = "retrieval/query_sample.npy"  # valid users' tower vectors: the index tunes nprobe on them
QUERY_SAMPLE_ROWS = 1000
RETRIEVE_KS = (100, 500)
RANK_K = 10


def _check_versions(artifact: Artifact, manifest: dict[str, Any], features_dir: str | Path) -> None:
    if manifest["feature_version"] != artifact.feature_version:
        raise ArtifactError(f"artifact feature_version {artifact.feature_version} does not match the features in "
                            f"{features_dir} ({manifest['feature_version']}); use the features it was trained on")


def run_train_retrieval(features_dir: str | Path, model_dir: str | Path, raw_dir: str | Path | None = None,
                        log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    artifact = load_artifact(model_dir)
    spec, pipeline, manifest = load_features(features_dir)
    _check_versions(artifact, manifest, features_dir)
    train, valid = read_split(features_dir, "train"), read_split(features_dir, "valid")
    cfg = two_tower_config(spec, pipeline)
    catalog = (from_items_table(spec, pipeline, cfg.item, raw_dir) if raw_dir is not None
               else from_splits([train, valid, read_split(features_dir, "test")], spec.item_key, cfg.item))
    trained = train_retrieval(spec, pipeline, train, valid, catalog, log=log, progress=progress)
    positives = item_positives(train[1], spec)
    q = make_queries(valid[1], spec, catalog.item_ids, [train[1]])
    sample = trained.model.embed("user", cfg.user.select(valid[0].take(q.rows[:QUERY_SAMPLE_ROWS])))
    meta = {"config": cfg.to_dict(), "settings": spec.retrieval.model_dump(mode="json"),
            "popularity_weight": trained.popularity_weight, "popularity_scale": trained.popularity_scale,
            "best_epoch": trained.best_epoch, "history": trained.history, "metrics": trained.valid,
            "seconds": round(trained.seconds, 2), "validated_on": "items table" if raw_dir else "items in the splits"}

    def write(folder: Path) -> None:
        (folder / TOWERS).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()},
                                    str(folder / TOWERS))
        write_ids(folder / POPULARITY, positives.index.to_numpy(dtype=object), positives.to_numpy())
        np.save(folder / QUERY_SAMPLE, sample, allow_pickle=False)

    path = update_artifact(model_dir, {"retrieval": meta}, write, drop=("retrieval/",))
    log(f"best epoch {trained.best_epoch}: valid Recall@100 {trained.valid['valid.recall@100']:.4f} (popularity "
        f"weight {trained.popularity_weight}); retrieval towers → {path}/retrieval (next: `recsys index --model "
        f"{path} --raw DIR`)")
    return meta


def embed_items(artifact: Artifact, raw_dir: str | Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, augmented item vectors) of every item of the items table, in table order."""
    model, meta = load_towers(artifact)
    spec, pipeline = artifact.pipeline.spec, artifact.pipeline
    ids, items = read_items(spec, raw_dir)
    vectors = np.empty((len(ids), model.config.output_dim + 1), dtype=np.float32)
    positives = read_ids(artifact.path / POPULARITY).to_pandas().set_index("item_id")["positives"]
    done = 0
    with tqdm(total=len(ids), desc="embed items", unit="item", disable=not progress, leave=False) as bar:
        for part in iter_items(spec, pipeline, model.config.item, ids, items):
            vectors[done:done + len(part)] = augmented_items(model.embed("item", part.features), part.item_ids,
                                                             positives, float(meta["popularity_scale"]))
            done += len(part)
            bar.update(len(part))
    return ids, vectors


def run_index(model_dir: str | Path, raw_dir: str | Path, kind: IndexKind = "auto",
              log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    artifact = load_artifact(model_dir)
    _, meta = load_towers(artifact)
    t0 = time.perf_counter()
    ids, vectors = embed_items(artifact, raw_dir, progress)
    embedded = time.perf_counter() - t0
    sample = np.load(artifact.path / QUERY_SAMPLE, allow_pickle=False)
    queries = np.hstack([sample, np.full((len(sample), 1), meta["popularity_weight"], np.float32)])
    built = build_index(vectors, queries, kind, log=log)
    del vectors
    info = {**built.description, "embed_seconds": round(embedded, 2)}

    def write(folder: Path) -> None:
        write_index(built.index, folder / INDEX)
        write_ids(folder / ITEMS, ids)

    path = update_artifact(model_dir, {"retrieval": {**meta, "index": info}}, write, drop=(INDEX, ITEMS))
    log(f"indexed {len(ids):,} items ({info['kind']}) in {time.perf_counter() - t0:.1f}s → {path / INDEX}")
    return info


def _rank(ranker: Ranker, store: MemoryStore, q: Queries, meta: pd.DataFrame, item_ids: np.ndarray,
          candidates: np.ndarray, chunk_users: int = 64) -> np.ndarray:
    """Each user's candidates (catalog numbers, -1 = none) ordered by the Wide&Deep score, top RANK_K,
    scored through the service's own path (store read → the artifact's transforms → forward)."""
    context_cols = list(ranker.plan.context_columns)
    ctx = meta.iloc[q.rows][context_cols].to_numpy(dtype=object) if context_cols else np.zeros((len(q), 0), object)
    out = np.full((len(q), RANK_K), -1, dtype=np.int64)
    for start in range(0, len(q), chunk_users):
        users = np.arange(start, min(start + chunk_users, len(q)))
        cand = candidates[users]
        u, j = np.nonzero(cand >= 0)
        rows = Rows(user_ids=q.users[users].astype(object), row_user=u.astype(np.int64),
                    item_ids=item_ids[cand[u, j]], timestamp=q.timestamps[users][u].astype(np.int64),
                    context={c: ctx[users][u, n] for n, c in enumerate(context_cols)})
        scored = asyncio.run(ranker.score(store, rows))
        scores = np.full(cand.shape, -np.inf)
        scores[u, j] = scored.probabilities
        order = np.argsort(-scores, axis=1, kind="stable")[:, :RANK_K]
        top = np.take_along_axis(cand, order, axis=1)
        top[~np.isfinite(np.take_along_axis(scores, order, axis=1))] = -1
        out[users, :top.shape[1]] = top
    return out


def retrieval_metrics(model_dir: str | Path, features_dir: str | Path, raw_dir: str | Path,
                      log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """The test split's retrieval numbers (see the module docstring); {} for an artifact without retrieval."""
    artifact = load_artifact(model_dir)
    retriever = Retriever.from_artifact(artifact)
    if retriever is None:
        log("the artifact has no retrieval part, so no retrieval metrics (`recsys train-retrieval`, `recsys index`)")
        return {}
    spec, _, manifest = load_features(features_dir)
    _check_versions(artifact, manifest, features_dir)
    metas = {s: read_split(features_dir, s) for s in ("train", "valid", "test")}
    test_enc, test_meta = metas["test"]
    ids, item_vectors = embed_items(artifact, raw_dir, progress)
    if len(ids) != len(retriever.item_ids) or not (ids == retriever.item_ids).all():
        raise DataError(f"the items table in {raw_dir} is not the one the index was built from (fix: run "
                        f"`recsys index --model {model_dir} --raw {raw_dir}` first)")
    q = make_queries(test_meta, spec, ids, [metas["train"][1], metas["valid"][1]])
    if len(q) == 0:
        raise DataError("the test split has no positive impressions: no retrieval metrics")
    queries = retriever.user_vectors(test_enc.take(q.rows))
    k_max = max(RETRIEVE_KS)
    fetch = min(len(ids), k_max + q.max_seen)
    _, ann = retriever.search(queries, fetch)
    retrieved = unseen_top(ann, q, k_max)
    positives = read_ids(artifact.path / POPULARITY).to_pandas().set_index("item_id")["positives"]
    popular = popular_top(positives.reindex(pd.Index(ids, dtype=object)).fillna(0.0).to_numpy(), q, k_max)
    exact = exact_top_k(item_vectors, queries, 100)
    m: dict[str, Any] = {"test.retrieval.users": len(q), "test.retrieval.catalog_items": len(ids),
                         "test.retrieval.popularity_weight": retriever.popularity_weight,
                         "test.retrieval.ann_recall@100": ann_recall(retriever.index, exact, queries, 100)}
    # Also with the seen items kept (exclude_seen=false): feeds where users re-watch, like the
    # synthetic demo's 100 heavy users, whose test positives are mostly items they engaged with before.
    kept = replace(q, seen=np.zeros(0, np.int64), max_seen=0)
    pop_counts = positives.reindex(pd.Index(ids, dtype=object)).fillna(0.0).to_numpy()
    for k in RETRIEVE_KS:
        m[f"test.retrieval.recall@{k}"] = recall_at(retrieved, q, k)
        m[f"test.popular.recall@{k}"] = recall_at(popular, q, k)
        m[f"test.retrieval.recall@{k}.seen_kept"] = recall_at(ann, kept, k)
        m[f"test.popular.recall@{k}.seen_kept"] = recall_at(popular_top(pop_counts, kept, k), kept, k)
    # The ranker reads the features of users and candidates as the service would, from a store
    # filled with the log strictly before the test split's first impression.
    try:
        ranker, store = Ranker(artifact, prefix="eval"), MemoryStore()
    except ArtifactError as err:
        log(f"no retrieve + rank numbers: {err}")
        log(summary(m))
        return m
    asyncio.run(materialize(artifact.pipeline.spec, raw_dir, store, ranker.keys,
                            as_of=int(test_meta[spec.timestamp].min()), log=lambda _: None))
    for name, cand in (("retrieval", retrieved), ("popular", popular)):
        top = _rank(ranker, store, q, test_meta, ids, cand)
        m[f"test.{name}+rank.ndcg@{RANK_K}"] = ndcg_at(top, q, RANK_K)
        m[f"test.{name}+rank.recall@{RANK_K}"] = recall_at(top, q, RANK_K)
    log(summary(m))
    return m


def summary(m: dict[str, Any]) -> str:
    lines = [f"retrieval on the test split: {m['test.retrieval.users']:,} users, {m['test.retrieval.catalog_items']:,} "
             f"catalog items, ANN Recall@100 vs exact {m['test.retrieval.ann_recall@100']:.4f}",
             f"{'candidates':<12}{'R@100':>8}{'R@500':>8}{'rank NDCG@10':>14}{'rank R@10':>11}"
             f"{'R@100 seen kept':>17}{'R@500 seen kept':>17}"]
    for name in ("retrieval", "popular"):
        ranked = [(m.get(f"test.{name}+rank.{k}@{RANK_K}"), w) for k, w in (("ndcg", 14), ("recall", 11))]
        lines.append(f"{name:<12}{m[f'test.{name}.recall@100']:>8.4f}{m[f'test.{name}.recall@500']:>8.4f}"
                     + "".join(f"{v:>{w}.4f}" if v is not None else f"{'-':>{w}}" for v, w in ranked)
                     + "".join(f"{m[f'test.{name}.recall@{k}.seen_kept']:>17.4f}" for k in RETRIEVE_KS))
    return "\n".join(lines)
