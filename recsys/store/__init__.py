"""Online feature store: one small protocol, an embedded in-process default and Redis.

Backends are imported from their own modules (`recsys.store.redis`, `recsys.store.memory`) or built
with `recsys.store.factory.build_store`; only the protocol and the key layout are public here.
"""

from recsys.store.base import OnlineStore
from recsys.store.keys import KeySpace

__all__ = ["OnlineStore", "KeySpace"]
