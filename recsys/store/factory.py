"""Choose the backend from configuration: Redis (one server or a cluster) when a URL is given, else
the embedded store."""

from __future__ import annotations

from recsys.store.base import OnlineStore

__all__ = ["build_store"]


def build_store(redis_url: str | None, timeout_s: float = 0.2) -> OnlineStore:
    if redis_url:
        from recsys.store.redis import RedisStore

        return RedisStore(redis_url, timeout_s=timeout_s)
    from recsys.store.memory import MemoryStore

    return MemoryStore()
