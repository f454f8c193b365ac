"""POST /admin/reload: swap the served model atomically (token required)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter

from recsys.errors import RecsysError
from service.deps import AdminDep, StateDep
from service.lifecycle import freeze_long_lived, prepare_ranker
from service.schemas import ReloadRequest, ReloadResponse

router = APIRouter(prefix="/admin", tags=["operations"], dependencies=[AdminDep])


@router.post("/reload")
async def reload(state: StateDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load and verify the artifact (default: the configured model dir) off the event loop, then
    swap it in with one assignment. A corrupt or incompatible artifact, or one whose feature keys
    are not materialized, is refused (409) and the current model keeps serving. Reloads are serial.
    Each uvicorn worker holds its own model: with several workers, reload each (or restart them)."""
    t0 = time.perf_counter()
    model_dir = Path(body.model_dir) if body and body.model_dir else state.settings.model_dir
    async with state.reload_lock:
        previous = state.ranker
        try:
            ranker = await prepare_ranker(state.settings, state.store, model_dir, require_features=True)
        except RecsysError:
            state.metrics.reloads.labels("refused").inc()
            raise
        state.ranker = ranker
        state.metrics.set_model(ranker.version, ranker.feature_version)
        state.metrics.reloads.labels("ok").inc()
        freeze_long_lived()
    return ReloadResponse(model_version=ranker.version, feature_version=ranker.feature_version,
                          previous_version=previous.version, took_ms=(time.perf_counter() - t0) * 1e3)
