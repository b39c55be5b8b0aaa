"""Redis: RedisStore vs raw redis-py, get_many vs single gets, TieredStore vs MemoryStore, lag.

All against one Redis (``--url``, default the local server), in one process, candidates
interleaved round by round; the median round is reported.

- ``RedisStore.get/set`` of a typical SQL row (codec + key encoding + for set the
  version bump script) against raw redis-py ``GET``/``SET`` of the same bytes.
- ``get_many`` of 100 keys (one ``MGET``) against 100 ``RedisStore.get`` calls.
- ``TieredStore.get`` of a hot key (an L1 hit) against ``MemoryStore.get``.
- Write-through over Redis: ``Cache.write`` (the bracketed write: drop and hold, the
  source, then store, two scripts) against what it replaced, ``source.save`` then
  ``RedisStore.set`` (one script, but a crash between them left the old value cached).
  The source is an in-memory ``MappingSource``, so the figures are the Redis cost.
- Invalidation lag: one TieredStore writes, another (its own Redis connections and
  listener thread) drops its L1 copy; measured from the moment ``set`` returned to
  the moment the other store's L1 no longer holds the key, p50/p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

NAME = "redis"

ROW: dict[str, Any] = {
    "id": 123456,
    "sku": "SKU-0001-XL",
    "name": "Organic green tea, 250 g",
    "price": Decimal("12.90"),
    "stock": 42,
    "active": True,
    "updated_at": dt.datetime(2026, 11, 21, 12, 30, 5, 123456, tzinfo=dt.timezone.utc),
    "tags": ["tea", "organic"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=500, help="operations per round")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--lag-samples", type=int, default=300)


def _per_op(fn: Callable[[], Any], ops: int) -> tuple[float, float]:
    """Wall-clock and this process's CPU nanoseconds per call."""
    cpu = time.process_time_ns()
    start = time.perf_counter_ns()
    for _ in range(ops):
        fn()
    wall = (time.perf_counter_ns() - start) / ops
    return wall, (time.process_time_ns() - cpu) / ops


BEST: dict[str, float] = {}
"""The fastest round of each candidate (less sensitive to a noisy neighbour than the median)."""
CPU: dict[str, float] = {}
"""Median client CPU per call: what the library itself costs, whatever Redis and the
neighbours do with the wall clock."""


def _rounds(cands: dict[str, Callable[[], Any]], ops: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cands}
    cpu: dict[str, list[float]] = {name: [] for name in cands}
    for fn in cands.values():  # warm-up: scripts loaded, connections open
        _per_op(fn, max(10, ops // 20))
    for _ in range(rounds):
        for name, fn in cands.items():
            wall, used = _per_op(fn, ops)
            samples[name].append(wall)
            cpu[name].append(used)
    BEST.update({name: min(values) for name, values in samples.items()})
    CPU.update({name: statistics.median(values) for name, values in cpu.items()})
    return {name: statistics.median(values) for name, values in samples.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from cachewise import MemoryStore, RedisStore, TieredStore
    from cachewise.codecs import default_codec
    from cachewise.stores._redis_scripts import SET

    namespace = f"cwbench_{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(args.url)
    store = RedisStore(args.url, namespace=namespace)
    payload = default_codec().encode(ROW)
    raw_key = f"{namespace}:raw".encode()
    results: dict[str, Any] = {
        "value_bytes": len(payload),
        "ops": args.ops,
        "rounds": args.rounds,
        "load_average_1min": os.getloadavg()[0],  # a shared machine: say how busy it was
        "cpus": os.cpu_count(),
    }
    try:
        raw.set(raw_key, payload)
        store.set(("product", 123456), ROW)
        script = raw.register_script(SET)
        version_key = f"{namespace}:rawversion".encode()
        stamp = store.stamp()
        script(keys=[raw_key, version_key], args=[payload, 0, 1000, stamp])
        single = _rounds(
            {
                "raw GET": lambda: raw.get(raw_key),
                "RedisStore.get": lambda: store.get(("product", 123456)),
                "raw SET": lambda: raw.set(raw_key, payload),
                "raw EVALSHA": lambda: raw.evalsha(
                    script.sha, 2, raw_key, version_key, payload, 0, 1000, stamp
                ),
                "RedisStore.set": lambda: store.set(("product", 123456), ROW),
            },
            args.ops,
            args.rounds,
        )
        results["get"] = {
            "raw_ns": single["raw GET"],
            "store_ns": single["RedisStore.get"],
            "ratio": single["RedisStore.get"] / single["raw GET"],
            "best_round_ratio": BEST["RedisStore.get"] / BEST["raw GET"],
            "raw_cpu_ns": CPU["raw GET"],
            "store_cpu_ns": CPU["RedisStore.get"],
            "cpu_ratio": CPU["RedisStore.get"] / CPU["raw GET"],
        }
        results["set"] = {
            "raw_ns": single["raw SET"],
            "raw_script_ns": single["raw EVALSHA"],
            "store_ns": single["RedisStore.set"],
            "ratio": single["RedisStore.set"] / single["raw SET"],
            "ratio_vs_raw_script": single["RedisStore.set"] / single["raw EVALSHA"],
            "best_round_ratio": BEST["RedisStore.set"] / BEST["raw SET"],
            "raw_cpu_ns": CPU["raw SET"],
            "store_cpu_ns": CPU["RedisStore.set"],
            "cpu_ratio": CPU["RedisStore.set"] / CPU["raw SET"],
        }

        keys = [("product", i) for i in range(100)]
        store.set_many(dict.fromkeys(keys, ROW))
        batch = _rounds(
            {
                "get_many(100)": lambda: store.get_many(keys),
                "100 x get": lambda: [store.get(k) for k in keys],
            },
            max(20, args.ops // 100),
            args.rounds,
        )
        results["get_many_100"] = {
            "get_many_ns": batch["get_many(100)"],
            "singles_ns": batch["100 x get"],
            "speedup": batch["100 x get"] / batch["get_many(100)"],
        }

        results["write_through"] = _write_through(args, namespace + "w")
        results["tiered_hot"] = _tiered_hot(args, namespace, MemoryStore, RedisStore, TieredStore)
        results["invalidation_lag"] = _lag(args, namespace, MemoryStore, RedisStore, TieredStore)
        results["invalidation_lag_other_process"] = _cross_process_lag(args, namespace + "x")
    finally:
        for wire in raw.scan_iter(match=namespace + "*", count=1000):
            raw.unlink(wire)
        store.close()
        raw.close()
    _print(results)
    return results


def _write_through(args: argparse.Namespace, namespace: str) -> dict[str, float]:
    from cachewise import Cache, MappingSource, RedisStore, WriteThrough

    source = MappingSource()
    store = RedisStore(args.url, namespace=namespace)
    cache = Cache(store, source, write=WriteThrough())
    key = ("product", 1)

    def save_then_set() -> None:
        source.save(key, ROW)
        store.set(key, ROW)

    try:
        timed = _rounds(
            {
                "Cache.write (bracketed)": lambda: cache.write(key, ROW),
                "save + RedisStore.set": save_then_set,
            },
            args.ops,
            args.rounds,
        )
    finally:
        cache.close()
    bracketed, unguarded = timed["Cache.write (bracketed)"], timed["save + RedisStore.set"]
    return {
        "bracketed_ns": bracketed,
        "unguarded_ns": unguarded,
        "ratio": bracketed / unguarded,
        "best_round_ratio": BEST["Cache.write (bracketed)"] / BEST["save + RedisStore.set"],
        "bracketed_cpu_ns": CPU["Cache.write (bracketed)"],
        "unguarded_cpu_ns": CPU["save + RedisStore.set"],
    }


def _tiered_hot(
    args: argparse.Namespace, namespace: str, memory: Any, redis_store: Any, tiered: Any
) -> dict[str, float]:
    from cachewise import Cache

    ops = args.ops * 100
    plain = memory()
    plain.set(("product", 1), ROW)
    store = tiered(memory(), redis_store(args.url, namespace=namespace))
    memory_cache, tiered_cache = Cache(plain), Cache(store)
    try:
        store.set(("product", 1), ROW)
        plain_get, tiered_get, key = plain.get, store.get, ("product", 1)
        memory_read, tiered_read = memory_cache.read, tiered_cache.read
        hot = _rounds(
            {
                "MemoryStore.get": lambda: plain_get(key),
                "TieredStore.get": lambda: tiered_get(key),
                "Cache(MemoryStore).read": lambda: memory_read(key),
                "Cache(TieredStore).read": lambda: tiered_read(key),
            },
            ops,
            args.rounds,
        )
        loop = _rounds({"loop": lambda: None}, ops, args.rounds)["loop"]
    finally:
        memory_cache.close()
        tiered_cache.close()
    best_loop = BEST["loop"]
    best_ratio = (BEST["TieredStore.get"] - best_loop) / (BEST["MemoryStore.get"] - best_loop)
    memory_ns = hot["MemoryStore.get"] - loop
    tiered_ns = hot["TieredStore.get"] - loop
    cache_memory_ns = hot["Cache(MemoryStore).read"] - loop
    cache_tiered_ns = hot["Cache(TieredStore).read"] - loop
    return {
        "memory_ns": memory_ns,
        "tiered_ns": tiered_ns,
        "ratio": tiered_ns / memory_ns,
        "best_round_ratio": best_ratio,
        "cache_memory_ns": cache_memory_ns,
        "cache_tiered_ns": cache_tiered_ns,
        "cache_ratio": cache_tiered_ns / cache_memory_ns,
    }


def _lag(
    args: argparse.Namespace, namespace: str, memory: Any, redis_store: Any, tiered: Any
) -> dict[str, float]:
    writer = tiered(memory(), redis_store(args.url, namespace=namespace))
    reader = tiered(memory(), redis_store(args.url, namespace=namespace))
    dropped = threading.Event()
    marks: list[float] = []

    def mark(message: Any) -> None:  # runs after the reader's own subscriber dropped L1
        if message.keys is not None and "lag" in message.keys:
            marks.append(time.perf_counter())
            dropped.set()

    reader.bus.subscribe(mark)
    lags: list[float] = []
    from_start: list[float] = []
    try:
        for i in range(args.lag_samples):
            writer.set("lag", i)
            deadline = time.monotonic() + 5
            while reader.get("lag") != i or reader.l1.get("lag") != i:  # warm reader's L1
                if time.monotonic() > deadline:
                    raise RuntimeError("reader never filled its L1")
            dropped.clear()
            marks.clear()
            started = time.perf_counter()
            writer.set("lag", -i)
            returned = time.perf_counter()
            if not dropped.wait(5):
                raise RuntimeError("invalidation never arrived")
            lags.append(max(0.0, marks[0] - returned))
            from_start.append(marks[0] - started)
    finally:
        writer.close()
        reader.close()
    lags.sort()
    from_start.sort()
    return {
        "samples": len(lags),
        "p50_ms": 1000 * _pct(lags, 0.50),
        "p99_ms": 1000 * _pct(lags, 0.99),
        "max_ms": 1000 * lags[-1],
        "from_write_start_p50_ms": 1000 * _pct(from_start, 0.50),
        "from_write_start_p99_ms": 1000 * _pct(from_start, 0.99),
    }


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


_READER = """
import sys, time
import redis
from cachewise import MemoryStore, RedisStore, TieredStore
url, namespace, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = redis.Redis.from_url(url)
store = TieredStore(MemoryStore(), RedisStore(url, namespace=namespace))
seen = []
def mark(message):  # runs after the store's own subscriber dropped its L1 copies
    if message.keys:
        seen.append(time.time())
        raw.rpush(namespace + ':marks', repr(seen[-1]))
store.bus.subscribe(mark)
raw.set(namespace + ':ready', 1)
deadline = time.monotonic() + 120
while len(seen) < n and time.monotonic() < deadline:
    time.sleep(0.01)
store.close()
raw.close()
"""


def _cross_process_lag(args: argparse.Namespace, namespace: str) -> dict[str, float]:
    """The lag to a TieredStore in another process: time.time() on both sides."""
    import subprocess
    import sys

    import redis

    from cachewise import MemoryStore, RedisStore, TieredStore

    n = max(20, args.lag_samples // 3)
    raw = redis.Redis.from_url(args.url)
    writer = TieredStore(MemoryStore(), RedisStore(args.url, namespace=namespace))
    reader = subprocess.Popen([sys.executable, "-c", _READER, args.url, namespace, str(n)])
    lags: list[float] = []
    from_start: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not raw.exists(f"{namespace}:ready"):
            if time.monotonic() > deadline or reader.poll() is not None:
                raise RuntimeError("reader process did not start")
            time.sleep(0.01)
        for i in range(n):
            started = time.time()
            writer.set(("lag", i), i)
            returned = time.time()
            popped = raw.blpop([f"{namespace}:marks"], timeout=10)
            if popped is None:
                raise RuntimeError("the reader process never got the invalidation")
            lags.append(max(0.0, float(popped[1]) - returned))
            from_start.append(float(popped[1]) - started)
        reader.wait(30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        writer.close()
        raw.close()
    lags.sort()
    from_start.sort()
    return {
        "samples": len(lags),
        "p50_ms": 1000 * _pct(lags, 0.5),
        "p99_ms": 1000 * _pct(lags, 0.99),
        "from_write_start_p50_ms": 1000 * _pct(from_start, 0.5),
        "from_write_start_p99_ms": 1000 * _pct(from_start, 0.99),
    }


def _print(results: dict[str, Any]) -> None:
    get, set_ = results["get"], results["set"]
    print(
        f"value: a {results['value_bytes']}-byte row; median of {results['rounds']} rounds; "
        f"load average {results['load_average_1min']:.1f} on {results['cpus']} CPUs"
    )
    print(f"  raw GET            {get['raw_ns'] / 1000:8.1f} us")
    print(
        f"  RedisStore.get     {get['store_ns'] / 1000:8.1f} us   {get['ratio']:5.2f}x raw "
        f"(best rounds: {get['best_round_ratio']:.2f}x; client CPU "
        f"{get['raw_cpu_ns'] / 1000:.1f} -> {get['store_cpu_ns'] / 1000:.1f} us, "
        f"{get['cpu_ratio']:.2f}x)"
    )
    print(f"  raw SET            {set_['raw_ns'] / 1000:8.1f} us")
    print(f"  raw EVALSHA (same script) {set_['raw_script_ns'] / 1000:8.1f} us")
    print(
        f"  RedisStore.set     {set_['store_ns'] / 1000:8.1f} us   {set_['ratio']:5.2f}x raw SET "
        f"(best rounds: {set_['best_round_ratio']:.2f}x; client CPU "
        f"{set_['raw_cpu_ns'] / 1000:.1f} -> {set_['store_cpu_ns'] / 1000:.1f} us, "
        f"{set_['cpu_ratio']:.2f}x)"
    )
    many = results["get_many_100"]
    print(f"  get_many(100)      {many['get_many_ns'] / 1000:8.1f} us")
    print(
        f"  100 x get          {many['singles_ns'] / 1000:8.1f} us   {many['speedup']:5.1f}x slower"
    )
    wt = results["write_through"]
    print(f"  save + set         {wt['unguarded_ns'] / 1000:8.1f} us")
    print(
        f"  Cache.write (WT)   {wt['bracketed_ns'] / 1000:8.1f} us   {wt['ratio']:5.2f}x "
        f"(best rounds: {wt['best_round_ratio']:.2f}x; client CPU "
        f"{wt['unguarded_cpu_ns'] / 1000:.1f} -> {wt['bracketed_cpu_ns'] / 1000:.1f} us)"
    )
    hot = results["tiered_hot"]
    print(f"  MemoryStore.get    {hot['memory_ns']:8.1f} ns")
    print(
        f"  TieredStore.get    {hot['tiered_ns']:8.1f} ns   {hot['ratio']:5.2f}x memory "
        f"(best rounds: {hot['best_round_ratio']:.2f}x)"
    )
    print(f"  Cache(Memory).read {hot['cache_memory_ns']:8.1f} ns")
    print(
        f"  Cache(Tiered).read {hot['cache_tiered_ns']:8.1f} ns   {hot['cache_ratio']:5.2f}x memory"
    )
    lag = results["invalidation_lag"]
    print(
        f"  invalidation lag after set() returned: p50 {lag['p50_ms']:.3f} ms, "
        f"p99 {lag['p99_ms']:.3f} ms (max {lag['max_ms']:.3f} ms, {lag['samples']} samples)"
    )
    print(
        f"  invalidation lag from set() start:     p50 {lag['from_write_start_p50_ms']:.3f} ms, "
        f"p99 {lag['from_write_start_p99_ms']:.3f} ms"
    )
    other = results["invalidation_lag_other_process"]
    print(
        f"  ... to another process, after set():   p50 {other['p50_ms']:.3f} ms, "
        f"p99 {other['p99_ms']:.3f} ms; from set() start: p50 "
        f"{other['from_write_start_p50_ms']:.3f} ms, p99 {other['from_write_start_p99_ms']:.3f} ms "
        f"({other['samples']} samples)"
    )
