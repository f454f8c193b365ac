"""Wide&Deep (Cheng et al., 2016) as a pure nn.Module: a Batch in, logits out.

wide: a linear model over sparse ids, hashed crosses and multi-hot tokens (one weight per id, summed);
deep: embeddings of the sparse ids + mean-pooled multi-hot embeddings + dense floats → ReLU MLP.
Both logits are summed; the sigmoid and the loss live outside (training.py / inference.py).

Initialization matters on small data (DESIGN §6): the wide weights start at zero and the embeddings
at N(0, 0.01), which measured +0.06 AUC over torch's N(0, 1) default on MovieLens.

Speed on CPU (benchmarks/train_bench.py): the ReLU MLP's matrix products are the floor; everything
around them is kept small: tables are read by `_PaddedGather` (one `index_add_` backward), the deep
ids (single and multi-hot) in one lookup. Sparse gradients cost a fixed ~4 ms a step (coalesce +
sparse optimizer ops), so they are used only for tables too large to update densely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys.features.batch import Batch
from recsys.features.pipeline import Layout
from recsys.spec import ModelConfig

__all__ = ["WideDeepConfig", "WideDeep", "SPARSE_GRAD_MIN_ELEMENTS"]

# A table gets sparse gradients (when the optimizer allows them) from this many rows × dim up: below
# it a dense fused update is cheaper (measured crossover ≈3–5 M elements at batch 1024, 15 ids a row).
SPARSE_GRAD_MIN_ELEMENTS = 4_000_000
# Inference batches from this many rows up take the first layer's product over shared columns once.
# Measured forward time on requests read from the store, 1 thread, interleaved: on an AVX-512 EPYC
# (Zen 5) break-even at 128 rows (the detection and weight slices cost what the smaller product
# saves), 5-9% faster at 200, 16% at 500; on an AVX2 EPYC a wash at 200, 3% faster at 500, 13% at 1,000.
SHARED_COLUMNS_MIN_ROWS = 128


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
    sparse_grad: bool = False  # the optimizer allows sparse gradients (SGD without momentum, Adagrad)
    interactions: bool = False  # add the FM term: pairwise dot products of the field embeddings

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
            interactions=model.interactions,
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
            self.wide = _table(config.wide_rows, 1, config.sparse_grad)
            nn.init.zeros_(self.wide.weight)
        if config.use_deep:
            d = config.embedding_dim
            self.embedding = _table(config.embedding_rows, d, config.sparse_grad)
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

    def wide_parameters(self) -> list[torch.Tensor]:
        return [self.bias, self.wide.weight] if self.config.use_wide else [self.bias]

    def deep_parameters(self) -> list[nn.Parameter]:
        return list(self.embedding.parameters()) + list(self.mlp.parameters()) if self.config.use_deep else []

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Tables that produce sparse gradients (their optimizer cannot be a fused dense one)."""
        tables = [getattr(self, name) for name in ("wide", "embedding") if hasattr(self, name)]
        return [t.weight for t in tables if t.sparse]

    def forward(self, batch: Batch) -> torch.Tensor:
        n = batch.dense.shape[0]
        logit = self.bias.expand(n)
        if self.config.use_wide:
            logit = logit + _lookup(self.wide, batch.wide).view(n, -1).sum(1)
        if self.config.use_deep:
            s = self.config.n_sparse
            ids = torch.cat([batch.sparse, batch.multi], dim=1) if self.config.multi_lens else batch.sparse
            # split, not slicing: its backward is one cat instead of a zero fill + copy per slice
            fields, tokens = torch.split(_lookup(self.embedding, ids), [s, ids.shape[1] - s], dim=1)  # [n, S|L, d]
            parts = [fields.reshape(n, -1)]
            pooled = []
            if self.config.multi_lens:
                present = (batch.multi > 0).to(tokens.dtype)
                start = 0
                for length in self.config.multi_lens:
                    seg = slice(start, start + length)
                    count = present[:, seg].sum(1, keepdim=True).clamp_min(1.0)
                    pooled.append(tokens[:, seg].sum(1) / count)
                    start += length
            parts += pooled
            parts.append(batch.dense)
            logit = logit + self._mlp(torch.cat(parts, dim=1), self._shared_columns(batch)).squeeze(-1)
            if self.config.interactions:
                all_fields = torch.cat([fields, *(p.unsqueeze(1) for p in pooled)], dim=1) if pooled else fields
                logit = logit + _pairwise_dot_sum(all_fields)
        return logit

    def _shared_columns(self, batch: Batch) -> torch.Tensor | None:
        """At inference, the MLP input columns equal on every row of the batch (a ranking request's
        user and context: about half the input), read off the small id and dense inputs. None:
        training, a small batch, or too few shared columns to pay for the column gathers."""
        n = batch.dense.shape[0]
        if self.training or torch.is_grad_enabled() or n < SHARED_COLUMNS_MIN_ROWS:
            return None
        d = self.config.embedding_dim
        same = [(batch.sparse.amin(0) == batch.sparse.amax(0)).repeat_interleave(d)]
        start = 0
        for length in self.config.multi_lens:  # a pooled field is shared when all its tokens are
            seg = batch.multi[:, start:start + length]
            same.append((seg.amin(0) == seg.amax(0)).all().expand(d))
            start += length
        same.append(batch.dense.amin(0) == batch.dense.amax(0))  # NaN never equals: never shared
        shared = torch.cat(same)
        return shared if int(shared.sum()) * 4 >= shared.shape[0] else None

    def _mlp(self, x: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
        """The MLP, whose first layer takes its product over the `shared` columns once for the
        batch instead of once per row: the same function up to float32 rounding (the order of the
        sums), and at inference a third fewer FLOPs for a ranking request. The weight slices are
        taken on every call (~20 us): a cache of them would serve stale weights after an edit
        through `.data`, which no version counter sees."""
        if shared is None:
            full: torch.Tensor = self.mlp(x)
            return full
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]
        once, varying = shared.nonzero().squeeze(1), (~shared).nonzero().squeeze(1)
        bias = torch.addmv(first.bias, first.weight.index_select(1, once), x[0].index_select(0, once))
        h = torch.addmm(bias, x.index_select(1, varying), first.weight.index_select(1, varying).t())
        rest: torch.Tensor = self.mlp[1:](h)
        return rest


def _pairwise_dot_sum(fields: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} <e_i, e_j> over the field axis in O(fields·d): ½((Σe)² − Σe²) (Rendle's FM identity)."""
    total = fields.sum(1)
    return 0.5 * (total.pow(2) - fields.pow(2).sum(1)).sum(1)


def _table(rows: int, dim: int, sparse_allowed: bool) -> nn.Embedding:
    """An id table, row 0 = padding (kept as nn.Embedding for its state-dict name and init)."""
    return nn.Embedding(rows, dim, padding_idx=0, sparse=sparse_allowed and rows * dim >= SPARSE_GRAD_MIN_ELEMENTS)


def _lookup(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Rows of `table` for `ids` [..., k] → [..., k, dim]; the padding row never gets a gradient."""
    if table.sparse:
        return F.embedding(ids, table.weight, padding_idx=0, sparse=True)
    if torch.is_grad_enabled():
        rows: torch.Tensor = _PaddedGather.apply(table.weight, ids.reshape(-1))  # type: ignore[no-untyped-call]
    else:  # no backward to shape: skip the autograd Function's Python (~20 µs a call at inference)
        rows = table.weight.index_select(0, ids.reshape(-1))
    return rows.view(*ids.shape, table.weight.shape[1])


class _PaddedGather(torch.autograd.Function):
    """`weight.index_select(0, ids)` whose backward is one `index_add_` with the padding row's
    gradient zeroed, as `F.embedding(padding_idx=0)` does: that one's dense CPU backward scans
    every id once per 1000 table rows, ~10% of a step with a 200k-row hashed wide table."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]  # type: ignore[attr-defined]
        return weight.index_select(0, ids)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors  # type: ignore[attr-defined]
        weight_grad = grad.new_zeros(ctx.rows, grad.shape[1]).index_add_(0, ids, grad)  # type: ignore[attr-defined]
        weight_grad[0] = 0.0
        return weight_grad, None
