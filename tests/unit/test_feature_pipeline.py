"""FeaturePipeline: fitted on train only, a layout the model can trust, JSON state that encodes alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recsys.errors import DataError, NotFittedError
from recsys.features import Batch, FeaturePipeline, count_column
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, parse_spec

from .helpers import mini_columns, mini_spec_dict

Fitted = tuple[FeaturePipeline, dict[str, np.ndarray], np.ndarray]


def with_values(cols: dict[str, np.ndarray], **values: object) -> dict[str, np.ndarray]:
    """A copy of `cols` with some columns set to one value in every row."""
    out = dict(cols)
    for name, v in values.items():
        out[name] = np.full(len(cols[name]), v, dtype=cols[name].dtype)
    return out


def test_values_only_seen_outside_the_train_split_get_the_oov_id(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    unseen = pipeline.local_ids(with_values(cols, item_id="v-only-in-test", device="tv", genres="Western|Noir"))
    assert (unseen["item_id"] == 0).all()
    assert (unseen["device"] == 0).all()
    assert (unseen["genres"] == 0).all()
    assert (pipeline.local_ids(cols)["item_id"] > 0).all()


def test_fit_learns_only_from_the_rows_it_is_given(mini_spec: FeatureSpec):
    cols, label = mini_columns(400)
    train = {k: v[:200] for k, v in cols.items()}
    pipeline = FeaturePipeline(mini_spec).fit(train, label[:200])
    assert set(pipeline.vocabulary("item_id").values) == set(train["item_id"])
    assert pipeline.prior == pytest.approx(label[:200].mean())


def test_user_min_count_is_applied_on_the_train_rows(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    users, counts = np.unique(cols["user_id"], return_counts=True)
    assert set(pipeline.vocabulary("user_id").values) == set(users[counts >= 2])


def test_transform_never_raises_on_unseen_missing_or_odd_values(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    odd = with_values(cols, user_id=None, country=None, item_id="??", genres=None, device=None)
    odd["duration"] = np.full(len(cols["duration"]), np.nan)
    enc = pipeline.transform(odd)
    assert np.isfinite(enc.dense).all()
    assert len(enc) == len(cols["user_id"])


def test_layout_widths_match_the_encoded_blocks(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    layout, enc = pipeline.layout, pipeline.transform(cols)
    assert enc.sparse.shape[1] == len(layout.sparse_fields)
    assert enc.multi.shape[1] == sum(n for _, n in layout.multi_fields) == 3
    assert enc.dense.shape[1] == len(layout.dense_fields)
    assert enc.wide.shape[1] == len(layout.wide_fields)
    assert (enc.sparse.dtype, enc.multi.dtype, enc.dense.dtype, enc.wide.dtype) == (
        np.int64, np.int64, np.float32, np.int64)


def test_ids_stay_inside_the_tables_and_fields_never_share_rows(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    layout, enc = pipeline.layout, pipeline.transform(cols)
    assert 1 <= enc.sparse.min() and enc.sparse.max() < layout.embedding_rows  # row 0 is never a sparse id
    assert 0 <= enc.multi.min() and enc.multi.max() < layout.embedding_rows
    assert 0 <= enc.wide.min() and enc.wide.max() < layout.wide_rows
    # Each sparse field is its local ids (0 = its own OOV id) shifted by one offset, and the
    # fields' ranges [offset, offset + largest local id] are disjoint and in layout order.
    local = pipeline.local_ids(cols)
    spans = []
    for j, name in enumerate(layout.sparse_fields):
        offsets = np.unique(enc.sparse[:, j] - local[name])
        assert len(offsets) == 1, name
        spans.append((int(offsets[0]), int(offsets[0] + local[name].max())))
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] < np.unique(enc.multi[enc.multi > 0]).min()  # multi-hot ids come after


def test_the_model_built_from_the_layout_accepts_the_encoded_batch(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, cols, label = mini_fitted
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, mini_spec.model))
    out = model(Batch.from_encoded(pipeline.transform(cols), label))
    assert out.shape == (len(label),) and torch.isfinite(out).all()


def test_json_round_trip_gives_identical_encodings(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, cols, _ = mini_fitted
    loaded = FeaturePipeline.from_dict(mini_spec, json.loads(json.dumps(pipeline.to_dict())))
    probe = {**cols, "item_id": np.append(cols["item_id"][:-1], "unseen").astype(object)}
    a, b = pipeline.transform(probe), loaded.transform(probe)
    for block in ("sparse", "multi", "dense", "wide"):
        np.testing.assert_array_equal(getattr(a, block), getattr(b, block), err_msg=block)
    assert loaded.layout == pipeline.layout


def test_one_row_encodes_exactly_as_inside_a_batch(mini_fitted: Fitted):
    """The service encodes one request; the pipeline encodes a whole split: same numbers."""
    pipeline, cols, _ = mini_fitted
    batch = pipeline.transform(cols)
    for i in (0, 17, len(cols["user_id"]) - 1):
        one = pipeline.transform({k: v[i:i + 1] for k, v in cols.items()})
        for block in ("sparse", "multi", "dense", "wide"):
            np.testing.assert_array_equal(getattr(one, block)[0], getattr(batch, block)[i], err_msg=block)


def test_missing_raw_column_raises_data_error_naming_it(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    for name in ("genres", count_column("user_history"), "upload_time"):
        broken = {k: v for k, v in cols.items() if k != name}
        with pytest.raises(DataError, match=f"'{name}'"):
            pipeline.transform(broken)


def test_fit_with_a_missing_raw_column_raises_data_error_naming_it(mini_spec: FeatureSpec):
    cols, label = mini_columns()
    del cols["duration"]
    with pytest.raises(DataError, match="'duration'"):
        FeaturePipeline(mini_spec).fit(cols, label)


def test_columns_of_different_lengths_are_refused(mini_fitted: Fitted):
    pipeline, cols, _ = mini_fitted
    with pytest.raises(DataError, match="different lengths"):
        pipeline.transform({**cols, "device": cols["device"][:-1]})


def test_fit_on_an_empty_split_is_refused(mini_spec: FeatureSpec):
    cols, label = mini_columns()
    with pytest.raises(DataError, match="empty"):
        FeaturePipeline(mini_spec).fit({k: v[:0] for k, v in cols.items()}, label[:0])


def test_transform_before_fit_raises_not_fitted(mini_spec: FeatureSpec):
    cols, _ = mini_columns()
    with pytest.raises(NotFittedError):
        FeaturePipeline(mini_spec).transform(cols)
    with pytest.raises(NotFittedError):
        FeaturePipeline(mini_spec).to_dict()


def test_state_fitted_for_another_spec_is_refused(mini_fitted: Fitted):
    pipeline, _, _ = mini_fitted
    other = mini_spec_dict()
    other["features"]["country"]["buckets"] = 32
    with pytest.raises(NotFittedError, match="spec_hash"):
        FeaturePipeline.from_dict(parse_spec(other), pipeline.to_dict())


def test_training_settings_do_not_change_the_feature_version(mini_fitted: Fitted):
    pipeline, _, _ = mini_fitted
    other = mini_spec_dict()
    other["training"]["epochs"] = 7
    loaded = FeaturePipeline.from_dict(parse_spec(other), pipeline.to_dict())
    assert loaded.layout == pipeline.layout


def test_statistic_rate_is_smoothed_towards_the_train_prior(mini_spec: FeatureSpec):
    cols, label = mini_columns()
    spec = parse_spec({**mini_spec_dict(), "features": {
        "user_history": {"type": "statistic", "key": ["user_id"], "smoothing": 2, "log": False, "standardize": False},
    }, "crosses": []})
    pipeline = FeaturePipeline(spec).fit(cols, label)
    probe = {"user_history__count": np.array([0.0, 2.0, 1000.0]), "user_history__pos": np.array([0.0, 2.0, 0.0])}
    dense = pipeline.transform(probe).dense
    prior = label.mean()
    np.testing.assert_allclose(dense[:, 0], [0.0, 2.0, 1000.0])
    np.testing.assert_allclose(dense[:, 1], [prior, (2 + 2 * prior) / 4, 2 * prior / 1002], rtol=1e-6)
