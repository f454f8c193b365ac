"""POST /v1/recommendations and POST /v1/score: the request path."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from service.deps import StateDep
from service.errors import invalid
from service.schemas import RecommendRequest, RecommendResponse, ScoredItem, ScoreRequest, ScoreResponse
from service.validation import check_size, context_values, request_rows

router = APIRouter(prefix="/v1", tags=["ranking"])


@router.post("/recommendations")
async def recommend(body: RecommendRequest, state: StateDep) -> RecommendResponse:
    """Rank `candidates` (or the model's popular items) for `user_id` in `context`; best first."""
    t0 = time.perf_counter()
    s, ranker = state.settings, state.ranker
    if body.candidates is not None:
        check_size("candidates", len(body.candidates), s.max_candidates, "RECSYS_MAX_CANDIDATES")
    elif not len(ranker.popular):
        raise invalid("candidates", "required: this model has no popular-items list to rank instead")
    check_size("k", body.k, s.max_k, "RECSYS_MAX_K")
    context = context_values(ranker, [body.context], "context")[0]
    ts = body.context.timestamp if body.context.timestamp is not None else int(time.time())
    ranked = await ranker.rank(state.store, body.user_id, body.candidates, ts, context, body.k)
    state.metrics.observe(ranked.timings, ranked.candidates)
    items = [ScoredItem(item_id=i, score=p) for i, p in zip(ranked.item_ids, ranked.scores, strict=True)]
    return RecommendResponse(items=items, model_version=ranker.version, took_ms=(time.perf_counter() - t0) * 1e3)


@router.post("/score")
async def score(body: ScoreRequest, state: StateDep) -> ScoreResponse:
    """Probabilities for (user, item, context) rows, in order. `explain: true` adds the raw feature
    values each row was scored with (attributes and statistic counters as the store served them)."""
    t0 = time.perf_counter()
    s, ranker = state.settings, state.ranker
    check_size("rows", len(body.rows), s.max_candidates, "RECSYS_MAX_CANDIDATES")
    rows = request_rows(ranker, body.rows, "rows")
    scored = await ranker.score(state.store, rows)
    state.metrics.observe(scored.timings, len(rows))
    features = None
    if body.explain:
        features = {name: [None if isinstance(v, float) and v != v else v for v in np.asarray(col).tolist()]
                    for name, col in scored.columns.items()}
    return ScoreResponse(scores=scored.probabilities.tolist(), model_version=ranker.version,
                         took_ms=(time.perf_counter() - t0) * 1e3, features=features)
