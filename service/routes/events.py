"""POST /v1/events: impressions and their labels update the online statistics (token required)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from recsys.online.retriever import record_seen
from service.deps import AdminDep, StateDep
from service.routes import errors, with_body
from service.schemas import EventsRequest, EventsResponse, Requests
from service.validation import request_rows

__all__ = ["build"]


def build(requests: Requests) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"], dependencies=AdminDep)

    async def events(body: EventsRequest, state: StateDep) -> EventsResponse:
        """Count each event in every statistic of the served feature spec: count += 1, positives +=
        label, in the bucket of the event's timestamp for windowed statistics. Post an impression's
        event after it was scored, once: the statistics count strictly earlier events, and a replayed
        event is counted twice. A store failure is a 503 (retry later): events are never dropped silently."""
        ranker = state.ranker
        rows = request_rows(ranker, body.events, "events")
        labels = np.fromiter((e.label for e in body.events), np.int64, len(body.events))
        async with state.events_gate:
            updated = await ranker.record_events(state.store, rows, labels, state.settings.ttl_s)
            await record_seen(state.store, ranker.keys, rows.user_ids[rows.row_user], rows.item_ids, labels,
                              state.settings.ttl_s)
        state.metrics.events.inc(len(body.events))
        return EventsResponse(events=len(body.events), counters_updated=updated, model_version=ranker.version)

    router.post("/events", responses=errors(401, 403, 413, 422, 503))(with_body(events, requests.events))
    return router
