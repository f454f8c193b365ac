"""`load_raw`'s key lookup into the users and items tables (`RawData.entity_rows`), which `materialize`
reuses for its records, and the tables read once (`entity_table`) giving the same join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.raw import entity_table, load_raw
from recsys.features.statistics import radix_order
from recsys.spec import load_spec

from .helpers import copy_raw

SYNTHETIC_SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "specs" / "synthetic.yaml"


def test_entity_rows_point_at_each_keys_last_row_and_minus_one_for_unknown(tiny_raw: Path, tmp_path: Path):
    spec = load_spec(SYNTHETIC_SPEC)
    users = pd.read_parquet(tiny_raw / "users.parquet")
    first = users.iloc[:1].assign(country="XX")  # an earlier row of the first user: the table's own row wins
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    ghost = imp.iloc[:3].assign(user_id="no-such-user")
    raw_dir = copy_raw(tiny_raw, tmp_path / "raw", users=pd.concat([first, users], ignore_index=True),
                       impressions=pd.concat([imp, ghost], ignore_index=True))
    table = entity_table(spec, raw_dir, "users", spec.source_columns("users"))
    raw = load_raw(spec, raw_dir)
    keys = raw.frame[spec.user_key].array
    rows = raw.entity_rows[spec.user_key]
    expected = table.index.get_indexer(pd.Index(keys.categories, dtype=object))
    np.testing.assert_array_equal(rows, expected)
    assert rows[list(keys.categories).index("no-such-user")] == -1
    assert table.loc[users["user_id"].iloc[0], "country"] == users["country"].iloc[0]
    assert "XX" not in set(raw.frame["country"].astype(object).dropna())


def test_load_raw_with_tables_read_once_joins_the_same(tiny_raw: Path):
    spec = load_spec(SYNTHETIC_SPEC)
    only = ["category", "country"]
    tables = {kind: entity_table(spec, tiny_raw, kind, spec.source_columns(kind)) for kind in ("users", "items")}
    a, b = load_raw(spec, tiny_raw, only), load_raw(spec, tiny_raw, only, tables)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    for key in (spec.user_key, spec.item_key):
        np.testing.assert_array_equal(a.entity_rows[key], b.entity_rows[key])


def test_radix_order_is_the_stable_argsort():
    rng = np.random.default_rng(0)
    for high in (5, 2**16, 3 * 2**16 + 7):
        codes = rng.integers(0, high, 50_000)
        np.testing.assert_array_equal(radix_order(codes), np.argsort(codes, kind="stable"))
    assert len(radix_order(np.zeros(0, dtype=np.int64))) == 0
