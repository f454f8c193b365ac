"""Everything the app holds between requests, owned by the lifespan and reached through `deps`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from recsys.online import Ranker
from recsys.store.base import OnlineStore
from service.metrics import Metrics
from service.settings import ServiceSettings

__all__ = ["ServiceState"]


@dataclass
class ServiceState:
    settings: ServiceSettings
    store: OnlineStore
    ranker: Ranker  # replaced whole by /admin/reload; a request keeps the one it started with
    metrics: Metrics
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
