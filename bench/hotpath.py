"""Hot path: Cache.read on a hit against cachetools, functools.lru_cache and a dict.

All candidates run in one process, interleaved round by round, on the same key
streams: a Zipf(0.99) stream over 100k keys with a 10k-entry cache (hits and
misses, each miss loaded from a dict), and an all-hits stream. The figure is
nanoseconds per operation with the bare loop's cost subtracted; the median of the
rounds is reported, and ratios are against ``cachetools.LRUCache.get``.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
from collections.abc import Callable
from typing import Any

from bench._interleave import median_ns

NAME = "hotpath"
KEYS = 100_000
CAPACITY = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=200_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)


def zipf_stream(n: int, keys: int, alpha: float, rng: random.Random) -> list[int]:
    """``n`` keys drawn from Zipf(alpha) over ``keys`` ranks (rank 0 hottest), shuffled ids."""
    weights = [1.0 / (rank + 1) ** alpha for rank in range(keys)]
    ids = list(range(keys))
    rng.shuffle(ids)
    return [ids[r] for r in rng.choices(range(keys), weights=weights, k=n)]


class DictBehindMethod:
    """The floor: a plain dict lookup behind one method call (unbounded, no policy)."""

    def __init__(self, source: dict[int, Any]) -> None:
        self._data: dict[int, Any] = {}
        self._source = source

    def get(self, key: int) -> Any:
        value = self._data.get(key)
        if value is None:
            value = self._data[key] = self._source[key]
        return value


def candidates(source: dict[int, Any], eviction: str) -> dict[str, Callable[[int], Any]]:
    import cachetools

    from cachewise import Cache, MappingSource, MemoryStore, ReadThrough

    def cachetools_get() -> Callable[[int], Any]:
        lru: cachetools.LRUCache[int, Any] = cachetools.LRUCache(maxsize=CAPACITY)
        get = lru.get

        def read(key: int) -> Any:
            value = get(key)
            if value is None:
                value = lru[key] = source[key]
            return value

        return read

    def cachewise_read(pure_python: bool) -> Callable[[int], Any]:
        saved = os.environ.get("CACHEWISE_PURE_PYTHON")
        os.environ["CACHEWISE_PURE_PYTHON"] = "1" if pure_python else "0"
        try:
            cache = Cache(
                MemoryStore(max_entries=CAPACITY, eviction=eviction, ttl=3600),
                MappingSource(source),
                read=ReadThrough(),
            )
        finally:
            if saved is None:
                del os.environ["CACHEWISE_PURE_PYTHON"]
            else:
                os.environ["CACHEWISE_PURE_PYTHON"] = saved
        return cache.read

    lru_cache = functools.lru_cache(maxsize=CAPACITY)(source.__getitem__)
    accelerated = cachewise_read(pure_python=False)
    pure = cachewise_read(pure_python=True)
    # the C reader (cachewise._speedups) when it is built; the pure-Python path beside it
    cachewise = {f"cachewise Cache.read ({eviction})": accelerated}
    if type(accelerated) is not type(pure):
        cachewise[f"cachewise Cache.read ({eviction}, pure Python)"] = pure
    return {
        **cachewise,
        "cachetools LRUCache.get": cachetools_get(),
        "functools.lru_cache": lru_cache,
        "dict behind a method": DictBehindMethod(source).get,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cachewise.stores.eviction import DEFAULT_POLICY

    rng = random.Random(args.seed)
    source = {k: {"id": k, "name": f"item {k}"} for k in range(KEYS)}
    streams = {
        "zipf0.99": zipf_stream(args.ops, KEYS, 0.99, rng),
        "all-hits": [rng.randrange(CAPACITY // 2) for _ in range(args.ops)],
    }
    policies = sorted({DEFAULT_POLICY, "lru"})
    results: dict[str, Any] = {}
    for stream_name, keys in streams.items():
        fns: dict[str, Callable[[int], Any]] = {}
        for policy in policies:
            fns.update(candidates(source, policy))
        for fn in fns.values():  # warm every cache so "all-hits" is all hits
            for key in keys[: CAPACITY * 2]:
                fn(key)
        medians = median_ns(fns, keys, args.rounds)
        peer = medians["cachetools LRUCache.get"]
        results[stream_name] = {
            name: {"ns_per_op": round(ns, 1), "vs_cachetools": round(ns / peer, 3)}
            for name, ns in medians.items()
        }
    _print(results)
    return {
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "capacity": CAPACITY,
        "keys": KEYS,
        "streams": results,
    }


def _print(results: dict[str, Any]) -> None:
    for stream, rows in results.items():
        print(f"\n{stream}: ns/op (loop subtracted), median of rounds")
        for name, row in sorted(rows.items(), key=lambda kv: kv[1]["ns_per_op"]):
            print(f"  {name:46s} {row['ns_per_op']:8.1f} ns   {row['vs_cachetools']:5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    run(parser.parse_args())
