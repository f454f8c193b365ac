"""A world with a planted taste: every user likes one category and (almost) only its items.

160 users in 8 taste groups, 400 items in 8 categories (50 each) plus one COLD item per category that
the items table has but no impression shows. A user's impressions are drawn uniformly from the
shown items; a same-category item is clicked with probability 0.9, any other with 0.02."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

CATEGORIES, USERS_PER, ITEMS_PER, IMPRESSIONS_PER_USER = 8, 20, 50, 120


def taste_spec() -> dict[str, Any]:
    return {
        "name": "taste",
        "features": {
            "user_id": {"group": "user", "type": "categorical"},
            "region": {"group": "user", "type": "categorical"},
            "item_id": {"group": "content", "type": "categorical"},
            "category": {"group": "content", "type": "categorical"},
            "device": {"group": "context", "type": "categorical"},
            "hour": {"group": "context", "type": "time", "part": "hour"},
            "user_history": {"type": "statistic", "key": ["user_id"], "smoothing": 5},
            "item_history": {"type": "statistic", "key": ["item_id"], "smoothing": 5},
        },
        "split": {"method": "time", "valid_fraction": 0.15, "test_fraction": 0.15},
        "model": {"embedding_dim": 8, "hidden": [16]},
        "training": {"optimizer": {"name": "adam", "lr": 0.01}, "epochs": 1, "batch_size": 512},
        "retrieval": {"embedding_dim": 16, "hidden": [32], "temperature": 0.1, "epochs": 12, "patience": 12,
                      "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.01}, "popularity_weight": 0.0},
    }


def write_taste_world(out: Path, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_users, n_items = CATEGORIES * USERS_PER, CATEGORIES * ITEMS_PER
    user_cat = np.repeat(np.arange(CATEGORIES), USERS_PER)
    item_cat = np.repeat(np.arange(CATEGORIES), ITEMS_PER)
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)],
                          "region": rng.choice(["n", "s", "e", "w"], n_users)})
    items = pd.DataFrame({"item_id": [f"v{i}" for i in range(n_items)] + [f"cold{c}" for c in range(CATEGORIES)],
                          "category": [f"c{c}" for c in item_cat] + [f"c{c}" for c in range(CATEGORIES)]})
    u = np.repeat(np.arange(n_users), IMPRESSIONS_PER_USER)
    i = rng.integers(0, n_items, len(u))
    p = np.where(user_cat[u] == item_cat[i], 0.9, 0.02)
    ts = 1_767_225_600 + rng.integers(0, 10 * 86_400, len(u))
    label = (rng.random(len(u)) < p).astype(int)
    imp = pd.DataFrame({"user_id": [f"u{x}" for x in u], "item_id": [f"v{x}" for x in i], "timestamp": ts,
                        "device": rng.choice(["ios", "android"], len(u)), "label": label})
    out.mkdir(parents=True, exist_ok=True)
    users.to_parquet(out / "users.parquet")
    items.to_parquet(out / "items.parquet")
    imp.sort_values("timestamp").to_parquet(out / "impressions.parquet")
    (out / "spec.yaml").write_text(yaml.safe_dump(taste_spec()))
    return {"user_category": dict(zip(users["user_id"], (f"c{c}" for c in user_cat), strict=True)),
            "item_category": dict(zip(items["item_id"], items["category"], strict=True))}


@pytest.fixture(scope="session")
def taste_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Raw tables, features, a ranker artifact with retrieval towers and an index."""
    from pipelines.build_features import build_features
    from pipelines.retrieval import run_index, run_train_retrieval
    from pipelines.train import run_train
    from recsys.spec import load_spec

    root = tmp_path_factory.mktemp("taste")
    truth = write_taste_world(root / "raw")
    quiet = {"log": lambda _: None, "progress": False}
    build_features(load_spec(root / "raw" / "spec.yaml"), root / "raw", root / "features", **quiet)
    run_train(root / "features", root / "model", **quiet)
    run_train_retrieval(root / "features", root / "model", root / "raw", **quiet)
    run_index(root / "model", root / "raw", **quiet)
    return {"root": root, "raw": root / "raw", "features": root / "features", "model": root / "model", **truth}
