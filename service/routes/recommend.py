"""POST /v1/recommendations and POST /v1/score: the request path."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Request

from recsys.online import Ranked
from recsys.online.retriever import Recommended
from service.auth import BEARER
from service.deps import StateDep, require_admin
from service.errors import invalid
from service.routes import errors, with_body
from service.schemas import (
    RecommendRequest,
    RecommendResponse,
    Requests,
    ScoredItem,
    ScoreRequest,
    ScoreResponse,
)
from service.validation import context_values, request_rows

__all__ = ["build"]


def build(requests: Requests) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ranking"])

    async def recommend(body: RecommendRequest, state: StateDep) -> RecommendResponse:
        """Rank `candidates` (or the popular items) for `user_id` in `context`; best first. When the
        store fails, is slow or lacks the model's features, the answer comes from cold features
        within the latency budget and `degraded` says why (docs/service.md)."""
        t0 = time.perf_counter()
        ranker = state.ranker
        if body.candidates is None and not len(ranker.popular) and state.retriever is None:
            raise invalid("candidates", "required: this model has no popular-items list to rank instead")
        context = context_values(ranker, [body.context], "context")[0]
        ts = body.context.timestamp if body.context.timestamp is not None else int(time.time())
        retriever = state.retriever
        ranked: Ranked | Recommended
        if retriever is not None:
            ranked = await retriever.recommend(state.store, body.user_id, body.candidates, ts, context, body.k,
                                               body.exclude_seen, state.budget_s)
            sources: list[str] = list(ranked.sources)
            if body.candidates is None:
                state.metrics.retrieve.observe(ranked.retrieve_s)
        else:
            ranked = await ranker.rank(state.store, body.user_id, body.candidates, ts, context, body.k, state.budget_s)
            sources = ["given" if body.candidates is not None else "popular"] * len(ranked.item_ids)
        state.metrics.observe(ranked.timings, ranked.candidates)
        state.health.saw(ranked.degraded, ranked.store_error)
        items = [ScoredItem(item_id=i, score=p, source=s)
                 for i, p, s in zip(ranked.item_ids, ranked.scores, sources, strict=True)]
        return RecommendResponse(items=items, model_version=ranker.version, degraded=ranked.degraded,
                                 took_ms=(time.perf_counter() - t0) * 1e3)

    async def score(body: ScoreRequest, state: StateDep, request: Request) -> ScoreResponse:
        """Probabilities for (user, item, context) rows, in order. `explain: true` adds the raw
        feature values each row was scored with (stored attributes and counters): admin token only."""
        t0 = time.perf_counter()
        if body.explain:
            await require_admin(request, state)
        ranker = state.ranker
        rows = request_rows(ranker, body.rows, "rows")
        scored = await ranker.score(state.store, rows, state.budget_s)
        state.metrics.observe(scored.timings, len(rows))
        state.health.saw(scored.degraded, scored.store_error)
        features = None
        if body.explain:
            features = {name: [None if isinstance(v, float) and v != v else v for v in np.asarray(col).tolist()]
                        for name, col in scored.columns.items()}
        return ScoreResponse(scores=scored.probabilities.tolist(), model_version=ranker.version,
                             degraded=scored.degraded, took_ms=(time.perf_counter() - t0) * 1e3,
                             features=features)

    router.post("/recommendations", responses=errors(413, 422))(with_body(recommend, requests.recommend))
    # Anonymous unless `explain`: the scheme is published as optional ({} = no credentials).
    router.post("/score", responses=errors(401, 403, 413, 422),
                openapi_extra={"security": [{}, {BEARER.scheme_name: []}]})(with_body(score, requests.score))
    return router
