"""Copying: MemoryStore(copy=True) against the default store and cachetools plus deepcopy.

All candidates run in one process, interleaved round by round, on the same all-hits
key stream over rows shaped like a SQL row (a dict of eight columns). Reads: the
default store (references), ``copy=True`` (a deep copy out), and the peers
``cachetools.LRUCache.get`` bare and followed by ``copy.deepcopy`` (the idiom a user
writes by hand). Writes: ``set`` on the default store and on ``copy=True``. The figure
is nanoseconds per operation, the bare loop subtracted, median of the rounds; ratios
are against ``cachetools.LRUCache.get``.
"""

from __future__ import annotations

import argparse
import copy
import random
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from bench._interleave import median_ns

NAME = "copying"
CAPACITY = 10_000
HOT = 5_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=100_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)


def _row(key: int) -> dict[str, Any]:
    return {
        "id": key,
        "name": f"item {key}",
        "price": Decimal("3.50"),
        "stock": key % 17,
        "tags": ["tea", "green"],
        "updated": datetime(2026, 12, 4, tzinfo=timezone.utc),
        "active": True,
        "note": None,
    }


def candidates(rows: dict[int, dict[str, Any]]) -> dict[str, Callable[[int], Any]]:
    import cachetools

    from cachewise import Cache, MappingSource, MemoryStore, ReadThrough

    def filled(store: MemoryStore) -> MemoryStore:
        for key, row in rows.items():
            store.set(key, row)
        return store

    plain = filled(MemoryStore(max_entries=CAPACITY, ttl=3600))
    copying = filled(MemoryStore(max_entries=CAPACITY, ttl=3600, copy=True))
    lru: cachetools.LRUCache[int, Any] = cachetools.LRUCache(maxsize=CAPACITY)
    lru.update(rows)
    lru_get = lru.get

    def lru_deepcopy(key: int) -> Any:
        return copy.deepcopy(lru_get(key))

    def cache(store: MemoryStore) -> Callable[[int], Any]:
        c = Cache(store, MappingSource(dict(rows)), read=ReadThrough())
        return c.read

    row = rows[0]
    plain_set, copying_set = plain.set, copying.set
    return {
        "read: MemoryStore.get": plain.get,
        "read: MemoryStore(copy=True).get": copying.get,
        "read: Cache.read, MemoryStore": cache(plain),
        "read: Cache.read, MemoryStore(copy=True)": cache(copying),
        "read: cachetools LRUCache.get": lru_get,
        "read: cachetools LRUCache.get + deepcopy": lru_deepcopy,
        "write: MemoryStore.set": lambda key: plain_set(key, row),
        "write: MemoryStore(copy=True).set": lambda key: copying_set(key, row),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    rows = {k: _row(k) for k in range(HOT)}
    keys = [rng.randrange(HOT) for _ in range(args.ops)]
    medians = median_ns(candidates(rows), keys, args.rounds)
    peer = medians["read: cachetools LRUCache.get"]
    results = {
        name: {"ns_per_op": round(ns, 1), "vs_cachetools": round(ns / peer, 3)}
        for name, ns in medians.items()
    }
    for name, row in results.items():
        print(f"  {name:44s} {row['ns_per_op']:9.1f} ns   {row['vs_cachetools']:6.2f}x")
    return {"ops_per_round": args.ops, "rounds": args.rounds, "hot_keys": HOT, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    run(parser.parse_args())
