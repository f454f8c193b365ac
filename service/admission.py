"""Admission control for event posts: ranking keeps its latency while events flow.

A worker is one event loop, and an event post's CPU (parsing, validating, assembling, counting) runs
on it between the ranking requests' steps. Left alone, many concurrent posters keep the loop busy and
every ranking request waits behind their batches (issue 10: p99 13 ms alone, 390 ms beside 20 posters).
This pure-ASGI middleware, in front of POST /v1/events and /v1/labels, bounds that work per worker:

- one post is handled at a time (body read, parse, apply); at most `max_inflight` are admitted
  (handled or waiting, without CPU). Another is answered **429** with `Retry-After` at once, before
  its body is read, so an overload costs the worker almost nothing and nothing is queued unboundedly;
- after a post that took t seconds, the next waits t * (1 / share - 1): event posts take at most
  `share` of the worker's time (wall time, which bounds their CPU time), whatever the clients do.

Only posts with the admin token are gated; others go straight to the route's 401/403, so that an
anonymous flood cannot take the admitted posts' places. Nothing is dropped: an admitted post is
applied (or answered 503 by the store), a refused one was never read and the client retries it.
"""

from __future__ import annotations

import asyncio
import math
import time

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import is_admin
from service.errors import error_body
from service.settings import ServiceSettings

__all__ = ["EventAdmission", "GATED_PATHS"]

GATED_PATHS = frozenset({"/v1/events", "/v1/labels"})


class EventAdmission:
    def __init__(self, app: ASGIApp, settings: ServiceSettings, refused: Counter) -> None:
        self.app = app
        self.settings = settings
        self.max_inflight = settings.events_max_inflight
        self.pause_factor = 1 / settings.events_loop_share - 1
        self.admitted = 0
        self.gate = asyncio.Lock()
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] not in GATED_PATHS or scope["method"] != "POST"
                or not is_admin(Request(scope), self.settings)):
            await self.app(scope, receive, send)
            return
        if self.admitted >= self.max_inflight:
            self.refused.inc()
            retry = max(1, math.ceil(self.pause_factor))
            body = error_body("overloaded", f"this worker already holds {self.admitted} event posts (fix: retry "
                                            f"after {retry} s, post larger batches less often, or raise "
                                            f"RECSYS_EVENTS_MAX_INFLIGHT / RECSYS_EVENTS_LOOP_SHARE)")
            await JSONResponse(body, status_code=429, headers={"retry-after": str(retry)})(scope, receive, send)
            return
        self.admitted += 1
        try:
            async with self.gate:
                start = time.perf_counter()
                try:
                    await self.app(scope, receive, send)
                finally:
                    pause = (time.perf_counter() - start) * self.pause_factor
                    if pause > 0:  # holding the gate: the next post starts after the pause
                        await asyncio.sleep(pause)
        finally:
            self.admitted -= 1

