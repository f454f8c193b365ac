"""The feature spec: the ONE declaration a user writes for their data (YAML).

Everything else is derived from it: which raw columns are read from which table, how they are fitted
and encoded, the model's input layout, what the online store holds and what the service expects in a
request. It is parsed once into frozen pydantic models; errors name the feature and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.errors import SpecError

__all__ = [
    "Group",
    "CategoricalFeature",
    "HashedFeature",
    "NumericFeature",
    "MultiHotFeature",
    "TimeFeature",
    "StatisticFeature",
    "Feature",
    "Cross",
    "SplitConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainingConfig",
    "RetrievalConfig",
    "FeatureSpec",
    "load_spec",
    "parse_duration",
    "parse_spec",
]

Group = Literal["user", "context", "impression", "content"]
Table = Literal["impressions", "users", "items"]


_GROUP_TABLE = {"user": "users", "content": "items", "context": "impressions", "impression": "impressions"}


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: int | str) -> int:
    """'90s', '30m', '1h', '7d', '2w' or plain seconds → seconds (> 0)."""
    if isinstance(value, int):
        seconds = value
    else:
        v = str(value).strip().lower()
        try:
            seconds = int(v[:-1]) * _UNITS[v[-1]] if v and v[-1] in _UNITS else int(v)
        except ValueError:
            raise ValueError(f"duration '{value}' is not like 90s, 30m, 1h, 7d or 2w") from None
    if seconds <= 0:
        raise ValueError(f"duration '{value}' must be positive")
    return seconds


class _Strict(BaseModel):
    # No NaN or infinity in any number: `lr: .inf` passes `gt=0` and then diverges training.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy's and torch's generators accept


class _NumericOptions(_Strict):
    """Shared by every feature that ends as a float: how the raw number is normalized."""

    log: bool = False  # log1p(max(x, 0)) before the rest: for counts, durations, ages
    standardize: bool = True  # (x - mean) / std, both fitted on the train split
    buckets: int = Field(0, ge=0, le=1000)  # >0: also emit a quantile-bucket id (wide + embedding)
    fill: float | None = None  # value for missing/NaN; default: the train mean


class CategoricalFeature(_Strict):
    type: Literal["categorical"]
    group: Group
    column: str | None = None
    min_count: int = Field(1, ge=1)  # values seen fewer times in train share the OOV id
    max_vocab: int | None = Field(None, ge=1)  # keep only the most frequent values
    wide: bool = True


class HashedFeature(_Strict):
    type: Literal["hashed"]
    group: Group
    column: str | None = None
    buckets: int = Field(..., ge=2)
    wide: bool = True


class NumericFeature(_NumericOptions):
    type: Literal["numeric"]
    group: Group
    column: str | None = None


class MultiHotFeature(_Strict):
    type: Literal["multi_hot"]
    group: Group
    column: str | None = None
    separator: str = "|"
    min_count: int = Field(1, ge=1)
    max_len: int = Field(8, ge=1, le=256)
    wide: bool = True


class TimeFeature(_NumericOptions):
    """Derived from the impression timestamp: hour of day / weekday (categorical ids), or the age
    of the impression relative to another timestamp column (`part: age`, numeric, in days)."""

    type: Literal["time"]
    group: Group = "context"
    part: Literal["hour", "weekday", "age"]
    column: str | None = None  # for part=age: the timestamp column the age is measured from
    table: Table = "items"  # where `column` lives (part=age)
    wide: bool = True

    @model_validator(mode="after")
    def _age_needs_column(self) -> "TimeFeature":
        if self.part == "age" and not self.column:
            raise ValueError("part 'age' needs `column:` naming the timestamp it is measured from")
        return self


class StatisticFeature(_NumericOptions):
    """Point-in-time impression statistic: the count and the smoothed positive rate of the
    events that share `key` and happened strictly before the impression."""

    type: Literal["statistic"]
    group: Literal["impression"] = "impression"
    key: list[str] = Field(..., min_length=1, max_length=3)
    smoothing: float = Field(20.0, ge=0.0)  # pseudo-count of the prior (train positive rate)
    log: bool = True  # counts are heavy-tailed
    # Optional sliding window, e.g. "1h", "1d", "7d" or seconds: only events in the last `window`
    # count, measured from the start of the impression's time bucket (window / window_buckets), so
    # the online store can keep one counter per bucket and reproduce the offline value exactly.
    window: int | str | None = None
    window_buckets: int = Field(24, ge=1, le=1000)

    @property
    def window_s(self) -> int | None:
        return None if self.window is None else parse_duration(self.window)

    @property
    def bucket_s(self) -> int | None:
        return None if self.window_s is None else self.window_s // self.window_buckets

    @model_validator(mode="after")
    def _window_divides(self) -> "StatisticFeature":
        if self.window is not None:
            w = parse_duration(self.window)
            if w % self.window_buckets:
                raise ValueError(f"window {self.window} ({w}s) must be a multiple of window_buckets "
                                 f"({self.window_buckets}); pick e.g. window_buckets: 24 for 1d")
        return self


Feature = Annotated[
    Union[
        CategoricalFeature,
        HashedFeature,
        NumericFeature,
        MultiHotFeature,
        TimeFeature,
        StatisticFeature,
    ],
    Field(discriminator="type"),
]


class Cross(_Strict):
    """A hashed cross of single-valued categorical features for the wide part."""

    features: list[str] = Field(..., min_length=2)
    buckets: int = Field(100_000, ge=2)

    @property
    def name(self) -> str:
        return "_x_".join(self.features)


class SplitConfig(_Strict):
    method: Literal["time", "random"] = "time"
    valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    seed: Seed = 0


class ModelConfig(_Strict):
    embedding_dim: int = Field(16, ge=1, le=512)
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 128, 64])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    embedding_init_std: float = Field(0.01, gt=0.0)  # small init: see DESIGN §6
    # Adds the factorization-machine term (sum of pairwise dot products of the field embeddings) to
    # the logit: user×item affinity is a dot product, which a ReLU MLP only approximates. Off = the
    # paper's Wide&Deep.
    interactions: bool = False


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adagrad", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)


class TrainingConfig(_Strict):
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    # Per-part optimizers, as in the Wide&Deep paper (FTRL-like wide, Adagrad deep): each
    # overrides `optimizer` for its part's parameters.
    wide_optimizer: OptimizerConfig | None = None
    deep_optimizer: OptimizerConfig | None = None
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(1024, ge=1)
    patience: int = Field(2, ge=0)  # epochs without valid-AUC gain before stopping
    seed: Seed = 0
    threads: int | None = Field(None, ge=1)


class RetrievalConfig(_Strict):
    """The two-tower candidate model (`recsys train-retrieval`): which features feed each tower and
    how it trains. The user tower sees what is known before an item is chosen; the item tower reads
    only the items table, so every catalog item (also one never shown) can be embedded and indexed."""

    # None: the user and context groups (minus features that read the items table, e.g. an item's
    # age) plus the statistics keyed by the user alone.
    user_features: list[str] | None = None
    item_features: list[str] | None = None  # None: the content group
    embedding_dim: int = Field(64, ge=2, le=1024)  # the towers' output (the index's dimension)
    hidden: list[int] = Field(default_factory=lambda: [256])
    temperature: float = Field(0.05, gt=0.0, le=10.0)
    logq_correction: bool = True  # subtract log(sampling probability) from in-batch logits (Yi et al. 2019)
    epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=0)  # epochs without valid Recall@100 gain before stopping
    batch_size: int = Field(1024, ge=2)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="adam", lr=0.001))
    # Weight of log(1 + train positives) added to an item's score at query time; None: chosen on the
    # valid split (0 included), so popularity re-enters only where it helps.
    popularity_weight: float | None = Field(None, ge=0.0)
    seed: int = 0


class FeatureSpec(_Strict):
    name: str = "model"
    user_key: str = "user_id"
    item_key: str = "item_id"
    label: str = "label"
    timestamp: str = "timestamp"
    # Delayed labels (docs/labels.md): when an impression's label became known. The statistics count
    # a positive only from then on. At most one: a fixed delay after the impression ("10m", "2h",
    # seconds) or an impressions column with each label's time (unix seconds, ISO-8601, datetime).
    label_delay: int | str | None = None
    label_timestamp: str | None = None
    tables: dict[Table, str] = Field(default_factory=lambda: {t: t for t in get_args(Table)})
    # Columns copied from impressions into the encoded splits untouched, e.g. the synthetic
    # generator's true click probability (for the Bayes-optimal AUC). Never model inputs.
    passthrough: list[str] = Field(default_factory=list)
    features: dict[str, Feature]
    crosses: list[Cross] = Field(default_factory=list)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    @model_validator(mode="after")
    def _check_retrieval(self) -> "FeatureSpec":
        for side, names in (("user", self.retrieval.user_features), ("item", self.retrieval.item_features)):
            for name in names or []:
                if name not in self.features:
                    raise ValueError(f"retrieval.{side}_features: unknown feature '{name}'; name a declared feature")
                if self.tower_of(name) != side:
                    where = "the items table" if side == "item" else "the user, context or the user's own statistics"
                    raise ValueError(f"retrieval.{side}_features: feature '{name}' cannot feed the {side} tower "
                                     f"(it must read only {where}); remove it from the list")
        return self

    def tower_features(self, side: str) -> list[str]:
        """The features of one tower: the spec's list, or every feature that can feed it."""
        given = self.retrieval.user_features if side == "user" else self.retrieval.item_features
        return list(given) if given is not None else [n for n in self.features if self.tower_of(n) == side]

    def tower_of(self, name: str) -> str | None:
        """'user' or 'item': the two-tower side a feature can feed; None: it needs both (an item's
        age at the impression, a user×category statistic)."""
        feat = self.features[name]
        if isinstance(feat, StatisticFeature):
            return "user" if feat.key == [self.user_key] else None  # item counters are not in the items table
        if isinstance(feat, TimeFeature):
            return "user" if feat.part != "age" or feat.table == "users" else None
        return "item" if feat.group == "content" else "user"

    @model_validator(mode="after")
    def _check_references(self) -> "FeatureSpec":
        names = set(self.features)
        for name, feat in self.features.items():
            if isinstance(feat, StatisticFeature):
                for col in feat.key:
                    if col not in (self.user_key, self.item_key) and self.column_of(col) is None:
                        raise ValueError(
                            f"feature '{name}': key column '{col}' is neither the user/item key nor "
                            f"the column of a declared user/content/context feature; declare it first"
                        )
                if feat.key[0] not in (self.user_key, self.item_key):
                    raise ValueError(
                        f"feature '{name}': key must start with '{self.user_key}' or '{self.item_key}' "
                        f"(the entity whose online record holds the counter), got {feat.key}"
                    )
                if self.user_key in feat.key and self.item_key in feat.key:
                    raise ValueError(
                        f"feature '{name}': a statistic keyed by both '{self.user_key}' and '{self.item_key}' "
                        f"cannot be served: it needs one online counter per (user, item) pair, which grows "
                        f"without bound; key it by one of them and an attribute of the other (e.g. "
                        f"[{self.user_key}, <item category>] or [{self.item_key}, <user gender>])"
                    )
        for cross in self.crosses:
            for f in cross.features:
                if f not in names:
                    raise ValueError(f"cross {cross.features}: unknown feature '{f}'; declare it under features")
                feat = self.features[f]
                single = isinstance(feat, (CategoricalFeature, HashedFeature)) or (
                    isinstance(feat, TimeFeature) and feat.part != "age"
                ) or (isinstance(feat, (NumericFeature, StatisticFeature)) and feat.buckets > 0)
                if not single:
                    raise ValueError(
                        f"cross {cross.features}: feature '{f}' has no single sparse id; cross only "
                        f"categorical, hashed, hour/weekday or numeric features with `buckets:`"
                    )
        if self.user_key == self.item_key:
            raise ValueError("user_key and item_key must differ")
        if self.label_delay is not None and self.label_timestamp is not None:
            raise ValueError("label_delay and label_timestamp exclude each other: a fixed delay after the "
                             "impression, or a column with each label's time (fix: keep one)")
        if self.label_delay is not None:
            parse_duration(self.label_delay)
        if self.label_timestamp is not None:
            if self.label_timestamp in (self.timestamp, self.label, self.user_key, self.item_key):
                raise ValueError(f"label_timestamp '{self.label_timestamp}' must be its own impressions column, "
                                 f"not the timestamp, label or a key")
            windowed = [n for n, f in self.statistics.items() if f.window is not None]
            if windowed:
                raise ValueError(f"label_timestamp cannot be combined with windowed statistics {windowed}: their "
                                 f"counters would need each label's delay (fix: use label_delay, or drop `window:`)")
        return self

    @property
    def delayed_labels(self) -> bool:
        return self.label_delay is not None or self.label_timestamp is not None

    @property
    def label_delay_s(self) -> int:
        """The fixed label delay in seconds (0 without `label_delay`)."""
        return 0 if self.label_delay is None else parse_duration(self.label_delay)

    def time_columns(self, table: Table) -> list[str]:
        """Raw columns of `table` read as times (`recsys.features.times`): the impression timestamp and
        label time, and every `part: age` column that lives in the table."""
        cols = [self.timestamp, *([self.label_timestamp] if self.label_timestamp else [])] \
            if table == "impressions" else []
        for feat in self.features.values():
            if isinstance(feat, TimeFeature) and feat.part == "age" and feat.table == table:
                cols.append(feat.column)  # type: ignore[arg-type]
        return list(dict.fromkeys(cols))

    def column_of(self, feature_or_column: str) -> str | None:
        """The raw column a declared feature reads (features default to their own name)."""
        for name, feat in self.features.items():
            col = getattr(feat, "column", None) or name
            if feature_or_column in (name, col) and not isinstance(feat, (StatisticFeature, TimeFeature)):
                return col
        return None

    def statistic_key_columns(self, name: str) -> list[str]:
        """Raw column names of a statistic's key (the entity key first); the validator above
        guarantees each part resolves."""
        return [k if k in (self.user_key, self.item_key) else self.column_of(k) or k
                for k in self.statistics[name].key]

    def source_columns(self, table: Table) -> list[str]:
        """Raw attribute columns read from `table` (keys excluded): user features come from users,
        content features from items, context features from impressions (or the request)."""
        cols: list[str] = []
        for name, feat in self.features.items():
            if isinstance(feat, StatisticFeature):
                continue
            if isinstance(feat, TimeFeature):
                if feat.part == "age" and feat.table == table and feat.column not in cols:
                    cols.append(feat.column)  # type: ignore[arg-type]
                continue
            col = feat.column or name
            if _GROUP_TABLE[feat.group] == table and col not in cols and col not in (self.user_key, self.item_key):
                cols.append(col)
        return cols

    @property
    def statistics(self) -> dict[str, StatisticFeature]:
        return {n: f for n, f in self.features.items() if isinstance(f, StatisticFeature)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p in {
        "categorical", "hashed", "numeric", "multi_hot", "time", "statistic"}))
    msg = first["msg"].removeprefix("Value error, ")
    if loc.startswith("features."):
        parts = loc.split(".")
        where = f"feature '{parts[1]}'" + (f", field '{'.'.join(parts[2:])}'" if len(parts) > 2 else "")
    else:
        where = f"field '{loc}'" if loc else ""
    hint = ""
    if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
        hint = " (fix: set `type:` to one of categorical, hashed, numeric, multi_hot, time, statistic)"
    elif first["type"] == "extra_forbidden":
        hint = " (fix: remove it or check its spelling)"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid spec: {where + ': ' if where else ''}{msg}{hint}{more}"


def parse_spec(data: dict[str, Any]) -> FeatureSpec:
    if not isinstance(data, dict):
        raise SpecError("invalid spec: the YAML must be a mapping with at least `features:`")
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err)) from None


def load_spec(path: str | Path) -> FeatureSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path} (fix: pass --spec PATH to a YAML feature spec)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"spec {path} is not valid YAML: {err}") from None
    return parse_spec(data)
