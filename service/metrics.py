"""Prometheus metrics (one registry per app, so tests and two apps in a process never share counts)
and the two pure-ASGI middlewares: request timing per route and the request body limit.

Pure ASGI instead of `BaseHTTPMiddleware`: the latter adds a task and a memory stream per request,
measurable against a 3 ms budget. With several uvicorn workers each process exports its own
series; sum them in Prometheus (`sum by (route) (rate(...))`).
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.online import Timings
from service.errors import error_body

__all__ = ["Metrics", "TimingMiddleware", "BodyLimitMiddleware"]


_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("recsys_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("recsys_stage_duration_seconds", "time per request stage (fetch = one store "
                               "round trip, assemble, transform, score = forward pass, topk; retrieve = user features, "
                               "user tower, ANN search and the seen filter of a request without candidates)", ["stage"],
                               buckets=_STAGE_BUCKETS, registry=r)
        self.candidates = Histogram("recsys_candidates_per_request", "rows scored per request",
                                    buckets=(1, 10, 50, 100, 200, 500, 1000, 2000, 5000), registry=r)
        self.store_errors = Counter("recsys_store_errors_total", "failed online-store calls", registry=r)
        self.degraded = Counter("recsys_degraded_responses_total", "answers computed from cold features because "
                                "the store failed, was too slow or lacked the features (docs/service.md)",
                                ["reason"], registry=r)
        for reason in ("store_unavailable", "store_empty"):
            self.degraded.labels(reason)  # exported as 0 from the start: alerts need the series
        self.events = Counter("recsys_events_total", "impressions (POST /v1/events) and late labels (POST "
                              "/v1/labels) by outcome: applied, duplicate (seen before), unknown (not counted)",
                              ["kind", "outcome"], registry=r)
        self.events_refused = Counter("recsys_events_refused_total", "event and label posts answered 429 "
                                      "(admission control: RECSYS_EVENTS_MAX_INFLIGHT)", registry=r)
        self.reloads = Counter("recsys_reloads_total", "model reloads by outcome", ["outcome"], registry=r)
        self.model = Gauge("recsys_model_info", "the artifact being served (value 1)",
                           ["model_version", "feature_version"], registry=r)
        self._stages = {name: self.stage.labels(name) for name, _ in Timings().items()}
        self.retrieve = self.stage.labels("retrieve")

    def observe(self, timings: Timings, rows: int) -> None:
        for name, seconds in timings.items():
            self._stages[name].observe(seconds)
        self.candidates.observe(rows)

    def set_model(self, model_version: str, feature_version: str) -> None:
        self.model.clear()
        self.model.labels(model_version, feature_version).set(1)


class TimingMiddleware:
    """Latency histogram labelled by the route's path template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route, scope["method"], str(status)).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, by Content-Length up front or while streaming.
    (FastAPI's own `max_body_size` answers in plain text; this keeps the one JSON error shape.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"request body exceeds {self.max_bytes} bytes (fix: send fewer rows per "
                                  f"request, or raise RECSYS_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                exc = self._too_large()
                await JSONResponse(error_body("http_413", str(exc.detail)), status_code=413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._too_large()  # FastAPI re-raises HTTPExceptions from body reading → 413
            return message

        await self.app(scope, receive if scope["method"] in ("GET", "HEAD") else counted, send)
