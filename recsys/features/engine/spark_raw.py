"""Reading the raw tables on Spark with the embedded engine's semantics (`recsys.features.raw`):
the same files or folders, the same checks and messages, keys as canonical strings, the last
duplicate of a user or item kept, left joins; plus columns that sort rows in input order."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import DataError
from recsys.features.engine.spark_fit import canonical
from recsys.features.raw import check_columns
from recsys.io import find_table, table_parts
from recsys.spec import FeatureSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["ORDER", "load_joined"]


def _read(spark: SparkSession, raw_dir: str | Path, stem: str) -> DataFrame:
    """A table as a DataFrame, from the same file or folder the embedded engine reads (URIs such as
    hdfs:// or s3a:// are passed to Spark as `<raw>/<stem>.parquet`)."""
    raw = str(raw_dir)
    if "://" in raw and not raw.startswith("file://"):
        return spark.read.parquet(f"{raw.rstrip('/')}/{stem}.parquet")
    path = find_table(raw_dir, stem)
    if table_parts(path)[0].name.endswith(".parquet"):
        return spark.read.parquet(str(path.resolve()))
    return spark.read.csv(str(path.resolve()), header=True, inferSchema=True)


def _seconds(frame: DataFrame, name: str) -> Column:
    """The embedded engine's timestamp parsing: datetimes → unix seconds (UTC), numbers and numeric
    strings → int64 seconds (NULL where unparsable: `_validate` refuses those)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(frame.schema[name].dataType, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_timestamp(F.col(name).cast("timestamp"))
    seconds = F.col(name).cast("double")
    return F.when(~F.isnan(seconds), seconds).cast("long")


def _validate(frame: DataFrame, spec: FeatureSpec) -> None:
    """One pass over the impressions: rows, labels that are not 0/1, unparsable timestamps; each
    refused with the embedded engine's message."""
    from pyspark.sql import functions as F

    label = F.col(spec.label).cast("double")
    bad_label = label.isNull() | ~label.isin(0.0, 1.0)
    row = frame.agg(F.count(F.lit(1)).alias("n"), F.sum(bad_label.cast("long")).alias("labels"),
                    F.sum(_seconds(frame, spec.timestamp).isNull().cast("long")).alias("ts")).first()
    assert row is not None
    if not row["n"]:
        raise DataError(f"impressions table '{spec.tables['impressions']}' has no rows")
    if row["labels"]:
        found = [r["v"] for r in frame.filter(bad_label).select(F.col(spec.label).cast("string").alias("v"))
                 .distinct().limit(5).collect()]
        raise DataError(f"label column '{spec.label}' must be 0/1; found {sorted(map(str, found))} "
                        f"(fix: binarize it, e.g. rating >= 4)")
    if row["ts"]:
        raise DataError(f"timestamp column '{spec.timestamp}' has {row['ts']} missing or non-numeric values "
                        f"(fix: use unix seconds or a datetime column)")


def _latest(frame: DataFrame, key: str) -> DataFrame:
    """One row per canonical key: the last one in input order (files by name, rows in order), as
    the embedded engine keeps the last duplicate."""
    from pyspark.sql import functions as F

    cols = [c for c in frame.columns if c != key and c not in ORDER]
    if not cols:  # the spec reads no attribute of this table
        return frame.select(key).distinct()
    order = F.struct(*ORDER)
    return frame.groupBy(key).agg(F.max_by(F.struct(*cols), order).alias("_v")).select(key, "_v.*")


ORDER = ("_o_file", "_o_block", "_o_row")


def _with_input_order(frame: DataFrame) -> DataFrame:
    """Columns that sort rows in input order: file path, byte offset of the file split, then a
    row id that increases within a split (parquet and csv alike)."""
    from pyspark.sql import functions as F

    return frame.select("*", F.col("_metadata.file_path").alias("_o_file"),
                        F.col("_metadata.file_block_start").alias("_o_block"),
                        F.monotonically_increasing_id().alias("_o_row"))


def _canonical_key(frame: DataFrame, key: str) -> DataFrame:
    """The key column replaced by its canonical strings: tables join on what `as_str` makes equal."""
    return canonical(frame, [key], "_k_").drop(key).withColumnRenamed(f"_k_{key}", key)


def _fingerprint(tables: list[DataFrame]) -> str:
    """Order-insensitive content hash: rows and the sum of 64-bit row hashes of every table. (The
    embedded engine hashes its pandas frames: the two engines' fingerprints differ.)"""
    from pyspark.sql import functions as F

    h = hashlib.sha256()
    for t in tables:
        row = t.agg(F.count(F.lit(1)).alias("n"),
                    F.sum(F.xxhash64(*t.columns).cast("decimal(38,0)")).alias("h")).first()
        assert row is not None
        h.update(f"{row['n']}:{row['h']}".encode())
    return h.hexdigest()[:16]


def load_joined(spark: SparkSession, spec: FeatureSpec, raw_dir: str | Path) -> tuple[DataFrame, list[str], str]:
    """The embedded engine's `load_raw` on Spark: (impressions joined with user and item attributes,
    keys as canonical strings, unsorted, with input-order columns; context columns; fingerprint)."""
    from pyspark.sql import functions as F

    ctx = spec.source_columns("impressions")
    need = list(dict.fromkeys([spec.user_key, spec.item_key, spec.timestamp, spec.label, *ctx, *spec.passthrough]))
    ucols, icols = spec.source_columns("users"), spec.source_columns("items")
    frames = {}
    for table, cols in (("impressions", need), ("users", [spec.user_key, *ucols]), ("items", [spec.item_key, *icols])):
        frame = _read(spark, raw_dir, spec.tables[table])  # type: ignore[index]
        check_columns(spec, spec.tables[table], frame.columns, cols)  # type: ignore[index]
        frames[table] = _with_input_order(frame).select(*cols, *ORDER)
    imp, users, items = frames["impressions"], frames["users"], frames["items"]
    _validate(imp, spec)
    fingerprint = _fingerprint([t.drop(*ORDER) for t in (imp, users, items)])
    imp = imp.withColumn(spec.timestamp, _seconds(imp, spec.timestamp)) \
        .withColumn(spec.label, F.col(spec.label).cast("double").cast("byte"))
    imp = _canonical_key(_canonical_key(imp, spec.user_key), spec.item_key)
    users, items = _canonical_key(users, spec.user_key), _canonical_key(items, spec.item_key)
    # Impression columns win over joined ones of the same name, users' over items' (as in load_raw).
    ucols = [c for c in ucols if c not in need]
    icols = [c for c in icols if c not in need and c not in ucols]
    imp = imp.join(_latest(users, spec.user_key).select(spec.user_key, *ucols), spec.user_key, "left")
    imp = imp.join(_latest(items, spec.item_key).select(spec.item_key, *icols), spec.item_key, "left")
    return imp, ctx, fingerprint
