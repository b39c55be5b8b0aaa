"""cachewise for asyncio: ``AsyncCache`` and the async stores, source and buses.

``AsyncCache`` takes the same policy objects as ``Cache`` and runs the same strategy
logic (see docs/asyncio.md for how one implementation serves both). The stores and
the source are imported on first use, so ``AsyncCache`` with a ``MemoryStore`` needs
none of the optional drivers (``pip install 'cachewise[async]'`` brings them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cachewise.aio.cache import AsyncCache

if TYPE_CHECKING:
    from cachewise.aio.buses import AsyncPostgresBus, AsyncRedisBus
    from cachewise.aio.redis import AsyncRedisStore
    from cachewise.aio.sql import AsyncSQLSource
    from cachewise.aio.tiered import AsyncTieredStore

_LAZY = {
    "AsyncRedisStore": "cachewise.aio.redis",
    "AsyncTieredStore": "cachewise.aio.tiered",
    "AsyncSQLSource": "cachewise.aio.sql",
    "AsyncRedisBus": "cachewise.aio.buses",
    "AsyncPostgresBus": "cachewise.aio.buses",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cachewise.aio' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncCache",
    "AsyncPostgresBus",
    "AsyncRedisBus",
    "AsyncRedisStore",
    "AsyncSQLSource",
    "AsyncTieredStore",
]
