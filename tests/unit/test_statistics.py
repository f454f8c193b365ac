"""Point-in-time impression statistics: each row counts only strictly earlier events of its key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.features import count_column, pos_column
from recsys.features.engine.arrow import add_statistics
from recsys.features.raw import load_raw
from recsys.features.statistics import (
    counter_field,
    key_codes,
    point_in_time_counts,
    sub_key,
    totals_before,
    window_start,
)
from recsys.spec import load_spec

from .helpers import copy_raw

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_SPEC = REPO / "pipelines" / "specs" / "synthetic.yaml"


def brute_force_counts(codes: np.ndarray, ts: np.ndarray, label: np.ndarray, window_s: int | None = None,
                       bucket_s: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The definition, row by row (test-only reference): same key, strictly earlier, and with a
    window at or after `window_s` before the start of the row's time bucket."""
    count, pos = np.zeros(len(codes)), np.zeros(len(codes))
    for i, (c, t) in enumerate(zip(codes, ts, strict=False)):
        seen = (codes == c) & (ts < t)
        if window_s is not None:
            seen &= ts >= (t // bucket_s) * bucket_s - window_s
        count[i], pos[i] = seen.sum(), label[seen].sum()
    return count, pos


def test_counts_only_earlier_events_of_the_same_key():
    codes = np.array([0, 0, 1, 0, 1])
    ts = np.array([10, 20, 30, 40, 50])
    label = np.array([1, 0, 1, 1, 0])
    count, pos = point_in_time_counts(codes, ts, label)
    assert count.tolist() == [0, 1, 0, 2, 1]
    assert pos.tolist() == [0, 1, 0, 1, 1]


def test_events_at_the_same_timestamp_do_not_see_each_other():
    codes = np.zeros(4, dtype=np.int64)
    ts = np.array([5, 7, 7, 9])
    label = np.array([1, 1, 1, 0])
    count, pos = point_in_time_counts(codes, ts, label)
    assert count.tolist() == [0, 1, 1, 3]
    assert pos.tolist() == [0, 1, 1, 3]


def test_a_planted_future_event_does_not_change_earlier_rows():
    """The leakage test: appending a positive event after every other one changes nothing before it."""
    rng = np.random.default_rng(0)
    n = 2000
    codes = rng.integers(0, 40, n)
    ts = rng.integers(0, 10_000, n)
    label = rng.integers(0, 2, n)
    before = point_in_time_counts(codes, ts, label)
    future = point_in_time_counts(np.r_[codes, codes[:50]], np.r_[ts, np.full(50, 10_000)], np.r_[label, np.ones(50)])
    np.testing.assert_array_equal(future[0][:n], before[0])
    np.testing.assert_array_equal(future[1][:n], before[1])


def test_counts_match_the_row_by_row_definition_in_any_input_order():
    rng = np.random.default_rng(3)
    n = 600
    codes = rng.integers(0, 15, n)
    ts = rng.integers(0, 200, n)  # many ties
    label = rng.integers(0, 2, n)
    count, pos = point_in_time_counts(codes, ts, label)
    ref_count, ref_pos = brute_force_counts(codes, ts, label)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_array_equal(pos, ref_pos)


@pytest.mark.parametrize(("window_s", "bucket_s"), [(100, 10), (50, 50), (7, 1)])
def test_windowed_counts_match_the_row_by_row_definition(window_s: int, bucket_s: int):
    rng = np.random.default_rng(4)
    n = 600
    codes = rng.integers(0, 10, n)
    ts = rng.integers(0, 400, n)
    label = rng.integers(0, 2, n)
    count, pos = point_in_time_counts(codes, ts, label, window_s, bucket_s)
    ref_count, ref_pos = brute_force_counts(codes, ts, label, window_s, bucket_s)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_array_equal(pos, ref_pos)


def test_window_start_is_aligned_to_the_start_of_the_bucket():
    assert window_start(np.array([3600 * 5 + 59]), window_s=86_400, bucket_s=3600).tolist() == [3600 * 5 - 86_400]


def test_a_planted_future_event_does_not_leak_into_windowed_counts():
    rng = np.random.default_rng(6)
    codes, ts, label = rng.integers(0, 20, 1000), rng.integers(0, 5000, 1000), rng.integers(0, 2, 1000)
    before = point_in_time_counts(codes, ts, label, 600, 60)
    after = point_in_time_counts(np.r_[codes, codes[:30]], np.r_[ts, ts[:30] + 1], np.r_[label, np.ones(30)], 600, 60)
    # Rows later than a planted event may see it; rows at or before its time must not change.
    planted_min = (ts[:30] + 1).min()
    early = ts < planted_min
    np.testing.assert_array_equal(after[0][:1000][early], before[0][early])
    np.testing.assert_array_equal(after[1][:1000][early], before[1][early])


def test_windowed_totals_sum_to_what_an_impression_at_as_of_would_see():
    rng = np.random.default_rng(7)
    n, window_s, bucket_s, as_of = 2000, 3600, 600, 7_000
    users = np.array([f"u{i}" for i in rng.integers(0, 10, n)], dtype=object)
    ts, label = np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 2, n)
    totals = totals_before([users], ts, label, as_of, window_s, bucket_s)
    assert totals["bucket"].min() * bucket_s >= (as_of // bucket_s) * bucket_s - window_s  # older buckets dropped
    summed = totals.groupby("key0")[["count", "positives"]].sum()
    probes = np.unique(users)
    codes = key_codes([np.r_[users, probes]])
    count, pos = point_in_time_counts(codes, np.r_[ts, np.full(len(probes), as_of)],
                                      np.r_[label, np.zeros(len(probes))], window_s, bucket_s)
    for j, u in enumerate(probes):
        assert (summed.loc[u, "count"], summed.loc[u, "positives"]) == (count[n + j], pos[n + j])


def test_counts_of_an_empty_log_are_empty():
    count, pos = point_in_time_counts(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert count.shape == pos.shape == (0,)


def test_key_codes_give_one_code_per_combination_of_columns():
    users = np.array(["u1", "u1", "u2", "u2", "u1"], dtype=object)
    cats = np.array(["a", "b", "a", "a", "a"], dtype=object)
    codes = key_codes([users, cats])
    assert codes[0] == codes[4] and codes[2] == codes[3]
    assert len({codes[0], codes[1], codes[2]}) == 3


def test_key_codes_do_not_confuse_columns_that_concatenate_alike():
    codes = key_codes([np.array(["a", "ab"], dtype=object), np.array(["bc", "c"], dtype=object)])
    assert codes[0] != codes[1]


def test_totals_before_counts_events_strictly_before_as_of():
    users = np.array(["u1", "u1", "u2", "u1"], dtype=object)
    ts = np.array([10, 20, 20, 30])
    label = np.array([1, 0, 1, 1])
    frame = totals_before([users], ts, label, as_of=20).set_index("key0")
    assert frame.loc["u1", "count"] == 1 and frame.loc["u1", "positives"] == 1
    assert "u2" not in frame.index
    everything = totals_before([users], ts, label, as_of=None).set_index("key0")
    assert everything.loc["u1", "count"] == 3 and everything.loc["u1", "positives"] == 2


def test_totals_before_equals_what_an_impression_at_as_of_would_see():
    """Online counters materialized as of t must equal the offline feature of an impression at t."""
    rng = np.random.default_rng(5)
    n = 1000
    users = np.array([f"u{i}" for i in rng.integers(0, 20, n)], dtype=object)
    cats = np.array([f"c{i}" for i in rng.integers(0, 4, n)], dtype=object)
    ts = np.sort(rng.integers(0, 500, n))
    label = rng.integers(0, 2, n)
    as_of = 250
    totals = totals_before([users, cats], ts, label, as_of).set_index(["key0", "key1"])
    probe_users, probe_cats = users[:10], cats[:10]
    codes = key_codes([np.r_[users, probe_users], np.r_[cats, probe_cats]])
    count, pos = point_in_time_counts(codes, np.r_[ts, np.full(10, as_of)], np.r_[label, np.zeros(10)])
    for j, (u, c) in enumerate(zip(probe_users, probe_cats, strict=False)):
        row = totals.loc[(u, c)] if (u, c) in totals.index else pd.Series({"count": 0.0, "positives": 0.0})
        assert (row["count"], row["positives"]) == (count[n + j], pos[n + j])


def test_counter_field_names_a_sub_key_only_when_there_is_one():
    assert counter_field("user_history", "", "c") == "user_history:c"
    sub = sub_key([np.array(["cat1"], dtype=object)])[0]
    assert counter_field("user_category_history", sub, "p") == "user_category_history:cat1:p"
    assert counter_field("user_history", "", "c", bucket=42) == "user_history:c@42"
    assert sub_key([]).size == 0


def test_build_features_statistics_ignore_a_planted_future_impression(tiny_raw: Path, tmp_path: Path):
    """End to end through load_raw + add_statistics with the shipped spec: appending future
    impressions of existing users and items (all positive) leaves every earlier row's counters as they were."""
    spec = load_spec(SYNTHETIC_SPEC)
    base = load_raw(spec, tiny_raw)
    add_statistics(spec, base)
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    planted = imp.sample(100, random_state=0).assign(timestamp=imp["timestamp"].max() + 3600, label=1)
    raw2 = copy_raw(tiny_raw, tmp_path / "raw", impressions=pd.concat([imp, planted], ignore_index=True))
    grown = load_raw(spec, raw2)
    add_statistics(spec, grown)
    n = len(base.frame)
    for name in spec.statistics:
        for col in (count_column(name), pos_column(name)):
            np.testing.assert_array_equal(grown.frame[col].to_numpy()[:n], base.frame[col].to_numpy(), err_msg=col)


def test_build_features_statistics_match_the_definition_on_sampled_rows(tiny_raw: Path):
    spec = load_spec(SYNTHETIC_SPEC)
    raw = load_raw(spec, tiny_raw)
    add_statistics(spec, raw)
    f = raw.frame
    ts, y = f[spec.timestamp].to_numpy(), f[spec.label].to_numpy()
    rows = np.random.default_rng(0).choice(len(f), 200, replace=False)
    for name, feat in spec.statistics.items():
        keys = [f[c].to_numpy() for c in spec.statistic_key_columns(name)]
        for r in rows:
            same = np.logical_and.reduce([k == k[r] for k in keys]) & (ts < ts[r])
            if feat.window_s is not None:
                same &= ts >= window_start(ts[r], feat.window_s, feat.bucket_s)
            assert f[count_column(name)].iat[r] == same.sum(), (name, r)
            known = ts + spec.label_delay_s < ts[r]  # the shipped spec's labels come 10 minutes later
            assert f[pos_column(name)].iat[r] == y[same & known].sum(), (name, r)
