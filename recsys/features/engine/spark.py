"""The Spark feature engine: the embedded engine's semantics on Spark DataFrames, for logs that
outgrow one machine (`recsys build-features --engine spark`).

    read (parquet / csv, files or folders of parts) → canonical keys → dedupe users / items (last row
    wins) → left joins (`spark_raw`) → point-in-time statistics (`spark_statistics`) → one global
    sort by (time, input order) → positions → split → fit on train (`spark_fit`) → encode per Arrow
    batch with the SAME `FeaturePipeline.transform` → partitioned parquet + transforms.json + manifest

Heavy work is Spark's (joins, windows, aggregations, sorts); Python runs only per Arrow batch
(`mapInArrow`), never per row, and only where the embedded engine's numpy code must decide the
values (encoding, prepared numeric inputs, canonical strings of odd key types). The output folder
is the embedded engine's, except that each split is a folder of parquet part files
(`train.parquet/part-*.parquet`), which `recsys.features.splits.read_split` reads in part order.

pyspark (an optional extra) and Java 17+ are needed only here; both are checked first with a
one-line error. The driver writes the small files and swaps the output folder into place, so the
output path must be a filesystem the driver and the executors share (local disk for local[N]).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.errors import RecsysError
from recsys.features.engine.arrow import split_positions, split_sizes
from recsys.features.engine.spark_fit import canonical, fit_state
from recsys.features.engine.spark_raw import ORDER, check_numeric, load_joined
from recsys.features.engine.spark_statistics import add_statistics, block_seconds
from recsys.features.pipeline import FeaturePipeline
from recsys.features.raw import LABEL_TIME, RawData
from recsys.features.splits import BLOCKS, SPLITS, encode_chunk
from recsys.io import output_folder
from recsys.spec import FeatureSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkSettings", "build_features", "spark_session", "batch_columns", "require_spark"]

# Defaults a user's --conf / --spark-config / spark-submit settings override.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",  # timestamps are unix seconds in UTC, as in the embedded engine
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",  # rows per encode call: numpy amortized
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.rdd.compress": "true",  # persisted stages are compressed on disk
    "spark.ui.showConsoleProgress": "true",
    # Let adaptive execution coalesce the partitions of persisted stages too (small data, fewer tasks).
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
}


@dataclass(frozen=True)
class SparkSettings:
    """Where and how Spark runs: `master` (local[N], spark://host:7077, yarn, k8s://…; default:
    what spark-submit or SPARK_MASTER says, else local[*]), `conf` key/value pairs (as --conf),
    and a spark-defaults style `config_file` (one `key value` or `key=value` a line)."""

    master: str | None = None
    conf: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    config_file: Path | None = None


def parse_conf(items: list[str]) -> tuple[tuple[str, str], ...]:
    """--conf key=value options → pairs, refusing anything else with the fix."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecsysError(f"--conf '{item}' is not key=value (e.g. --conf spark.driver.memory=6g)")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _config_file(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise RecsysError(f"--spark-config {path}: file not found (fix: a spark-defaults.conf style file)")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\S+?)\s*[=\s]\s*(.*)$", line)
        if m is None or not m.group(2):
            raise RecsysError(f"--spark-config {path}:{n}: '{line}' is not `key value` or `key=value`")
        out.append((m.group(1), m.group(2)))
    return out


def require_spark() -> None:
    """pyspark importable and Java 17+ on JAVA_HOME or PATH, or one line that says how to fix it."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise RecsysError("--engine spark needs pyspark (fix: pip install 'recsys-widedeep[spark]')") from None
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise RecsysError("--engine spark needs Java 17 or 21 (fix: apt-get install openjdk-17-jre-headless, "
                          "or set JAVA_HOME)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0": Java 8
        major = int(m.group(2))
    if major < 17:
        raise RecsysError(f"--engine spark needs Java 17 or 21, found {java} version {major or 'unknown'} "
                          f"(fix: install openjdk-17-jre-headless and set JAVA_HOME)")


def session_conf(settings: SparkSettings) -> Any:
    """The SparkConf: defaults < spark-submit's / spark-defaults < --spark-config < --conf < --master."""
    from pyspark import SparkConf

    conf = SparkConf()  # under spark-submit this already holds its settings
    for key, value in DEFAULT_CONF.items():
        if not conf.contains(key):
            conf.set(key, value)
    if not conf.contains("spark.pyspark.python") and "PYSPARK_PYTHON" not in os.environ:
        conf.set("spark.pyspark.python", sys.executable)  # workers run this interpreter (local mode)
    for key, value in [*(_config_file(settings.config_file) if settings.config_file else []), *settings.conf]:
        conf.set(key, value)
    master = settings.master or os.environ.get("SPARK_MASTER")
    if master:
        conf.setMaster(master)
    elif not conf.contains("spark.master"):
        conf.setMaster("local[*]")
    conf.setIfMissing("spark.app.name", "recsys build-features")
    return conf


@contextmanager
def spark_session(settings: SparkSettings, log: Callable[[str], None] = print,
                  progress: bool = True) -> Iterator[SparkSession]:
    """The active session if there is one (a test session's, spark-submit's), else a new one that
    is stopped afterwards. Logs the master and the Spark UI address."""
    require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    conf = session_conf(settings)
    if not progress:
        conf.set("spark.ui.showConsoleProgress", "false")
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    log(f"Spark {spark.version} on {sc.master}: UI at {sc.uiWebUrl or 'disabled'}")
    try:
        yield spark
    finally:
        spark.stop()


# ---------------------------------------------------------------- statistics, order, split
def _statistics(spec: FeatureSpec, imp: DataFrame) -> DataFrame:
    """Point-in-time counters on canonical key strings (`spark_statistics`)."""
    from pyspark.sql import functions as F

    if not spec.statistics:
        return imp
    cols = list(dict.fromkeys(c for name in spec.statistics for c in spec.statistic_key_columns(name)))
    keyed = {c: c if c in (spec.user_key, spec.item_key) else f"_s_{c}" for c in cols}
    imp = canonical(imp, [c for c in cols if keyed[c] != c], "_s_")
    last = LABEL_TIME if spec.delayed_labels else spec.timestamp  # label times end last
    span = imp.agg(F.min(spec.timestamp).alias("lo"), F.max(last).alias("hi")).first()
    assert span is not None
    reach = max((s.window_s or 0) + (s.bucket_s or 0) for s in spec.statistics.values())
    imp = add_statistics(spec, imp, keyed, block_seconds(int(span["lo"]) - reach, int(span["hi"])))
    return imp.drop(*[v for k, v in keyed.items() if k != v])


def _ordered(imp: DataFrame, spec: FeatureSpec) -> tuple[DataFrame, int]:
    """Rows in the embedded engine's order (time, then input order), each with its position 0..n-1,
    persisted: the fit and every split's encode read the same rows. Positions are a distributed
    prefix sum: per-partition row counts of the range-partitioned sort, collected and added."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ordered = imp.orderBy(spec.timestamp, *ORDER).drop(*ORDER)
    ordered = ordered.select("*", F.spark_partition_id().alias("_pid"),
                             F.monotonically_increasing_id().alias("_mid")).persist(StorageLevel.DISK_ONLY)
    counts = {int(r["_pid"]): int(r["count"]) for r in ordered.groupBy("_pid").count().collect()}
    offsets = np.concatenate([[0], np.cumsum([counts.get(p, 0) for p in range(max(counts) + 1)])]).tolist()
    start = F.element_at(F.array(*[F.lit(int(o)) for o in offsets]), F.col("_pid") + 1)
    position = (start + F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)).alias("_pos")
    return ordered.select("*", position).drop("_pid", "_mid"), int(offsets[-1])


def _split(spark: SparkSession, spec: FeatureSpec, rows: DataFrame, n: int) -> DataFrame:
    """A `_split` column (0 train, 1 valid, 2 test) from the positions, as `split_positions` gives them.
    A random split's assignment is computed by the driver (n bytes) and broadcast."""
    from pyspark.sql import functions as F

    n_train, n_valid, _ = split_sizes(spec, n)
    if spec.split.method == "time":
        return rows.withColumn("_split", F.when(F.col("_pos") < n_train, 0)
                               .when(F.col("_pos") < n_train + n_valid, 1).otherwise(2).cast("byte"))
    code = np.empty(n, dtype=np.int8)
    for i, positions in enumerate(split_positions(spec, n).values()):
        code[positions] = i
    table = pa.table({"_pos": pa.array(np.arange(n, dtype=np.int64)), "_split": pa.array(code)})
    return rows.join(F.broadcast(spark.createDataFrame(table)), "_pos")


# ---------------------------------------------------------------- encoding
def batch_columns(batch: pa.RecordBatch) -> dict[str, Any]:
    """An Arrow batch as the columns `FeaturePipeline` takes from the embedded engine: strings as
    Categoricals (one code per row, transforms work on the distinct values), numbers as numpy
    (NaN where missing)."""
    out: dict[str, Any] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            enc = col.dictionary_encode()
            codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
            cats = pd.Index(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object)
            out[name] = pd.Categorical.from_codes(codes, categories=cats, validate=False)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _encoder(spec_yaml: str, state_json: str, keep: list[str]) -> Callable[[Iterator[pa.RecordBatch]],
                                                                             Iterator[pa.RecordBatch]]:
    """The per-partition encode function: the pipeline is rebuilt from its JSON state on the worker
    and each batch goes through `encode_chunk`, the embedded engine's encoder."""

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import yaml

        from recsys.spec import parse_spec

        spec = parse_spec(yaml.safe_load(spec_yaml))
        pipeline = FeaturePipeline.from_dict(spec, json.loads(state_json))
        for batch in batches:
            frame = pd.DataFrame(batch_columns(batch), copy=False)
            blocks = encode_chunk(pipeline, RawData(frame, [], ""), slice(None), [])
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in keep),
                                              *(c.combine_chunks() for c in blocks.columns)],
                                             names=[*keep, *blocks.column_names])

    return encode


def _encoded_schema(rows: DataFrame, keep: list[str], pipeline: FeaturePipeline) -> Any:
    from pyspark.sql import types as T

    layout = pipeline.layout
    ids = T.IntegerType() if max(layout.embedding_rows, layout.wide_rows) < 2**31 else T.LongType()
    widths = {"sparse": len(layout.sparse_fields), "multi": sum(m for _, m in layout.multi_fields),
              "dense": len(layout.dense_fields), "wide": len(layout.wide_fields)}
    fields = [rows.schema[c] for c in keep]
    for name in BLOCKS:
        kind = T.FloatType() if name == "dense" else ids
        fields += [T.StructField(f"{name}.{j}", kind, False) for j in range(widths[name])]
    return T.StructType(fields)


# ---------------------------------------------------------------- the engine
def build_features(spec: FeatureSpec, raw_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = print,
                   progress: bool = True, settings: SparkSettings | None = None) -> dict[str, Any]:
    """`recsys.features.engine.FeatureEngine` on Spark: the same output folder as the arrow engine,
    built in a temp folder beside `out_dir` (intermediate stages under its `_work/`) and swapped in."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with spark_session(settings or SparkSettings(), log, progress) as spark, \
            output_folder(out_dir, "features", {"--raw": raw_dir}) as tmp:
        ordered = None
        try:
            imp, ctx, fingerprint = load_joined(spark, spec, raw_dir)
            # Each stage is written once and read back: the statistics' self-joins and the sort's
            # sampling pass then re-read parquet instead of recomputing the joins.
            joined = _stage(imp, tmp / "_work" / "joined")
            check_numeric(spec, joined)  # on the staged join: one column read back, not the join again
            imp = _stage(_statistics(spec, joined), tmp / "_work" / "statistics")
            ordered, n = _ordered(imp, spec)
            log(f"read {n:,} impressions, point-in-time statistics {list(spec.statistics)} "
                f"({time.perf_counter() - t0:.1f}s)")
            rows = _split(spark, spec, ordered, n)
            summary = _summary(spec, rows)
            state = fit_state(spec, rows.filter("_split = 0"), summary["rows"]["train"], summary["positives"])
            pipeline = FeaturePipeline.from_dict(spec, state)
            log(f"fitted transforms on {summary['rows']['train']:,} train rows ({time.perf_counter() - t0:.1f}s)")
            manifest = _write(spec, rows, pipeline, ctx, tmp, summary, fingerprint, t0)
            shutil.rmtree(tmp / "_work")
        finally:
            if ordered is not None:
                ordered.unpersist()
    log(f"wrote {out_dir} ({manifest['seconds']}s)")
    return manifest


def _stage(frame: DataFrame, path: Path) -> DataFrame:
    frame.write.parquet(str(path.resolve()))
    return frame.sparkSession.read.parquet(str(path.resolve()))


def _summary(spec: FeatureSpec, rows: DataFrame) -> dict[str, Any]:
    from pyspark.sql import functions as F

    stats = {int(r["_split"]): r for r in rows.groupBy("_split").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col(spec.label).cast("long")).alias("pos"),
        F.min(spec.timestamp).alias("lo"), F.max(spec.timestamp).alias("hi")).collect()}
    return {
        "rows": {s: int(stats[i]["n"]) for i, s in enumerate(SPLITS)},
        "positive_rate": {s: int(stats[i]["pos"]) / int(stats[i]["n"]) for i, s in enumerate(SPLITS)},
        "time_range": {s: [int(stats[i]["lo"]), int(stats[i]["hi"])] for i, s in enumerate(SPLITS)},
        "positives": int(stats[0]["pos"]),
    }


def _write(spec: FeatureSpec, rows: DataFrame, pipeline: FeaturePipeline, ctx: list[str], tmp: Path,
           summary: dict[str, Any], fingerprint: str, t0: float) -> dict[str, Any]:
    """Encode every split into `tmp` (one folder of parquet parts each, in row order), then the
    transforms, spec and manifest."""
    from pyspark.sql import functions as F

    keep = list(dict.fromkeys([spec.label, spec.user_key, spec.item_key, spec.timestamp, *ctx, *spec.passthrough]))
    need = list(dict.fromkeys([*keep, *(c for c in pipeline.required_columns() if c in rows.columns)]))
    state = pipeline.to_dict()
    encode = _encoder(spec.to_yaml(), json.dumps(state), keep)
    schema = _encoded_schema(rows, keep, pipeline)
    for i, name in enumerate(SPLITS):
        part = rows.filter(F.col("_split") == i).select(*need)
        part.mapInArrow(encode, schema).write.parquet(str((tmp / f"{name}.parquet").resolve()))
    (tmp / "transforms.json").write_text(json.dumps(state, sort_keys=True))
    (tmp / "spec.yaml").write_text(spec.to_yaml())
    manifest = {
        "rows": summary["rows"],
        "positive_rate": summary["positive_rate"],
        "time_range": summary["time_range"],
        "split": spec.split.model_dump(),
        "data_fingerprint": fingerprint,
        "feature_version": state["spec_hash"],
        "layout": pipeline.layout.to_dict(),
        "engine": "spark",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
