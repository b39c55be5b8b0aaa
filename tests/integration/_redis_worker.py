"""A separate process for the multi-process Redis tests (run as ``python -m``).

Modes (argv[1]):

``stampede URL NS THREADS ROUNDS``
    A read-through Cache over RedisStore(ttl=1). For each round: say ready
    (``INCR NS:ready``), wait for ``NS:go:<round>``, miss the key ``"hot"`` from THREADS
    threads at once. The source counts each load with ``INCR NS:loads`` and is slow,
    so a stampede would show as a count above the number of rounds.

``reader URL NS``
    A TieredStore. Reads ``"k"`` (filling L1), says ready, then reads in a loop; when it
    first sees the value change it records the lag since ``NS:t0`` (the writer's
    clock) in ``NS:lags``, then reads 200 more times and records in ``NS:stale`` any
    read that returned the old value again.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import redis

from cachewise import Cache, MemoryStore, RedisStore, TieredStore
from cachewise._types import MISSING, Key
from cachewise.sources import MappingSource


class SlowCountingSource(MappingSource):
    def __init__(self, raw: redis.Redis, namespace: str) -> None:
        super().__init__({"hot": {"value": 42}})
        self.raw = raw
        self.namespace = namespace

    def load(self, key: Key) -> Any:
        self.raw.incr(f"{self.namespace}:loads")
        time.sleep(0.3)
        return super().load(key)


def wait_for(raw: redis.Redis, key: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not raw.exists(key):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {key}")
        time.sleep(0.005)


def stampede(url: str, namespace: str, threads: int, rounds: int) -> None:
    raw = redis.Redis.from_url(url)
    store = RedisStore(url, namespace=namespace, ttl=1.0, lease_ttl=5.0)
    cache = Cache(store, source=SlowCountingSource(raw, namespace))
    try:
        for round_ in range(rounds):
            results: list[Any] = []
            go = threading.Event()

            def read(go: threading.Event, results: list[Any]) -> None:
                go.wait(60)
                results.append(cache.read("hot"))

            workers = [threading.Thread(target=read, args=(go, results)) for _ in range(threads)]
            for t in workers:
                t.start()
            raw.incr(f"{namespace}:ready")
            wait_for(raw, f"{namespace}:go:{round_}")
            go.set()
            for t in workers:
                t.join(30)
            if results != [{"value": 42}] * threads:
                raise SystemExit(f"bad results {results!r}")
            raw.incr(f"{namespace}:done")
    finally:
        cache.close()
        raw.close()


def reader(url: str, namespace: str) -> None:
    raw = redis.Redis.from_url(url)
    store = TieredStore(MemoryStore(), RedisStore(url, namespace=namespace))
    try:
        old = store.get("k")
        if old is MISSING or store.l1.get("k") != old:
            raise SystemExit("L1 was not filled")
        raw.incr(f"{namespace}:ready")
        while True:
            value = store.get("k")
            if value != old:
                seen = time.time()
                break
        t0 = float(raw.get(f"{namespace}:t0") or 0.0)
        raw.rpush(f"{namespace}:lags", repr(seen - t0))
        stale = sum(store.get("k") == old for _ in range(200))
        raw.rpush(f"{namespace}:stale", str(stale))
    finally:
        store.close()
        raw.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "stampede":
        stampede(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "reader":
        reader(args[0], args[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
