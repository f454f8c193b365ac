"""materialize: the CLI job that fills Redis with an artifact's online features
(`recsys.store.materialize` does the work; the embedded store is filled by the service itself)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from recsys.online.retriever import materialize_seen
from recsys.store.keys import KeySpace
from recsys.store.materialize import materialize

__all__ = ["run_materialize"]


def run_materialize(model_dir: str | Path, raw_dir: str | Path, redis_url: str, prefix: str = "rec",
                    as_of: int | None = None, ttl_s: int | None = None, progress: bool = True,
                    keep_counters: bool = True) -> dict[str, int]:
    """The CLI job: the artifact decides the spec and the feature version of the keys."""
    from recsys.artifact import load_artifact
    from recsys.store.redis import RedisStore

    artifact = load_artifact(model_dir)

    async def go() -> dict[str, int]:
        store = RedisStore(redis_url)
        try:
            await store.ping()
            keys = KeySpace(prefix, artifact.feature_version)
            counts = await materialize(artifact.pipeline.spec, raw_dir, store, keys, as_of, ttl_s, progress,
                                       keep_counters=keep_counters)
            counts["seen_sets"] = await materialize_seen(artifact.pipeline.spec, raw_dir, store, keys, as_of, ttl_s)
            return counts
        finally:
            await store.close()

    return asyncio.run(go())
