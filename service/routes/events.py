"""POST /v1/events and /v1/labels: impressions and their late labels update the online statistics
(token required; admission control in service/admission.py; the rules in recsys/online/events.py)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from recsys.online.events import PENDING, Applied, EventPolicy
from service.deps import AdminDep, StateDep
from service.routes import errors, with_body
from service.schemas import EventsRequest, EventsResponse, LabelsRequest, Requests
from service.settings import ServiceSettings
from service.state import ServiceState
from service.validation import request_rows

__all__ = ["build"]


def _policy(settings: ServiceSettings) -> EventPolicy:
    return EventPolicy(retention_s=settings.events_retention_s, label_window_s=settings.label_window_s,
                       ttl_s=settings.ttl_s)


def _answer(state: ServiceState, kind: str, n: int, done: Applied, version: str) -> EventsResponse:
    for outcome, count in (("applied", done.applied), ("duplicate", done.duplicates), ("unknown", done.unknown)):
        state.metrics.events.labels(kind, outcome).inc(count)
    return EventsResponse(events=n, applied=done.applied, duplicates=done.duplicates, unknown=done.unknown,
                          counters_updated=done.counters_updated, model_version=version)


def build(requests: Requests) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"], dependencies=AdminDep)

    async def events(body: EventsRequest, state: StateDep) -> EventsResponse:
        """Count each impression in every statistic of the served feature spec: count += 1, positives
        += label, in the bucket of its timestamp for windowed statistics. Post it after it was scored.
        An `event_id` seen within RECSYS_EVENTS_RETENTION_S is a duplicate (retries are safe); an
        item that neither the served model nor the store knows is unknown, and not counted. Without
        `label`, the impression waits RECSYS_LABEL_WINDOW_S for POST /v1/labels. A store failure is
        a 503 and nothing is counted (retry). Too many concurrent posts: 429 with Retry-After."""
        ranker = state.ranker
        rows = request_rows(ranker, body.events, "events")
        labels = np.array([PENDING if e.label is None else e.label for e in body.events], dtype=np.int64)
        ids = np.array([e.event_id for e in body.events], dtype=object)
        done = await ranker.events.impressions(state.store, rows, labels, ids, _policy(state.settings))
        return _answer(state, "impression", len(ids), done, ranker.version)

    async def labels(body: LabelsRequest, state: StateDep) -> EventsResponse:
        """The late labels of impressions posted without one: positives += label on the impression's
        keys, in the bucket of the impression's timestamp (its count is unchanged). A second label
        for one impression is a duplicate; an impression id that no impression waits under (never
        posted, posted with its label, or older than RECSYS_LABEL_WINDOW_S) is unknown."""
        ranker = state.ranker
        ids = np.array([x.impression_id for x in body.labels], dtype=object)
        values = np.array([x.label for x in body.labels], dtype=np.int64)
        done = await ranker.events.labels(state.store, ids, values, _policy(state.settings))
        return _answer(state, "label", len(ids), done, ranker.version)

    router.post("/events", responses=errors(401, 403, 413, 422, 429, 503))(with_body(events, requests.events))
    router.post("/labels", responses=errors(401, 403, 413, 422, 429, 503))(with_body(labels, requests.labels))
    return router
