"""cachewise: application-level caching in front of a SQL database, done right.

The cache manager (``Cache``) composes a store (where cached data lives), an
authoritative data source, a read policy and a write policy, in the vocabulary of the
workshop "Caching & Connection pooling".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cachewise import errors
from cachewise._types import MISSING
from cachewise.aggregates import Aggregate, Cron, Every, OnChange
from cachewise.cache import Cache
from cachewise.policies import CacheAside, ReadThrough, Retry, WriteAround, WriteBack, WriteThrough
from cachewise.pool import PoolStats, connect, pool_stats
from cachewise.sources import MappingSource, Source, SQLSource
from cachewise.stats import Stats
from cachewise.stores import MemoryStore, Store

if TYPE_CHECKING:
    from cachewise.stores.memcached import MemcachedStore
    from cachewise.stores.redis import RedisStore
    from cachewise.stores.tiered import TieredStore

# Redis and memcached are optional extras (pip install cachewise[redis] / [memcached]):
# these resolve on first use, so `import cachewise` works without redis-py or pymemcache.
_LAZY = {
    "MemcachedStore": "cachewise.stores.memcached",
    "RedisStore": "cachewise.stores.redis",
    "TieredStore": "cachewise.stores.tiered",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "Aggregate",
    "Cache",
    "CacheAside",
    "Cron",
    "Every",
    "MappingSource",
    "MemcachedStore",
    "MemoryStore",
    "OnChange",
    "PoolStats",
    "ReadThrough",
    "RedisStore",
    "Retry",
    "SQLSource",
    "Source",
    "Stats",
    "Store",
    "TieredStore",
    "WriteAround",
    "WriteBack",
    "WriteThrough",
    "__version__",
    "connect",
    "errors",
    "pool_stats",
]
