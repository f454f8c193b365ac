"""The online-store protocol: the few operations the service, `materialize` and events need.

A record is one value per user or item (`Record`: its raw attributes and its integer counters), so a
request reads the user and all its candidates with ONE multi-key read (per node on a cluster), and
every call is one network round trip at most. A missing record reads as None, never as an error:
that is how cold-start users and items look. Counters change only server-side (`increment`), so
concurrent writers never lose each other's counts, and every increment drops the record's expired
window buckets, so a record stays bounded however long its entity lives.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Protocol, Sequence, TypedDict, runtime_checkable

__all__ = ["OnlineStore", "Record", "finite_scores", "live_counters"]


class Record(TypedDict):
    """A user's or item's state: `a` its raw attribute columns (canonical strings, missing left
    out), `c` its counters by `recsys.features.statistics.counter_field` name."""

    a: dict[str, str]
    c: dict[str, int]


_BUCKET = re.compile(r"@(-?\d+)$")


def live_counters(counters: dict[str, int], expired_before: Mapping[str, int]) -> dict[str, int]:
    """`counters` without the window buckets that have expired: a field that starts with a prefix of
    `expired_before` and ends in `@<bucket>` with bucket < that prefix's first live bucket. The store
    functions (`recsys.store.redis.LIBRARY`) apply the same rule server-side."""
    if not expired_before:
        return counters
    out = {}
    for f, n in counters.items():
        m = _BUCKET.search(f)
        if m is None or not any(f.startswith(p) and int(m.group(1)) < b for p, b in expired_before.items()):
            out[f] = n
    return out


def finite_scores(members: Sequence[str], scores: Sequence[float]) -> list[float]:
    """Ranking scores as floats, refused up front when not finite: Redis would reject a NaN after
    earlier commands of the batch ran."""
    if len(members) != len(scores):
        raise ValueError(f"{len(members)} members but {len(scores)} scores")
    out = [float(s) for s in scores]
    if not all(map(math.isfinite, out)):
        raise ValueError("ranking scores must be finite numbers (no NaN or infinity)")
    return out


@runtime_checkable
class OnlineStore(Protocol):
    """Implemented by `MemoryStore` (embedded default) and `RedisStore` (one Redis or a cluster)."""

    name: str  # for logs and /readyz, without credentials

    async def read(self, keys: Sequence[str]) -> list[Record | None]:
        """The records at `keys` (None when absent) in one round trip per node involved. The result
        is the caller's to read, not to modify."""
        ...

    async def write(self, keys: Sequence[str], attributes: Sequence[Mapping[str, str]],
                    counters: Sequence[Mapping[str, int]], keep_counters: bool = False,
                    ttl_s: int | None = None) -> int:
        """Replace each key's record by these attributes and counters; with `keep_counters`, the
        counters already stored win and the given ones only fill the fields that are absent (a
        re-materialize merges with what events counted meanwhile). A record without attributes and
        counters is deleted (unless counters are kept). Each record changes atomically; `ttl_s`
        sets its expiry (None: none). Returns the number of records written."""
        ...

    async def write_json(self, keys: Sequence[str], attributes: Sequence[bytes], counters: Sequence[bytes],
                         keep_counters: bool = False, ttl_s: int | None = None) -> int:
        """`write` with each record's attributes and counters already encoded as JSON objects (UTF-8):
        how `materialize` hands over millions of records without building a dict per record."""
        ...

    async def increment(self, keys: Sequence[str], amounts: Sequence[Mapping[str, int]],
                        expired_before: Mapping[str, int] | None = None, ttl_s: int | None = None) -> None:
        """Add integer `amounts` (field → amount) to each key's counters (absent = 0; an absent record
        is created without attributes) and drop its expired window buckets (`live_counters`), each
        record atomically. `ttl_s` (re)sets the expiry; None keeps the record's own."""
        ...

    async def claim(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        """Mark each key as seen for `ttl_s` seconds (SET NX EX): True for the first claimer of a
        key, False while an earlier claim lives (a key repeated in `keys` is claimed by its first
        occurrence). A `write` to the key replaces the claim (an empty record releases it). Makes
        event ingestion idempotent; the claims of one call are not a transaction."""
        ...

    async def write_ranking(self, key: str, members: Sequence[str], scores: Sequence[float],
                            ttl_s: int | None = None) -> None:
        """Replace the ranking at `key` (a sorted set) by these members and scores: readers see the
        old ranking or the new one. Scores must be finite (ValueError before anything is written)."""
        ...

    async def add_to_ranking(self, key: str, members: Sequence[str], amounts: Sequence[float],
                             ttl_s: int | None = None) -> None:
        """Add finite `amounts` to the members' scores (absent = 0; duplicates summed); `ttl_s`
        (re)sets the ranking's expiry."""
        ...

    async def top(self, key: str, n: int) -> list[str]:
        """The n members with the highest scores, best first; equal scores by member, descending (like
        ZREVRANGE). [] when the ranking is absent."""
        ...

    async def ping(self) -> None:
        """Raise `StoreError` when the store cannot serve."""
        ...

    async def close(self) -> None: ...
