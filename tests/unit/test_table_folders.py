"""Raw tables may be folders of part files (as Spark writes them): read in part-name order, they
give the embedded engine the same rows as one file, and an encoded split may be such a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.splits import read_split
from recsys.io import find_table, read_table


def test_a_folder_of_parts_reads_like_one_file_in_part_order(tmp_path: Path):
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(10)], "x": np.arange(10.0)})
    (tmp_path / "users").mkdir()
    for i, part in enumerate(np.array_split(np.arange(10), 3)):
        frame.iloc[part].to_parquet(tmp_path / "users" / f"part-{2 - i}.parquet", index=False)  # names reversed
    (tmp_path / "users" / "_SUCCESS").write_text("")
    (tmp_path / "users" / ".part-0.parquet.crc").write_text("")
    got = read_table(tmp_path, "users")
    order = np.concatenate([part for part in reversed(np.array_split(np.arange(10), 3))])
    assert got["user_id"].tolist() == frame["user_id"].to_numpy()[order].tolist()
    (tmp_path / "items.csv").mkdir()
    frame.iloc[:4].to_csv(tmp_path / "items.csv" / "part-0.csv", index=False)
    frame.iloc[4:].to_csv(tmp_path / "items.csv" / "part-1.csv", index=False)
    assert find_table(tmp_path, "items") == tmp_path / "items.csv"
    assert read_table(tmp_path, "items")["x"].tolist() == frame["x"].tolist()


def test_an_encoded_split_folder_reads_like_its_file(tiny_features: Path, tmp_path: Path):
    enc, meta = read_split(tiny_features, "valid")
    table = pd.read_parquet(tiny_features / "valid.parquet")
    (tmp_path / "valid.parquet").mkdir()
    half = len(table) // 2
    table.iloc[:half].to_parquet(tmp_path / "valid.parquet" / "part-00000.parquet", index=False)
    table.iloc[half:].to_parquet(tmp_path / "valid.parquet" / "part-00001.parquet", index=False)
    enc2, meta2 = read_split(tmp_path, "valid")
    assert np.array_equal(enc.sparse, enc2.sparse) and np.array_equal(enc.dense, enc2.dense)
    assert meta["user_id"].tolist() == meta2["user_id"].astype(str).tolist()
