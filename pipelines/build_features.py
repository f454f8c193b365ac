"""build-features: raw tables + spec → point-in-time statistics, split, fitted transforms, encoded splits.

    out/
      train.parquet valid.parquet test.parquet   encoded blocks (sparse, multi, dense, wide) + label,
                                                 keys, timestamp, context and passthrough columns
      transforms.json  spec.yaml  manifest.json

Statistics are computed over the whole impression log (each row sees only strictly earlier events,
whatever split it lands in); transforms are fitted on the train split only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import read_table, table_columns, write_arrow
from recsys.errors import DataError, SpecError
from recsys.features import Encoded, FeaturePipeline, count_column, pos_column
from recsys.features.statistics import key_codes, point_in_time_counts
from recsys.features.transforms import as_str
from recsys.spec import FeatureSpec

__all__ = ["RawData", "load_raw", "statistic_key_columns", "split_indices", "build_features",
           "read_split", "SPLITS"]

SPLITS = ("train", "valid", "test")
CHUNK_ROWS = 1_000_000


@dataclass
class RawData:
    """Impressions joined with user and item attributes, sorted by time, keys as str."""

    frame: pd.DataFrame
    context_columns: list[str]
    fingerprint: str

    def columns(self, index: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        return {c: self.frame[c].to_numpy()[index] for c in self.frame.columns}


def _timestamps(values: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values.dt.tz_localize(None) if values.dt.tz else values).astype("datetime64[s]").astype(np.int64).to_numpy()
    ts = pd.to_numeric(values, errors="coerce")
    if ts.isna().any():
        raise DataError(f"timestamp column '{name}' has {int(ts.isna().sum())} missing or non-numeric values "
                        f"(fix: use unix seconds or a datetime column)")
    return ts.to_numpy().astype(np.int64)


def _fingerprint(frames: list[pd.DataFrame]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(str(len(f)).encode())
        h.update(pd.util.hash_pandas_object(f, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _unique_by(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = frame.assign(**{key: as_str(frame[key].to_numpy())})
    return frame.drop_duplicates(key, keep="last").set_index(key)


def load_raw(spec: FeatureSpec, raw_dir: str | Path) -> RawData:
    """Read and validate the three tables, join attributes onto impressions, sort by time."""
    ctx = spec.source_columns("impressions")
    need = [spec.user_key, spec.item_key, spec.timestamp, spec.label, *ctx, *spec.passthrough]
    imp = _read(raw_dir, spec.tables["impressions"], list(dict.fromkeys(need)), spec)
    if imp.empty:
        raise DataError(f"impressions table '{spec.tables['impressions']}' has no rows")
    labels = pd.to_numeric(imp[spec.label], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise DataError(f"label column '{spec.label}' must be 0/1; found {sorted(map(str, imp.loc[bad, spec.label].unique()[:5]))} "
                        f"(fix: binarize it, e.g. rating >= 4)")
    ucols, icols = spec.source_columns("users"), spec.source_columns("items")
    users = _read(raw_dir, spec.tables["users"], [spec.user_key, *ucols], spec)
    items = _read(raw_dir, spec.tables["items"], [spec.item_key, *icols], spec)
    frame = pd.DataFrame({
        spec.user_key: as_str(imp[spec.user_key].to_numpy()),
        spec.item_key: as_str(imp[spec.item_key].to_numpy()),
        spec.timestamp: _timestamps(imp[spec.timestamp], spec.timestamp),
        spec.label: labels.to_numpy().astype(np.int8),
    })
    for c in ctx + spec.passthrough:
        if c not in frame:
            frame[c] = imp[c].to_numpy()
    u = _unique_by(users, spec.user_key)
    for c in ucols:
        frame[c] = u[c].reindex(frame[spec.user_key]).to_numpy()
    it = _unique_by(items, spec.item_key)
    for c in icols:
        frame[c] = it[c].reindex(frame[spec.item_key]).to_numpy()
    order = np.argsort(frame[spec.timestamp].to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    return RawData(frame=frame, context_columns=ctx, fingerprint=_fingerprint([imp, users, items]))


def _read(raw_dir: str | Path, stem: str, columns: list[str], spec: FeatureSpec) -> pd.DataFrame:
    have = table_columns(raw_dir, stem)
    missing = [c for c in columns if c not in have]
    for col in missing:
        # Name the feature that wants the column: that is what the user has to fix.
        for name, feat in spec.features.items():
            if col in (getattr(feat, "column", None) or name, name):
                raise SpecError(f"feature '{name}' reads column '{col}', which table '{stem}' lacks "
                                f"(it has {have}; fix: add the column or set the feature's `column:`)")
        raise DataError(f"table '{stem}' lacks column '{col}' required by the spec (it has {have})")
    return read_table(raw_dir, stem, columns)


def statistic_key_columns(spec: FeatureSpec, name: str) -> list[str]:
    """Raw column names of a statistic's key (the entity key first)."""
    out = []
    for k in spec.statistics[name].key:
        col = k if k in (spec.user_key, spec.item_key) else spec.column_of(k)
        if col is None:
            raise SpecError(f"feature '{name}': key '{k}' is not a declared feature or column")
        out.append(col)
    return out


def add_statistics(spec: FeatureSpec, raw: RawData) -> None:
    f = raw.frame
    ts = f[spec.timestamp].to_numpy()
    y = f[spec.label].to_numpy()
    for name, stat in spec.statistics.items():
        codes = key_codes([f[c].to_numpy() for c in statistic_key_columns(spec, name)])
        f[count_column(name)], f[pos_column(name)] = point_in_time_counts(codes, ts, y, stat.window_s, stat.bucket_s)


def split_indices(spec: FeatureSpec, raw: RawData) -> dict[str, np.ndarray]:
    """Time split (rows are already sorted by time) or a seeded random split."""
    n = len(raw.frame)
    n_test = int(round(n * spec.split.test_fraction))
    n_valid = int(round(n * spec.split.valid_fraction))
    order = np.arange(n)
    if spec.split.method == "random":
        order = np.random.default_rng(spec.split.seed).permutation(n)
    n_train = n - n_valid - n_test
    if min(n_train, n_valid, n_test) <= 0:
        raise DataError(f"{n} impressions are too few for a {spec.split.method} split with these fractions")
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {k: np.sort(v) for k, v in parts.items()}


def _block(a: np.ndarray) -> pa.Array:
    """[n, w] matrix → FixedSizeList column (one parquet column per block, zero-copy back)."""
    flat = pa.array(np.ascontiguousarray(a).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, max(a.shape[1], 1)) if a.shape[1] else pa.array(np.zeros(len(a), np.int8))


def _unblock(col: pa.ChunkedArray, n: int, dtype: type) -> np.ndarray:
    if not pa.types.is_fixed_size_list(col.type):
        return np.zeros((n, 0), dtype=dtype)
    width = col.type.list_size
    flat = pa.concat_arrays([c.flatten() for c in col.chunks]) if col.num_chunks else pa.array([], col.type.value_type)
    return flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(n, width)


def encode_split(pipeline: FeaturePipeline, raw: RawData, index: np.ndarray, keep: list[str],
                 progress: Callable[[int], None] | None = None) -> pa.Table:
    """Transform in chunks (bounded memory) and attach the label, keys and passthrough columns."""
    parts: list[Encoded] = []
    for start in range(0, len(index), CHUNK_ROWS):
        chunk = index[start:start + CHUNK_ROWS]
        parts.append(pipeline.transform(raw.columns(chunk)))
        if progress:
            progress(len(chunk))
    enc = Encoded(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("sparse", "multi", "dense", "wide")))
    table = {c: raw.frame[c].to_numpy()[index] for c in keep}
    table.update({"sparse": _block(enc.sparse), "multi": _block(enc.multi), "dense": _block(enc.dense), "wide": _block(enc.wide)})
    return pa.table(table)


def read_split(features_dir: str | Path, split: str) -> tuple[Encoded, pd.DataFrame]:
    """Encoded blocks + the plain columns (label, keys, timestamp, context, passthrough)."""
    path = Path(features_dir) / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found (fix: run `recsys build-features` into {Path(features_dir)})")
    table = pq.read_table(path)
    n = table.num_rows
    enc = Encoded(
        sparse=_unblock(table["sparse"], n, np.int64),
        multi=_unblock(table["multi"], n, np.int64),
        dense=_unblock(table["dense"], n, np.float32),
        wide=_unblock(table["wide"], n, np.int64),
    )
    meta = table.drop_columns(["sparse", "multi", "dense", "wide"]).to_pandas()
    return enc, meta


def build_features(spec: FeatureSpec, raw_dir: str | Path, out_dir: str | Path,
                   log: Callable[[str], None] = print, progress: bool = True) -> dict[str, object]:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    raw = load_raw(spec, raw_dir)
    log(f"read {len(raw.frame):,} impressions ({time.perf_counter() - t0:.1f}s)")
    add_statistics(spec, raw)
    log(f"point-in-time statistics: {list(spec.statistics)} ({time.perf_counter() - t0:.1f}s)")
    splits = split_indices(spec, raw)
    train_cols = raw.columns(splits["train"])
    pipeline = FeaturePipeline(spec).fit(train_cols, train_cols[spec.label])
    del train_cols
    log(f"fitted transforms on {len(splits['train']):,} train rows ({time.perf_counter() - t0:.1f}s)")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    keep = list(dict.fromkeys([spec.label, spec.user_key, spec.item_key, spec.timestamp,
                               *raw.context_columns, *spec.passthrough]))
    try:
        with tqdm(total=len(raw.frame), desc="encode", unit="row", disable=not progress, leave=False) as bar:
            for name, index in splits.items():
                write_arrow(encode_split(pipeline, raw, index, keep, bar.update), tmp / f"{name}.parquet")
        (tmp / "transforms.json").write_text(json.dumps(pipeline.to_dict(), sort_keys=True))
        (tmp / "spec.yaml").write_text(spec.to_yaml())
        ts = raw.frame[spec.timestamp].to_numpy()
        manifest = {
            "rows": {k: int(len(v)) for k, v in splits.items()},
            "positive_rate": {k: float(raw.frame[spec.label].to_numpy()[v].mean()) for k, v in splits.items()},
            "time_range": {k: [int(ts[v].min()), int(ts[v].max())] for k, v in splits.items()},
            "split": spec.split.model_dump(),
            "data_fingerprint": raw.fingerprint,
            "feature_version": pipeline.to_dict()["spec_hash"],
            "layout": pipeline.layout.to_dict(),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir} ({manifest['seconds']}s)")
    return manifest
