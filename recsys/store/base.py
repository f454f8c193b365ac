"""The online-store protocol: the few operations the service, `materialize` and events need.

Every method is one network round trip at most, so a request costs one trip whatever its size.
Values are strings (raw, unencoded feature values and integer counters); a missing record reads as
an empty dict / all-None fields, never as an error: that is how cold-start users and items look.
"""

from __future__ import annotations

import math
from typing import Mapping, Protocol, Sequence, runtime_checkable

__all__ = ["OnlineStore", "Fetched", "finite_scores"]

# (whole records of the `whole` keys, the `fields` values of the `keys` keys flattened row-major:
# len(keys) * len(fields) values, key after key) as returned by `read`. Flat, because one numpy
# conversion of a flat list is 3x cheaper than of a list of per-key lists.
Fetched = tuple[list[dict[str, str]], list[str | None]]


def finite_scores(members: Sequence[str], scores: Sequence[float]) -> list[float]:
    """Ranking scores as floats, refused up front when not finite: Redis would reject a NaN inside
    the transaction after earlier commands ran (MULTI does not roll back)."""
    if len(members) != len(scores):
        raise ValueError(f"{len(members)} members but {len(scores)} scores")
    out = [float(s) for s in scores]
    if not all(map(math.isfinite, out)):
        raise ValueError("ranking scores must be finite numbers (no NaN or infinity)")
    return out


@runtime_checkable
class OnlineStore(Protocol):
    """Implemented by `MemoryStore` (embedded default) and `RedisStore` (production)."""

    name: str  # for logs and /readyz, without credentials

    async def read(self, whole: Sequence[str], keys: Sequence[str], fields: Sequence[str]) -> Fetched:
        """In one round trip: every field of each `whole` key ({} when absent, like HGETALL) and the
        values of `fields` for each of `keys`, flat (None when the record or field is absent, like HMGET)."""
        ...

    async def write(self, keys: Sequence[str], records: Sequence[Mapping[str, str]], ttl_s: int | None = None) -> int:
        """Replace each key's record by its mapping, atomically for the batch (readers see the old or
        the new records, never half of one). Returns the number of records written."""
        ...

    async def increment(self, keys: Sequence[str], fields: Sequence[str], amounts: Sequence[int],
                        ttl_s: int | None = None) -> None:
        """Add integer `amounts` to integer fields (absent = 0), atomically for the batch."""
        ...

    async def write_ranking(self, key: str, members: Sequence[str], scores: Sequence[float],
                            ttl_s: int | None = None) -> None:
        """Replace the ranking at `key` (a sorted set) by these members and scores: readers see the
        old ranking or the new one. Scores must be finite (ValueError before anything is written)."""
        ...

    async def add_to_ranking(self, key: str, members: Sequence[str], amounts: Sequence[float],
                             ttl_s: int | None = None) -> None:
        """Add finite `amounts` to the members' scores (absent = 0; duplicates summed), atomically for
        the batch; `ttl_s` (re)sets the ranking's expiry, as `increment` does for records."""
        ...

    async def claim(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        """Claim each key for `ttl_s` seconds (SET key 1 NX EX ttl_s): True for the first claimer of a
        key, False while an earlier claim lives (a key repeated in `keys` is claimed by its first
        occurrence). One round trip; the claims of one call are not a transaction."""
        ...

    async def top(self, key: str, n: int) -> list[str]:
        """The n members with the highest scores, best first; equal scores by member, descending (like
        ZREVRANGE). [] when the ranking is absent."""
        ...

    async def ping(self) -> None:
        """Raise `StoreError` when the store cannot serve."""
        ...

    async def close(self) -> None: ...
