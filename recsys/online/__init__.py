"""The online half of the library: the store layout a model reads, request → raw columns, ranking.

`Ranker` is what the service holds per artifact; `Rows`/`assemble` are shared by scoring, events
and materialize so the three agree with the offline pipeline by construction.
"""

from recsys.online.columns import Rows, assemble, counter_updates, plan_read
from recsys.online.plan import OnlinePlan
from recsys.online.ranker import STORE_EMPTY, STORE_UNAVAILABLE, Degraded, Ranked, Ranker, Scored, Timings

__all__ = ["OnlinePlan", "Rows", "plan_read", "assemble", "counter_updates", "Ranker", "Ranked", "Scored", "Timings",
           "Degraded", "STORE_UNAVAILABLE", "STORE_EMPTY"]
