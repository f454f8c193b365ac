"""Loading a model for serving, shared by start-up and /admin/reload.

Everything slow (reading and hash-checking the artifact, filling the embedded store, the warm-up
forward) runs in worker threads, so a reload never stalls the requests being served meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import faiss

from recsys.artifact import load_artifact
from recsys.errors import ArtifactError, StoreError
from recsys.online import Ranker
from recsys.online.retriever import OnlineRetriever, materialize_seen
from recsys.retrieval import Retriever
from recsys.store.base import OnlineStore
from recsys.store.materialize import materialize
from recsys.store.memory import MemoryStore
from service.settings import ServiceSettings
from service.state import ServiceState

__all__ = ["prepare_ranker", "prepare_retriever", "freeze_long_lived", "refresh_popular_forever"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler


async def prepare_ranker(settings: ServiceSettings, store: OnlineStore, model_dir: Path,
                         require_features: bool) -> Ranker:
    """Load, verify and warm a Ranker for `model_dir`. The embedded store is filled from
    RECSYS_RAW_DIR when it lacks the model's feature version; with Redis, `require_features` refuses
    a model whose keys nobody materialized (a reload must not switch traffic to all-cold features)."""
    artifact = await asyncio.to_thread(load_artifact, model_dir)
    ranker = Ranker(artifact, settings.key_prefix, settings.popular_candidates)
    if not await ranker.materialized(store):
        if isinstance(store, MemoryStore):
            if settings.raw_dir is None:
                raise ArtifactError("the embedded store is filled from the raw tables at start-up (fix: set "
                                    "RECSYS_RAW_DIR / pass --raw DIR, or use Redis via REDIS_URL)")
            await materialize(artifact.pipeline.spec, settings.raw_dir, store, ranker.keys, as_of=settings.as_of,
                              log=log.info)
            await materialize_seen(artifact.pipeline.spec, settings.raw_dir, store, ranker.keys, settings.as_of)
        elif require_features:
            raise ArtifactError(
                f"the store {store.name} holds no features for feature version {ranker.feature_version} of "
                f"{model_dir} (fix: recsys materialize --model {model_dir} --raw DIR --redis-url URL, then reload)")
        else:
            log.warning("no features materialized for feature version %s in %s: every request is a cold "
                        "start until `recsys materialize` runs (/readyz says not_ready)",
                        ranker.feature_version, store.name)
    await ranker.refresh_popular(store)
    await asyncio.to_thread(ranker.warm_up)
    return ranker


async def prepare_retriever(settings: ServiceSettings, ranker: Ranker) -> OnlineRetriever | None:
    """The retrieval stage of the ranker's artifact, validated (a broken index is an ArtifactError:
    the reload is refused); None when the artifact has none."""
    retriever = await asyncio.to_thread(Retriever.from_artifact, ranker.artifact)
    if retriever is None:
        return None
    faiss.omp_set_num_threads(1)  # one query per request: threads only add hand-off latency
    return OnlineRetriever(ranker, retriever, settings.retrieve_n, settings.seen_limit)


async def refresh_popular_forever(state: ServiceState, every_s: float) -> None:
    """Every `every_s`, the served model's default candidates from the store's popularity ranking
    (POST /v1/events keeps it current). A failed read keeps the last list and is counted as a store
    error; the next round tries again. Runs until cancelled (at shutdown)."""
    while True:
        await asyncio.sleep(max(every_s, 0.05))
        try:
            await state.ranker.refresh_popular(state.store)
        except StoreError as err:
            state.metrics.store_errors.inc()
            log.warning("popular items not refreshed: %s", err)
        except Exception:  # a bug must not end the refreshes silently (nor surface only at shutdown)
            log.exception("popular items not refreshed")


def freeze_long_lived() -> None:
    """Move every object alive now (the model, its vocabularies, the embedded store's records) out of
    the collector's generations: full collections stop walking them, which shortens GC pauses (the
    p99's enemy). Called when serving starts and after each reload; objects frozen earlier stay out,
    so the collection before the freeze only walks what was created since. A replaced model is freed
    by reference counting (it holds no reference cycles)."""
    gc.collect()
    gc.freeze()
