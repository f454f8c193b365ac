"""Wide&Deep (Cheng et al., 2016) as a pure nn.Module: a Batch in, logits out.

wide: a linear model over sparse ids, hashed crosses and multi-hot tokens (one weight per id, summed);
deep: embeddings of the sparse ids + mean-pooled multi-hot embeddings + dense floats → ReLU MLP.
Both logits are summed; the sigmoid and the loss live outside (training.py / inference.py).

Initialization matters on small data (DESIGN §6): the wide weights start at zero and the embeddings
at N(0, 0.01), which measured +0.06 AUC over torch's N(0, 1) default on MovieLens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from recsys.features.batch import Batch
from recsys.features.pipeline import Layout
from recsys.spec import ModelConfig

__all__ = ["WideDeepConfig", "WideDeep"]


@dataclass(frozen=True)
class WideDeepConfig:
    embedding_rows: int
    embedding_dim: int
    n_sparse: int
    multi_lens: tuple[int, ...]
    n_dense: int
    wide_rows: int
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.0
    embedding_init_std: float = 0.01
    use_wide: bool = True
    use_deep: bool = True
    sparse_grad: bool = False  # sparse embedding gradients (SGD without momentum, Adagrad)

    @classmethod
    def from_layout(cls, layout: Layout, model: ModelConfig, **overrides: object) -> "WideDeepConfig":
        cfg = cls(
            embedding_rows=layout.embedding_rows,
            embedding_dim=model.embedding_dim,
            n_sparse=len(layout.sparse_fields),
            multi_lens=tuple(n for _, n in layout.multi_fields),
            n_dense=len(layout.dense_fields),
            wide_rows=layout.wide_rows,
            hidden=tuple(model.hidden),
            dropout=model.dropout,
            embedding_init_std=model.embedding_init_std,
        )
        return cls(**{**asdict(cfg), **overrides}) if overrides else cfg

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["multi_lens"] = list(self.multi_lens)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "WideDeepConfig":
        d = dict(d)
        d["multi_lens"] = tuple(d["multi_lens"])  # type: ignore[arg-type]
        d["hidden"] = tuple(d["hidden"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


class WideDeep(nn.Module):
    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        if not (config.use_wide or config.use_deep):
            raise ValueError("WideDeep needs at least one of use_wide / use_deep")
        self.config = config
        self.bias = nn.Parameter(torch.zeros(1))
        if config.use_wide:
            self.wide = nn.Embedding(config.wide_rows, 1, padding_idx=0, sparse=config.sparse_grad)
            nn.init.zeros_(self.wide.weight)
        if config.use_deep:
            d = config.embedding_dim
            self.embedding = nn.Embedding(config.embedding_rows, d, padding_idx=0, sparse=config.sparse_grad)
            nn.init.normal_(self.embedding.weight, std=config.embedding_init_std)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
            width = (config.n_sparse + len(config.multi_lens)) * d + config.n_dense
            layers: list[nn.Module] = []
            for h in config.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                if config.dropout > 0:
                    layers.append(nn.Dropout(config.dropout))
                width = h
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

    def wide_parameters(self) -> list[nn.Parameter]:
        return [self.bias, self.wide.weight] if self.config.use_wide else [self.bias]

    def deep_parameters(self) -> list[nn.Parameter]:
        return list(self.embedding.parameters()) + list(self.mlp.parameters()) if self.config.use_deep else []

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.bias.expand(batch.dense.shape[0])
        if self.config.use_wide:
            logit = logit + self.wide(batch.wide).sum(dim=(1, 2))
        if self.config.use_deep:
            parts = [self.embedding(batch.sparse).flatten(1)]
            if self.config.multi_lens:
                tokens = self.embedding(batch.multi)
                present = (batch.multi > 0).to(tokens.dtype)
                start = 0
                for length in self.config.multi_lens:
                    seg = slice(start, start + length)
                    count = present[:, seg].sum(1, keepdim=True).clamp_min(1.0)
                    parts.append(tokens[:, seg].sum(1) / count)
                    start += length
            parts.append(batch.dense)
            logit = logit + self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
        return logit
