"""What the online path reads and how it types each raw column, derived once from the feature spec.

The spec says which raw columns live in the users and items tables (the store's records), which come
with the request (context) and which keys the impression statistics count by. From that this plan
derives, per artifact: the attribute fields of a user or item record, the counter fields of every
statistic, and the Python type each raw column must have so that `FeaturePipeline.transform` sees
online exactly what it saw offline (strings for categories, float64 for numbers).

A statistic's counters live in the record of its first key part (the user or the item); its other
key parts may come from anywhere (user or item attributes, context): both records are read whole
in one round trip, and the counter of the row's sub-key is picked after the read. So an item x
user-attribute statistic (an item's clicks by gender) keeps one counter pair per attribute value in
the item's record and costs no extra round trip. Which keys are servable at all is checked when
the spec is loaded (`FeatureSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recsys.features import count_column, pos_column
from recsys.features.statistics import window_start
from recsys.spec import (
    CategoricalFeature,
    FeatureSpec,
    HashedFeature,
    MultiHotFeature,
    NumericFeature,
    TimeFeature,
)

__all__ = ["StatisticPlan", "OnlinePlan", "ColumnKind"]

ColumnKind = Literal["text", "number", "time", "raw"]


@dataclass(frozen=True)
class StatisticPlan:
    name: str
    entity: Literal["user", "item"]
    sub_columns: tuple[str, ...]  # raw columns of the key after the entity (joined by `sub_key`)
    window_s: int | None = None  # windowed: one counter per time bucket of `bucket_s` seconds
    bucket_s: int | None = None

    def buckets(self, ts: np.ndarray) -> np.ndarray:
        """(n, w) time buckets whose counters sum to the statistic of impressions at `ts`: the
        window's buckets up to and including the current one (whose counters hold only events
        before `ts` when events are posted after scoring). w = 1 with bucket -1 without a window."""
        ts = np.asarray(ts, dtype=np.int64)
        if self.window_s is None or self.bucket_s is None:
            return np.full((len(ts), 1), -1, dtype=np.int64)
        current = ts // self.bucket_s
        first = window_start(ts, self.window_s, self.bucket_s) // self.bucket_s
        width = int((current - first).max(initial=0)) + 1  # = window_buckets + 1 (bucket-aligned)
        return first[:, None] + np.arange(width, dtype=np.int64)[None, :]

    @property
    def count_column(self) -> str:
        return count_column(self.name)

    @property
    def pos_column(self) -> str:
        return pos_column(self.name)


@dataclass(frozen=True)
class OnlinePlan:
    user_key: str
    item_key: str
    timestamp: str
    user_columns: tuple[str, ...]
    item_columns: tuple[str, ...]
    context_columns: tuple[str, ...]
    statistics: tuple[StatisticPlan, ...]
    kinds: dict[str, ColumnKind]  # how a raw column is typed before transform

    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> "OnlinePlan":
        context = tuple(spec.source_columns("impressions"))
        stats = []
        for name, feat in spec.statistics.items():
            cols = spec.statistic_key_columns(name)
            entity: Literal["user", "item"] = "user" if cols[0] == spec.user_key else "item"
            sub = tuple(cols[1:])
            stats.append(StatisticPlan(name, entity, sub, feat.window_s, feat.bucket_s))
        return cls(
            user_key=spec.user_key,
            item_key=spec.item_key,
            timestamp=spec.timestamp,
            user_columns=tuple(spec.source_columns("users")),
            item_columns=tuple(spec.source_columns("items")),
            context_columns=context,
            statistics=tuple(stats),
            kinds=_column_kinds(spec, stats),
        )

    def kind(self, column: str) -> ColumnKind:
        return self.kinds.get(column, "raw")


def _column_kinds(spec: FeatureSpec, stats: list[StatisticPlan]) -> dict[str, ColumnKind]:
    """'text' when every reader treats the column as a category, 'number' when every reader parses it
    as a float, 'time' when it is a timestamp (`recsys.features.times` parses it); 'raw' (left to the
    pipeline's own coercion) when readers disagree."""
    seen: dict[str, set[ColumnKind]] = {}

    def mark(col: str, kind: ColumnKind) -> None:
        seen.setdefault(col, set()).add(kind)

    mark(spec.user_key, "text")
    mark(spec.item_key, "text")
    mark(spec.timestamp, "time")
    for name, feat in spec.features.items():
        if isinstance(feat, (CategoricalFeature, HashedFeature, MultiHotFeature)):
            mark(feat.column or name, "text")
        elif isinstance(feat, NumericFeature):
            mark(feat.column or name, "number")
        elif isinstance(feat, TimeFeature) and feat.part == "age":
            mark(feat.column, "time")  # type: ignore[arg-type]
    for s in stats:
        for col in s.sub_columns:
            mark(col, "text")
    return {c: (next(iter(k)) if len(k) == 1 else "raw") for c, k in seen.items()}
