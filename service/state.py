"""Everything the app holds between requests, owned by the lifespan and reached through `deps`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from recsys.online import Ranker
from recsys.online.retriever import OnlineRetriever
from recsys.store.base import OnlineStore
from service.metrics import Metrics
from service.settings import ServiceSettings

__all__ = ["ServiceState", "StoreHealth"]

log = logging.getLogger("uvicorn.error")  # printed by uvicorn's configured handler


@dataclass
class StoreHealth:
    """The store as the latest request saw it. Every degraded answer is counted in /metrics; the
    log gets one line per change of state (not one per request during an outage), with the error
    that callers never see."""

    metrics: Metrics
    degraded: str | None = None
    error: str | None = None

    def saw(self, degraded: str | None, error: str | None) -> None:
        if degraded is not None:
            self.metrics.degraded.labels(degraded).inc()
            if error is not None:
                self.metrics.store_errors.inc()
        if degraded != self.degraded:
            if degraded is None:
                log.info("store recovered: answers use the store's features again")
            else:
                log.warning("degraded mode (%s): answering from cold features%s", degraded,
                            f"; store error: {error}" if error else " (fix: recsys materialize)")
        self.degraded, self.error = degraded, error


@dataclass
class ServiceState:
    settings: ServiceSettings
    store: OnlineStore
    ranker: Ranker  # replaced whole by /admin/reload; a request keeps the one it started with
    metrics: Metrics
    health: StoreHealth
    # the same artifact's retrieval stage (None: it has none, requests without candidates rank the
    # popular items); assigned together with `ranker`
    retriever: OnlineRetriever | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def budget_s(self) -> float:
        return self.settings.store_budget_ms / 1e3
