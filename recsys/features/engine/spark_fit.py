"""Fitting the FeaturePipeline's state on Spark: aggregates over the train split, then the SAME state
format as `FeaturePipeline.to_dict`, so the pipeline that encodes is the one the embedded engine
builds (one transform code path).

- vocabularies and multi-hot tokens: (feature, canonical value) counts in one aggregation, values
  under min-count dropped in Spark; the ids are then assigned by `Vocabulary.fit_counts` itself
  (count desc, then value), so their order is the embedded engine's by construction;
- numeric transforms: the raw inputs come from `FeaturePipeline.numeric_inputs` applied per Arrow
  batch (`mapInArrow`: numpy's own log1p, the statistics' smoothed rates, the age in days), so every
  value is bit-identical to the embedded engine's; fill, mean and std are Spark aggregates (equal up
  to float summation order, ~1e-15 relative);
- quantile boundaries are EXACT: numpy's default ('linear') quantile needs the order statistics at
  two ranks per cut point; those values are selected by a distributed rank selection (distinct
  values sorted by a range partitioning, per-partition totals collected, offsets added) and then
  interpolated with numpy's own formula (`linear_quantiles`), so the boundaries equal np.quantile's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from recsys.features.pipeline import FORMAT_VERSION, FeaturePipeline, spec_hash
from recsys.features.transforms import MultiHotVocabulary, NumericTransform, Vocabulary, as_float
from recsys.spec import CategoricalFeature, FeatureSpec, MultiHotFeature

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["linear_quantiles", "quantile_ranks", "fit_state"]


def quantile_ranks(n: int, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous ranks, next ranks, gamma) of numpy's 'linear' quantile at the cut points of
    `NumericTransform.fit` (np.linspace(0, 1, buckets + 1)[1:-1]) over n sorted values."""
    qs = np.linspace(0, 1, buckets + 1)[1:-1]
    virtual = (n - 1) * qs
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = nxt[above] = n - 1
    below = virtual < 0
    prev[below] = nxt[below] = 0
    gamma = np.asarray(virtual - prev, dtype=virtual.dtype)
    return prev.astype(np.int64), nxt.astype(np.int64), gamma


def linear_quantiles(n: int, buckets: int, value_at: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """np.quantile(x, linspace(0, 1, buckets + 1)[1:-1]) from the order statistics of x alone:
    `value_at(ranks)` returns the sorted x at those ranks. numpy's own index and interpolation
    formula (`_lerp`), so the result is bit-identical (tests compare them on ties and small n)."""
    prev, nxt, gamma = quantile_ranks(n, buckets)
    a, b = value_at(prev), value_at(nxt)
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return np.asarray(out, dtype=np.float64)


def canonical(frame: DataFrame, columns: list[str], prefix: str) -> DataFrame:
    """`frame` plus, for each column c, `{prefix}{c}`: the canonical string of `as_str` ('' for
    missing). Strings and integers are cast in Spark (the same text as Python's str); any other type
    (floats, booleans, decimals) goes through `as_str` itself, per Arrow batch."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    types = dict((f.name, f.dataType) for f in frame.schema.fields)
    odd = [c for c in columns if not isinstance(types[c], (T.StringType, T.IntegralType))]
    for c in columns:
        if c not in odd:
            frame = frame.withColumn(f"{prefix}{c}", F.coalesce(F.col(c).cast("string"), F.lit("")))
    if not odd:
        return frame
    schema = T.StructType([*frame.schema.fields, *[T.StructField(f"{prefix}{c}", T.StringType(), False) for c in odd]])

    def add(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from recsys.features.transforms import as_str

        for batch in batches:
            extra = [pa.array(as_str(batch.column(c).to_numpy(zero_copy_only=False)), pa.string()) for c in odd]
            yield pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=None,
                                             names=[*batch.schema.names, *[f"{prefix}{c}" for c in odd]])

    return frame.mapInArrow(add, schema)


def _java_quote(separator: str) -> str:
    """A literal separator as a Java regex (Spark's split), as pyarrow's split_pattern reads it:
    java.util.regex.Pattern.quote's \\Q…\\E, with any \\E inside split out."""
    return "\\Q" + separator.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def _tagged(name: str) -> Callable[[Column], Column]:
    """token → (feature, token). A one-argument function: Spark's `transform` passes the element's
    index as a second argument to a two-argument one (so no `lambda tok, name=name`)."""
    from pyspark.sql import functions as F

    return lambda token: F.struct(F.lit(name).alias("f"), token.alias("v"))


def _fit_vocabularies(spec: FeatureSpec, train: DataFrame, state: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    cats = {n: f for n, f in spec.features.items() if isinstance(f, CategoricalFeature)}
    multi = {n: f for n, f in spec.features.items() if isinstance(f, MultiHotFeature)}
    if not cats and not multi:
        return
    both: dict[str, CategoricalFeature | MultiHotFeature] = {**cats, **multi}
    cols = list(dict.fromkeys((f.column or n) for n, f in both.items()))
    frame = canonical(train.select(*cols), cols, "_c_")
    entries = [F.array(F.struct(F.lit(n).alias("f"), F.col(f"_c_{f.column or n}").alias("v"))) for n, f in cats.items()]
    entries += [F.transform(F.split(F.col(f"_c_{f.column or n}"), _java_quote(f.separator), -1), _tagged(n))
                for n, f in multi.items()]
    min_count = F.create_map(*[x for n, f in both.items() for x in (F.lit(n), F.lit(f.min_count))])
    counts = (frame.select(F.explode(F.flatten(F.array(*entries))).alias("e"))
              .groupBy(F.col("e.f").alias("f"), F.col("e.v").alias("v")).count()
              .filter((F.col("v") != "") & (F.col("count") >= min_count[F.col("f")])))
    table = counts.toArrow()
    names = np.asarray(table.column("f").to_numpy(zero_copy_only=False), dtype=object)
    values = np.asarray(table.column("v").to_numpy(zero_copy_only=False), dtype=object)
    numbers = table.column("count").to_numpy().astype(np.int64)
    for n, f in cats.items():
        mask = names == n
        vocab = Vocabulary(f.min_count, f.max_vocab).fit_counts(values[mask], numbers[mask])
        state["vocabularies"][n] = vocab.to_dict()
    for n, m in multi.items():
        mask = names == n
        mh = MultiHotVocabulary(m.separator, m.max_len, m.min_count)
        mh.vocab.fit_counts(values[mask], numbers[mask])
        state["multi_hot"][n] = mh.to_dict()


def _numeric_frame(spec: FeatureSpec, train: DataFrame, prior: float,
                   keys: list[str]) -> tuple[DataFrame, dict[str, NumericTransform]]:
    """Per train row, for every numeric transform i: r{i} (the raw value as float, NaN when missing)
    and x{i} (the transform's prepared value, NaN when missing: the fill is not known yet)."""
    from pyspark.sql import types as T

    probe = FeaturePipeline(spec)
    probe.prior = prior
    need = [c for c in probe.required_columns() if c in train.columns]
    fields = [T.StructField(f"{p}{i}", T.DoubleType(), True) for i in range(len(keys)) for p in ("r", "x")]

    def prepare(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from recsys.features.engine.spark import batch_columns

        pipeline = FeaturePipeline(spec)
        pipeline.prior = prior
        for batch in batches:
            arrays = []
            for _, transform, values in pipeline.numeric_inputs(batch_columns(batch)):
                raw = as_float(values)
                raw = np.where(np.isfinite(raw), raw, np.nan)
                arrays += [pa.array(raw), pa.array(transform._prepare(raw, np.nan))]
            yield pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields])

    transforms = {k: t for k, t, _ in probe.numeric_inputs(_NoColumns())}
    return train.select(*need).mapInArrow(prepare, T.StructType(fields)), transforms


class _NoColumns(dict[str, Any]):
    """Columns that are all empty: enough for `numeric_inputs` to name its transforms."""

    def __missing__(self, key: str) -> np.ndarray:
        return np.zeros(0)


def _values_at_ranks(values: DataFrame, wanted: dict[int, np.ndarray]) -> dict[int, dict[int, float]]:
    """Distributed rank selection: for each transform i (column `i`) and rank r in wanted[i], the
    r-th smallest `x` (0-based) of that transform. Distinct (i, x) counts are range-partitioned by
    (i, x); per-partition totals (one row per partition and transform) are collected and turned
    into offsets; each distinct value covers the ranks [start, start + count)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    distinct = values.groupBy("i", "x").count()
    parts = (distinct.repartitionByRange("i", "x").withColumn("_pid", F.spark_partition_id())
             .withColumn("_cum", F.sum("count").over(Window.partitionBy("_pid").orderBy("i", "x")
                                                     .rowsBetween(Window.unboundedPreceding, 0)))
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        totals = parts.groupBy("_pid", "i").agg(F.sum("count").alias("n")).orderBy("_pid", "i").collect()
        offsets: dict[tuple[int, int], int] = {}
        running: dict[int, int] = {}
        before: dict[int, int] = {}  # rows of earlier transforms inside the partition
        for row in totals:
            pid, i, n = int(row["_pid"]), int(row["i"]), int(row["n"])
            offsets[(i, pid)] = running.get(i, 0) - before.get(pid, 0)
            running[i] = running.get(i, 0) + n
            before[pid] = before.get(pid, 0) + n
        offset = F.create_map(*[x for (i, pid), o in offsets.items() for x in (F.lit(i * 100_000 + pid), F.lit(o))])
        start = offset[F.col("i") * 100_000 + F.col("_pid")] + F.col("_cum") - F.col("count")
        ranks = values.sparkSession.createDataFrame(
            [(int(i), int(r)) for i, rs in wanted.items() for r in np.unique(rs)], "ri int, r long")
        hits = (parts.select("i", "x", "count", start.alias("start"))
                .join(F.broadcast(ranks), (F.col("i") == F.col("ri")) & (F.col("r") >= F.col("start"))
                      & (F.col("r") < F.col("start") + F.col("count")))
                .select("i", "r", "x").collect())
    finally:
        parts.unpersist()
    out: dict[int, dict[int, float]] = {i: {} for i in wanted}
    for row in hits:
        out[int(row["i"])][int(row["r"])] = float(row["x"])
    return out


def _fit_numeric(spec: FeatureSpec, train: DataFrame, n: int, prior: float, state: dict[str, Any]) -> None:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    keys = [k for k, _, _ in FeaturePipeline(spec).numeric_inputs(_NoColumns())]
    if not keys:
        return
    frame, transforms = _numeric_frame(spec, train, prior, keys)
    frame = frame.persist(StorageLevel.DISK_ONLY)  # read by three aggregations
    try:
        # The embedded engine's fill: the mean of the finite values (NaN marks the others), 0 without any.
        finite = frame.agg(*[F.avg(F.when(~F.isnan(f"r{i}"), F.col(f"r{i}"))).alias(f"r{i}")
                             for i in range(len(keys))]).first()
        assert finite is not None
        for i, key in enumerate(keys):
            if transforms[key].fill is None:
                transforms[key].fill = float(finite[f"r{i}"]) if finite[f"r{i}"] is not None else 0.0
        filled = frame.select(*[F.nanvl(F.col(f"x{i}"), F.lit(_prepared_fill(transforms[k]))).alias(f"x{i}")
                                for i, k in enumerate(keys)])
        moments = filled.agg(*[f(f"x{i}").alias(f"{name}{i}") for i in range(len(keys))
                               for name, f in (("m", F.avg), ("s", F.stddev_pop))]).first()
        assert moments is not None
        bucketed = [i for i, k in enumerate(keys) if transforms[k].buckets]
        picked: dict[int, dict[int, float]] = {}
        if bucketed:
            wanted = {i: np.concatenate(quantile_ranks(n, transforms[keys[i]].buckets)[:2]) for i in bucketed}
            stacked = filled.select(F.explode(F.array(*[F.struct(F.lit(i).alias("i"), F.col(f"x{i}").alias("x"))
                                                        for i in bucketed])).alias("e")).select("e.i", "e.x")
            picked = _values_at_ranks(stacked, wanted)
    finally:
        frame.unpersist()
    for i, key in enumerate(keys):
        t = transforms[key]
        t.mean = float(moments[f"m{i}"])
        std = float(moments[f"s{i}"])
        t.std = std if std > 1e-12 else 1.0
        if t.buckets:
            qs = linear_quantiles(n, t.buckets, _lookup(picked[i]))
            t.boundaries = [float(b) for b in np.unique(qs)]
        state["numeric"][key] = t.to_dict()


def _lookup(values: dict[int, float]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda ranks: np.array([values[int(r)] for r in ranks], dtype=np.float64)


def _prepared_fill(t: NumericTransform) -> float:
    """The prepared value of a missing input (numpy's, like every other prepared value)."""
    assert t.fill is not None
    return float(t._prepare(np.array([t.fill]), t.fill)[0])


def fit_state(spec: FeatureSpec, train: DataFrame, n: int, positives: int) -> dict[str, Any]:
    """The fitted state (`FeaturePipeline.to_dict` format) of `spec` on the train rows `train`
    (n rows, `positives` of them positive)."""
    prior = positives / n
    state: dict[str, Any] = {"format_version": FORMAT_VERSION, "spec_hash": spec_hash(spec), "prior": prior,
                             "vocabularies": {}, "multi_hot": {}, "numeric": {}}
    _fit_vocabularies(spec, train, state)
    _fit_numeric(spec, train, n, prior, state)
    return state

