"""Predictor and top-k: the scoring path shared by `evaluate` and the service."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.features import FeaturePipeline
from recsys.inference import Predictor, top_k
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec

Fitted = tuple[FeaturePipeline, dict[str, np.ndarray], np.ndarray]


def test_top_k_returns_the_best_indices_best_first():
    scores = np.array([0.2, 0.9, 0.1, 0.7, 0.5])
    assert top_k(scores, 3).tolist() == [1, 3, 4]


def test_top_k_with_k_beyond_the_candidates_returns_them_all_and_k_zero_returns_none():
    scores = np.array([0.3, 0.1, 0.2])
    assert top_k(scores, 10).tolist() == [0, 2, 1]
    assert top_k(scores, 0).tolist() == []


def test_top_k_agrees_with_a_full_sort_on_random_scores():
    scores = np.random.default_rng(0).random(2000)
    np.testing.assert_array_equal(top_k(scores, 50), np.argsort(-scores)[:50])


def test_predictor_scores_raw_rows_as_probabilities_and_warms_up(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, cols, _ = mini_fitted
    predictor = Predictor(pipeline, WideDeep(WideDeepConfig.from_layout(pipeline.layout, mini_spec.model)))
    predictor.warm_up(rows=8)
    p = predictor.score(cols)
    assert p.shape == (len(cols["user_id"]),) and p.dtype == np.float64
    assert ((0 < p) & (p < 1)).all()
    assert not predictor.model.training
    assert predictor.score({k: v[:1] for k, v in cols.items()})[0] == pytest.approx(p[0], abs=1e-7)
