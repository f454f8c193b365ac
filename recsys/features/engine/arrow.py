"""The embedded feature engine (the default): pandas / pyarrow / numpy in one process.

    raw tables → load_raw (join, sort by time) → point-in-time statistics over the whole log →
    split → fit the FeaturePipeline on TRAIN only → encoded splits + transforms.json + manifest

Statistics are computed over the whole impression log (each row sees only strictly earlier events,
whatever split it lands in); transforms are fitted on the train split only. The output folder is
written by `recsys.io.output_folder` (a temp folder swapped in; never over an input or a foreign folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from recsys.errors import DataError
from recsys.features.checks import check_numeric_columns
from recsys.features.pipeline import FeaturePipeline, count_column, pos_column
from recsys.features.raw import LABEL_TIME, RawData, column_values, load_raw
from recsys.features.splits import write_split
from recsys.features.statistics import key_codes, point_in_time_counts
from recsys.io import output_folder
from recsys.spec import FeatureSpec

__all__ = ["add_statistics", "split_sizes", "split_positions", "split_indices", "build_features"]


def add_statistics(spec: FeatureSpec, raw: RawData) -> None:
    f = raw.frame
    ts = f[spec.timestamp].to_numpy()
    y = f[spec.label].to_numpy()
    label_ts = f[LABEL_TIME].to_numpy() if spec.delayed_labels else None
    # Counters are whole numbers: int32 holds them exactly at half the memory of float64.
    dtype = np.int32 if len(f) < 2**31 else np.int64
    for name, stat in spec.statistics.items():
        codes = key_codes([column_values(f[c]) for c in spec.statistic_key_columns(name)])
        count, pos = point_in_time_counts(codes, ts, y, stat.window_s, stat.bucket_s, label_ts)
        f[count_column(name)], f[pos_column(name)] = count.astype(dtype), pos.astype(dtype)


def split_sizes(spec: FeatureSpec, n: int) -> tuple[int, int, int]:
    """(train, valid, test) row counts of n impressions under the spec's split fractions."""
    n_test = int(round(n * spec.split.test_fraction))
    n_valid = int(round(n * spec.split.valid_fraction))
    n_train = n - n_valid - n_test
    if min(n_train, n_valid, n_test) <= 0:
        raise DataError(f"{n} impressions are too few for a {spec.split.method} split with these fractions")
    return n_train, n_valid, n_test


def split_positions(spec: FeatureSpec, n: int) -> dict[str, np.ndarray]:
    """Sorted row positions of each split among n time-sorted rows: the first / next / last rows
    (time split) or a seeded permutation (random split). Every engine splits with this."""
    n_train, n_valid, _ = split_sizes(spec, n)
    order = np.arange(n)
    if spec.split.method == "random":
        order = np.random.default_rng(spec.split.seed).permutation(n)
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {k: np.sort(v) for k, v in parts.items()}


def split_indices(spec: FeatureSpec, raw: RawData) -> dict[str, np.ndarray]:
    """Time split (rows are already sorted by time) or a seeded random split."""
    return split_positions(spec, len(raw.frame))


def build_features(spec: FeatureSpec, raw_dir: str | Path, out_dir: str | Path,
                   log: Callable[[str], None] = print, progress: bool = True) -> dict[str, object]:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    raw = load_raw(spec, raw_dir)
    check_numeric_columns(spec, raw.frame)
    log(f"read {len(raw.frame):,} impressions ({time.perf_counter() - t0:.1f}s)")
    add_statistics(spec, raw)
    log(f"point-in-time statistics: {list(spec.statistics)} ({time.perf_counter() - t0:.1f}s)")
    splits = split_indices(spec, raw)
    train_cols = raw.columns(splits["train"])
    pipeline = FeaturePipeline(spec).fit(train_cols, train_cols[spec.label])
    del train_cols
    log(f"fitted transforms on {len(splits['train']):,} train rows ({time.perf_counter() - t0:.1f}s)")
    keep = list(dict.fromkeys([spec.label, spec.user_key, spec.item_key, spec.timestamp,
                               *raw.context_columns, *spec.passthrough]))
    with output_folder(out_dir, "features", {"--raw": raw_dir}) as tmp:
        with tqdm(total=len(raw.frame), desc="encode", unit="row", disable=not progress, leave=False) as bar:
            for name, index in splits.items():
                write_split(pipeline, raw, index, keep, tmp / f"{name}.parquet", bar.update)
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
    log(f"wrote {out_dir} ({manifest['seconds']}s)")
    return manifest
