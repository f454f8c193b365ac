"""FeaturePipeline: the spec's features, fitted on the train split, applied to raw columns.

The same object (rebuilt from `transforms.json`) encodes a whole parquet split offline and one
request's candidates online, so training/serving skew cannot come from feature code.

Raw columns are a mapping name → 1-d array: the impression's own columns (keys, timestamp, context),
the joined user and item attributes, and for every statistic `s` its counters `s__count` and
`s__pos` (see `statistics.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from recsys.errors import DataError, NotFittedError
from recsys.features.batch import Encoded
from recsys.features.transforms import (
    MultiHotVocabulary,
    NumericTransform,
    Vocabulary,
    as_float,
    day_of_week,
    finite_or_zero,
    hash_cross,
    hash_strings,
    hour_of_day,
)
from recsys.spec import (
    CategoricalFeature,
    FeatureSpec,
    HashedFeature,
    MultiHotFeature,
    NumericFeature,
    StatisticFeature,
    TimeFeature,
)

__all__ = ["FeaturePipeline", "Layout", "count_column", "pos_column"]

FORMAT_VERSION = 1


def count_column(statistic: str) -> str:
    return f"{statistic}__count"


def pos_column(statistic: str) -> str:
    return f"{statistic}__pos"


@dataclass(frozen=True)
class Layout:
    """Model input dimensions, derived from the fitted state (never retyped by hand)."""

    sparse_fields: tuple[str, ...]
    multi_fields: tuple[tuple[str, int], ...]  # (name, max_len) in column order of `multi`
    dense_fields: tuple[str, ...]
    wide_fields: tuple[str, ...]
    embedding_rows: int  # deep table rows, row 0 = padding
    wide_rows: int  # wide table rows, row 0 = padding

    def to_dict(self) -> dict[str, Any]:
        return {
            "sparse_fields": list(self.sparse_fields),
            "multi_fields": [list(m) for m in self.multi_fields],
            "dense_fields": list(self.dense_fields),
            "wide_fields": list(self.wide_fields),
            "embedding_rows": self.embedding_rows,
            "wide_rows": self.wide_rows,
        }


class FeaturePipeline:
    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._vocabs: dict[str, Vocabulary] = {}
        self._multi: dict[str, MultiHotVocabulary] = {}
        self._numeric: dict[str, NumericTransform] = {}
        self.prior: float | None = None  # train positive rate: the statistics' smoothing target
        self.fitted = False

    # ---------------------------------------------------------------- raw inputs
    def required_columns(self) -> list[str]:
        """Every raw column `transform` reads."""
        s = self.spec
        cols: list[str] = []
        for name, feat in s.features.items():
            if isinstance(feat, StatisticFeature):
                cols += [count_column(name), pos_column(name)]
            elif isinstance(feat, TimeFeature):
                cols.append(s.timestamp)
                if feat.part == "age":
                    cols.append(feat.column)  # type: ignore[arg-type]
            else:
                cols.append(feat.column or name)
        return list(dict.fromkeys(cols))

    def _col(self, columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        try:
            return columns[name]
        except KeyError:
            raise DataError(
                f"missing raw column '{name}' (needed by the feature spec; fix: add it to the table "
                f"or change the feature's `column:`)"
            ) from None

    def _age_days(self, columns: Mapping[str, np.ndarray], feat: TimeFeature) -> np.ndarray:
        ts = as_float(self._col(columns, self.spec.timestamp))
        return (ts - as_float(self._col(columns, feat.column))) / 86400.0  # type: ignore[arg-type]

    def _stat_values(self, columns: Mapping[str, np.ndarray], name: str,
                     feat: StatisticFeature) -> tuple[np.ndarray, np.ndarray]:
        count = finite_or_zero(self._col(columns, count_column(name)))
        pos = finite_or_zero(self._col(columns, pos_column(name)))
        prior = self.prior if self.prior is not None else 0.0
        rate = (pos + prior * feat.smoothing) / np.maximum(count + feat.smoothing, 1e-9)
        return count, rate

    # ---------------------------------------------------------------- fit
    def fit(self, columns: Mapping[str, np.ndarray], label: np.ndarray) -> "FeaturePipeline":
        """Fit every transform on the TRAIN split only (the caller guarantees the split)."""
        label = np.asarray(label, dtype=np.float64)
        if len(label) == 0:
            raise DataError("cannot fit the feature pipeline on an empty train split")
        self.prior = float(label.mean())
        for name, feat in self.spec.features.items():
            if isinstance(feat, CategoricalFeature):
                vocab = Vocabulary(feat.min_count, feat.max_vocab)
                self._vocabs[name] = vocab.fit(self._col(columns, feat.column or name))
            elif isinstance(feat, MultiHotFeature):
                self._multi[name] = MultiHotVocabulary(feat.separator, feat.max_len, feat.min_count).fit(
                    self._col(columns, feat.column or name)
                )
        for key, transform, values in self.numeric_inputs(columns):
            self._numeric[key] = transform.fit(values)
        self.fitted = True
        self._layout = self._build_layout()
        return self

    def numeric_inputs(self, columns: Mapping[str, np.ndarray]) -> Iterator[tuple[str, NumericTransform, np.ndarray]]:
        """(state key, unfitted transform, raw values) of every numeric transform, in spec order: what
        `fit` fits here, and what an engine that fits with its own aggregates (Spark) computes per
        batch. Needs `prior` (the statistics' rates use it)."""
        for name, feat in self.spec.features.items():
            if isinstance(feat, NumericFeature):
                yield name, self._numeric_of(feat), self._col(columns, feat.column or name)
            elif isinstance(feat, TimeFeature) and feat.part == "age":
                yield name, self._numeric_of(feat), self._age_days(columns, feat)
            elif isinstance(feat, StatisticFeature):
                count, rate = self._stat_values(columns, name, feat)
                yield f"{name}.count", self._numeric_of(feat), count
                yield f"{name}.rate", NumericTransform(False, feat.standardize, feat.buckets, None), rate

    @staticmethod
    def _numeric_of(feat: NumericFeature | TimeFeature | StatisticFeature) -> NumericTransform:
        return NumericTransform(feat.log, feat.standardize, feat.buckets, feat.fill)

    # ---------------------------------------------------------------- layout
    def _sparse_sizes(self) -> list[tuple[str, int, bool]]:
        """(field, ids incl. 0, in wide) for every single-id field, in spec order."""
        out: list[tuple[str, int, bool]] = []
        for name, feat in self.spec.features.items():
            if isinstance(feat, CategoricalFeature):
                out.append((name, self._vocabs[name].size, feat.wide))
            elif isinstance(feat, HashedFeature):
                out.append((name, feat.buckets, feat.wide))
            elif isinstance(feat, TimeFeature):
                if feat.part == "hour":
                    out.append((name, 25, feat.wide))
                elif feat.part == "weekday":
                    out.append((name, 8, feat.wide))
                elif feat.buckets:
                    out.append((f"{name}.bucket", self._numeric[name].bucket_count, feat.wide))
            elif isinstance(feat, NumericFeature) and feat.buckets:
                out.append((f"{name}.bucket", self._numeric[name].bucket_count, True))
            elif isinstance(feat, StatisticFeature) and feat.buckets:
                for part in ("count", "rate"):
                    out.append((f"{name}.{part}.bucket", self._numeric[f"{name}.{part}"].bucket_count, True))
        return out

    def _dense_fields(self) -> list[str]:
        out: list[str] = []
        for name, feat in self.spec.features.items():
            if isinstance(feat, NumericFeature) or (isinstance(feat, TimeFeature) and feat.part == "age"):
                out.append(name)
            elif isinstance(feat, StatisticFeature):
                out += [f"{name}.count", f"{name}.rate"]
        return out

    def _build_layout(self) -> Layout:
        sparse = self._sparse_sizes()
        multi = [(n, f) for n, f in self.spec.features.items() if isinstance(f, MultiHotFeature)]
        # Deep table: row 0 padding, then each field's ids (its own OOV id 0 included).
        self._deep_offsets: dict[str, int] = {}
        row = 1
        for name, size, _ in sparse:
            self._deep_offsets[name] = row
            row += size
        for name, _ in multi:
            self._deep_offsets[name] = row - 1  # multi-hot id k≥1 → offset + k; 0 stays padding
            row += self._multi[name].size - 1
        embedding_rows = row
        self._wide_offsets: dict[str, int] = {}
        row = 1
        wide_fields: list[str] = []
        for name, size, in_wide in sparse:
            if in_wide:
                self._wide_offsets[name] = row
                wide_fields.append(name)
                row += size
        for cross in self.spec.crosses:
            self._wide_offsets[cross.name] = row
            wide_fields.append(cross.name)
            row += cross.buckets
        for name, feat in multi:
            if feat.wide:
                self._wide_offsets[name] = row - 1
                wide_fields += [f"{name}[{i}]" for i in range(feat.max_len)]
                row += self._multi[name].size - 1
        return Layout(
            sparse_fields=tuple(n for n, _, _ in sparse),
            multi_fields=tuple((n, f.max_len) for n, f in multi),
            dense_fields=tuple(self._dense_fields()),
            wide_fields=tuple(wide_fields),
            embedding_rows=embedding_rows,
            wide_rows=row,
        )

    @property
    def layout(self) -> Layout:
        if not self.fitted:
            raise NotFittedError("FeaturePipeline used before fit() / from_dict()")
        return self._layout

    # ---------------------------------------------------------------- transform
    def local_ids(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-field ids before offsets (0 = unseen); multi-hot fields as [n, max_len]."""
        ids: dict[str, np.ndarray] = {}
        for name, feat in self.spec.features.items():
            if isinstance(feat, CategoricalFeature):
                ids[name] = self._vocabs[name].encode(self._col(columns, feat.column or name))
            elif isinstance(feat, HashedFeature):
                ids[name] = hash_strings(self._col(columns, feat.column or name), feat.buckets)
            elif isinstance(feat, MultiHotFeature):
                ids[name] = self._multi[name].encode(self._col(columns, feat.column or name))
            elif isinstance(feat, TimeFeature):
                ts = self._col(columns, self.spec.timestamp)
                if feat.part == "hour":
                    ids[name] = hour_of_day(ts)
                elif feat.part == "weekday":
                    ids[name] = day_of_week(ts)
                elif feat.buckets:
                    ids[f"{name}.bucket"] = self._numeric[name].bucket_ids(self._age_days(columns, feat))
            elif isinstance(feat, NumericFeature) and feat.buckets:
                ids[f"{name}.bucket"] = self._numeric[name].bucket_ids(self._col(columns, feat.column or name))
            elif isinstance(feat, StatisticFeature) and feat.buckets:
                count, rate = self._stat_values(columns, name, feat)
                ids[f"{name}.count.bucket"] = self._numeric[f"{name}.count"].bucket_ids(count)
                ids[f"{name}.rate.bucket"] = self._numeric[f"{name}.rate"].bucket_ids(rate)
        return ids

    def dense(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        out = np.empty((n, len(self.layout.dense_fields)), dtype=np.float32)
        j = 0
        for name, feat in self.spec.features.items():
            if isinstance(feat, NumericFeature):
                out[:, j] = self._numeric[name].dense(self._col(columns, feat.column or name))
                j += 1
            elif isinstance(feat, TimeFeature) and feat.part == "age":
                out[:, j] = self._numeric[name].dense(self._age_days(columns, feat))
                j += 1
            elif isinstance(feat, StatisticFeature):
                count, rate = self._stat_values(columns, name, feat)
                out[:, j] = self._numeric[f"{name}.count"].dense(count)
                out[:, j + 1] = self._numeric[f"{name}.rate"].dense(rate)
                j += 2
        return out

    def transform(self, columns: Mapping[str, np.ndarray]) -> Encoded:
        layout = self.layout
        ids = self.local_ids(columns)
        n = _row_count(columns, self.required_columns())
        sparse = np.empty((n, len(layout.sparse_fields)), dtype=np.int64)
        for j, name in enumerate(layout.sparse_fields):
            sparse[:, j] = ids[name] + self._deep_offsets[name]
        multi_parts = []
        for name, _ in layout.multi_fields:
            m = ids[name]
            multi_parts.append(np.where(m > 0, m + self._deep_offsets[name], 0))
        multi = np.concatenate(multi_parts, axis=1) if multi_parts else np.zeros((n, 0), np.int64)
        wide_parts = [
            (ids[name] + self._wide_offsets[name])[:, None]
            for name in layout.sparse_fields
            if name in self._wide_offsets
        ]
        for cross in self.spec.crosses:
            cid = hash_cross([ids[self.cross_field(f)] for f in cross.features], cross.buckets)
            wide_parts.append((cid + self._wide_offsets[cross.name])[:, None])
        for name, _ in layout.multi_fields:
            if self.spec.features[name].wide:  # type: ignore[union-attr]
                m = ids[name]
                wide_parts.append(np.where(m > 0, m + self._wide_offsets[name], 0))
        wide = np.concatenate(wide_parts, axis=1) if wide_parts else np.zeros((n, 0), np.int64)
        return Encoded(sparse=sparse, multi=multi, dense=self.dense(columns, n), wide=wide)

    def cross_field(self, feature: str) -> str:
        """The id field a cross of `feature` hashes (a number's bucket id, a statistic's rate bucket)."""
        feat = self.spec.features[feature]
        if isinstance(feat, StatisticFeature):
            return f"{feature}.rate.bucket"
        if isinstance(feat, NumericFeature) or (isinstance(feat, TimeFeature) and feat.part == "age"):
            return f"{feature}.bucket"
        return feature

    # ---------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        if not self.fitted:
            raise NotFittedError("cannot serialize an unfitted FeaturePipeline")
        return {
            "format_version": FORMAT_VERSION,
            "spec_hash": spec_hash(self.spec),
            "prior": self.prior,
            "vocabularies": {k: v.to_dict() for k, v in self._vocabs.items()},
            "multi_hot": {k: v.to_dict() for k, v in self._multi.items()},
            "numeric": {k: v.to_dict() for k, v in self._numeric.items()},
            "layout": self.layout.to_dict(),
        }

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: Mapping[str, Any]) -> "FeaturePipeline":
        if data.get("format_version") != FORMAT_VERSION:
            raise NotFittedError(
                f"transforms format_version {data.get('format_version')} is not {FORMAT_VERSION}; "
                f"rebuild features with this version"
            )
        if data.get("spec_hash") != spec_hash(spec):
            raise NotFittedError("transforms were fitted for a different spec (spec_hash mismatch)")
        p = cls(spec)
        p.prior = data["prior"]
        p._vocabs = {k: Vocabulary.from_dict(v) for k, v in data["vocabularies"].items()}
        p._multi = {k: MultiHotVocabulary.from_dict(v) for k, v in data["multi_hot"].items()}
        p._numeric = {k: NumericTransform.from_dict(v) for k, v in data["numeric"].items()}
        p.fitted = True
        p._layout = p._build_layout()
        return p

    def vocabulary(self, feature: str) -> Vocabulary:
        return self._vocabs[feature]

    def table_offsets(self) -> tuple[dict[str, int], dict[str, int]]:
        """Where each field's ids start in the deep and in the wide table: a single-id field's id k
        (0 = unseen) sits at offset + k, a multi-hot field's id k ≥ 1 at offset + k (warm start
        maps rows between two fits with these)."""
        self.layout  # noqa: B018 (raises before fit)
        return dict(self._deep_offsets), dict(self._wide_offsets)


def spec_hash(spec: FeatureSpec) -> str:
    """Hash of the parts of the spec that decide feature encoding (not the training settings)."""
    d = spec.model_dump(mode="json", include={"user_key", "item_key", "label", "timestamp", "features", "crosses"})
    # When labels become known changes every statistic (and the counters online): part of the
    # version when set, so specs without it keep their hash.
    d.update({k: v for k in ("label_delay", "label_timestamp") if (v := getattr(spec, k)) is not None})
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _row_count(columns: Mapping[str, np.ndarray], names: list[str]) -> int:
    lengths = {len(np.atleast_1d(columns[c])) for c in names if c in columns}
    if len(lengths) > 1:
        raise DataError(f"raw columns have different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0
