"""Text in a numeric feature's column is refused by the Spark engine with the embedded engine's
message (it would otherwise become missing values and train the model on the fill value)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys.spec import load_spec
from tests.conftest import REPO
from tests.unit.helpers import copy_raw

from .compare import same_refusal

pytestmark = pytest.mark.spark


def test_text_in_a_numeric_column_is_the_embedded_engines_error(spark, tiny_raw: Path, tmp_path: Path):
    spec = load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")
    items = pd.read_parquet(tiny_raw / "items.parquet")
    items["duration_s"] = items["duration_s"].astype(str)
    items.loc[[2, 4, 6], "duration_s"] = ["long", "", "nan"]  # only 'long' is neither a number nor missing
    message = same_refusal(spec, copy_raw(tiny_raw, tmp_path / "raw", items=items), tmp_path)
    assert "column 'duration_s' of table 'items' holds 1 distinct value(s) that are not numbers, e.g. 'long'" \
        in message
