"""The FastAPI app factory: `uvicorn --factory service.app:create_app` or `recsys serve`.

The lifespan owns every long-lived resource: it pins torch's threads, opens the store (Redis when
REDIS_URL is set, else the embedded store filled from RECSYS_RAW_DIR), loads and warms the model,
and closes the store on shutdown. Nothing is created at import time, so two apps (or two tests)
never share state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

import torch
from fastapi import FastAPI

from recsys.store.factory import build_store
from service.errors import register_exception_handlers
from service.lifecycle import freeze_long_lived, prepare_ranker, refresh_popular_forever
from service.metrics import BodyLimitMiddleware, Metrics, TimingMiddleware
from service.routes import admin, events, health, recommend
from service.settings import ServiceSettings
from service.state import ServiceState

__all__ = ["create_app"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        store = build_store(settings.redis_url, settings.redis_timeout_ms / 1000, settings.redis_pool_size)
        try:
            await store.ping()  # fail fast with "cannot connect to redis at ..." rather than serve 503s
            ranker = await prepare_ranker(settings, store, settings.model_dir, require_features=False)
            metrics.set_model(ranker.version, ranker.feature_version)
            state = app.state.service = ServiceState(settings=settings, store=store, ranker=ranker, metrics=metrics)
            freeze_long_lived()
            log.info("serving model %s (features %s) from %s with store %s; default candidates: %d popular "
                     "items from the %s", ranker.version, ranker.feature_version, settings.model_dir, store.name,
                     len(ranker.popular), ranker.popular_source)
            refresher = asyncio.create_task(refresh_popular_forever(state, settings.popular_refresh_s)) \
                if settings.popular_refresh_s > 0 else None
            try:
                yield
            finally:
                if refresher is not None:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
        finally:
            await store.close()

    app = FastAPI(title="recsys", summary="Wide&Deep ranking with an online feature store",
                  version="0.1.0", lifespan=lifespan)
    app.include_router(recommend.router)
    app.include_router(events.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    register_exception_handlers(app)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    return app
