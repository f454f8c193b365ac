"""The written-down, versioned key layout of the online store.

    {prefix}:v{feature_version}:u:{user_id}   HASH: the user's raw attribute columns + counter fields
    {prefix}:v{feature_version}:i:{item_id}   HASH: the item's raw attribute columns + counter fields
    {prefix}:v{feature_version}:popular       ZSET: item id → positive events (`materialize` from the log,
                                              then POST /v1/events); the candidates of requests without any
    {prefix}:v{feature_version}:meta          HASH: written last by `materialize` (what, when, as of)
    {prefix}:v{feature_version}:e:{event_id}  STRING: the claim of an applied impression event (POST
                                              /v1/events), kept RECSYS_EVENTS_RETENTION_S: a replay is a duplicate
    {prefix}:v{feature_version}:imp:{event_id} HASH: an impression whose label comes later (user, item,
                                              timestamp, context), kept RECSYS_LABEL_WINDOW_S
    {prefix}:v{feature_version}:l:{event_id}  STRING: the claim of that impression's applied label

A windowed statistic keeps one counter pair per time bucket (`stat:c@<bucket>`); readers sum the
buckets of the window and ignore older ones, and `materialize`, which rewrites records whole, drops
them: re-materialize periodically (or set a TTL) so old bucket fields do not accumulate.

`feature_version` is the artifact's spec hash (`Artifact.feature_version`): two models whose feature
specs differ read disjoint keys, so they can serve side by side, and a new spec is rolled out by
materializing its keys before the model that needs them is loaded. Values are raw (unencoded)
strings; counter fields are named by `recsys.features.statistics.counter_field`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["KeySpace"]


@dataclass(frozen=True)
class KeySpace:
    prefix: str
    feature_version: str

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"key prefix must be non-empty without spaces, got {self.prefix!r}")

    @property
    def base(self) -> str:
        return f"{self.prefix}:v{self.feature_version}:"

    @property
    def meta(self) -> str:
        return f"{self.base}meta"

    @property
    def popular(self) -> str:
        return f"{self.base}popular"

    def user(self, user_id: str) -> str:
        return f"{self.base}u:{user_id}"

    def item(self, item_id: str) -> str:
        return f"{self.base}i:{item_id}"

    def events(self, ids: Iterable[str]) -> list[str]:
        base = f"{self.base}e:"
        return [base + i for i in ids]

    def impressions(self, ids: Iterable[str]) -> list[str]:
        base = f"{self.base}imp:"
        return [base + i for i in ids]

    def labels(self, ids: Iterable[str]) -> list[str]:
        base = f"{self.base}l:"
        return [base + i for i in ids]

    def users(self, ids: Iterable[str]) -> list[str]:
        base = f"{self.base}u:"
        return [base + i for i in ids]

    def items(self, ids: Iterable[str]) -> list[str]:
        base = f"{self.base}i:"
        return [base + i for i in ids]
