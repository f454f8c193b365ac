"""The embedded store: the same protocol as Redis, in this process (the default without REDIS_URL).

It lets the demo and tests serve without infrastructure. Each worker process holds its own copy,
filled at start-up by `materialize`, so events posted to one worker do not reach another: use Redis
whenever more than one process serves or online statistics must be shared.
"""

from __future__ import annotations

import heapq
import time
from typing import Mapping, Sequence

import orjson

from recsys.errors import StoreError
from recsys.store.base import Record, finite_scores, live_counters

__all__ = ["MemoryStore"]


class MemoryStore:
    name = "embedded"

    def __init__(self) -> None:
        self._data: dict[str, Record] = {}
        self._claims: dict[str, float] = {}  # key → monotonic deadline
        self._rankings: dict[str, dict[str, float]] = {}
        self._expires: dict[str, float] = {}

    def _get(self, key: str) -> Record | None:
        self._expire(key)
        return self._data.get(key)

    def _expire(self, key: str) -> None:
        if not self._expires:
            return
        deadline = self._expires.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self._data.pop(key, None)
            self._rankings.pop(key, None)
            del self._expires[key]

    def _touch(self, key: str, ttl_s: int | None) -> None:
        if ttl_s is not None:
            self._expires[key] = time.monotonic() + ttl_s

    async def read(self, keys: Sequence[str]) -> list[Record | None]:
        return [self._get(k) for k in keys]

    async def write(self, keys: Sequence[str], attributes: Sequence[Mapping[str, str]],
                    counters: Sequence[Mapping[str, int]], keep_counters: bool = False,
                    ttl_s: int | None = None) -> int:
        for key, attrs, counts in zip(keys, attributes, counters, strict=True):
            old = self._get(key)
            self._claims.pop(key, None)  # like Redis: a write replaces whatever the key held
            rec = Record(a={str(f): str(v) for f, v in attrs.items()}, c={str(f): int(n) for f, n in counts.items()})
            if keep_counters and old is not None:
                rec["c"] = {**rec["c"], **old["c"]}
            self._expires.pop(key, None)
            if rec["a"] or rec["c"] or keep_counters:
                self._data[key] = rec
                self._touch(key, ttl_s)
            else:
                self._data.pop(key, None)
        return len(keys)

    async def write_json(self, keys: Sequence[str], attributes: Sequence[bytes], counters: Sequence[bytes],
                         keep_counters: bool = False, ttl_s: int | None = None) -> int:
        return await self.write(keys, list(map(orjson.loads, attributes)), list(map(orjson.loads, counters)),
                                keep_counters, ttl_s)

    async def increment(self, keys: Sequence[str], amounts: Sequence[Mapping[str, int]],
                        expired_before: Mapping[str, int] | None = None, ttl_s: int | None = None) -> None:
        for key, add in zip(keys, amounts, strict=True):
            old = self._get(key) or Record(a={}, c={})
            counts = dict(old["c"])
            for f, n in add.items():
                have = counts.get(f, 0)
                if not isinstance(have, int):  # as Redis's INCRBY: nothing of this record changes
                    raise StoreError(f"counter {f!r} of {key!r} holds a non-integer value")
                counts[f] = have + int(n)
            # a new record, never an update in place: a reader keeps the record it was given
            self._data[key] = Record(a=old["a"], c=live_counters(counts, expired_before or {}))
            self._touch(key, ttl_s)

    async def claim(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        now = time.monotonic()
        out = []
        for key in keys:
            first = self._claims.get(key, 0.0) <= now
            if first:
                self._claims[key] = now + ttl_s
            out.append(first)
        return out

    async def write_ranking(self, key: str, members: Sequence[str], scores: Sequence[float],
                            ttl_s: int | None = None) -> None:
        values = finite_scores(members, scores)
        self._expires.pop(key, None)
        if not members:  # like Redis: an empty sorted set does not exist
            self._rankings.pop(key, None)
            return
        # ZADD: the last score of a repeated member wins
        self._rankings[key] = dict(zip(map(str, members), values, strict=True))
        self._touch(key, ttl_s)

    async def add_to_ranking(self, key: str, members: Sequence[str], amounts: Sequence[float],
                             ttl_s: int | None = None) -> None:
        values = finite_scores(members, amounts)
        if not members:
            return
        self._expire(key)
        ranking = self._rankings.setdefault(key, {})
        for member, amount in zip(members, values, strict=True):
            ranking[str(member)] = ranking.get(str(member), 0.0) + amount
        self._touch(key, ttl_s)

    async def top(self, key: str, n: int) -> list[str]:
        self._expire(key)
        ranking = self._rankings.get(key, {})
        return [m for m, _ in heapq.nlargest(n, ranking.items(), key=lambda kv: (kv[1], kv[0]))]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._rankings.clear()
        self._expires.clear()
        self._claims.clear()
