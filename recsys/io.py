"""I/O at the edges: csv or parquet tables in, parquet out, and the output folders of every command.

Every write is atomic (temp name + rename). An output folder (`--out` of build-features, train,
evaluate, generate, import-movielens; the checkpoint folder) is written by `output_folder`:

  * into a fresh hidden sibling `.NAME.tmp-*`, marked with `.recsys-output` (its kind: features,
    artifact, ...), then swapped in: one `renameat2(RENAME_EXCHANGE)` on Linux, so a reader always
    finds the old or the new folder (elsewhere two renames, a gap of microseconds);
  * the old folder is deleted only when it carries the marker (this project wrote it) or is empty;
  * an `--out` equal to or inside an input (`--raw`, `--features`, ...), holding an input, equal to
    the working directory or above it, or a non-empty folder without the marker is refused up front
    (`OutputError`: exit 2 and one line naming the fix), before any work is done.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import DataError, OutputError

__all__ = ["find_table", "table_parts", "file_columns", "table_columns", "read_table", "write_table", "write_arrow",
           "OUTPUT_MARKER", "output_kind", "check_output", "output_folder", "claim_folder", "remove_output"]

OUTPUT_MARKER = ".recsys-output"


def find_table(folder: str | Path, stem: str) -> Path:
    """The file, or the folder of part files (as Spark and other engines write them), of a table:
    `stem.parquet`, `stem.csv`, `stem.csv.gz`, or a folder `stem/`, `stem.parquet/` or `stem.csv/`.
    Every data file of it must be readable (`file_columns`): an empty or corrupt one is refused here,
    before any engine reads it."""
    folder = Path(folder)
    for ext in (".parquet", ".csv", ".csv.gz", ""):
        path = folder / f"{stem}{ext}"
        if path.is_file() or (path.is_dir() and table_parts(path)):
            for part in table_parts(path):
                file_columns(part)
            return path
    raise DataError(
        f"table '{stem}' not found in {folder} (fix: add {stem}.parquet or {stem}.csv, a file or a folder of "
        f"part files, or point `tables.{stem}` in the spec at the right name)"
    )


def file_columns(path: Path) -> list[str]:
    """The column names of one data file (a parquet footer or a csv header); an empty, truncated or
    corrupt file is a DataError naming it and the fix, never a parser's traceback."""
    kind = "parquet" if path.name.endswith(".parquet") else "csv"
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path} is empty (0 bytes), not a {kind} table (fix: write the table again, or remove "
                            f"the file)")
        if kind == "parquet":
            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, EOFError, pa.ArrowException) as err:
        raise DataError(f"{path} cannot be read as {kind}: {_first_line(err)} (fix: write the table again as "
                        f"{kind}, or remove the file)") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def table_parts(path: Path) -> list[Path]:
    """A table's data files in name order (a folder's part files; hidden and `_SUCCESS`-like files
    skipped, as Spark and pyarrow skip them): one order for every engine, so row order is defined."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file() and p.name.endswith((".parquet", ".csv", ".csv.gz"))
                   and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)), key=str)


def table_columns(folder: str | Path, stem: str) -> list[str]:
    return file_columns(table_parts(find_table(folder, stem))[0])


def read_table(folder: str | Path, stem: str, columns: list[str] | None = None) -> pd.DataFrame:
    path = find_table(folder, stem)
    parts = table_parts(path)
    _check_columns(path, file_columns(parts[0]), columns)
    try:
        if parts[0].name.endswith(".parquet"):
            files: Any = parts[0] if path.is_file() else [str(p) for p in parts]  # pandas reads a list of parts
            return pd.read_parquet(files, columns=columns)
        frames = [pd.read_csv(p, usecols=columns, low_memory=False) for p in parts]
    except (OSError, ValueError, EOFError, pa.ArrowException) as err:
        raise DataError(f"{path} cannot be read: {_first_line(err)} (fix: write the table again)") from None
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


# ---------------------------------------------------------------- output folders
def output_kind(folder: Path) -> str | None:
    """The kind of output this project wrote into `folder` (from its marker file), or None."""
    try:
        doc = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) else None


def check_output(out: str | Path, kind: str, inputs: Mapping[str, str | Path | None] | None = None,
                 flag: str = "--out") -> Path:
    """The resolved path of an output folder that `output_folder` may replace, or OutputError naming
    the fix. `inputs` maps each input's flag to its path (None: not given)."""
    path = Path(out).resolve()
    example = f"{flag} {Path(out) / kind}"
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise OutputError(f"{flag} {out} is the working directory or a folder above it, which recsys would replace "
                          f"as a whole (fix: pass a folder of its own, e.g. {example})")
    for name, given in (inputs or {}).items():
        if given is None:
            continue
        source = Path(given).resolve()
        if path == source or source in path.parents:
            raise OutputError(f"{flag} {out} is {'' if path == source else 'inside '}the input {name} {given}, "
                              f"which writing the output would replace (fix: pass a folder outside it, e.g. "
                              f"{flag} {source.parent / f'{source.name}-{kind}'})")
        if path in source.parents:
            raise OutputError(f"{flag} {out} holds the input {name} {given}, which writing the output would remove "
                              f"(fix: pass a folder beside it, e.g. {example})")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{flag} {out} is a file, not a folder (fix: pass a folder path, e.g. {example})")
        found = output_kind(path)
        if found is None and any(path.iterdir()):
            raise OutputError(f"{flag} {out} holds files that recsys did not write, and it replaces only folders it "
                              f"wrote itself (fix: pass a new or empty folder, e.g. {example})")
        if found is not None and found != kind:
            raise OutputError(f"{flag} {out} holds recsys {found}, not {kind} (fix: pass another folder, e.g. "
                              f"{Path(out).parent / kind})")
    return path


@contextmanager
def output_folder(out: str | Path, kind: str, inputs: Mapping[str, str | Path | None] | None = None,
                  flag: str = "--out") -> Iterator[Path]:
    """A fresh marked folder beside `out` to write the output into; when the block ends without an
    error it replaces `out` (see the module docstring), otherwise it is removed and `out` is untouched."""
    path = check_output(out, kind, inputs, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _mark(tmp, kind)
        yield tmp
        check_output(path, kind, inputs, flag)  # nothing foreign appeared there meanwhile
        old = _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _discard(old, path)


def claim_folder(out: str | Path, kind: str, inputs: Mapping[str, str | Path | None] | None = None,
                 flag: str = "--out") -> Path:
    """A folder a command fills over time (checkpoints): created and marked, or an existing one of
    the same kind (or an empty one) reused."""
    path = check_output(out, kind, inputs, flag)
    path.mkdir(parents=True, exist_ok=True)
    if output_kind(path) is None:
        _mark(path, kind)
    return path


def remove_output(folder: str | Path, kind: str) -> None:
    """Delete `folder` only if this project wrote it as `kind` (its marker says so)."""
    if output_kind(Path(folder)) == kind:
        shutil.rmtree(folder)


def _mark(folder: Path, kind: str) -> None:
    (folder / OUTPUT_MARKER).write_text(json.dumps({"kind": kind, "written_by": "recsys"}) + "\n")


def _swap_in(new: Path, path: Path) -> Path | None:
    """Put `new` at `path`. Returns where the previous folder now is (None: there was none). On an
    error everything stays where it was."""
    if not path.exists():
        os.rename(new, path)  # fails rather than replace a non-empty folder that appeared meanwhile
        return None
    if _exchange(new, path):
        return new
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, old)  # onto the empty temp folder
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    return old


def _discard(old: Path, path: Path) -> None:
    """Delete the folder `path` held before: ours or empty; anything else is kept and reported."""
    if output_kind(old) is not None:
        shutil.rmtree(old)
        return
    try:
        old.rmdir()
    except OSError:
        raise OutputError(f"{path} was replaced, but its previous content was not written by recsys: it is kept "
                          f"at {old} (fix: move what you need out of it)") from None


@functools.cache
def _renameat2() -> Any:
    if sys.platform != "linux":
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))
