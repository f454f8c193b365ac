"""Point-in-time impression statistics on Spark, with the definition of `recsys.features.statistics`:
for an impression at T and a key, the count and positives of the events with that key and a time
t < T (windowed: also t >= window_start(T), a multiple of the statistic's bucket).

Everything is a *prefix sum*: P(key, x) = sums of the events with that key and a time strictly before
x. Unwindowed, the counters are P(key, T); windowed, P(key, T) - P(key, window_start(T)). The points
x at which P is wanted are put into the event stream as zero-weight rows, so one prefix sum answers
every lookup (an as-of join done by a sort, never by a Python loop). A delayed label only adds a
second stream: positives become events at their label time, so `positives` is a prefix of that
stream at T (and at the window start shifted by the label delay) instead of a column of the first
one.

No group of unbounded size ever lands in one task: a hot item with millions of impressions is first
aggregated to (key, t) rows, then summed in two levels of blocks of ~sqrt(time span) seconds —
a window over (key, block) ordered by t (at most `block` distinct times per group), and a window over
(key) ordered by block (at most span / block blocks per group). For a 10-year log both groups hold at
most ~18,000 rows, however many impressions the key has.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from recsys.features.pipeline import count_column, pos_column
from recsys.features.raw import LABEL_TIME
from recsys.spec import FeatureSpec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["prefix_before", "block_seconds", "add_statistics"]


def block_seconds(t_min: int, t_max: int) -> int:
    """Block width that bounds both window groups of `prefix_before` by ~sqrt(span)."""
    return math.isqrt(max(t_max - t_min, 0)) + 1


def prefix_before(points: DataFrame, keys: list[str], t: str, weights: list[str], block: int) -> DataFrame:
    """For every distinct (keys, t) of `points`: the sums of `weights` over the rows with the same
    keys and a strictly smaller t (columns named like the weights)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    at = points.groupBy(*keys, t).agg(*[F.sum(w).alias(w) for w in weights])
    at = at.withColumn("_blk", F.col(t) - F.pmod(F.col(t), F.lit(block)))
    inner = Window.partitionBy(*keys, "_blk").orderBy(t).rowsBetween(Window.unboundedPreceding, -1)
    at = at.select(*keys, t, "_blk", *weights,
                   *[F.coalesce(F.sum(w).over(inner), F.lit(0)).alias(f"_in_{w}") for w in weights])
    blocks = at.groupBy(*keys, "_blk").agg(*[F.sum(w).alias(f"_blk_{w}") for w in weights])
    outer = Window.partitionBy(*keys).orderBy("_blk").rowsBetween(Window.unboundedPreceding, -1)
    blocks = blocks.select(*keys, "_blk", *[F.coalesce(F.sum(f"_blk_{w}").over(outer), F.lit(0)).alias(f"_pre_{w}")
                                            for w in weights])
    return at.join(blocks, [*keys, "_blk"]).select(
        *keys, t, *[(F.col(f"_in_{w}") + F.col(f"_pre_{w}")).alias(w) for w in weights])


def _window_start(ts: str, window_s: int, bucket_s: int) -> Column:
    """`statistics.window_start` as a Spark column (pmod = Python's %, also before 1970)."""
    from pyspark.sql import functions as F

    return F.col(ts) - F.pmod(F.col(ts), F.lit(bucket_s)) - F.lit(window_s)


def add_statistics(spec: FeatureSpec, frame: DataFrame, key_columns: dict[str, str], block: int) -> DataFrame:
    """`frame` with every statistic's `s__count` / `s__pos` columns. `key_columns` maps each raw
    key column to its canonical-string column (equal strings = one key, as `key_codes` decides).
    Statistics that share a key share one prefix sum and one join back onto the impressions."""
    from pyspark.sql import functions as F

    ts, label = spec.timestamp, spec.label
    delay = spec.label_delay_s  # with a label column there are no windows (the spec refuses them)
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in spec.statistics:
        groups.setdefault(tuple(key_columns[c] for c in spec.statistic_key_columns(name)), []).append(name)
    base, counters = frame, []
    zero, one = F.lit(0).cast("long"), F.lit(1).cast("long")
    for keys, names in groups.items():
        k = list(keys)
        # from the base frame: plans stay linear in the statistics
        events = base.select(*k, ts, label, *([LABEL_TIME] if spec.delayed_labels else []))
        windows = sorted({(s.window_s, s.bucket_s) for s in map(spec.statistics.get, names)
                          if s is not None and s.window_s is not None and s.bucket_s is not None})
        if spec.delayed_labels:  # impressions at their time, positives at their label time
            points = events.select(*k, F.col(ts).alias("_t"), one.alias("_n"), zero.alias("_p")).unionByName(
                events.filter(F.col(label) == 1).select(*k, F.col(LABEL_TIME).alias("_t"), zero.alias("_n"),
                                                         one.alias("_p")))
        else:
            points = events.select(*k, F.col(ts).alias("_t"), one.alias("_n"), F.col(label).cast("long").alias("_p"))
        # Lookups of a (key, T): at T itself (-1), at each window start for the impressions (i), and
        # for the positives at the window start shifted by the label delay (len(windows) + i).
        starts = [_window_start(ts, w, b) for w, b in windows]
        starts += [start + F.lit(delay) for start in starts] if delay else []
        for start in starts:  # zero-weight points, so that the prefix sum has a value there
            points = points.unionByName(events.select(*k, start.alias("_t"), zero.alias("_n"), zero.alias("_p")))
        prefix = prefix_before(points, k, "_t", ["_n", "_p"], block)
        at_points = [F.struct(F.lit(-1).alias("w"), F.col(ts).alias("_t")),
                     *[F.struct(F.lit(i).alias("w"), start.alias("_t")) for i, start in enumerate(starts)]]
        lookups = events.select(*k, ts).distinct().select(*k, ts, F.explode(F.array(*at_points)).alias("_l")) \
            .select(*k, ts, "_l.w", "_l._t")
        at = lookups.join(prefix, [*k, "_t"]).groupBy(*k, ts).agg(*[
            F.sum(F.when(F.col("w") == i, F.col(c))).alias(f"{c}{i if i >= 0 else 'T'}")
            for i in range(-1, len(starts)) for c in ("_n", "_p")])
        out = []
        for name in names:
            stat = spec.statistics[name]
            count, pos = F.col("_nT"), F.col("_pT")
            if stat.window_s is not None:
                i = windows.index((stat.window_s, stat.bucket_s))  # type: ignore[arg-type]
                count = count - F.col(f"_n{i}")
                # a delay longer than the window leaves a negative difference: nothing is known yet
                pos = F.greatest(pos - F.col(f"_p{len(windows) + i}"), zero) if delay else pos - F.col(f"_p{i}")
            out += [count.alias(count_column(name)), pos.alias(pos_column(name))]
        counters.append((k, at.select(*k, ts, *out)))
    for k, at in counters:
        frame = frame.join(at, [*k, ts], "left")
    return frame
