"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys.errors import StoreError
from recsys.online import STORE_EMPTY, STORE_UNAVAILABLE, Degraded
from service.auth import is_admin
from service.deps import StateDep
from service.schemas import DefaultCandidates, Readiness

__all__ = ["build"]


def _store_kind(name: str) -> Literal["redis", "embedded", "other"]:
    return "redis" if name.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")) \
        else "embedded" if name == "embedded" else "other"


def build() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (restart it if not). Says nothing about the store."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(state: StateDep, request: Request) -> Readiness:
        """Send traffic here? 200 whenever the model is loaded, because the service answers even when
        the store does not: `status` is "ready", or "degraded" with the reason (docs/service.md). Alert on
        the status (or on recsys_degraded_responses_total), not on the code: pulling every replica off a
        shared, failed store would turn degraded answers into none. The store's address, the error and
        the model folder are shown to the admin token only."""
        ranker = state.ranker
        degraded: Degraded | None = None
        error = None
        meta: dict[str, str] = {}
        try:
            async with asyncio.timeout(state.budget_s):
                meta = await ranker.materialized(state.store)
        except StoreError as err:
            degraded, error = STORE_UNAVAILABLE, str(err)
        except TimeoutError:
            degraded, error = STORE_UNAVAILABLE, f"no answer within {state.settings.store_budget_ms:.0f} ms"
        if degraded is None and not meta:
            degraded = STORE_EMPTY
            error = (f"no features materialized for feature version {ranker.feature_version} (fix: recsys "
                     f"materialize --model {state.settings.model_dir} --raw DIR)")
        details: dict[str, Any] | None = None
        if is_admin(request, state.settings):
            details = {"store": state.store.name, "error": error, "model_dir": str(ranker.artifact.path),
                       "models_root": str(state.settings.reload_root), "materialized": meta}
        return Readiness(
            status="ready" if degraded is None else "degraded", degraded=degraded, model_version=ranker.version,
            feature_version=ranker.feature_version, store=_store_kind(state.store.name),
            default_candidates=DefaultCandidates.model_validate({"items": len(ranker.popular),
                                                                 "from": ranker.popular_source}),
            details=details)

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                 "description": "Prometheus text format"}})
    async def metrics(state: StateDep) -> Response:
        """Prometheus metrics of this worker: latency by route, stages, degraded answers, store errors."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
