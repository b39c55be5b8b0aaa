"""Stores: where cached values live (memory, Redis, memory in front of Redis)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cachewise.stores.base import CompareAndSet, EvictionAware, LoadGuarded, LoadTicket, Store
from cachewise.stores.memory import MemoryStore

if TYPE_CHECKING:
    from cachewise.stores.memcached import MemcachedStore
    from cachewise.stores.redis import RedisStore
    from cachewise.stores.tiered import TieredStore

# Redis and memcached are optional extras: these resolve on first use, so
# `import cachewise` works without redis-py or pymemcache installed.
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


__all__ = [
    "CompareAndSet",
    "EvictionAware",
    "LoadGuarded",
    "LoadTicket",
    "MemcachedStore",
    "MemoryStore",
    "RedisStore",
    "Store",
    "TieredStore",
]
