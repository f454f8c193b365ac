"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys.errors import StoreError
from service.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (restart it if not). Says nothing about the store."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Send traffic here? 200 when the model is loaded, the store answers and holds the keys of the
    model's feature version (written by `recsys materialize`); else 503 with the reason."""
    ranker = state.ranker
    body = {"model_version": ranker.version, "feature_version": ranker.feature_version, "store": state.store.name,
            "default_candidates": {"items": len(ranker.popular), "from": ranker.popular_source}}
    try:
        meta = await ranker.materialized(state.store)
    except StoreError as err:
        return JSONResponse({"status": "not_ready", "reason": str(err), **body}, status_code=503)
    if not meta:
        reason = (f"no features materialized for feature version {ranker.feature_version} in {state.store.name} "
                  f"(fix: recsys materialize --model {state.settings.model_dir} --raw DIR)")
        return JSONResponse({"status": "not_ready", "reason": reason, **body}, status_code=503)
    return JSONResponse({"status": "ready", "materialized": meta, **body})


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
