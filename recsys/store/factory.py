"""Choose the backend from configuration: Redis when a URL is given, else the embedded store."""

from __future__ import annotations

from recsys.store.base import OnlineStore

__all__ = ["build_store"]


def build_store(redis_url: str | None, timeout_s: float = 0.2, pool_size: int = 16) -> OnlineStore:
    if redis_url:
        from recsys.store.redis import RedisStore

        return RedisStore(redis_url, timeout_s=timeout_s, pool_size=pool_size)
    from recsys.store.memory import MemoryStore

    return MemoryStore()
