"""Reading the raw tables on Spark with the embedded engine's semantics (`recsys.features.raw`):
the same files or folders, the same checks and messages, keys as canonical strings, the last
duplicate of a user or item kept, left joins; plus columns that sort rows in input order."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.errors import DataError
from recsys.features.checks import check_numeric_columns
from recsys.features.engine.spark_fit import canonical
from recsys.features.raw import LABEL_TIME, check_columns
from recsys.features.times import bad_times_error
from recsys.io import find_table, table_parts
from recsys.spec import FeatureSpec, NumericFeature

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row, SparkSession

__all__ = ["ORDER", "load_joined", "check_numeric"]


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


def _times(frame: DataFrame, columns: list[str]) -> DataFrame:
    """The embedded engine's time parsing (`recsys.features.times`): each of `columns` as double unix
    seconds (NULL = missing) plus `_bad_<c>`, the text of a value that is not a time (else NULL).
    Numbers are floored in Spark; every other type (strings, datetimes with or without a zone,
    dates) goes through `parse_times` itself, per Arrow batch, so no session time zone matters."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    types = dict((f.name, f.dataType) for f in frame.schema.fields)
    odd = [c for c in columns if not isinstance(types[c], T.NumericType)]
    for c in columns:
        if c not in odd:
            x = F.col(c).cast("double")
            frame = frame.withColumn(c, F.when(~F.isnan(x), F.floor(x)).cast("double")) \
                .withColumn(f"_bad_{c}", F.lit(None).cast("string"))
    if not odd:
        return frame
    schema = T.StructType([T.StructField(f.name, T.DoubleType(), True) if f.name in odd else f
                           for f in frame.schema.fields] + [T.StructField(f"_bad_{c}", T.StringType(), True)
                                                            for c in odd])

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from recsys.features.times import parse_times

        for batch in batches:
            columns, extra = list(batch.columns), []
            for c in odd:
                i = batch.schema.get_field_index(c)
                values = batch.column(i).to_pandas()
                seconds, bad = parse_times(values)
                columns[i] = pa.array(seconds, pa.float64(), from_pandas=True)
                text = np.full(len(bad), None, dtype=object)
                text[bad] = [str(v) for v in values.to_numpy(dtype=object)[bad]]  # the error path only
                extra.append(pa.array(text, pa.string()))
            names = [*batch.schema.names, *(f"_bad_{c}" for c in odd)]
            yield pa.RecordBatch.from_arrays([*columns, *extra], names=names)

    return frame.mapInArrow(parse, schema)


def _check_times(frame: DataFrame, stem: str, columns: list[str], counts: Row | None = None) -> None:
    """Refuse values that are not times with the embedded engine's message (`bad_times_error`: the
    smallest bad value as the example). `counts`: an aggregate row that already holds `_nbad_<c>`
    and `_xbad_<c>` (the impressions' one validation pass); else this table is aggregated here."""
    if not columns:
        return
    row = counts if counts is not None else frame.agg(*_bad_aggregates(columns)).first()
    assert row is not None
    for c in columns:
        if row[f"_nbad_{c}"]:
            raise bad_times_error(stem, c, int(row[f"_nbad_{c}"]), row[f"_xbad_{c}"])


def _bad_aggregates(columns: list[str]) -> list[Column]:
    from pyspark.sql import functions as F

    return [agg for c in columns for agg in (F.count(f"_bad_{c}").alias(f"_nbad_{c}"),
                                             F.min(f"_bad_{c}").alias(f"_xbad_{c}"))]


def _validate(frame: DataFrame, spec: FeatureSpec) -> None:
    """One pass over the impressions: rows, labels that are not 0/1, values that are not times,
    missing timestamps, label times; each refused with the embedded engine's message."""
    from pyspark.sql import functions as F

    label = F.col(spec.label).cast("double")
    bad_label = label.isNull() | ~label.isin(0.0, 1.0)
    times = spec.time_columns("impressions")
    aggs = [F.count(F.lit(1)).alias("n"), F.sum(bad_label.cast("long")).alias("labels"),
            F.sum(F.col(spec.timestamp).isNull().cast("long")).alias("ts"), *_bad_aggregates(times)]
    if spec.label_timestamp:
        lt, ts = F.col(spec.label_timestamp), F.col(spec.timestamp)
        aggs += [F.sum((lt.isNull() & (label == 1)).cast("long")).alias("unlabeled"),
                 F.sum((lt < ts).cast("long")).alias("early"),
                 F.min(F.when(lt < ts, F.struct(ts.alias("ts"), lt.alias("lt")))).alias("first")]
    row = frame.agg(*aggs).first()
    assert row is not None
    if not row["n"]:
        raise DataError(f"impressions table '{spec.tables['impressions']}' has no rows")
    if row["labels"]:
        found = [r["v"] for r in frame.filter(bad_label).select(F.col(spec.label).cast("string").alias("v"))
                 .distinct().limit(5).collect()]
        raise DataError(f"label column '{spec.label}' must be 0/1; found {sorted(map(str, found))} "
                        f"(fix: binarize it, e.g. rating >= 4)")
    _check_times(frame, spec.tables["impressions"], times, row)
    if row["ts"]:
        raise DataError(f"timestamp column '{spec.timestamp}' has {row['ts']} missing values "
                        f"(fix: unix seconds, ISO-8601 or a datetime on every row)")
    if spec.label_timestamp and row["unlabeled"]:
        raise DataError(f"label_timestamp column '{spec.label_timestamp}': {row['unlabeled']} positive "
                        f"impressions have no label time (fix: the time each positive label became known)")
    if spec.label_timestamp and row["early"]:
        raise DataError(f"label_timestamp column '{spec.label_timestamp}': {row['early']} labels are known before "
                        f"their impression, e.g. label time {int(row['first']['lt'])} < timestamp "
                        f"{int(row['first']['ts'])} (fix: a label time at or after the impression's "
                        f"'{spec.timestamp}')")


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
    """Order-insensitive content hash: rows and the exact sum of 64-bit row hashes of every table. (The
    embedded engine hashes its pandas frames: the two engines' fingerprints differ.) The sum is
    taken in three long sums of 22 + 21 + 21 bits of each hash (exact below 2**42 rows) and joined
    in Python: the same value as a decimal(38,0) sum, which Spark computes ~4x slower."""
    from pyspark.sql import functions as F

    low = (1 << 21) - 1
    h = hashlib.sha256()
    for t in tables:
        x = F.xxhash64(*t.columns)
        row = t.agg(F.count(F.lit(1)).alias("n"), F.sum(F.shiftright(x, 42)).alias("hi"),
                    F.sum(F.shiftright(x, 21).bitwiseAND(F.lit(low))).alias("mid"),
                    F.sum(x.bitwiseAND(F.lit(low))).alias("lo")).first()
        assert row is not None
        total = None if not row["n"] else (int(row["hi"]) << 42) + (int(row["mid"]) << 21) + int(row["lo"])
        h.update(f"{row['n']}:{total}".encode())
    return h.hexdigest()[:16]


def load_joined(spark: SparkSession, spec: FeatureSpec, raw_dir: str | Path) -> tuple[DataFrame, list[str], str]:
    """The embedded engine's `load_raw` on Spark: (impressions joined with user and item attributes,
    keys as canonical strings, unsorted, with input-order columns; context columns; fingerprint)."""
    from pyspark.sql import functions as F

    ctx = spec.source_columns("impressions")
    need = list(dict.fromkeys([spec.user_key, spec.item_key, spec.timestamp, spec.label, *ctx, *spec.passthrough,
                               *([spec.label_timestamp] if spec.label_timestamp else [])]))
    ucols, icols = spec.source_columns("users"), spec.source_columns("items")
    frames = {}
    for table, cols in (("impressions", need), ("users", [spec.user_key, *ucols]), ("items", [spec.item_key, *icols])):
        frame = _read(spark, raw_dir, spec.tables[table])  # type: ignore[index]
        check_columns(spec, spec.tables[table], frame.columns, cols)  # type: ignore[index]
        frames[table] = _with_input_order(frame).select(*cols, *ORDER)
    imp, users, items = frames["impressions"], frames["users"], frames["items"]
    fingerprint = _fingerprint([t.drop(*ORDER) for t in (imp, users, items)])
    imp = _times(imp, spec.time_columns("impressions"))
    _validate(imp, spec)
    for name in ("users", "items"):
        cols = spec.time_columns(name)
        parsed = _times(frames[name], cols)
        _check_times(parsed, spec.tables[name], cols)
        frames[name] = parsed.drop(*(f"_bad_{c}" for c in cols))
    users, items = frames["users"], frames["items"]
    ts = F.col(spec.timestamp).cast("long")
    label_time = ts + F.lit(spec.label_delay_s) if spec.label_timestamp is None else \
        F.coalesce(F.col(spec.label_timestamp).cast("long"), ts)
    imp = imp.drop(*(f"_bad_{c}" for c in spec.time_columns("impressions"))) \
        .withColumn(spec.timestamp, ts).withColumn(spec.label, F.col(spec.label).cast("double").cast("byte"))
    if spec.delayed_labels:
        imp = imp.withColumn(LABEL_TIME, label_time)
    imp = _canonical_key(_canonical_key(imp, spec.user_key), spec.item_key)
    users, items = _canonical_key(users, spec.user_key), _canonical_key(items, spec.item_key)
    # Impression columns win over joined ones of the same name, users' over items' (as in load_raw).
    ucols = [c for c in ucols if c not in need]
    icols = [c for c in icols if c not in need and c not in ucols]
    imp = imp.join(_latest(users, spec.user_key).select(spec.user_key, *ucols), spec.user_key, "left")
    imp = imp.join(_latest(items, spec.item_key).select(spec.item_key, *icols), spec.item_key, "left")
    return imp, ctx, fingerprint


def check_numeric(spec: FeatureSpec, joined: DataFrame, limit: int = 1000) -> None:
    """`check_numeric_columns` on Spark, on the joined impressions as the embedded engine checks
    them: for each numeric feature whose column is text, the distinct values that Spark cannot cast
    to a double (at most `limit`, collected) go through the embedded engine's own check, so a column
    of text is refused with the same message instead of silently becoming missing values. (A value
    that Spark parses and pandas does not, such as '1d', passes here and becomes missing.)"""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    columns = list(dict.fromkeys(f.column or name for name, f in spec.features.items()
                                 if isinstance(f, NumericFeature)))
    text = [c for c in columns if c in joined.columns and isinstance(joined.schema[c].dataType, T.StringType)]
    found = {c: [r[0] for r in joined.select(c).where(F.col(c).isNotNull() & F.col(c).try_cast("double").isNull())
                 .distinct().limit(limit).collect()] for c in text}
    if any(found.values()):
        width = max(map(len, found.values()))
        check_numeric_columns(spec, pd.DataFrame({c: v + [None] * (width - len(v)) for c, v in found.items()},
                                                 dtype=object))
