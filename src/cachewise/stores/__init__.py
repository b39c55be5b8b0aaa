"""Stores: where cached values live (memory, Redis, memory in front of Redis)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cachewise.stores.base import EvictionAware, LoadGuarded, LoadTicket, Store
from cachewise.stores.memory import MemoryStore

if TYPE_CHECKING:
    from cachewise.stores.redis import RedisStore
    from cachewise.stores.tiered import TieredStore

# Redis is an optional extra: these resolve on first use, so `import cachewise`
# works without redis-py installed.
_LAZY = {"RedisStore": "cachewise.stores.redis", "TieredStore": "cachewise.stores.tiered"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "EvictionAware",
    "LoadGuarded",
    "LoadTicket",
    "MemoryStore",
    "RedisStore",
    "Store",
    "TieredStore",
]
