"""Table I/O at the edges: csv or parquet in, parquet out, every write atomic (temp name + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import DataError

__all__ = ["find_table", "table_columns", "read_table", "write_table", "write_arrow"]


def find_table(folder: str | Path, stem: str) -> Path:
    folder = Path(folder)
    for ext in (".parquet", ".csv", ".csv.gz"):
        path = folder / f"{stem}{ext}"
        if path.is_file():
            return path
    raise DataError(
        f"table '{stem}' not found in {folder} (fix: add {stem}.parquet or {stem}.csv, "
        f"or point `tables.{stem}` in the spec at the right file name)"
    )


def table_columns(folder: str | Path, stem: str) -> list[str]:
    path = find_table(folder, stem)
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def read_table(folder: str | Path, stem: str, columns: list[str] | None = None) -> pd.DataFrame:
    path = find_table(folder, stem)
    try:
        if path.suffix == ".parquet":
            have = pq.read_schema(path).names
            _check_columns(path, have, columns)
            return pd.read_parquet(path, columns=columns)
        frame = pd.read_csv(path, usecols=columns, low_memory=False)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    return frame


def _check_columns(path: Path, have: list[str], wanted: list[str] | None) -> None:
    missing = [c for c in (wanted or []) if c not in have]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {have}")


def write_arrow(table: pa.Table, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    write_arrow(pa.Table.from_pandas(frame, preserve_index=False), path)
