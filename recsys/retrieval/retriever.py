"""The retrieval part of an artifact, on disk and loaded: user tower → ANN top-N over the catalog.

    retrieval/towers.safetensors   the two-tower weights          (`recsys train-retrieval`)
    retrieval/popularity.parquet   item_id, train positives        (`recsys train-retrieval`)
    retrieval/items.parquet        item_id in index order          (`recsys index`)
    retrieval/index.faiss          the ANN index, faiss's format   (`recsys index`)
    metadata.json `retrieval`      tower config, popularity weight and scale, training history,
                                   the index's kind, size and nprobe

All of it is written through `recsys.artifact.update_artifact`, so it is hashed, versioned and
renamed atomically with the rest; `Retriever.from_artifact` validates it (weights finite, columns
inside the ranker's layout, index size and dimension, a smoke query) and refuses it with an
ArtifactError, so a reload with a broken index never serves.

Scores: an item's index vector is [item tower vector, log1p(train positives) / scale] and a query
is [user tower vector, popularity weight]: the inner product is the tower's cosine plus the
weighted log-popularity the log-Q correction took out of training (the weight is chosen on the
valid split; 0 turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch

from recsys.artifact import Artifact
from recsys.errors import ArtifactError
from recsys.features.batch import Encoded
from recsys.retrieval.index import read_index
from recsys.retrieval.two_tower import TwoTower, TwoTowerConfig

__all__ = ["FOLDER", "TOWERS", "POPULARITY", "ITEMS", "INDEX", "Retriever", "load_towers", "write_ids",
           "read_ids", "item_popularity_column"]

FOLDER = "retrieval"
TOWERS = f"{FOLDER}/towers.safetensors"
POPULARITY = f"{FOLDER}/popularity.parquet"
ITEMS = f"{FOLDER}/items.parquet"
INDEX = f"{FOLDER}/index.faiss"


def write_ids(path: Path, item_ids: np.ndarray, values: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: dict[str, Any] = {"item_id": pa.array(item_ids.astype(object), pa.string())}
    if values is not None:
        cols["positives"] = pa.array(values, pa.float64())
    pq.write_table(pa.table(cols), path, compression="zstd")


def read_ids(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ArtifactError(f"{path} is not readable parquet ({err}) (fix: retrain retrieval)") from None


def item_popularity_column(item_ids: np.ndarray, popularity: pa.Table, scale: float) -> np.ndarray:
    """log1p(train positives) / scale of each item (0 for items without train positives)."""
    known = popularity.column("item_id").to_numpy(zero_copy_only=False)
    pos = popularity.column("positives").to_numpy()
    where = pd.Index(known, dtype=object).get_indexer(pd.Index(item_ids, dtype=object))
    counts = np.where(where >= 0, pos[np.maximum(where, 0)], 0.0)
    return (np.log1p(counts) / scale).astype(np.float32)


def load_towers(artifact: Artifact) -> tuple[TwoTower, dict[str, Any]]:
    """The trained towers and the `retrieval` metadata, checked against the ranker's layout."""
    meta = artifact.metadata.get("retrieval")
    where = f"artifact {artifact.path}"
    if not isinstance(meta, dict) or not (artifact.path / TOWERS).is_file():
        raise ArtifactError(f"{where} has no retrieval model (fix: run `recsys train-retrieval` on it)")
    try:
        cfg = TwoTowerConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{where}: metadata.json's retrieval config is incompatible with this code ({err}) "
                            f"(fix: run `recsys train-retrieval` again)") from None
    layout = artifact.pipeline.layout
    for side in (cfg.user, cfg.item):
        bad = (any(j >= len(layout.sparse_fields) for j in side.sparse)
               or any(j >= len(layout.dense_fields) for j in side.dense)
               or any(b > sum(m for _, m in layout.multi_fields) for _, b in side.multi))
        if bad or cfg.embedding_rows != layout.embedding_rows:
            raise ArtifactError(f"{where}: the retrieval towers do not fit the ranker's feature layout "
                                f"(fix: run `recsys train-retrieval` on this artifact again)")
    model = TwoTower(cfg)
    try:
        state = safetensors.torch.load_file(str(artifact.path / TOWERS))
        model.load_state_dict(state, strict=True)
    except Exception as err:  # safetensors and torch raise their own types
        raise ArtifactError(f"{where}: {TOWERS} does not load ({str(err).splitlines()[0][:200]}) "
                            f"(fix: run `recsys train-retrieval` again)") from None
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise ArtifactError(f"{where}: {TOWERS} holds NaN or infinite weights (fix: retrain retrieval)")
    model.eval()
    return model, meta


@dataclass
class Retriever:
    """A loaded retrieval part: encoded request rows → the top-N catalog items by inner product."""

    model: TwoTower
    index: Any  # faiss.Index over [item vector, popularity column]
    item_ids: np.ndarray  # (items,) object str in index order
    popularity_weight: float
    version: str

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "Retriever | None":
        """None when the artifact has no retrieval part; ArtifactError when it has a broken one, or
        towers without an index (`recsys index` not run yet)."""
        if "retrieval" not in artifact.metadata and not (artifact.path / FOLDER).exists():
            return None
        model, meta = load_towers(artifact)
        info = meta.get("index")
        if not isinstance(info, dict) or not (artifact.path / INDEX).is_file():
            raise ArtifactError(f"artifact {artifact.path} has retrieval towers but no index "
                                f"(fix: run `recsys index --model {artifact.path} --raw DIR`)")
        ids = read_ids(artifact.path / ITEMS).column("item_id").to_numpy(zero_copy_only=False).astype(object)
        index = read_index(artifact.path / INDEX, len(ids), model.config.output_dim + 1, info.get("nprobe"))
        out = cls(model, index, ids, float(meta["popularity_weight"]), artifact.version)
        smoke = out.model.embed("user", out.model.config.user.select(_cold_rows(artifact)))
        scores, _ = out.search(out.queries(smoke), 1)
        if not np.isfinite(scores).all():
            raise ArtifactError(f"artifact {artifact.path}: a smoke query of the retrieval index gave non-finite "
                                f"scores (fix: run `recsys train-retrieval` and `recsys index` again)")
        return out

    def queries(self, user_vectors: np.ndarray) -> np.ndarray:
        weight = np.full((len(user_vectors), 1), self.popularity_weight, dtype=np.float32)
        return np.ascontiguousarray(np.hstack([user_vectors, weight]), dtype=np.float32)

    def user_vectors(self, encoded: Encoded) -> np.ndarray:
        """Query vectors of full encoded rows (the ranker's encoding of the user, context, statistics)."""
        return self.queries(self.model.embed("user", self.model.config.user.select(encoded)))

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item numbers) of the top-n per query; -1 where the catalog has fewer items."""
        scores, idx = self.index.search(queries, min(n, len(self.item_ids)))
        return np.asarray(scores), np.asarray(idx)

    def describe(self) -> dict[str, Any]:
        return {"items": len(self.item_ids), "popularity_weight": self.popularity_weight,
                "index": type(self.index).__name__}


def _cold_rows(artifact: Artifact, n: int = 2) -> Encoded:
    layout = artifact.pipeline.layout
    return Encoded(sparse=np.zeros((n, len(layout.sparse_fields)), np.int64),
                   multi=np.zeros((n, sum(m for _, m in layout.multi_fields)), np.int64),
                   dense=np.zeros((n, len(layout.dense_fields)), np.float32),
                   wide=np.zeros((n, len(layout.wide_fields)), np.int64))
