"""Table I/O at the edges: csv or parquet in, parquet out, every write atomic (temp name + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import DataError

__all__ = ["find_table", "table_parts", "table_columns", "read_table", "write_table", "write_arrow"]


def find_table(folder: str | Path, stem: str) -> Path:
    """The file, or the folder of part files (as Spark and other engines write them), of a table:
    `stem.parquet`, `stem.csv`, `stem.csv.gz`, or a folder `stem/`, `stem.parquet/` or `stem.csv/`."""
    folder = Path(folder)
    for ext in (".parquet", ".csv", ".csv.gz", ""):
        path = folder / f"{stem}{ext}"
        if path.is_file() or (path.is_dir() and table_parts(path)):
            return path
    raise DataError(
        f"table '{stem}' not found in {folder} (fix: add {stem}.parquet or {stem}.csv, a file or a folder of "
        f"part files, or point `tables.{stem}` in the spec at the right name)"
    )


def table_parts(path: Path) -> list[Path]:
    """A table's data files in name order (a folder's part files; hidden and `_SUCCESS`-like files
    skipped, as Spark and pyarrow skip them): one order for every engine, so row order is defined."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file() and p.name.endswith((".parquet", ".csv", ".csv.gz"))
                   and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)), key=str)


def table_columns(folder: str | Path, stem: str) -> list[str]:
    first = table_parts(find_table(folder, stem))[0]
    if first.name.endswith(".parquet"):
        return list(pq.read_schema(first).names)
    return list(pd.read_csv(first, nrows=0).columns)


def read_table(folder: str | Path, stem: str, columns: list[str] | None = None) -> pd.DataFrame:
    path = find_table(folder, stem)
    parts = table_parts(path)
    try:
        if parts[0].name.endswith(".parquet"):
            _check_columns(path, pq.read_schema(parts[0]).names, columns)
            files: Any = parts[0] if path.is_file() else [str(p) for p in parts]  # pandas reads a list of parts
            return pd.read_parquet(files, columns=columns)
        frames = [pd.read_csv(p, usecols=columns, low_memory=False) for p in parts]
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


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
