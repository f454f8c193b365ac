"""Numeric attributes are stored as JSON numbers (the same digits as their canonical strings), and
the service reads them, and records written as strings by an earlier materialize, as the same floats."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd

from recsys.online.columns import _stored
from recsys.store.materialize import _table_attributes


def test_numbers_are_json_numbers_where_their_canonical_string_is_one_and_read_back_the_same():
    frame = pd.DataFrame({"x": [12.5, 3.0, 1e20, float("inf"), np.nan, -0.25, 0.1 + 0.2],
                          "name": ["12.5", "a", "b", "c", "d", "e", "f"]})
    records = [orjson.loads(r) for r in _table_attributes(frame, ["x", "name"], {"x"}).to_pylist()]
    assert [r.get("x") for r in records] == [12.5, 3, 1e20, "inf", None, -0.25, 0.30000000000000004]
    assert records[0]["name"] == "12.5"  # not a number column: a string however it looks
    older = [{k: v if isinstance(v, str) else str(v) for k, v in r.items()} for r in records]  # strings
    want = np.array([12.5, 3.0, 1e20, np.inf, np.nan, -0.25, 0.1 + 0.2])
    for dicts in (records, older):
        np.testing.assert_array_equal(_stored("number", dicts, "x"), want)


def test_text_in_a_number_column_that_json_could_not_parse_as_a_double_stays_a_string():
    frame = pd.DataFrame({"x": ["1e400", "1" + "0" * 400, "7", "ten"]})
    records = [orjson.loads(r) for r in _table_attributes(frame, ["x"], {"x"}).to_pylist()]  # all parse
    assert [r["x"] for r in records] == ["1e400", "1" + "0" * 400, 7, "ten"]
    np.testing.assert_array_equal(_stored("number", records, "x"), [np.inf, np.inf, 7.0, np.nan])
