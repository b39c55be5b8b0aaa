"""The lab's stores: the real MemoryStore or RedisStore, counting what the cache does to them.

A case shares one store between several tables' caches, so closing one cache must not
close the store: the runner closes it with ``shutdown()`` when the run is over.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from cachewise._types import Key
from cachewise.stats import Counter
from cachewise.stores.memory import MemoryStore


class LabMemoryStore(MemoryStore):
    """A MemoryStore that counts sets and deletes (cache operations) and outlives its caches."""

    def __init__(self, max_entries: int, eviction: str) -> None:
        super().__init__(max_entries=max_entries, eviction=eviction)
        self.ops = Counter()

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        self.ops.add()
        super().set(key, value, ttl)

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        self.ops.add_many(len(items))
        super().set_many(items, ttl)

    def delete(self, key: Key) -> bool:
        self.ops.add()
        return super().delete(key)

    def delete_many(self, keys: Iterable[Key]) -> int:
        wanted = list(keys)
        self.ops.add_many(len(wanted))
        return super().delete_many(wanted)

    def close(self) -> None:
        """Caches close their store; the lab's store is closed by ``shutdown()``."""

    def shutdown(self) -> None:
        """Really close the store."""
        super().close()


class _CountingRemote:
    """Counts sets and deletes of a shared store (Redis, memcached) and outlives its caches.

    Mixed in before the store's class; ``shutdown()`` drops this run's keys, then closes.
    """

    ops: Counter

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        self.ops.add()
        super().set(key, value, ttl)  # type: ignore[misc]

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        self.ops.add_many(len(items))
        super().set_many(items, ttl)  # type: ignore[misc]

    def delete(self, key: Key) -> bool:
        self.ops.add()
        return bool(super().delete(key))  # type: ignore[misc]

    def delete_many(self, keys: Iterable[Key]) -> int:
        wanted = list(keys)
        self.ops.add_many(len(wanted))
        return int(super().delete_many(wanted))  # type: ignore[misc]

    def close(self) -> None:
        """Closed by ``shutdown()``."""

    def shutdown(self) -> None:
        """Drop this run's keys, then close the connection."""
        try:
            super().clear()  # type: ignore[misc]
        finally:
            super().close()  # type: ignore[misc]


def _remote_store(module: str, name: str, url: str, namespace: str, **options: Any) -> Any:
    base: type[Any] = getattr(importlib.import_module(module), name)
    counting = type(f"Lab{name}", (_CountingRemote, base), {})
    store = counting(url, namespace=namespace, **options)
    store.ops = Counter()
    return store


def redis_store(url: str, namespace: str) -> Any:
    """A counting RedisStore in ``namespace`` (ImportError if RedisStore is not there).

    A URL of a Redis Cluster node (``cluster_enabled:1``) gives a store on the cluster.
    """
    from cachewise.stores._redis_cluster import cluster_enabled  # noqa: PLC0415 - optional

    cluster = cluster_enabled(url)
    return _remote_store("cachewise.stores.redis", "RedisStore", url, namespace, cluster=cluster)


def memcached_store(url: str, namespace: str) -> Any:
    """A counting MemcachedStore in ``namespace`` (ImportError without pymemcache)."""
    return _remote_store("cachewise.stores.memcached", "MemcachedStore", url, namespace)
