"""Point-in-time impression statistics on Spark, with the definition of `recsys.features.statistics`:
for an impression at T and a key, the count and positives of the events with that key and a time
t < T (windowed: also t >= window_start(T), a multiple of the statistic's bucket).

Everything is a *prefix sum*: P(key, x) = sums of the events with that key and a time strictly before
x. Unwindowed, the counters are P(key, T); windowed, P(key, T) - P(key, window_start(T)). The points
x at which P is wanted are put into the event stream as zero-weight rows, so one prefix sum answers
every lookup (an as-of join done by a sort, never by a Python loop). A delayed label only adds a
second stream: positives become events at their label time, so `positives` is a prefix of that
stream at T instead of a column of the first one; at a window start shifted by a fixed delay d
it is the prefix of the positives at their impression time (ts + d < start + d ⇔ ts < start), a
third weight read at the same lookup point.

Each impression row is exploded once into its points (impression, positive, lookups), flagged so
that the prefix at T is read straight off the impression's own point; only window starts need an
equi-join on (key, start). A prefix read twice is computed once (`localCheckpoint`): Spark does not
reuse a shuffle whose two readers prune different columns.

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


def prefix_before(points: DataFrame, keys: list[str], t: str, weights: list[str], block: int,
                  flags: tuple[str, ...] = ()) -> DataFrame:
    """For every distinct (keys, t) of `points`: the sums of `weights` over the rows with the same
    keys and a strictly smaller t (columns named like the weights), and the max of each of `flags`
    over the rows at that (keys, t) itself (which kinds of point were there)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    block_start = F.col(t) - F.pmod(F.col(t), F.lit(block))
    at = points.groupBy(*keys, t).agg(*[F.sum(w).alias(w) for w in weights], *[F.max(f).alias(f) for f in flags])
    at = at.withColumn("_blk", block_start)
    inner = Window.partitionBy(*keys, "_blk").orderBy(t).rowsBetween(Window.unboundedPreceding, -1)
    at = at.select(*keys, t, "_blk", *weights, *flags,
                   *[F.coalesce(F.sum(w).over(inner), F.lit(0)).alias(f"_in_{w}") for w in weights])
    # Block totals straight from the points (partial sums before the shuffle), not from `at`: a
    # second consumer of `at` would compute its shuffles twice (its pruned plan is not reused).
    blocks = points.groupBy(*keys, block_start.alias("_blk")).agg(*[F.sum(w).alias(f"_blk_{w}") for w in weights])
    outer = Window.partitionBy(*keys).orderBy("_blk").rowsBetween(Window.unboundedPreceding, -1)
    blocks = blocks.select(*keys, "_blk", *[F.coalesce(F.sum(f"_blk_{w}").over(outer), F.lit(0)).alias(f"_pre_{w}")
                                            for w in weights])
    return at.join(blocks, [*keys, "_blk"]).select(
        *keys, t, *[(F.col(f"_in_{w}") + F.col(f"_pre_{w}")).alias(w) for w in weights], *flags)


def _window_start(ts: str, window_s: int, bucket_s: int) -> Column:
    """`statistics.window_start` as a Spark column (pmod = Python's %, also before 1970)."""
    from pyspark.sql import functions as F

    return F.col(ts) - F.pmod(F.col(ts), F.lit(bucket_s)) - F.lit(window_s)


def _point(t: Column, weights: list[Column], impression: int, lookup: int) -> Column:
    """One point of the event stream: its time `_t`, its weights (`_n`, `_p`[, `_q`]), and whether
    an impression (`_i`) or a lookup (`_l`) is there."""
    from pyspark.sql import functions as F

    return F.struct(t.alias("_t"), *[w.alias(n) for w, n in zip(weights, ("_n", "_p", "_q"), strict=False)],
                    F.lit(impression).alias("_i"), F.lit(lookup).alias("_l"))


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
        windows = sorted({(s.window_s, s.bucket_s) for s in map(spec.statistics.get, names)
                          if s is not None and s.window_s is not None and s.bucket_s is not None})
        # Lookups of a (key, T): at T itself and at each window start (i). With a fixed label delay
        # d a positive counts from ts + d on, so the positives known at the window start shifted by
        # d are those with ts < start: a third weight `_q`, the positives at their impression time,
        # gives them at the same lookup point (no second set of points, no second join).
        starts = [_window_start(ts, w, b) for w, b in windows]
        shifted = bool(delay and starts)
        label_now = F.col(label).cast("long")

        # One pass over the impressions: each row becomes its points. An impression is a point at
        # its time T (flag _i: the prefix there is the lookup at T itself); a positive is one at
        # its label time when labels are delayed; every lookup time is a zero-weight point (flag
        # _l), so that the prefix sum has a value there.
        if spec.delayed_labels:  # impressions at their time, positives at their label time
            own = [_point(F.col(ts), [one, zero, label_now] if shifted else [one, zero], 1, 0),
                   _point(F.when(F.col(label) == 1, F.col(LABEL_TIME)), [zero, one, zero] if shifted else [zero, one],
                          0, 0)]
        else:
            own = [_point(F.col(ts), [one, label_now], 1, 0)]
        weights = ["_n", "_p", "_q"] if shifted else ["_n", "_p"]
        looks = [_point(start, [zero] * len(weights), 0, 1) for start in starts]
        exploded = base.select(*k, F.explode(F.array(*own, *looks)).alias("_e")).select(*k, "_e.*")
        points = exploded.filter(F.col("_t").isNotNull()) if spec.delayed_labels else exploded
        prefix = prefix_before(points, k, "_t", weights, block, flags=("_i", "_l"))
        if starts:  # read by the lookups at T and at the window starts: computed once
            prefix = prefix.localCheckpoint()
        at = prefix.filter(F.col("_i") == 1).select(*k, F.col("_t").alias(ts), F.col("_n").alias("_nT"),
                                                    F.col("_p").alias("_pT"))
        looked = prefix.filter(F.col("_l") == 1)
        for i, start in enumerate(starts):  # one as-of lookup per window start: an equi-join on (key, start)
            found = looked.select(*k, F.col("_t").alias(f"_s{i}"), F.col("_n").alias(f"_n{i}"),
                                  F.col("_q" if shifted else "_p").alias(f"_p{i}"))
            at = at.withColumn(f"_s{i}", start).join(found, [*k, f"_s{i}"]).drop(f"_s{i}")
        out = []
        for name in names:
            stat = spec.statistics[name]
            count, pos = F.col("_nT"), F.col("_pT")
            if stat.window_s is not None:
                i = windows.index((stat.window_s, stat.bucket_s))  # type: ignore[arg-type]
                count = count - F.col(f"_n{i}")
                # a delay longer than the window leaves a negative difference: nothing is known yet
                pos = F.greatest(pos - F.col(f"_p{i}"), zero) if delay else pos - F.col(f"_p{i}")
            out += [count.alias(count_column(name)), pos.alias(pos_column(name))]
        counters.append((k, at.select(*k, ts, *out)))
    for k, at in counters:
        frame = frame.join(at, [*k, ts], "left")
    return frame
