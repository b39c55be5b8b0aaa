"""Benchmark: the shared write-back (dirty set in Redis) against its peers, per write and per flush.

On the local Redis with PostgreSQL as the source, uniform updates over ``--keys`` keys
from 1 and 8 writer threads, ``--seconds`` each, median of ``--repeat`` interleaved
runs: ``Cache.write`` writes/s and p50/p99 for

- ``redis-set``: cache-aside, ``RedisStore.set`` only (the floor: one script per write);
- ``write-through``: a committed PostgreSQL upsert, then the RedisStore;
- ``write-back``: in-process write-back over the RedisStore (dirty set in memory, lost
  on a crash);
- ``write-back-redis``: ``WriteBack(journal="redis")`` (index + value/mark scripts).

Then the flush path: rows/s of one ``flush()`` of ``--flush-rows`` dirty keys in
one batch (upserted 1,000 rows per statement), in-process vs shared.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any

import redis
import sqlalchemy as sa

from bench.writeback import _drive, _drop, _table
from cachewise import Cache, RedisStore, SQLSource, WriteBack, WriteThrough
from cachewise.policies import WritePolicy

NAME = "shared-writeback"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
MODES = ("redis-set", "write-through", "write-back", "write-back-redis")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, default=10_000, help="uniform key space")
    parser.add_argument("--seconds", type=float, default=1.0, help="per configuration run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs (median kept)")
    parser.add_argument("--threads", default="1,8", help="writer thread counts")
    parser.add_argument("--flush-rows", type=int, default=20_000)
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS))


def _policy(mode: str) -> WritePolicy | None:
    if mode == "redis-set":
        return None
    if mode == "write-through":
        return WriteThrough()
    quiet = {"flush_interval": 3600.0, "max_batch": 1000}  # flushes stay out of the timing
    if mode == "write-back":
        return WriteBack(**quiet)  # type: ignore[arg-type]
    return WriteBack(journal="redis", **quiet)  # type: ignore[arg-type]


def _cache(mode: str, engine: sa.Engine, table: str, args: argparse.Namespace, ns: str) -> Cache:
    store = RedisStore(args.redis_url, namespace=ns, ttl=600)
    policy = _policy(mode)
    if policy is None:
        return Cache(store)
    return Cache(store, SQLSource(engine, table=table), write=policy)


def _clean(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{namespace}:*", count=5000):
            client.unlink(key)
    finally:
        client.close()


def _writes(
    engine: sa.Engine, table: str, args: argparse.Namespace, ns: str
) -> list[dict[str, Any]]:
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        rng = random.Random(threads)
        keys = [[rng.randrange(args.keys) for _ in range(100_000)] for _ in range(threads)]
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.repeat):
            for mode in MODES:  # interleaved: the machine's noise falls on every mode
                _table(engine, table)
                _clean(args.redis_url, ns)
                cache = _cache(mode, engine, table, args, ns)
                try:
                    runs[mode].append(_drive(cache, threads, args.seconds, keys))
                finally:
                    cache.close()
        for mode in MODES:
            ordered = sorted(runs[mode], key=lambda r: r["writes_per_s"])
            row = {"threads": threads, "mode": mode, **ordered[len(ordered) // 2],
                   "writes_per_s_runs": [r["writes_per_s"] for r in runs[mode]]}  # fmt: skip
            print(
                f"{threads} thr {mode:17} {row['writes_per_s']:>9,}/s  p50 {row['p50_us']:>8} µs"
                f"  p99 {row['p99_us']:>9} µs  runs {row['writes_per_s_runs']}"
            )
            rows.append(row)
    return rows


def _flush_rate(engine: sa.Engine, table: str, args: argparse.Namespace, ns: str) -> dict[str, int]:
    out: dict[str, int] = {}
    rows = args.flush_rows
    for mode in ("write-back", "write-back-redis"):
        _table(engine, table)
        _clean(args.redis_url, ns)
        journal = "redis" if mode == "write-back-redis" else None
        # One batch of every row (max_batch above the backlog: no background wake-up while
        # loading); SQLSource still upserts it in 1,000-row statements.
        policy = WriteBack(
            flush_interval=3600, max_batch=rows + 1, max_dirty=rows + 1, journal=journal
        )
        store = RedisStore(args.redis_url, namespace=ns, ttl=600)
        cache = Cache(store, SQLSource(engine, table=table), write=policy)
        try:
            cache.write_many({k: {"id": k, "v": 1, "note": "flush"} for k in range(rows)})
            began = time.perf_counter()
            written = cache.flush()
            elapsed = time.perf_counter() - began
        finally:
            cache.close()
        out[mode] = round(written / elapsed)
        print(f"flush {mode:17} {out[mode]:>9,} rows/s ({written} rows)")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = f"cw_bench_swb_{os.getpid()}"
    ns = f"cwbench{os.getpid()}"
    engine = sa.create_engine(args.postgres_url, pool_size=10, max_overflow=10)
    result: dict[str, Any] = {"keys": args.keys, "seconds_per_config": args.seconds,
                              "cpus": os.cpu_count()}  # fmt: skip
    try:
        result["writes"] = _writes(engine, table, args, ns)
        result["flush_rows_per_s"] = _flush_rate(engine, table, args, ns)
    finally:
        _drop(engine, table)
        engine.dispose()
        _clean(args.redis_url, ns)
    by = {(r["threads"], r["mode"]): r for r in result["writes"]}
    ratios = {}
    for threads in sorted({r["threads"] for r in result["writes"]}):
        shared = by[(threads, "write-back-redis")]["writes_per_s"]
        ratios[f"{threads} threads"] = {
            peer: round(shared / by[(threads, peer)]["writes_per_s"], 2)
            for peer in ("redis-set", "write-through", "write-back")
        }
    flush = result["flush_rows_per_s"]
    ratios["flush shared / in-process"] = round(flush["write-back-redis"] / flush["write-back"], 2)
    result["ratios"] = ratios
    print("\nwrite-back-redis writes/s as a multiple of each peer's (same run):")
    for label, ratio in ratios.items():
        print(f"  {label}: {ratio}")
    return result
