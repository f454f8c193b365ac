"""The two-tower candidate model: a user tower and an item tower whose dot product scores a pair.

Both towers read the same encoded columns the ranker reads (the one FeaturePipeline, fitted by
build-features), each only its own features' columns (`TowerColumns`): the user tower the user and
context features and the user's statistics, the item tower the content features. The item tower
therefore embeds any catalog item from its items-table row, also an item never shown (its id maps
to the vocabulary's unseen row, its category, creator, … carry it).

Each tower: field embeddings (one table, the layout's deep rows; a multi-hot field mean-pooled) and
the dense columns → ReLU MLP → a linear map → L2-normalized vector, so the score is a cosine and
the softmax temperature sets its sharpness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.features.batch import Encoded
from recsys.features.pipeline import FeaturePipeline

__all__ = ["TowerColumns", "TwoTowerConfig", "TwoTower", "tower_columns"]


def _feature_of(field: str) -> str:
    """A layout field's feature: `duration_s.bucket`, `user_history.count` → the part before the dot."""
    return field.split(".", 1)[0]


@dataclass(frozen=True)
class TowerColumns:
    """Which encoded columns a tower reads: sparse and dense column numbers, and the [start, stop)
    range of each multi-hot field inside the `multi` block."""

    sparse: tuple[int, ...]
    multi: tuple[tuple[int, int], ...]
    dense: tuple[int, ...]

    def select(self, enc: Encoded) -> Encoded:
        """The tower's part of some encoded rows (multi-hot ranges side by side; no wide columns)."""
        multi = [enc.multi[:, a:b] for a, b in self.multi]
        n = len(enc)
        return Encoded(sparse=enc.sparse[:, list(self.sparse)],
                       multi=np.concatenate(multi, axis=1) if multi else np.zeros((n, 0), np.int64),
                       dense=enc.dense[:, list(self.dense)], wide=np.zeros((n, 0), np.int64))

    @property
    def multi_lengths(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.multi)

    def to_dict(self) -> dict[str, Any]:
        return {"sparse": list(self.sparse), "multi": [list(m) for m in self.multi], "dense": list(self.dense)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TowerColumns":
        return cls(tuple(int(i) for i in d["sparse"]), tuple((int(a), int(b)) for a, b in d["multi"]),
                   tuple(int(i) for i in d["dense"]))


def tower_columns(pipeline: FeaturePipeline, features: list[str]) -> TowerColumns:
    """The encoded columns of `features` in the pipeline's fitted layout (never retyped by hand)."""
    layout, wanted = pipeline.layout, set(features)
    multi, start = [], 0
    for name, max_len in layout.multi_fields:
        if name in wanted:
            multi.append((start, start + max_len))
        start += max_len
    return TowerColumns(
        sparse=tuple(j for j, f in enumerate(layout.sparse_fields) if _feature_of(f) in wanted),
        multi=tuple(multi),
        dense=tuple(j for j, f in enumerate(layout.dense_fields) if _feature_of(f) in wanted))


@dataclass(frozen=True)
class TwoTowerConfig:
    embedding_rows: int
    embedding_dim: int  # field embeddings
    hidden: tuple[int, ...]
    output_dim: int  # the towers' vectors (the index's dimension, before the popularity column)
    temperature: float
    user: TowerColumns
    item: TowerColumns

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"], d["user"], d["item"] = list(self.hidden), self.user.to_dict(), self.item.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TwoTowerConfig":
        return cls(embedding_rows=int(d["embedding_rows"]), embedding_dim=int(d["embedding_dim"]),
                   hidden=tuple(int(h) for h in d["hidden"]), output_dim=int(d["output_dim"]),
                   temperature=float(d["temperature"]), user=TowerColumns.from_dict(d["user"]),
                   item=TowerColumns.from_dict(d["item"]))


class _Tower(nn.Module):
    def __init__(self, cols: TowerColumns, cfg: TwoTowerConfig) -> None:
        super().__init__()
        ends = np.cumsum(cols.multi_lengths, dtype=np.int64).tolist()
        self.multi_slices = [(end - n, end) for n, end in zip(cols.multi_lengths, ends, strict=True)]
        width = (len(cols.sparse) + len(cols.multi)) * cfg.embedding_dim + len(cols.dense)
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, cfg.output_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, table: nn.Embedding, sparse: torch.Tensor, multi: torch.Tensor,
                dense: torch.Tensor) -> torch.Tensor:
        parts = [table(sparse).flatten(1)]
        for a, b in self.multi_slices:
            ids = multi[:, a:b]
            mask = (ids > 0).unsqueeze(-1).float()
            parts.append((table(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        parts.append(dense)
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, init_std: float = 0.01) -> None:
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.embedding_rows, cfg.embedding_dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, 0.0, init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.user_tower = _Tower(cfg.user, cfg)
        self.item_tower = _Tower(cfg.item, cfg)

    @staticmethod
    def tensors(enc: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A tower's selected columns (`TowerColumns.select`) as tensors."""
        return (torch.from_numpy(np.ascontiguousarray(enc.sparse, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(enc.multi, dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(enc.dense, dtype=np.float32)))

    def user(self, sparse: torch.Tensor, multi: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.user_tower(self.embedding, sparse, multi, dense)  # type: ignore[no-any-return]

    def item(self, sparse: torch.Tensor, multi: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.item_tower(self.embedding, sparse, multi, dense)  # type: ignore[no-any-return]

    def embed(self, side: str, selected: Encoded, batch_rows: int = 65_536) -> np.ndarray:
        """float32 vectors of rows already reduced to this side's columns (`TowerColumns.select`)."""
        tower = self.user if side == "user" else self.item
        out = np.empty((len(selected), self.config.output_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(selected), batch_rows):
                part = selected.take(np.arange(start, min(start + batch_rows, len(selected))))
                out[start:start + len(part)] = tower(*self.tensors(part)).numpy()
        return out
