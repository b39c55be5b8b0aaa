"""The site's cachewise caches, one per process (built on first use, closed at exit).

Products: read-through (a TieredStore when Redis is configured: L1 in this process,
L2 shared by every worker) over ``ModelSource(Product)``; a write goes to the table
and the cache (write-through). Page views: write-back, so a burst of views is one
UPDATE per page per flush (the workshop's case 6).
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings

from cachewise import (
    Cache,
    MemoryStore,
    ReadThrough,
    RedisStore,
    TieredStore,
    WriteBack,
    WriteThrough,
)
from cachewise.contrib.django import ModelSource

from .models import PageViews, Product

_lock = threading.Lock()
_caches: dict[str, Cache] = {}


def _store(name: str) -> Any:
    if not settings.SHOP_REDIS_URL:
        return MemoryStore(max_entries=10_000)

    namespace = f"{settings.SHOP_NAMESPACE}-{name}"
    return TieredStore(
        MemoryStore(max_entries=10_000), RedisStore(settings.SHOP_REDIS_URL, namespace=namespace)
    )


def products() -> Cache:
    """Products: read-through and write-through over the product table."""
    with _lock:
        if "products" not in _caches:
            _caches["products"] = Cache(
                _store("products"),
                ModelSource(Product, key="sku"),
                read=ReadThrough(ttl=300),
                write=WriteThrough(),
                name="products",
            )
        return _caches["products"]


def page_views() -> Cache:
    """Page views: write-back over the counter table (one UPDATE per page per flush)."""
    with _lock:
        if "views" not in _caches:
            _caches["views"] = Cache(
                MemoryStore(max_entries=10_000),
                ModelSource(PageViews, key="path"),
                read=ReadThrough(),
                write=WriteBack(flush_interval=5.0),
                name="page-views",
            )
        return _caches["views"]


def close_all(*, forget: bool = False) -> None:
    """Flush and close every cache (a worker's shutdown); ``forget`` also empties them (tests)."""
    with _lock:
        for cache in _caches.values():
            if forget:
                cache.flush()
                cache.store.clear()
            cache.close()
        _caches.clear()
