"""Point-in-time statistics on Spark equal the embedded definition (`point_in_time_counts`), also
for a hot key whose events span many prefix-sum blocks, ties at one timestamp and windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.features.engine.spark_statistics import add_statistics, prefix_before
from recsys.features.statistics import point_in_time_counts
from recsys.spec import parse_spec

pytestmark = pytest.mark.spark


def test_prefix_sums_cross_block_boundaries(spark):
    frame = spark.createDataFrame(pd.DataFrame({"k": ["a"] * 6 + ["b"], "t": [0, 3, 3, 4, 9, 10, 3],
                                                "w": [1, 1, 1, 1, 1, 1, 5]}))
    got = prefix_before(frame, ["k"], "t", ["w"], block=4).toPandas().sort_values(["k", "t"])
    assert got[["k", "t", "w"]].values.tolist() == [["a", 0, 0], ["a", 3, 1], ["a", 4, 3], ["a", 9, 4], ["a", 10, 5],
                                                  ["b", 3, 0]]


def test_statistics_equal_the_embedded_engine_for_a_hot_key_and_windows(spark):
    rng = np.random.default_rng(0)
    n = 3000
    # One hot user with half the events; coarse timestamps so that many events share a second.
    user = np.where(rng.random(n) < 0.5, "hot", np.char.add("u", rng.integers(0, 50, n).astype(str)))
    frame = pd.DataFrame({"user_id": user.astype(object), "ts": np.sort(rng.integers(0, 10 * 86400, n)) // 60 * 60,
                          "label": rng.integers(0, 2, n).astype(np.int8)})
    spec = parse_spec({"timestamp": "ts", "features": {
        "user_id": {"group": "user", "type": "categorical"},
        "all": {"type": "statistic", "key": ["user_id"]},
        "day": {"type": "statistic", "key": ["user_id"], "window": "1d", "window_buckets": 24},
        "week": {"type": "statistic", "key": ["user_id"], "window": "7d", "window_buckets": 7}}})
    got = add_statistics(spec, spark.createDataFrame(frame), {"user_id": "user_id"}, block=500).toPandas()
    got = got.sort_values(["user_id", "ts"], kind="stable").drop_duplicates(["user_id", "ts"])
    codes = pd.factorize(frame["user_id"])[0]
    want = frame.copy()
    for name, stat in spec.statistics.items():
        c, p = point_in_time_counts(codes, frame["ts"].to_numpy(), frame["label"].to_numpy(), stat.window_s,
                                    stat.bucket_s)
        want[f"{name}__count"], want[f"{name}__pos"] = c, p
    want = want.sort_values(["user_id", "ts"], kind="stable").drop_duplicates(["user_id", "ts"])
    for name in spec.statistics:
        for col in (f"{name}__count", f"{name}__pos"):
            assert got[col].to_numpy().tolist() == want[col].to_numpy().astype(np.int64).tolist(), col


@pytest.mark.parametrize("top", [{"label_delay": "2h"}, {"label_timestamp": "seen"}], ids=["delay", "column"])
def test_delayed_labels_equal_the_embedded_engine(spark, top: dict):
    from recsys.features.raw import LABEL_TIME

    rng = np.random.default_rng(1)
    n = 3000
    user = np.where(rng.random(n) < 0.5, "hot", np.char.add("u", rng.integers(0, 50, n).astype(str)))
    ts = np.sort(rng.integers(0, 10 * 86400, n)) // 60 * 60
    delay = np.full(n, 7200) if "label_delay" in top else rng.integers(0, 3 * 86400, n) // 60 * 60
    frame = pd.DataFrame({"user_id": user.astype(object), "ts": ts, "label": rng.integers(0, 2, n).astype(np.int8),
                          LABEL_TIME: ts + delay})
    windowed = {"day": {"type": "statistic", "key": ["user_id"], "window": "1d", "window_buckets": 24},
                "hour": {"type": "statistic", "key": ["user_id"], "window": "1h", "window_buckets": 6}}
    spec = parse_spec({"timestamp": "ts", **top, "features": {
        "user_id": {"group": "user", "type": "categorical"}, "all": {"type": "statistic", "key": ["user_id"]},
        **(windowed if "label_delay" in top else {})}})
    got = add_statistics(spec, spark.createDataFrame(frame), {"user_id": "user_id"}, block=500).toPandas()
    got = got.sort_values(["user_id", "ts"], kind="stable").drop_duplicates(["user_id", "ts"])
    codes = pd.factorize(frame["user_id"])[0]
    want = frame.copy()
    for name, stat in spec.statistics.items():
        c, p = point_in_time_counts(codes, ts, frame["label"].to_numpy(), stat.window_s, stat.bucket_s,
                                    frame[LABEL_TIME].to_numpy())
        want[f"{name}__count"], want[f"{name}__pos"] = c, p
    want = want.sort_values(["user_id", "ts"], kind="stable").drop_duplicates(["user_id", "ts"])
    for name in spec.statistics:
        for col in (f"{name}__count", f"{name}__pos"):
            assert got[col].to_numpy().tolist() == want[col].to_numpy().astype(np.int64).tolist(), col
