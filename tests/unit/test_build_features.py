"""build-features: split policy, fitting on train only, the encoded parquet, and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.build_features import build_features
from pipelines.train import load_features
from recsys.errors import DataError, SpecError
from recsys.features.engine.arrow import add_statistics, split_indices
from recsys.features.raw import load_raw
from recsys.features.splits import SPLITS, read_split
from recsys.spec import FeatureSpec, load_spec

from .helpers import copy_raw

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")


def quiet_build(spec: FeatureSpec, raw: Path, out: Path) -> dict:
    return build_features(spec, raw, out, log=lambda _: None, progress=False)


def with_split(spec: FeatureSpec, **split: object) -> FeatureSpec:
    return spec.model_copy(update={"split": spec.split.model_copy(update=split)})


def test_time_split_puts_train_before_valid_before_test(tiny_features: Path):
    times = {s: read_split(tiny_features, s)[1]["timestamp"] for s in SPLITS}
    assert times["train"].max() <= times["valid"].min()
    assert times["valid"].max() <= times["test"].min()
    manifest = json.loads((tiny_features / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 16_000, "valid": 2_000, "test": 2_000}


def test_random_split_is_seeded_disjoint_and_complete(spec: FeatureSpec, tiny_raw: Path):
    raw = load_raw(spec, tiny_raw)
    a = split_indices(with_split(spec, method="random", seed=1), raw)
    b = split_indices(with_split(spec, method="random", seed=1), raw)
    c = split_indices(with_split(spec, method="random", seed=2), raw)
    for s in SPLITS:
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(a["test"], c["test"])
    joined = np.concatenate([a[s] for s in SPLITS])
    assert np.array_equal(np.sort(joined), np.arange(len(raw.frame)))
    # A random split mixes times: the test split is not just the last rows.
    assert a["test"].min() < len(raw.frame) * 0.5


def test_too_few_rows_for_a_split_is_a_data_error(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet").head(4)
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(DataError, match="too few"):
        quiet_build(spec, raw, tmp_path / "out")


def test_transforms_are_fitted_on_the_train_split_only(spec: FeatureSpec, tiny_features: Path):
    _, pipeline, _ = load_features(tiny_features)
    train = read_split(tiny_features, "train")[1]
    for key in ("user_id", "item_id"):  # both min_count 3, counted over train rows only
        counts = train[key].value_counts()
        assert set(pipeline.vocabulary(key).values) == set(counts[counts >= 3].index), key
    assert pipeline.prior == pytest.approx(train["label"].mean())


def test_an_item_first_seen_in_the_test_split_gets_the_oov_id(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet").sort_values("timestamp", kind="stable")
    items = pd.read_parquet(tiny_raw / "items.parquet")
    imp.loc[imp.index[-50:], "item_id"] = "v-new"  # the last rows: all in the test split
    items = pd.concat([items, items.iloc[[0]].assign(item_id="v-new")], ignore_index=True)
    out = tmp_path / "features"
    quiet_build(spec, copy_raw(tiny_raw, tmp_path / "raw", impressions=imp, items=items), out)
    _, pipeline, _ = load_features(out)
    assert "v-new" not in pipeline.vocabulary("item_id").values
    encoded, meta = read_split(out, "test")
    new = (meta["item_id"] == "v-new").to_numpy()
    assert new.sum() == 50
    local = pipeline.vocabulary("item_id").encode(meta["item_id"].to_numpy())
    assert (local[new] == 0).all() and (local[~new] > 0).any()
    # Every row's encoded id is its local id plus the field's one offset: the new item sits on the OOV id.
    column = list(pipeline.layout.sparse_fields).index("item_id")
    assert len(np.unique(encoded.sparse[:, column] - local)) == 1


def test_encoded_parquet_round_trips_to_what_the_pipeline_computes(tiny_raw: Path, tiny_features: Path):
    """read_split gives back exactly the blocks that transform() makes from the raw rows."""
    spec, pipeline, _ = load_features(tiny_features)
    raw = load_raw(spec, tiny_raw)
    add_statistics(spec, raw)
    index = split_indices(spec, raw)["valid"]
    expected = pipeline.transform(raw.columns(index))
    encoded, meta = read_split(tiny_features, "valid")
    for block in ("sparse", "multi", "dense", "wide"):
        np.testing.assert_array_equal(getattr(encoded, block), getattr(expected, block), err_msg=block)
        assert getattr(encoded, block).dtype == getattr(expected, block).dtype
    np.testing.assert_array_equal(meta["label"].to_numpy(), raw.frame["label"].to_numpy()[index])
    assert {"user_id", "item_id", "timestamp", "device", "true_prob"} <= set(meta.columns)


def test_output_folder_holds_the_splits_the_transforms_and_a_manifest(tiny_features: Path):
    names = sorted(p.name for p in tiny_features.iterdir())
    assert names == [".recsys-output", "manifest.json", "spec.yaml", "test.parquet", "train.parquet", "transforms.json",
                     "valid.parquet"]
    assert not [p for p in tiny_features.parent.iterdir() if p.name.startswith(".")]


def test_reading_a_missing_split_says_to_run_build_features(tmp_path: Path):
    with pytest.raises(DataError, match="build-features"):
        read_split(tmp_path, "train")


def test_label_values_other_than_0_and_1_are_a_data_error(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    imp.loc[imp.index[:3], "label"] = 4
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(DataError, match="label column 'label' must be 0/1") as info:
        quiet_build(spec, raw, tmp_path / "out")
    assert "4" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_label_values_are_a_data_error(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    imp["label"] = imp["label"].astype("float64")
    imp.loc[imp.index[:3], "label"] = np.nan
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(DataError, match="label"):
        quiet_build(spec, raw, tmp_path / "out")


def test_a_missing_feature_column_is_a_spec_error_naming_the_feature(spec: FeatureSpec, tiny_raw: Path,
                                                                    tmp_path: Path):
    items = pd.read_parquet(tiny_raw / "items.parquet").drop(columns=["duration_s"])
    raw = copy_raw(tiny_raw, tmp_path / "raw", items=items)
    with pytest.raises(SpecError, match="feature 'duration_s'.*table 'items'"):
        quiet_build(spec, raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_context_column_names_the_feature(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet").drop(columns=["device"])
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(SpecError, match="feature 'device'"):
        quiet_build(spec, raw, tmp_path / "out")


def test_a_missing_table_says_which_file_to_add(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    raw = copy_raw(tiny_raw, tmp_path / "raw")
    (raw / "users.parquet").unlink()
    with pytest.raises(DataError, match="users.parquet or users.csv"):
        quiet_build(spec, raw, tmp_path / "out")


def test_non_numeric_timestamps_are_a_data_error(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    imp["timestamp"] = imp["timestamp"].astype(str)
    imp.loc[imp.index[0], "timestamp"] = "yesterday"
    raw = copy_raw(tiny_raw, tmp_path / "raw", impressions=imp)
    with pytest.raises(DataError, match="table 'impressions' column 'timestamp': 1 values are not times, "
                                        "e.g. 'yesterday'"):
        quiet_build(spec, raw, tmp_path / "out")


def test_csv_tables_and_datetime_timestamps_encode_like_parquet(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    csv = tmp_path / "csv"
    csv.mkdir()
    for name in ("users", "items"):
        pd.read_parquet(tiny_raw / f"{name}.parquet").to_csv(csv / f"{name}.csv", index=False)
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    imp.assign(timestamp=pd.to_datetime(imp["timestamp"], unit="s", utc=True)).to_parquet(
        csv / "impressions.parquet", index=False)
    a = load_raw(spec, tiny_raw).frame
    b = load_raw(spec, csv).frame
    pd.testing.assert_series_equal(a["timestamp"], b["timestamp"])
    for col in ("user_id", "item_id", "country", "duration_s", "upload_time"):
        np.testing.assert_array_equal(a[col].astype(str), b[col].astype(str), err_msg=col)


def test_rebuilding_into_an_earlier_output_replaces_it(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    out = tmp_path / "features"
    quiet_build(spec, tiny_raw, out)
    (out / "stale.txt").write_text("from an older run")
    quiet_build(spec, tiny_raw, out)
    assert not (out / "stale.txt").exists() and (out / "train.parquet").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["features"]
