"""The item catalog as the item tower reads it: ids and the item tower's encoded columns.

Two sources: the items table (`from_items_table`, what `recsys index` embeds: EVERY item, also
those never shown, through the same FeaturePipeline as training) and the items that appear in the
encoded splits (`from_splits`, the candidates for validation while training, when no raw folder is
given). Item popularity (train positives) travels with the retrieval model, so the index can add
it back at query time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.features.batch import Encoded
from recsys.features.pipeline import FeaturePipeline, count_column, pos_column
from recsys.features.transforms import as_str
from recsys.io import read_table, table_columns
from recsys.retrieval.two_tower import TowerColumns
from recsys.spec import FeatureSpec, NumericFeature, StatisticFeature, TimeFeature

__all__ = ["Catalog", "CHUNK_ROWS", "read_items", "iter_items", "from_items_table", "from_splits"]

_BLOCKS = ("sparse", "multi", "dense", "wide")
CHUNK_ROWS = 500_000  # items encoded at once: bounds the transform's memory at 10 M items


@dataclass
class Catalog:
    item_ids: np.ndarray  # (n,) object str, canonical (as the service's item ids)
    features: Encoded  # the item tower's columns only (TowerColumns.select)

    def __len__(self) -> int:
        return len(self.item_ids)


def _numeric_columns(spec: FeatureSpec, pipeline: FeaturePipeline) -> set[str]:
    cols = {spec.timestamp}
    for name, feat in spec.features.items():
        if isinstance(feat, StatisticFeature):
            cols |= {count_column(name), pos_column(name)}
        elif isinstance(feat, NumericFeature):
            cols.add(feat.column or name)
        elif isinstance(feat, TimeFeature) and feat.part == "age":
            cols.add(feat.column)  # type: ignore[arg-type]
    return cols


def _encode(spec: FeatureSpec, pipeline: FeaturePipeline, cols: TowerColumns, table: pd.DataFrame) -> Encoded:
    """The item tower's columns of some items-table rows. Columns the pipeline reads from elsewhere
    (user attributes, context, counters) get placeholders: the tower never reads their outputs."""
    n, numeric = len(table), _numeric_columns(spec, pipeline)
    raw: dict[str, np.ndarray] = {}
    for c in pipeline.required_columns():
        if c in table.columns:
            raw[c] = table[c].to_numpy()
        else:
            raw[c] = np.zeros(n) if c in numeric else np.full(n, "", dtype=object)
    return cols.select(pipeline.transform(raw))


def read_items(spec: FeatureSpec, raw_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Every item of the items table (the last row of a repeated id wins, as in the feature join):
    canonical ids and the attribute columns the spec reads."""
    stem = spec.tables["items"]
    have = table_columns(raw_dir, stem)
    items = read_table(raw_dir, stem, [spec.item_key, *[c for c in spec.source_columns("items") if c in have]])
    if items.empty:
        raise DataError(f"items table '{stem}' in {raw_dir} has no rows: there is nothing to index")
    ids = as_str(items[spec.item_key].to_numpy())
    keep = ~pd.Series(ids).duplicated(keep="last").to_numpy()
    if not keep.all():
        items, ids = items[keep].reset_index(drop=True), ids[keep]
    return ids, items.assign(**{spec.item_key: ids})


def iter_items(spec: FeatureSpec, pipeline: FeaturePipeline, cols: TowerColumns, ids: np.ndarray,
               items: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> Iterator[Catalog]:
    """`read_items`' rows encoded for the item tower, a chunk at a time."""
    for start in range(0, len(items), chunk_rows):
        part = items.iloc[start:start + chunk_rows]
        yield Catalog(ids[start:start + chunk_rows], _encode(spec, pipeline, cols, part))


def from_items_table(spec: FeatureSpec, pipeline: FeaturePipeline, cols: TowerColumns,
                     raw_dir: str | Path) -> Catalog:
    ids, items = read_items(spec, raw_dir)
    return _stack(list(iter_items(spec, pipeline, cols, ids, items)))


def _stack(parts: list[Catalog]) -> Catalog:
    return Catalog(np.concatenate([p.item_ids for p in parts]),
                   Encoded(*(np.concatenate([getattr(p.features, b) for p in parts]) for b in _BLOCKS)))


def from_splits(splits: list[tuple[Encoded, pd.DataFrame]], item_key: str, cols: TowerColumns) -> Catalog:
    """The distinct items of some encoded splits, each with the item columns of its first row
    (content features are attributes of the item, the same on every row)."""
    stacked = _stack([Catalog(as_str(meta[item_key].to_numpy()), cols.select(enc)) for enc, meta in splits])
    first = np.flatnonzero(~pd.Series(stacked.item_ids).duplicated(keep="first").to_numpy())
    return Catalog(stacked.item_ids[first], stacked.features.take(first))
