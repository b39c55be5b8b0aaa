"""cachewise: application-level caching in front of a SQL database, done right.

The cache manager (``Cache``) composes a store (where cached data lives), an
authoritative data source, a read policy and a write policy, in the vocabulary of the
workshop "Caching & Connection pooling".
"""

from __future__ import annotations

from cachewise import errors
from cachewise._types import MISSING
from cachewise.pool import PoolStats, connect, pool_stats
from cachewise.cache import Cache
from cachewise.policies import CacheAside, ReadThrough, Retry, WriteAround, WriteBack, WriteThrough
from cachewise.sources import MappingSource, Source, SQLSource
from cachewise.stats import Stats
from cachewise.stores import MemoryStore, Store

__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "Cache",
    "CacheAside",
    "MappingSource",
    "MemoryStore",
    "PoolStats",
    "ReadThrough",
    "Retry",
    "SQLSource",
    "Source",
    "Stats",
    "Store",
    "WriteAround",
    "WriteBack",
    "WriteThrough",
    "__version__",
    "connect",
    "errors",
    "pool_stats",
]
