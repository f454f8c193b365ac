"""Delayed labels (docs/labels.md): for an impression at T a statistic counts the earlier impressions
(t < T) and the positives whose label was known before T (t_label < T), a window bucketing both by
the impression time. Checked against a brute-force reading of that definition, for a fixed delay
and a label-time column, with and without windows, and through build-features and materialize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataError, SpecError
from recsys.features.engine.arrow import add_statistics
from recsys.features.raw import LABEL_TIME, load_raw
from recsys.features.statistics import point_in_time_counts, totals_before, window_start
from recsys.spec import FeatureSpec, load_spec, parse_spec
from tests.conftest import REPO

from .helpers import copy_raw


def _brute(codes, ts, label, label_ts, window_s=None, bucket_s=None):
    count, pos = np.zeros(len(ts)), np.zeros(len(ts))
    for i in range(len(ts)):
        seen = (codes == codes[i]) & (ts < ts[i])
        if window_s is not None:
            seen &= ts >= window_start(ts[i:i + 1], window_s, bucket_s)[0]
        count[i] = seen.sum()
        pos[i] = (seen & (label == 1) & (label_ts < ts[i])).sum()
    return count, pos


def _events(seed: int, n: int = 600):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, n)
    ts = rng.integers(0, 20_000, n) // 30 * 30  # ties: many events share a second
    label = (rng.random(n) < 0.4).astype(np.int8)
    return codes, ts, label, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("window", [None, (3600, 600), (1800, 60)])
def test_a_fixed_delay_matches_the_definition(seed: int, window):
    codes, ts, label, _ = _events(seed)
    for delay in (0, 1, 600, 5000):
        label_ts = ts + delay
        got = point_in_time_counts(codes, ts, label, *(window or (None, None)), label_ts=label_ts)
        want = _brute(codes, ts, label, label_ts, *(window or (None, None)))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"delay {delay}")
    # no delay is today's statistic
    np.testing.assert_array_equal(point_in_time_counts(codes, ts, label, *(window or (None, None)), label_ts=ts),
                                  point_in_time_counts(codes, ts, label, *(window or (None, None))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_label_time_column_matches_the_definition(seed: int):
    codes, ts, label, rng = _events(seed)
    label_ts = ts + rng.integers(0, 3000, len(ts)) * (rng.random(len(ts)) < 0.7)
    order = rng.permutation(len(ts))  # input order does not matter
    got = point_in_time_counts(codes[order], ts[order], label[order], label_ts=label_ts[order])
    want = _brute(codes, ts, label, label_ts)
    np.testing.assert_array_equal(got[0], want[0][order])
    np.testing.assert_array_equal(got[1], want[1][order])


def test_materialized_totals_take_every_label_of_the_impressions_before_as_of():
    """The service cannot take a late label for an impression it never saw, so materialize counts
    the log's labels of all impressions before as_of: what the offline statistic says of them for
    any request from as_of + delay on."""
    codes, ts, label, _ = _events(3)
    as_of, delay = 12_000, 900
    totals = totals_before([codes], ts, label, as_of).set_index("key0")
    before = ts < as_of
    probe = np.arange(5)  # one request per key at as_of + delay, seeing only the impressions before as_of
    _, pos = point_in_time_counts(np.r_[codes[before], probe], np.r_[ts[before], np.full(5, as_of + delay)],
                                  np.r_[label[before], np.zeros(5, np.int8)],
                                  label_ts=np.r_[ts[before] + delay, np.full(5, as_of + delay)])
    for c in range(5):
        assert totals.loc[str(c), "count"] == (before & (codes == c)).sum()
        assert totals.loc[str(c), "positives"] == pos[before.sum() + c] == (before & (codes == c) & (label == 1)).sum()


def _spec(**top) -> FeatureSpec:
    data = {"features": {"user_id": {"group": "user", "type": "categorical"},
                         "hist": {"type": "statistic", "key": ["user_id"]}}, **top}
    return parse_spec(data)


@pytest.mark.parametrize(("top", "message"), [
    ({"label_delay": "10m", "label_timestamp": "watched_at"}, "label_delay and label_timestamp exclude each other"),
    ({"label_delay": "ten minutes"}, "not like 90s, 30m"),
    ({"label_delay": 0}, "must be positive"),
    ({"label_timestamp": "timestamp"}, "must be its own impressions column"),
])
def test_spec_refuses_conflicting_or_bad_label_times(top: dict, message: str):
    with pytest.raises(SpecError, match=message):
        _spec(**top)


def test_a_label_time_column_cannot_feed_windowed_statistics():
    with pytest.raises(SpecError, match="label_timestamp cannot be combined with windowed statistics"):
        parse_spec({"label_timestamp": "watched_at", "features": {
            "user_id": {"group": "user", "type": "categorical"},
            "last_hour": {"type": "statistic", "key": ["user_id"], "window": "1h", "window_buckets": 6}}})


@pytest.fixture(scope="module")
def synthetic() -> dict:
    import yaml

    data = yaml.safe_load((REPO / "pipelines" / "specs" / "synthetic.yaml").read_text())
    data.pop("label_delay", None)
    # a label-time column cannot feed windowed statistics (see above)
    data["features"] = {k: v for k, v in data["features"].items() if "window" not in v}
    return data


def test_a_delay_and_the_equal_label_time_column_build_the_same_statistics(synthetic: dict, tiny_raw: Path,
                                                                             tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    # label times as ISO strings, 10 minutes after the impression; negatives may leave it empty
    at = pd.to_datetime(imp["timestamp"] + 600, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp.assign(watched_at=at.where(imp["label"] == 1)))
    frames = {}
    for name, top in {"none": {}, "delay": {"label_delay": "10m"}, "column": {"label_timestamp": "watched_at"}}.items():
        spec = parse_spec({**synthetic, **top})
        frames[name] = load_raw(spec, raw)
        add_statistics(spec, frames[name])
    cols = [c for c in frames["none"].frame.columns if c.endswith(("__count", "__pos"))]
    pd.testing.assert_frame_equal(frames["delay"].frame[cols], frames["column"].frame[cols])
    counts = [c for c in cols if c.endswith("__count")]
    pd.testing.assert_frame_equal(frames["delay"].frame[counts], frames["none"].frame[counts])
    pos = [c for c in cols if c.endswith("__pos")]
    assert (frames["delay"].frame[pos] <= frames["none"].frame[pos]).all().all()
    assert (frames["delay"].frame[pos] < frames["none"].frame[pos]).any().all()  # the delay matters here
    assert frames["delay"].frame[LABEL_TIME].tolist() == (frames["delay"].frame["timestamp"] + 600).tolist()


@pytest.mark.parametrize(("change", "message"), [
    (lambda imp: imp.assign(watched_at=imp["timestamp"] - 1), "2 labels are known before their impression, e.g. "
                                                               "label time"),
    (lambda imp: imp.assign(watched_at=np.where(imp["label"] == 1, np.nan, imp["timestamp"])), "positive impressions "
                                                                                               "have no label time"),
])
def test_label_times_before_the_impression_or_missing_on_a_positive_are_refused(synthetic: dict, tiny_raw: Path,
                                                                                 tmp_path: Path, change, message):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet").head(50).copy()
    imp = change(imp.assign(watched_at=imp["timestamp"] + 5))
    if "before" in message:
        imp.loc[imp.index[2:], "watched_at"] = imp["timestamp"][2:] + 5
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(DataError, match=f"label_timestamp column 'watched_at': .*{message}"):
        load_raw(parse_spec({**synthetic, "label_timestamp": "watched_at"}), raw)


def test_shipped_synthetic_spec_delays_labels_ten_minutes():
    assert load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml").label_delay_s == 600
