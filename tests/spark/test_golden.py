"""The golden test: the Spark engine (local[2]) and the embedded arrow engine build the same
features from the same raw tables — transforms.json and every encoded split equal, ids exactly,
floats to 1e-6, row order aside — on synthetic data (read from folders of parquet and csv part
files) and on MovieLens 100K (time and random split). Then the Spark output trains and its raw
folders materialize like the embedded engine's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.build_features import build_features
from pipelines.generate import SyntheticConfig, generate
from recsys.spec import FeatureSpec, load_spec, parse_spec
from tests.conftest import MOVIELENS, REPO

from .compare import assert_same_splits, assert_same_transforms

pytestmark = pytest.mark.spark


def _both(spec: FeatureSpec, raw: Path, out: Path) -> tuple[Path, Path]:
    from recsys.features.engine.spark import SparkSettings

    quiet = {"log": lambda _: None, "progress": False}
    build_features(spec, raw, out / "arrow", **quiet)
    build_features(spec, raw, out / "spark", engine="spark", settings=SparkSettings(), **quiet)
    return out / "arrow", out / "spark"


def _synthetic_spec() -> FeatureSpec:
    """The synthetic spec plus what it lacks: a hashed feature, windowed statistics, a vocabulary cap.
    Its 10-minute label delay stays: both engines count a positive only once its label is known."""
    data = yaml.safe_load((REPO / "pipelines" / "specs" / "synthetic.yaml").read_text())
    assert data["label_delay"] == "10m"
    data["features"].update({
        "creator_hash": {"group": "content", "type": "hashed", "column": "creator_id", "buckets": 64},
        "category": {"group": "content", "type": "categorical", "max_vocab": 10},
        "user_last_day": {"type": "statistic", "key": ["user_id"], "window": "1d", "window_buckets": 24,
                          "buckets": 5},
        "item_device_week": {"type": "statistic", "key": ["item_id", "device"], "window": "7d", "window_buckets": 7},
    })
    return parse_spec(data)


@pytest.fixture(scope="module")
def synthetic(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Impressions as a folder of 3 parquet parts (ties across parts), users as one csv, items as a
    folder of 2 csv parts: what data engineers' jobs leave behind."""
    tables = generate(SyntheticConfig(users=300, items=200, impressions=20_000, days=7, seed=1))
    raw = tmp_path_factory.mktemp("synthetic-raw")
    imp = tables["impressions"].astype({"user_id": str, "item_id": str, "device": str})
    imp["timestamp"] = imp["timestamp"] // 60 * 60  # minutes: many rows share a timestamp
    (raw / "impressions").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(imp)), 3)):
        imp.iloc[part].to_parquet(raw / "impressions" / f"part-{i:05d}.parquet", index=False)
    tables["users"].to_csv(raw / "users.csv", index=False)
    (raw / "items.csv").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(tables["items"])), 2)):
        tables["items"].iloc[part].to_csv(raw / "items.csv" / f"part-{i:05d}.csv", index=False)
    return (raw, *_both(_synthetic_spec(), raw, tmp_path_factory.mktemp("synthetic-features")))


@pytest.fixture(scope="module")
def movielens_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.movielens import import_movielens

    if not (MOVIELENS / "u.data").is_file():
        pytest.fail(f"MovieLens 100K is missing at {MOVIELENS} (fix: set up ../shared/data/movielens-100k)")
    raw = tmp_path_factory.mktemp("movielens-raw")
    import_movielens(MOVIELENS, raw)
    return raw


def test_synthetic_features_are_equal(synthetic: tuple[Path, Path, Path]):
    _, arrow, spark = synthetic
    assert_same_transforms(arrow, spark)
    assert_same_splits(arrow, spark)


def test_spark_splits_are_folders_of_parts_in_time_order(synthetic: tuple[Path, Path, Path]):
    from recsys.features.splits import read_split

    _, _, spark = synthetic
    assert (spark / "train.parquet").is_dir()
    assert json.loads((spark / "manifest.json").read_text())["engine"] == "spark"
    times = read_split(spark, "train")[1]["timestamp"].to_numpy()
    assert bool(np.all(np.diff(times) >= 0))


@pytest.mark.movielens
@pytest.mark.parametrize("name", ["movielens-100k", "movielens-100k-random"])
def test_movielens_features_are_equal(spark, movielens_raw: Path, tmp_path: Path, name: str):
    arrow, built = _both(load_spec(REPO / "pipelines" / "specs" / f"{name}.yaml"), movielens_raw, tmp_path)
    assert_same_transforms(arrow, built)
    assert_same_splits(arrow, built)


def test_spark_features_train_and_their_raw_folders_materialize(synthetic: tuple[Path, Path, Path], tmp_path: Path):
    from pipelines.train import run_train
    from recsys.artifact import load_artifact
    from recsys.store.materialize import collect_records

    raw, _, spark = synthetic
    path, meta = run_train(spark, tmp_path / "model", {"epochs": 1}, log=lambda _: None, progress=False)
    assert meta["rows"]["train"] == json.loads((spark / "manifest.json").read_text())["rows"]["train"]
    artifact = load_artifact(path)
    records, _ = collect_records(artifact.pipeline.spec, raw, None)
    assert len(records["users"]) > 0
