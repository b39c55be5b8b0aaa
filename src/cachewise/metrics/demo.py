"""``python -m cachewise.metrics.demo``: a workload with its metrics served on /metrics.

Try the Prometheus metrics and the Grafana dashboard (docs/grafana-dashboard.json)
without docker: a read-through, write-back cache on a SQLite file (and, with
``--redis URL``, a second cache on a TieredStore whose invalidations cross the bus)
runs a skewed read/write mix, while prometheus_client's HTTP server serves its
metrics on 127.0.0.1. Point a Prometheus at it, or ``curl localhost:9464/metrics``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server

from cachewise import Cache, MemoryStore, SQLSource, WriteBack, connect
from cachewise.metrics.prometheus import PrometheusCollector

ROWS = 2_000


def build(directory: Path, redis_url: str | None) -> tuple[list[Cache], sa.Engine]:
    """The demo's caches on a fresh SQLite table of ``ROWS`` products."""
    engine = connect(f"sqlite:///{directory / 'demo.db'}", pool_size=4)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (id INTEGER PRIMARY KEY, price INTEGER)"))
        conn.execute(
            sa.text("INSERT INTO products VALUES (:id, :price)"),
            [{"id": i, "price": i % 100} for i in range(ROWS)],
        )
    source = SQLSource(engine, table="products", key="id")
    caches = [
        Cache(
            MemoryStore(max_entries=ROWS // 4),
            source,
            write=WriteBack(flush_interval=0.5),
            name="products",
        )
    ]
    if redis_url is not None:
        from cachewise import RedisStore, TieredStore  # noqa: PLC0415 - redis-py is optional

        namespace = f"cw-demo-{random.randrange(1 << 30):x}"
        for name in ("tiered-a", "tiered-b"):
            l2 = RedisStore(redis_url, namespace=namespace, ttl=300)  # leaves nothing behind
            store = TieredStore(MemoryStore(), l2)
            caches.append(Cache(store, name=name))
    return caches, engine


def step(caches: list[Cache], rng: random.Random) -> None:
    """One operation: mostly reads of hot keys, some writes (and, tiered, a shared key)."""
    main = caches[0]
    key = min(int(rng.paretovariate(1.2)) - 1, ROWS - 1)
    if rng.random() < 0.9:
        main.read(key)
    else:
        main.write(key, {"id": key, "price": rng.randrange(100)})
    if len(caches) > 1:
        writer, reader = rng.sample(caches[1:], 2)
        writer.write(key % 50, rng.random())
        reader.read(key % 50)


def main(argv: list[str] | None = None) -> int:
    """Serve /metrics and run the workload until Ctrl-C or ``--seconds``."""
    parser = argparse.ArgumentParser(prog="python -m cachewise.metrics.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=9464, help="HTTP port (0: any free one)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after (0: never)")
    parser.add_argument("--redis", metavar="URL", help="add two tiered caches on this Redis")
    parser.add_argument("--rate", type=float, default=2000.0, help="operations per second")
    args = parser.parse_args(argv)
    registry = CollectorRegistry()
    with tempfile.TemporaryDirectory() as directory:
        caches, engine = build(Path(directory), args.redis)
        PrometheusCollector(*caches, engines={"products": engine}, registry=registry)
        server, _thread = start_http_server(args.port, addr="127.0.0.1", registry=registry)
        print(f"serving http://127.0.0.1:{server.server_port}/metrics", flush=True)
        rng = random.Random(7)
        started = time.monotonic()
        try:
            while not args.seconds or time.monotonic() - started < args.seconds:
                step(caches, rng)
                time.sleep(1.0 / args.rate)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            for cache in caches:
                cache.close()
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
