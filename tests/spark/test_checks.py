"""Text in a numeric feature's column is refused by the Spark engine with the embedded engine's
message (it would otherwise become missing values and train the model on the fill value)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.build_features import build_features
from recsys.errors import DataError
from recsys.spec import load_spec
from tests.conftest import REPO
from tests.unit.helpers import copy_raw

pytestmark = pytest.mark.spark
QUIET = {"log": lambda _: None, "progress": False}


def test_text_in_a_numeric_column_is_the_embedded_engines_error(spark, tiny_raw: Path, tmp_path: Path):
    from recsys.features.engine.spark import SparkSettings

    spec = load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")
    items = pd.read_parquet(tiny_raw / "items.parquet")
    items["duration_s"] = items["duration_s"].astype(str)
    items.loc[[2, 4, 6], "duration_s"] = ["long", "", "nan"]  # only 'long' is neither a number nor missing
    raw = copy_raw(tiny_raw, tmp_path / "raw", items=items)
    messages = []
    for engine in ("arrow", "spark"):
        with pytest.raises(DataError) as err:
            build_features(spec, raw, tmp_path / engine, engine=engine,
                           **({"settings": SparkSettings()} if engine == "spark" else {}), **QUIET)
        messages.append(str(err.value))
        assert not (tmp_path / engine).exists()
    assert messages[0] == messages[1]
    assert "column 'duration_s' of table 'items' holds 1 distinct value(s) that are not numbers, e.g. 'long'" \
        in messages[0]
