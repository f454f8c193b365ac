"""The FastAPI app factory: `uvicorn --factory service.app:create_app` or `recsys serve`.

The lifespan owns every long-lived resource: it pins torch's threads, opens the store (Redis when
REDIS_URL is set, else the embedded store filled from RECSYS_RAW_DIR), loads, validates and warms
the model, and closes the store on shutdown. Nothing is created at import time, so two apps (or
two tests) never share state. Settings are validated when the app is created: a bad one raises
`SettingsError` (one line) before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.errors import RecsysError
from recsys.store.factory import build_store
from service.admission import EventAdmission
from service.errors import register_exception_handlers
from service.lifecycle import freeze_long_lived, prepare_ranker, prepare_retriever, refresh_popular_forever
from service.metrics import BodyLimitMiddleware, Metrics, TimingMiddleware
from service.openapi import install_docs
from service.routes import admin, events, health, recommend
from service.schemas import bounded_requests
from service.settings import ServiceSettings, load_settings
from service.state import ServiceState, StoreHealth

__all__ = ["create_app"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler


class OneLineStartupErrors:
    """A start-up refused for the operator's input (bad artifact, unreachable store: a RecsysError)
    is reported as one line, not as the traceback Starlette hands to uvicorn for any failure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            # Starlette sends the failure from inside its `except` block: the error is in flight.
            error = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(error, RecsysError):
                message = {**message, "message": f"error: {error}"}
            await send(message)

        await self.app(scope, receive, send_one_line)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        store = build_store(settings.redis_url, settings.redis_timeout_ms / 1000)
        try:
            await store.ping()  # fail fast with "cannot connect to redis at ..." rather than start degraded
            ranker = await prepare_ranker(settings, store, settings.model_dir, require_features=False)
            retriever = await prepare_retriever(settings, ranker)
            metrics.set_model(ranker.version, ranker.feature_version)
            state = app.state.service = ServiceState(settings=settings, store=store, ranker=ranker, metrics=metrics,
                                                     health=StoreHealth(metrics), retriever=retriever)
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

    app = FastAPI(title="recsys", summary="Wide&Deep ranking with an online feature store", version="0.1.0",
                  description="Anonymous: ranking and scoring. Admin token (RECSYS_ADMIN_TOKEN as "
                              "`Authorization: Bearer <token>`): events, reload, `explain`. "
                              "Degraded mode and limits: docs/service.md.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    requests = bounded_requests(settings.max_candidates, settings.max_k, settings.max_events)
    app.include_router(recommend.build(requests))
    app.include_router(events.build(requests))
    app.include_router(admin.build())
    app.include_router(health.build())
    install_docs(app)
    register_exception_handlers(app)

    app.add_middleware(EventAdmission, settings=settings, refused=metrics.events_refused)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    app.add_middleware(OneLineStartupErrors)
    return app
