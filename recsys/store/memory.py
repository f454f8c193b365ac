"""The embedded store: the same protocol as Redis, in this process (the default without REDIS_URL).

It lets the demo and tests serve without infrastructure. Each worker process holds its own copy,
filled at start-up by `materialize`, so events posted to one worker do not reach another: use Redis
whenever more than one process serves or online statistics must be shared.
"""

from __future__ import annotations

import heapq
import time
from typing import Mapping, Sequence

from recsys.errors import StoreError
from recsys.store.base import Fetched, finite_scores

__all__ = ["MemoryStore"]


class MemoryStore:
    name = "embedded"

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self._rankings: dict[str, dict[str, float]] = {}
        self._expires: dict[str, float] = {}

    def _get(self, key: str) -> dict[str, str] | None:
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

    async def read(self, whole: Sequence[str], keys: Sequence[str], fields: Sequence[str]) -> Fetched:
        empty: dict[str, str] = {}
        records = [dict(self._get(k) or empty) for k in whole]
        missing = [None] * len(fields)
        flat: list[str | None] = []
        for k in keys:
            rec = self._get(k)
            flat += missing if rec is None else map(rec.get, fields)
        return records, flat

    async def write(self, keys: Sequence[str], records: Sequence[Mapping[str, str]], ttl_s: int | None = None) -> int:
        for key, rec in zip(keys, records, strict=True):
            self._expires.pop(key, None)
            if rec:
                self._data[key] = {str(f): str(v) for f, v in rec.items()}
                self._touch(key, ttl_s)
            else:
                self._data.pop(key, None)
        return len(keys)

    async def increment(self, keys: Sequence[str], fields: Sequence[str], amounts: Sequence[int],
                        ttl_s: int | None = None) -> None:
        # Like Redis MULTI/EXEC: every valid increment applies, a non-integer field fails alone.
        failed: list[str] = []
        for key, field, amount in zip(keys, fields, amounts, strict=True):
            rec = self._get(key)
            if rec is None:
                rec = self._data[key] = {}
            value = rec.get(field, "0")
            if not value.lstrip("-").isdigit():
                failed.append(f"{key} field {field} holds {value!r}")
                continue
            rec[field] = str(int(value) + int(amount))
            self._touch(key, ttl_s)
        if failed:
            raise StoreError(f"cannot increment non-integer counters: {'; '.join(failed[:3])}")

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

    async def claim(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        if ttl_s < 1:
            raise ValueError(f"claims need a TTL of at least 1 second, got {ttl_s}")
        out = []
        for key in keys:
            self._expire(key)
            first = key not in self._data and key not in self._rankings
            if first:
                self._data[key] = {}
                self._touch(key, ttl_s)
            out.append(first)
        return out

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
