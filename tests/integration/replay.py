"""Replay the test split through the service, the way production sees it: score an impression, then
post its event. Statistics are point in time, so the store starts materialized as of the replay's
start and every timestamp group is scored before its own events are posted.

With a spec whose labels come late (`label_delay`, issue 11 item 4), the labels come late online
too: each impression is posted without a label right after it was scored, and its label is posted
(POST /v1/labels, by the impression's id) when its label time t + delay has passed. The rows are
compared with what `build-features` and `evaluate` computed offline for the same spec (positives
count from t + delay < T), not with a definition written again here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipelines.evaluate import offline_scores
from recsys.artifact import load_artifact
from recsys.features import count_column, pos_column
from recsys.features.engine.arrow import add_statistics, split_indices
from recsys.features.raw import load_raw
from recsys.inference import Predictor
from recsys.spec import FeatureSpec

Post = Callable[..., Any]  # httpx.Client.post or TestClient.post


@dataclass
class Replay:
    offline: np.ndarray  # probabilities from the offline path (`recsys evaluate`'s)
    online: np.ndarray  # the same rows served over HTTP
    offline_counters: pd.DataFrame  # raw statistic counters build-features computed per row
    online_counters: pd.DataFrame  # the counters the service scored each row with (explain)
    undelayed_counters: pd.DataFrame | None = None  # delayed labels: the counters had labels been known at once


def first_test_timestamp(features_dir: Path) -> int:
    return int(pd.read_parquet(Path(features_dir) / "test.parquet", columns=["timestamp"])["timestamp"].min())


def replay_start(features_dir: Path, label_delay_s: int = 0) -> int:
    """Where the online store's history ends (`materialize --as-of`): the first test impression, or
    `label_delay_s` before it, so that every positive the store counts was known before any test
    row (t < start implies t + delay < first test timestamp), and every later label is posted."""
    return first_test_timestamp(features_dir) - label_delay_s


def _counters(spec: FeatureSpec, raw_dir: Path, columns: list[str]) -> pd.DataFrame:
    """The raw frame's statistic counters, as build-features computes them for `spec`."""
    raw = load_raw(spec, raw_dir)
    add_statistics(spec, raw)
    return raw.frame[columns]


def replay(post: Post, raw_dir: Path, features_dir: Path, model_dir: Path, token: str,
           min_rows: int = 1000) -> Replay:
    artifact = load_artifact(model_dir)
    spec = artifact.pipeline.spec
    assert spec.label_timestamp is None, "the replay posts labels a fixed `label_delay` after their impressions"
    label_delay_s = spec.label_delay_s if spec.delayed_labels else None
    predictor = Predictor.from_artifact(artifact)
    probs, meta = offline_scores(predictor, features_dir, "test")
    raw = load_raw(spec, raw_dir)
    add_statistics(spec, raw)
    frame = raw.frame
    test_index = split_indices(spec, raw)["test"]
    assert (frame[spec.item_key].to_numpy()[test_index] == meta[spec.item_key].to_numpy()).all()
    counters = [c for s in spec.statistics for c in (count_column(s), pos_column(s))]
    # the offline counters are the encoded features' inputs: `evaluate`'s probabilities must come from them
    np.testing.assert_allclose(predictor.score({c: frame[c].to_numpy()[test_index]
                                                for c in predictor.pipeline.required_columns() if c in frame}),
                               probs, rtol=0, atol=1e-5)
    context_cols = spec.source_columns("impressions")
    delay = label_delay_s or 0
    as_of = replay_start(features_dir, delay)
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[test_index] = True
    position = np.full(len(frame), -1)
    position[test_index] = np.arange(len(test_index))

    tail = np.flatnonzero(frame[spec.timestamp].to_numpy() >= as_of)  # every event the store has not seen
    ts = frame[spec.timestamp].to_numpy().astype(np.int64)[tail]
    assert (np.diff(ts) >= 0).all(), "the raw frame is in time order"
    records = frame.iloc[tail].to_dict("records")
    online = np.full(len(test_index), np.nan)
    online_counters = pd.DataFrame(np.nan, index=np.arange(len(test_index)), columns=counters)
    auth = {"authorization": f"Bearer {token}"}

    def row(r: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": str(r[spec.user_key]), "item_id": str(r[spec.item_key]),  # ids are JSON strings
                "context": {"timestamp": int(r[spec.timestamp]), **{c: r[c] for c in context_cols}}}

    def event(i: int) -> dict[str, Any]:
        """The impression; its label with it, or (delayed) later by `label`."""
        out = {**row(records[i]), "event_id": f"e{tail[i]}"}
        return out if label_delay_s is not None else {**out, "label": int(records[i][spec.label])}

    def label(i: int) -> dict[str, Any]:
        return {"impression_id": f"e{tail[i]}", "label": int(records[i][spec.label]), "timestamp": int(ts[i]) + delay}

    # The timeline: at each instant T, the impressions at T (scored, then posted), then the labels
    # whose time t + delay is T. Without a delay the impression carries its label.
    instants = np.unique(ts) if label_delay_s is None else np.union1d(ts, ts + delay)
    shown = np.searchsorted(ts, instants, side="left"), np.searchsorted(ts, instants, side="right")
    known = np.searchsorted(ts + delay, instants, side="left"), np.searchsorted(ts + delay, instants, side="right")
    batch: list[int] = []  # impressions (positions in `tail`) to score and post
    labels: list[int] = []  # impressions whose label to post after them

    def flush() -> int:
        """Score the batch's test rows, then post its impressions, then its labels."""
        scored = [i for i in batch if is_test[tail[i]]]
        if scored:
            resp = post("/v1/score", json={"rows": [row(records[i]) for i in scored], "explain": True}, headers=auth)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["degraded"] is None, f"scored from cold features ({body['degraded']}): not a replay"
            where = position[tail[scored]]
            online[where] = body["scores"]
            for c in counters:
                online_counters.loc[where, c] = body["features"][c]
        if batch:
            resp = post("/v1/events", json={"events": [event(i) for i in batch]}, headers=auth)
            assert resp.status_code == 200 and resp.json()["applied"] == len(batch), resp.text
        if labels:
            resp = post("/v1/labels", json={"labels": [label(i) for i in labels]}, headers=auth)
            assert resp.status_code == 200 and resp.json()["applied"] == len(labels), resp.text
        batch.clear()
        labels.clear()
        return len(scored)

    # Instants are batched into one round of requests while no pending impression or label shares a
    # user or an item with a later instant's rows: every statistic is keyed by one of them, so each
    # row still sees exactly what came before its timestamp. That cuts the requests ~10x without
    # changing what is proven.
    users: set[str] = set()
    items: set[str] = set()
    scored = 0
    for k in range(len(instants)):
        group = range(shown[0][k], shown[1][k])
        arrived = range(known[0][k], known[1][k]) if label_delay_s is not None else range(0)
        g_users = {records[i][spec.user_key] for i in group}
        g_items = {records[i][spec.item_key] for i in group}
        if (batch or labels) and (g_users & users or g_items & items or len(batch) > 500):
            scored += flush()
            users.clear()
            items.clear()
            if scored >= min_rows:
                break
        batch.extend(group)
        labels.extend(arrived)
        users |= g_users | {records[i][spec.user_key] for i in arrived}
        items |= g_items | {records[i][spec.item_key] for i in arrived}
    else:
        scored += flush()
    done = ~np.isnan(online)
    offline_counters = frame.iloc[test_index][counters].reset_index(drop=True)[done].reset_index(drop=True)
    undelayed = None
    if label_delay_s is not None:
        at_once = spec.model_copy(update={"label_delay": None})
        undelayed = _counters(at_once, raw_dir, counters).iloc[test_index[done]].reset_index(drop=True)
    return Replay(probs[done], online[done], offline_counters, online_counters[done].reset_index(drop=True),
                  undelayed)
