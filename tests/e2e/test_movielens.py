"""MovieLens 100K through the CLI: import → build-features → a short training → evaluate.

The data is read from ../shared/data/movielens-100k (or RECSYS_MOVIELENS) and never copied into the
repo; a missing folder fails the test (see the `movielens_dir` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .helpers import run_ok

pytestmark = [pytest.mark.slow, pytest.mark.movielens]


def test_movielens_import_features_and_short_training_reach_sane_metrics(movielens_dir: Path, tmp_path: Path):
    raw, features, model, report = (tmp_path / n for n in ("raw", "features", "model", "report"))
    run_ok("import-movielens", movielens_dir, "--out", raw)
    impressions = pd.read_parquet(raw / "impressions.parquet")
    assert len(impressions) == 100_000 and set(impressions["label"].unique()) == {0, 1}
    assert pd.read_parquet(raw / "items.parquet")["genres"].str.contains("|", regex=False).any()

    run_ok("build-features", "--spec", "movielens-100k", "--raw", raw, "--out", features, "--quiet")
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 80_000, "valid": 10_000, "test": 10_000}
    assert manifest["time_range"]["train"][1] <= manifest["time_range"]["test"][0]

    run_ok("train", "--features", features, "--out", model, "--epochs", 1, "--quiet")  # short: ~0.73 AUC already
    run_ok("evaluate", "--model", model, "--features", features, "--out", report, "--quiet")
    m = json.loads((report / "metrics.json").read_text())
    assert m["test.auc"] > 0.65, m["test.auc"]
    assert m["test.auc"] > m["test.popularity.auc"]
    assert m["test.logloss"] < 0.69
