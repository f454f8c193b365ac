"""Offline metrics against scikit-learn and against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from recsys.metrics import all_metrics, auc, calibration_table, logloss, ranking_at_k, roc_curve


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    p = 1 / (1 + np.exp(-(rng.normal(size=3000) + 0.8 * y)))
    return y, p


def test_auc_matches_scikit_learn(scored):
    y, p = scored
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_counts_tied_scores_as_half_like_scikit_learn(scored):
    y, p = scored
    coarse = np.round(p, 1)  # many ties
    assert auc(y, coarse) == pytest.approx(roc_auc_score(y, coarse), abs=1e-12)
    assert auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == 0.5


def test_auc_of_a_single_class_is_nan_not_an_error():
    assert math.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))


def test_logloss_matches_scikit_learn(scored):
    y, p = scored
    assert logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)


def test_logloss_clips_certain_wrong_predictions_to_a_finite_value():
    assert np.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_roc_curve_agrees_with_scikit_learn_and_integrates_to_the_auc(scored):
    y, p = scored
    fpr, tpr = roc_curve(y, p)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, p, drop_intermediate=False)  # distinct scores: one point per row
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=1e-9)


def test_ndcg_and_recall_at_k_on_a_hand_computed_example():
    # user a: scores rank the rows  y = [1, 0, 1]  -> DCG@2 = 1/log2(2) = 1; IDCG@2 = 1 + 1/log2(3)
    #                                                recall@2 = 1 of 2 positives
    # user b: one positive ranked 2nd of 2       -> DCG = 1/log2(3); IDCG = 1; in NDCG only: with 2 rows
    #                                                its recall@2 is 1 whatever the order
    # user c: no positive                        -> left out of both averages
    # user d: no negative                        -> left out of both: every order is perfect
    group = np.array(["a", "a", "a", "b", "b", "c", "d", "d"], dtype=object)
    label = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    score = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.5, 0.1, 0.2])
    m = ranking_at_k(group, label, score, k=2)
    ndcg_a = 1 / (1 + 1 / math.log2(3))
    ndcg_b = 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((ndcg_a + ndcg_b) / 2, abs=1e-12)
    assert m["recall@2"] == pytest.approx(0.5, abs=1e-12)
    assert {k: v for k, v in m.items() if not k.startswith(("ndcg@2", "recall@2")) or k.endswith("_users")} == {
        "users": 4, "users_no_positive": 1, "users_no_negative": 1, "ndcg@2_users": 2, "users_at_most_2_rows": 1,
        "recall@2_users": 1}
    assert all(isinstance(v, int) for k, v in m.items() if k not in ("ndcg@2", "recall@2"))


def test_users_without_a_negative_do_not_lift_the_means():
    """A user whose rows are all positive scores 1.0 under any model: counted, never averaged in."""
    group = np.repeat(np.arange(3), 12)
    label = np.r_[np.tile([0, 0, 1], 4), np.tile([0, 0, 1], 4), np.ones(12)]
    score = -np.arange(36.0)  # row order: users 0 and 1 find 3 of their 4 positives in the top 10
    with_all_positive = ranking_at_k(group, label, score, k=10)
    without = ranking_at_k(group[:24], label[:24], score[:24], k=10)
    assert with_all_positive["ndcg@10"] == without["ndcg@10"] < 1.0
    assert with_all_positive["recall@10"] == without["recall@10"] < 1.0
    assert with_all_positive["users_no_negative"] == 1 and without["users_no_negative"] == 0


def test_ranking_does_not_depend_on_the_row_order():
    rng = np.random.default_rng(1)
    group = rng.integers(0, 30, 500)
    label = rng.integers(0, 2, 500)
    score = rng.random(500)
    perm = rng.permutation(500)
    a = ranking_at_k(group, label, score, k=5)
    b = ranking_at_k(group[perm], label[perm], score[perm], k=5)
    assert a == pytest.approx(b, abs=1e-12)


def test_perfect_ranking_scores_one():
    group = np.repeat(np.arange(4), 5)
    label = np.tile([1, 1, 0, 0, 0], 4)
    m = ranking_at_k(group, label, label + 0.01 * np.arange(20) % 1, k=2)
    assert (m["ndcg@2"], m["recall@2"]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_recall_leaves_out_users_with_at_most_k_rows_and_says_how_many():
    """With 5 rows and k = 10 every positive is in the top 10 whatever the scores: no mean, a count."""
    group = np.repeat(np.arange(4), 5)
    label = np.tile([1, 1, 0, 0, 0], 4)
    m = ranking_at_k(group, label, -label, k=10)  # the worst order
    assert math.isnan(m["recall@10"]) and m["recall@10_users"] == 0 and m["users_at_most_10_rows"] == 4
    assert m["ndcg@10"] < 0.7 and m["ndcg@10_users"] == 4


def test_ranking_without_any_positive_is_nan():
    m = ranking_at_k(np.array([1, 1]), np.array([0, 0]), np.array([0.1, 0.2]), k=10)
    assert math.isnan(m["ndcg@10"]) and math.isnan(m["recall@10"])


def test_calibration_table_on_a_hand_computed_example():
    prob = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    label = np.array([0, 1, 0, 1, 1])
    table = calibration_table(label, prob, bins=10)
    assert [(r["bin_low"], r["count"]) for r in table] == [(0.0, 1), (0.1, 2), (0.9, 2)]  # empty bins omitted
    assert table[1]["mean_predicted"] == pytest.approx(0.135)
    assert table[1]["observed_rate"] == 0.5
    assert table[2]["mean_predicted"] == pytest.approx(0.975) and table[2]["observed_rate"] == 1.0


def test_calibration_of_a_calibrated_model_follows_the_diagonal():
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    for row in calibration_table(y, p):
        assert abs(row["mean_predicted"] - row["observed_rate"]) < 0.01


def test_all_metrics_reports_the_headline_numbers(scored):
    y, p = scored
    group = np.arange(len(y)) % 50
    m = all_metrics(group, y, p)
    assert set(m) == {"auc", "logloss", "ndcg@10", "recall@10", "mean_predicted", "observed_rate", "ece", "rows",
                      "users", "users_no_positive", "users_no_negative", "ndcg@10_users", "users_at_most_10_rows",
                      "recall@10_users"}
    assert m["auc"] == pytest.approx(roc_auc_score(y, p)) and m["rows"] == len(y) and isinstance(m["rows"], int)
    assert 0 <= m["ece"] <= 1
