"""Warm start across a refit: known ids keep their rows (by vocabulary value), new ids start fresh,
regions whose ids kept their meaning map by id, the rest start fresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.errors import ArtifactError
from recsys.features import FeaturePipeline
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, parse_spec
from recsys.training import warm_start

from .helpers import mini_columns, mini_spec_dict


def fit(spec: FeatureSpec, n: int, seed: int) -> FeaturePipeline:
    cols, label = mini_columns(n, seed)
    if seed:  # the next day: new users and a new genre arrive
        cols["user_id"] = np.where(np.arange(n) % 3 == 0, [f"new{i % 40}" for i in range(n)], cols["user_id"])
        cols["genres"] = np.where(np.arange(n) % 4 == 0, "Western", cols["genres"])
    return FeaturePipeline(spec).fit(cols, label)


def model_for(pipeline: FeaturePipeline, spec: FeatureSpec, seed: int) -> WideDeep:
    torch.manual_seed(seed)
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model))
    with torch.no_grad():  # a trained model's rows: distinct everywhere, the wide part too
        for p in model.parameters():
            p.normal_()
    return model


def rows(model: WideDeep, pipeline: FeaturePipeline, field: str, ids: np.ndarray, deep: bool = True) -> torch.Tensor:
    offsets = pipeline.table_offsets()[0 if deep else 1]
    table = model.embedding.weight if deep else model.wide.weight
    return table[torch.as_tensor(offsets[field] + ids)].detach()


def test_known_ids_keep_their_rows_and_new_ids_start_fresh(mini_spec: FeatureSpec):
    old_p, new_p = fit(mini_spec, 200, 0), fit(mini_spec, 400, 1)
    old, new = model_for(old_p, mini_spec, 0), WideDeep(WideDeepConfig.from_layout(new_p.layout, mini_spec.model))
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    report = warm_start(new, new_p, old, old_p)

    for field, vocab in (("user_id", lambda p: p.vocabulary("user_id").values),
                         ("genres", lambda p: p.to_dict()["multi_hot"]["genres"]["vocab"]["values"])):
        old_values, new_values = vocab(old_p), vocab(new_p)
        assert old_values != new_values  # the vocabulary grew and ids moved
        known = [v for v in new_values if v in old_values]
        unseen = [v for v in new_values if v not in old_values]
        assert known and unseen
        new_ids = np.array([new_values.index(v) + 1 for v in known])
        old_ids = np.array([old_values.index(v) + 1 for v in known])
        assert torch.equal(rows(new, new_p, field, new_ids), rows(old, old_p, field, old_ids))
        assert torch.equal(rows(new, new_p, field, new_ids, deep=False), rows(old, old_p, field, old_ids, deep=False))
        fresh_ids = torch.as_tensor(new_p.table_offsets()[0][field] + np.array([new_values.index(v) + 1
                                                                                 for v in unseen]))
        assert torch.equal(new.embedding.weight[fresh_ids], fresh["embedding.weight"][fresh_ids])
    # user_id's unseen id 0 keeps its learned row; hashed and hour ids mean the same: mapped by id
    assert torch.equal(rows(new, new_p, "user_id", np.array([0])), rows(old, old_p, "user_id", np.array([0])))
    for field, n in (("country", 16), ("hour", 25)):
        assert torch.equal(rows(new, new_p, field, np.arange(n)), rows(old, old_p, field, np.arange(n)))
    # refitted bucket boundaries and a cross over the renumbered user ids start fresh (the wide part at 0)
    assert new_p.to_dict()["numeric"]["duration"]["boundaries"] != old_p.to_dict()["numeric"]["duration"]["boundaries"]
    wide_off = new_p.table_offsets()[1]
    assert torch.count_nonzero(new.wide.weight[wide_off["user_id_x_hour"]:wide_off["user_id_x_hour"] + 50]) == 0
    assert torch.equal(new.mlp[0].weight, old.mlp[0].weight) and torch.equal(new.bias, old.bias)
    assert 0 < report.deep_kept < report.deep_rows and 0 < report.wide_kept < report.wide_rows


def test_a_cross_over_unchanged_ids_keeps_its_rows(mini_spec: FeatureSpec):
    pipeline = fit(mini_spec, 200, 0)
    old = model_for(pipeline, mini_spec, 0)
    new = WideDeep(WideDeepConfig.from_layout(pipeline.layout, mini_spec.model))
    report = warm_start(new, pipeline, old, pipeline)  # the same fit: every row keeps its place
    for name, tensor in new.state_dict().items():  # but the padding row 0 of the tables, never trained
        keep = slice(1, None) if name in ("embedding.weight", "wide.weight") else slice(None)
        assert torch.equal(tensor[keep], old.state_dict()[name][keep]), name
    assert report.deep_kept == report.deep_rows - 1 and report.wide_kept == report.wide_rows - 1  # all but padding


def test_a_model_with_other_inputs_is_refused(mini_spec: FeatureSpec):
    pipeline = fit(mini_spec, 200, 0)
    other_spec = parse_spec({**mini_spec_dict(), "model": {"embedding_dim": 8, "hidden": [8]}})
    other = FeaturePipeline(other_spec).fit(*mini_columns(200, 0))
    with pytest.raises(ArtifactError, match="differs from this one in embedding_dim"):
        warm_start(WideDeep(WideDeepConfig.from_layout(pipeline.layout, mini_spec.model)), pipeline,
                   WideDeep(WideDeepConfig.from_layout(other.layout, other_spec.model)), other)
