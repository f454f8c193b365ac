"""Synthetic short-video feed data with a planted click model.

Users (country, language, age bucket, gender) watch items (creator, category, duration, upload time,
Zipf popularity) on a device at some hour. The watch probability is a logistic model with
  user×content interactions  latent user taste · latent category vector, country×category affinity
  content effects            item and creator quality, shorter videos watched more, fresher ones too
  context effects            device, hour of day (evening peak), weekend
  history effects            fatigue: each earlier impression of the same category lowers it
  session effects            a user watches in sessions (8 videos ~45 s apart on one device), each
                             with a mood that lifts or lowers all its watches
and every impression keeps `true_prob` (given all but the mood), so the Bayes-optimal AUC of any
split is known exactly for a model that learns labels only once they are known.
The session mood is what makes label delays matter (docs/labels.md): the labels of the last
minutes reveal it, but a watch is known only when it ends, so a statistic that counts them at
the impression's own time (no `label_delay`) learns from labels the service cannot have yet.
Everything is vectorized numpy; the same seed gives the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.features.statistics import point_in_time_counts
from recsys.io import check_output, output_folder, write_arrow

__all__ = ["SyntheticConfig", "generate"]

DAY = 86_400
SESSION_LEN = 8  # impressions of a user per session
MOOD_SD = 0.8  # a session's mood on the logit: what the labels of the last minutes reveal
START = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 5_000
    items: int = 3_000
    impressions: int = 400_000
    categories: int = 24
    countries: int = 12
    days: int = 28
    seed: int = 0
    # Only the items table (the same items as a full run with this seed): a 10 M-item catalog to
    # index, without the impressions it would take to show every item.
    items_only: bool = False


def _ids(prefix: str, codes: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, np.asarray(codes).astype(str)).astype(object)


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return rng.permutation(w / w.sum())


def _sessions(ts: np.ndarray, u: np.ndarray, i: np.ndarray, device: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Each user's impressions, in time order, grouped by SESSION_LEN into sessions: a session
    starts at its first impression's time and its videos follow ~45 s apart, on the session's first
    device, with one mood (N(0, MOOD_SD) on the logit). Returns (ts, user, item, device, mood)
    sorted by time."""
    by_user = np.lexsort((ts, u))
    u, ts, i, device = u[by_user], ts[by_user], i[by_user], device[by_user]
    first_of_user = np.searchsorted(u, u)
    session = u.astype(np.int64) * len(u) + (np.arange(len(u)) - first_of_user) // SESSION_LEN
    start = np.r_[True, session[1:] != session[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(u)), 0))
    elapsed = np.cumsum(rng.exponential(45.0, len(u)))
    ts = ts[first] + (elapsed - elapsed[first]).astype(np.int64)
    mood = rng.normal(0, MOOD_SD, int(start.sum()))[np.cumsum(start) - 1]
    order = np.argsort(ts, kind="stable")
    return ts[order], u[order], i[order], device[first][order], mood[order]


def generate(cfg: SyntheticConfig) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(cfg.seed)
    U, I, C, K = cfg.users, cfg.items, cfg.categories, cfg.countries  # noqa: E741 (the model's notation)
    dim = 4

    # Users
    country = rng.choice(K, size=U, p=_zipf_weights(K, 1.0, rng))
    language = np.where(rng.random(U) < 0.85, country % 5, rng.integers(0, 5, U))
    users = pd.DataFrame({
        "user_id": _ids("u", np.arange(U)),
        "country": _ids("c", country),
        "language": _ids("l", language),
        "age_bucket": rng.choice(["13-17", "18-24", "25-34", "35-44", "45-54", "55+"], size=U,
                                 p=[0.1, 0.3, 0.25, 0.15, 0.12, 0.08]),
        "gender": rng.choice(["f", "m", "u"], size=U, p=[0.48, 0.47, 0.05]),
    })
    taste = rng.normal(0, 1, (U, dim))
    user_bias = rng.normal(0, 0.4, U)
    main_device = rng.choice(3, size=U, p=[0.45, 0.45, 0.10])
    activity = rng.lognormal(0, 0.8, U)

    # Items
    creators = max(I // 8, 1)
    creator_cat = rng.choice(C, size=creators, p=_zipf_weights(C, 0.6, rng))
    creator_quality = rng.normal(0, 0.3, creators)
    creator = rng.integers(0, creators, I)
    category = np.where(rng.random(I) < 0.85, creator_cat[creator], rng.integers(0, C, I))
    cat_vec = rng.normal(0, 1, (C, dim))
    quality = rng.normal(0, 0.5, I)
    duration = np.clip(rng.lognormal(np.log(35), 0.8, I), 3, 600).round(1)
    upload = START - rng.integers(3600, 60 * DAY, I)
    items = pd.DataFrame({
        "item_id": _ids("v", np.arange(I)),
        "creator_id": _ids("cr", creator),
        "category": _ids("cat", category),
        "duration_s": duration,
        "upload_time": upload,
    })
    if cfg.items_only:
        return {"items": items}
    country_cat = rng.normal(0, 0.3, (K, C))

    # Impressions: time of day follows an evening peak, users by activity, items by Zipf popularity.
    n = cfg.impressions
    hour_w = 1.0 + 0.8 * np.sin((np.arange(24) - 14) / 24 * 2 * np.pi) ** 2 * (np.arange(24) >= 12)
    day = rng.integers(0, cfg.days, n)
    hour = rng.choice(24, size=n, p=hour_w / hour_w.sum())
    ts = START + day * DAY + hour * 3600 + rng.integers(0, 3600, n)
    ts.sort()
    u = rng.choice(U, size=n, p=activity / activity.sum())
    i = rng.choice(I, size=n, p=_zipf_weights(I, 1.05, rng))
    device = np.where(rng.random(n) < 0.8, main_device[u], rng.integers(0, 3, n))
    ts, u, i, device, mood = _sessions(ts, u, i, device, rng)
    hour = (ts // 3600) % 24
    weekend = ((ts // DAY + 3) % 7) >= 5
    age_days = (ts - upload[i]) / DAY
    seen_cat, _ = point_in_time_counts(u.astype(np.int64) * C + category[i], ts, np.zeros(n))
    # taste·category for every (user, category) pair once, then one gather per impression (the same
    # sum of products as per row, 10 M dot products cost seconds).
    affinity = np.einsum("ud,cd->uc", taste, cat_vec)

    logit = (
        -0.9
        + 0.45 * affinity[u, category[i]]
        + country_cat[country[u], category[i]]
        + quality[i] + creator_quality[creator[i]] + user_bias[u]
        - 0.35 * (np.log(duration[i]) - np.log(35))
        - 0.12 * np.log1p(age_days)
        + np.array([0.1, 0.0, -0.4])[device]
        + 0.25 * ((hour >= 18) & (hour <= 23)) + 0.15 * weekend
        - 0.18 * np.log1p(seen_cat)
    )
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + mood)))).astype(np.int8)
    # `true_prob`: the click probability given everything but the session's mood, which no honest
    # feature can know (its labels come later): E over the mood of the probability, by Gauss-Hermite
    # quadrature. Its AUC is the best a model served with delayed labels can reach.
    nodes, weights = np.polynomial.hermite.hermgauss(16)
    prob = np.zeros(n)
    for x, w in zip(nodes, weights / np.sqrt(np.pi), strict=True):  # 16 nodes: memory stays O(n)
        prob += w / (1.0 + np.exp(-(logit + np.sqrt(2) * MOOD_SD * x)))
    # Keys and device as Categoricals (codes into the users / items tables): 10 M impressions take
    # ~1 GB less than with one Python string per row.
    impressions = pd.DataFrame({
        "user_id": pd.Categorical.from_codes(u, categories=pd.Index(users["user_id"].to_numpy(), dtype=object)),
        "item_id": pd.Categorical.from_codes(i, categories=pd.Index(items["item_id"].to_numpy(), dtype=object)),
        "timestamp": ts,
        "device": pd.Categorical.from_codes(device, categories=pd.Index(["ios", "android", "web"], dtype=object)),
        "label": label,
        "true_prob": prob,
    })
    return {"users": users, "items": items, "impressions": impressions}


def write(cfg: SyntheticConfig, out: str | Path) -> dict[str, Path]:
    """The three tables as parquet in the folder `out` (replaced as a whole: `recsys.io.output_folder`)."""
    check_output(out, "raw-tables")  # before the work
    tables = generate(cfg)
    with output_folder(out, "raw-tables") as tmp:
        for name, frame in tables.items():
            write_arrow(_plain_strings(pa.Table.from_pandas(frame, preserve_index=False)), tmp / f"{name}.parquet")
    return {name: Path(out) / f"{name}.parquet" for name in tables}


def _plain_strings(table: pa.Table) -> pa.Table:
    """Categoricals are written as plain string columns (parquet still dictionary-encodes them on
    disk): readers get ordinary strings, not a pandas category dtype."""
    schema = pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema])
    return table.cast(schema)
