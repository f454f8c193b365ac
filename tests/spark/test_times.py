"""The Spark engine parses times with the embedded engine's parser: the same instant written five
ways (unix seconds, zoned and naive parquet datetimes, ISO strings with an offset, naive ISO csv)
builds features equal to the embedded engine's from unix seconds; a bad value is the same error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.build_features import build_features
from recsys.spec import load_spec
from tests.conftest import REPO
from tests.unit.helpers import copy_raw
from tests.unit.test_times import _representations

from .compare import assert_same_splits, assert_same_transforms, same_refusal

pytestmark = pytest.mark.spark
QUIET = {"log": lambda _: None, "progress": False}


def test_every_time_representation_builds_the_embedded_features(spark, tiny_raw: Path, tmp_path: Path):
    from recsys.features.engine.spark import SparkSettings

    spec = load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")
    build_features(spec, tiny_raw, tmp_path / "arrow", **QUIET)
    for name, folder in _representations(tiny_raw, tmp_path / "raw").items():
        out = tmp_path / name.replace(" ", "-")
        build_features(spec, folder, out, engine="spark", settings=SparkSettings(), **QUIET)
        assert_same_transforms(tmp_path / "arrow", out)
        assert_same_splits(tmp_path / "arrow", out)


def test_a_bad_time_is_the_embedded_engines_error(spark, tiny_raw: Path, tmp_path: Path):
    spec = load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")
    items = pd.read_parquet(tiny_raw / "items.parquet")
    items["upload_time"] = items["upload_time"].astype(str)
    items.loc[[3, 5], "upload_time"] = ["last tuesday", "2026-13-45"]
    message = same_refusal(spec, copy_raw(tiny_raw, tmp_path / "raw", items=items), tmp_path)
    assert "column 'upload_time': 2 values are not times, e.g. '2026-13-45'" in message
