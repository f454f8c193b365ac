"""Warm start: yesterday's weights for today's model, across vocabulary growth.

The Wide&Deep paper retrains daily from the previous model instead of from scratch. Between two
`build-features` runs the vocabularies change (new users and items arrive, ids are reassigned by
frequency), so table rows are mapped by what they mean, not by their index:

- categorical fields and multi-hot tokens: by vocabulary VALUE (a known user keeps its row
  wherever its id moved; a new one keeps the new model's fresh row);
- hashed fields, hour and weekday: by id (the hash does not depend on the fit);
- bucketed numbers: by id when the bucket boundaries are the same, else fresh rows;
- crosses (wide only): by id when every field they cross kept its ids (the cross hashes the
  fields' ids, so a re-numbered vocabulary moves every pair to another bucket), else fresh rows;
- each field's unseen row (id 0) and everything outside the tables (MLP, bias): copied.

The two models must read the same inputs (same feature fields and model shape); only the table
sizes may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.errors import ArtifactError
from recsys.features.pipeline import FeaturePipeline
from recsys.model import WideDeep
from recsys.spec import HashedFeature, MultiHotFeature, TimeFeature

__all__ = ["WarmStart", "warm_start"]


@dataclass(frozen=True)
class WarmStart:
    deep_kept: int
    deep_rows: int
    wide_kept: int
    wide_rows: int

    def __str__(self) -> str:
        return (f"deep table {self.deep_kept:,} of {self.deep_rows:,} rows kept, "
                f"wide table {self.wide_kept:,} of {self.wide_rows:,} rows kept (the rest start fresh)")


class _Fit:
    """One fitted pipeline's view for the mapping: offsets and per-field id meanings."""

    def __init__(self, pipeline: FeaturePipeline) -> None:
        self.pipeline = pipeline
        self.spec = pipeline.spec
        self.state: dict[str, Any] = pipeline.to_dict()
        self.deep, self.wide = pipeline.table_offsets()

    def values(self, field: str) -> list[str] | None:
        """Vocabulary values by id - 1 for categorical and multi-hot fields, else None."""
        if field in self.state["vocabularies"]:
            return list(self.state["vocabularies"][field]["values"])
        if field in self.state["multi_hot"]:
            return list(self.state["multi_hot"][field]["vocab"]["values"])
        return None

    def stable_key(self, field: str) -> Any:
        """What decides the ids of a field that is not mapped by value: equal keys, equal ids."""
        feat = self.spec.features.get(field)
        if isinstance(feat, HashedFeature):
            return ("hashed", feat.buckets)
        if isinstance(feat, TimeFeature) and feat.part in ("hour", "weekday"):
            return ("time", feat.part)
        if field.endswith(".bucket"):
            return ("buckets", self.state["numeric"][field.removesuffix(".bucket")]["boundaries"])
        return None


def _local_pairs(old: _Fit, new: _Fit, field: str, size: int, multi: bool) -> tuple[np.ndarray, np.ndarray]:
    """(new local ids, old local ids) of the field's rows that keep their weights."""
    old_values, new_values = old.values(field), new.values(field)
    if new_values is not None and old_values is not None:
        found = pd.Index(old_values, dtype=object).get_indexer(pd.Index(new_values, dtype=object))
        new_ids = np.flatnonzero(found >= 0) + 1
        old_ids = found[found >= 0] + 1
        if not multi:  # the unseen id 0 keeps its learned row too
            new_ids, old_ids = np.r_[0, new_ids], np.r_[0, old_ids]
        return new_ids, old_ids
    key = new.stable_key(field)
    if key is not None and key == old.stable_key(field):
        ids = np.arange(1 if multi else 0, size)
        return ids, ids
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def _cross_is_stable(old: _Fit, new: _Fit, features: list[str]) -> bool:
    """Whether every field of a cross kept its ids between the two fits."""
    for f in features:
        field = new.pipeline.cross_field(f)
        values = new.values(field)
        if values is not None:
            if values != old.values(field):
                return False
        elif new.stable_key(field) is None or new.stable_key(field) != old.stable_key(field):
            return False
    return True


def _sizes(offsets: dict[str, int], rows: int, multi: set[str]) -> dict[str, int]:
    """Each region's id count (0 included) from the offsets: regions lie end to end, a single-id
    field's from its offset, a multi-hot field's from offset + 1 (its id 0 is the padding row)."""
    starts = sorted((off + (name in multi), name) for name, off in offsets.items())
    ends = [start for start, _ in starts[1:]] + [rows]
    return {name: end - offsets[name] for (_, name), end in zip(starts, ends, strict=True)}


def _copy_rows(new_w: torch.Tensor, old_w: torch.Tensor, old: _Fit, new: _Fit, deep: bool) -> int:
    new_off, old_off = (new.deep, old.deep) if deep else (new.wide, old.wide)
    multi = {n for n, f in new.spec.features.items() if isinstance(f, MultiHotFeature)}
    sizes = _sizes(new_off, new_w.shape[0], multi)
    crosses = {c.name: c for c in new.spec.crosses}
    new_rows, old_rows = [], []
    for field, start in new_off.items():
        if field not in old_off:
            continue
        if field in crosses:
            ids = np.arange(sizes[field]) if _cross_is_stable(old, new, crosses[field].features) else np.zeros(0, int)
            n_ids, o_ids = ids, ids
        else:
            n_ids, o_ids = _local_pairs(old, new, field, sizes[field], field in multi)
        new_rows.append(start + n_ids)
        old_rows.append(old_off[field] + o_ids)
    if not new_rows:
        return 0
    n, o = torch.from_numpy(np.concatenate(new_rows)), torch.from_numpy(np.concatenate(old_rows))
    with torch.no_grad():
        new_w[n] = old_w[o]
    return len(n)


def _same_inputs(old: WideDeep, old_p: FeaturePipeline, new: WideDeep, new_p: FeaturePipeline) -> None:
    a, b = old_p.layout, new_p.layout
    shape = ("embedding_dim", "hidden", "use_wide", "use_deep", "interactions", "n_dense", "n_sparse", "multi_lens")
    differs = [k for k in shape if getattr(old.config, k) != getattr(new.config, k)]
    if a.sparse_fields != b.sparse_fields or a.multi_fields != b.multi_fields or a.dense_fields != b.dense_fields:
        differs.append("feature fields")
    if a.wide_fields != b.wide_fields:
        differs.append("wide fields")
    if differs:
        raise ArtifactError(f"--init-from: the artifact's model differs from this one in {', '.join(differs)}; "
                            f"warm start needs the same spec features and model (fix: train from scratch)")


def warm_start(model: WideDeep, pipeline: FeaturePipeline, old_model: WideDeep,
               old_pipeline: FeaturePipeline) -> WarmStart:
    """Copy `old_model`'s weights into `model` (freshly initialized for `pipeline`), table rows
    mapped as the module docstring says."""
    _same_inputs(old_model, old_pipeline, model, pipeline)
    old, new = _Fit(old_pipeline), _Fit(pipeline)
    old_state = old_model.state_dict()
    kept = {"embedding.weight": 0, "wide.weight": 0}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in kept:
                kept[name] = _copy_rows(tensor, old_state[name], old, new, deep=name == "embedding.weight")
            else:
                tensor.copy_(old_state[name])
    cfg = model.config
    return WarmStart(kept["embedding.weight"], cfg.embedding_rows if cfg.use_deep else 0,
                     kept["wide.weight"], cfg.wide_rows if cfg.use_wide else 0)
