"""POST /admin/reload: swap the served model atomically (token required)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request

from recsys.errors import ArtifactError, RecsysError
from service.deps import AdminDep, StateDep
from service.errors import Forbidden
from service.lifecycle import freeze_long_lived, prepare_ranker, prepare_retriever
from service.routes import errors
from service.schemas import ReloadRequest, ReloadResponse
from service.settings import ServiceSettings

__all__ = ["build"]


def artifact_path(settings: ServiceSettings, given: str | None) -> Path:
    """The folder to load: the configured one by default, else `given` (absolute, or relative to
    the models root) once `..` and symlinks are resolved. Outside the root: 403 (a well-formed
    request for a place the service may not read); a path the filesystem cannot resolve: 409."""
    if not given:
        return settings.model_dir
    root = settings.reload_root
    try:
        path = Path(given)
        resolved = (path if path.is_absolute() else root / path).resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise ArtifactError(f"model_dir cannot be resolved: {err}") from None
    if not resolved.is_relative_to(root):
        raise Forbidden(f"model_dir must be below the models root {root} after resolving '..' and symlinks "
                        f"(fix: put the artifact there, or set RECSYS_MODELS_ROOT)")
    return resolved


def build() -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["operations"], dependencies=AdminDep)

    @router.post("/reload", responses=errors(401, 403, 409, 413, 422, 503))
    async def reload(state: StateDep, request: Request, body: ReloadRequest | None = None) -> ReloadResponse:
        """Load and fully validate the artifact (default: the configured model dir) off the event loop,
        then swap it in with one assignment. A corrupt, non-finite or incompatible artifact, or one whose
        feature keys are not materialized, is refused (409) and the current model keeps serving.
        Reloads are serial. Each uvicorn worker holds its own model: with several workers, reload each
        (or restart them)."""
        t0 = time.perf_counter()
        model_dir = artifact_path(state.settings, body.model_dir if body else None)
        async with state.reload_lock:
            previous = state.ranker
            try:
                ranker = await prepare_ranker(state.settings, state.store, model_dir, require_features=True)
                retriever = await prepare_retriever(state.settings, ranker)
            except RecsysError:
                state.metrics.reloads.labels("refused").inc()
                raise
            state.ranker, state.retriever = ranker, retriever  # together: no await between
            request.app.openapi_schema = None  # the published context fields follow the model
            state.metrics.set_model(ranker.version, ranker.feature_version)
            state.metrics.reloads.labels("ok").inc()
            freeze_long_lived()
        return ReloadResponse(model_version=ranker.version, feature_version=ranker.feature_version,
                              previous_version=previous.version, took_ms=(time.perf_counter() - t0) * 1e3)

    return router
