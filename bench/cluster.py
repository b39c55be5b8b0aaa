"""Redis Cluster against one Redis: get_many of 100 keys, and the shared write-back.

The cluster is 3 primaries + 3 replicas started for the run on this machine
(``tests/redis_cluster.py``), or ``--cluster-url``; the peer is the one Redis at
``--redis-url``. Every figure is a ratio against that peer measured in the same run,
candidates interleaved round by round:

- ``get_many`` of 100 keys holding a typical SQL row: on one Redis one ``MGET``; on the
  cluster one ``MGET`` per slot, sent as one pipeline per node. Median µs per call.
- The shared write-back (``WriteBack(journal="redis")``, PostgreSQL as the source):
  ``Cache.write`` writes/s from ``--threads`` threads over ``--keys`` uniform keys, and
  rows/s of one ``flush()`` of ``--flush-rows`` dirty keys; on the cluster also with
  ``wait_replicas=1`` (every write acknowledged only once a replica has it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.redis import ROW
from bench.writeback import _drive, _drop, _table
from cachewise import Cache, RedisStore, SQLSource, WriteBack

NAME = "cluster"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--cluster-url", help="a node of your cluster (default: start one)")
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--ops", type=int, default=200, help="get_many calls per round")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flush-rows", type=int, default=5_000)


def _per_call(fn: Callable[[], Any], ops: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(ops):
        fn()
    return (time.perf_counter_ns() - start) / ops / 1000.0


def _get_many(stores: dict[str, RedisStore], args: argparse.Namespace) -> dict[str, float]:
    keys = [f"row:{i}" for i in range(100)]
    for store in stores.values():
        store.set_many(dict.fromkeys(keys, ROW))
    calls = {name: (lambda s=store: s.get_many(keys)) for name, store in stores.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        _per_call(fn, 20)  # warm-up: connections to every node open
    for _ in range(args.rounds):
        for name, fn in calls.items():
            samples[name].append(_per_call(fn, args.ops))
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


def _write_back(
    urls: dict[str, tuple[str, dict[str, Any]]], engine: sa.Engine, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    rng = random.Random(7)
    keys = [[rng.randrange(args.keys) for _ in range(50_000)] for _ in range(args.threads)]
    runs: dict[str, list[float]] = {name: [] for name in urls}
    flush: dict[str, list[float]] = {name: [] for name in urls}
    table = f"cw_bench_cluster_{os.getpid()}"
    try:
        for _ in range(args.repeat):
            for name, (url, options) in urls.items():  # interleaved
                _table(engine, table)
                ns = f"cwbench{uuid.uuid4().hex[:8]}"
                store = RedisStore(url, namespace=ns, ttl=600, **options)
                policy = WriteBack(
                    journal="redis",
                    flush_interval=3600,
                    max_batch=args.flush_rows + 1,
                    max_dirty=args.keys + args.flush_rows + 1,
                )
                cache = Cache(store, SQLSource(engine, table=table), write=policy)
                try:
                    runs[name].append(
                        _drive(cache, args.threads, args.seconds, keys)["writes_per_s"]
                    )
                    cache.flush()
                    cache.write_many(
                        {k: {"id": k, "v": 1, "note": "flush"} for k in range(args.flush_rows)}
                    )
                    began = time.perf_counter()
                    written = cache.flush()
                    flush[name].append(written / (time.perf_counter() - began))
                finally:
                    store.clear()
                    cache.close()
    finally:
        _drop(engine, table)
    return {
        name: {
            "writes_per_s": round(statistics.median(runs[name])),
            "flush_rows_per_s": round(statistics.median(flush[name])),
        }
        for name in urls
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = None
    cluster_url = args.cluster_url
    if cluster_url is None:
        from tests.redis_cluster import RedisClusterServers

        servers = RedisClusterServers()
        servers.start()
        cluster_url = servers.url
    engine = sa.create_engine(args.postgres_url, pool_size=args.threads + 2, max_overflow=4)
    stores = {
        "one-redis": RedisStore(args.redis_url, namespace=f"cwbench{uuid.uuid4().hex[:8]}"),
        "cluster": RedisStore(
            cluster_url, namespace=f"cwbench{uuid.uuid4().hex[:8]}", cluster=True
        ),
    }
    try:
        get_many = _get_many(stores, args)
        ratio = round(get_many["cluster"] / get_many["one-redis"], 2)
        print(
            f"get_many(100): one Redis {get_many['one-redis']} µs, "
            f"cluster {get_many['cluster']} µs ({ratio}×; target ≤ 2×)"
        )
        urls: dict[str, tuple[str, dict[str, Any]]] = {
            "one-redis": (args.redis_url, {}),
            "cluster": (cluster_url, {"cluster": True}),
            "cluster-wait1": (cluster_url, {"cluster": True, "wait_replicas": 1}),
        }
        shared = _write_back(urls, engine, args)
        for name, figures in shared.items():
            print(
                f"shared write-back {name:14} {figures['writes_per_s']:>8,} writes/s "
                f"({args.threads} threads)  flush {figures['flush_rows_per_s']:>8,} rows/s"
            )
    finally:
        for store in stores.values():
            store.clear()
            store.close()
        engine.dispose()
        if servers is not None:
            servers.close()
    return {
        "get_many_100_us": get_many,
        "get_many_ratio": ratio,
        "shared_write_back": shared,
        "threads": args.threads,
        "keys": args.keys,
        "flush_rows": args.flush_rows,
        "cpus": os.cpu_count(),
    }
