"""The written-down, versioned key layout of the online store (Redis or Redis Cluster).

    {prefix}:v{feature_version}:{u:<user_id>}   STRING: the user's record (JSON, `recsys.store.base.Record`)
    {prefix}:v{feature_version}:{i:<item_id>}   STRING: the item's record
    {{prefix}:v{feature_version}:popular}       ZSET: item id → positive events (`materialize` from the log,
                                                then POST /v1/events); the candidates of requests without any
    {prefix}:v{feature_version}:meta            STRING: a record written last by `materialize` (what, when, as of)
    {prefix}:v{feature_version}:{e:<event_id>}  STRING: the claim of an applied impression event (POST /v1/events),
                                                kept RECSYS_EVENTS_RETENTION_S: a replay is a duplicate
    {prefix}:v{feature_version}:{imp:<event_id>} STRING: an impression whose label comes later, a record whose
                                                attributes are user, item, timestamp, context (JSON); kept
                                                RECSYS_LABEL_WINDOW_S
    {prefix}:v{feature_version}:{l:<event_id>}  STRING: the claim of that impression's applied label

The braces are Redis Cluster hash tags: a record's slot depends on its entity alone (so one entity's
records of two feature versions live on one node), and the popularity ranking's staging copies share
its slot (a RENAME swaps them in). A record holds the entity's raw attributes and its counters; a
windowed statistic keeps one counter per time bucket (`stat:c@<bucket>`), and every increment drops
the buckets that have left the window, so a record stays bounded however long its entity lives.

`feature_version` is the artifact's spec hash (`Artifact.feature_version`): two models whose feature
specs differ read disjoint keys, so they can serve side by side, and a new spec is rolled out by
materializing its keys before the model that needs them is loaded.
"""

from __future__ import annotations

from binascii import crc_hqx
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["KeySpace", "hash_slots"]

SLOTS = 16384  # a Redis Cluster's hash slots


def hash_slots(keys: Sequence[str]) -> np.ndarray:
    """The Redis Cluster slot of each key (CLUSTER KEYSLOT): CRC16-XMODEM of its hash tag (the bytes
    between the first '{' and the next '}' when not empty, else the whole key) mod 16384. One C call
    per key (`binascii.crc_hqx`): 1 M keys in ~0.3 s (AMD EPYC fam 25 model 17, 2026-12-04), three
    times faster than a byte-matrix numpy version."""
    return np.fromiter(map(_slot, keys), dtype=np.int64, count=len(keys))


def _slot(key: str) -> int:
    raw = key.encode()
    a = raw.find(b"{")
    if a >= 0:
        b = raw.find(b"}", a + 1)
        if b > a + 1:
            raw = raw[a + 1:b]
    return crc_hqx(raw, 0) % SLOTS


@dataclass(frozen=True)
class KeySpace:
    prefix: str
    feature_version: str

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() or c in "{}" for c in self.prefix):
            raise ValueError(f"key prefix must be non-empty without spaces or braces, got {self.prefix!r}")

    @property
    def base(self) -> str:
        return f"{self.prefix}:v{self.feature_version}:"

    @property
    def meta(self) -> str:
        return f"{self.base}meta"

    @property
    def popular(self) -> str:
        return f"{{{self.base}popular}}"

    def seen(self, user_id: str) -> str:
        """The user's seen set (ZSET item → positive events), in the slot of the user's record."""
        return f"{self.base}{{u:{user_id}}}:seen"

    def user(self, user_id: str) -> str:
        return f"{self.base}{{u:{user_id}}}"

    def item(self, item_id: str) -> str:
        return f"{self.base}{{i:{item_id}}}"

    def events(self, ids: Iterable[str]) -> list[str]:
        return self._tagged("e", ids)

    def impressions(self, ids: Iterable[str]) -> list[str]:
        return self._tagged("imp", ids)

    def labels(self, ids: Iterable[str]) -> list[str]:
        return self._tagged("l", ids)

    def users(self, ids: Iterable[str]) -> list[str]:
        return self._tagged("u", ids)

    def items(self, ids: Iterable[str]) -> list[str]:
        return self._tagged("i", ids)

    def _tagged(self, kind: str, ids: Iterable[str]) -> list[str]:
        """`{base}{<kind>:<id>}` for each id: the hash tag spreads the ids over the cluster's slots."""
        base = f"{self.base}{{{kind}:"
        return [f"{base}{i}}}" for i in ids]
