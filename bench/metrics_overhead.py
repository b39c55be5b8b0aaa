"""Metrics overhead: Cache.read on a hit with and without a collector and OTel instruments.

``PrometheusCollector`` and ``instrument()`` read stats when scraped and add nothing to
the hit path; this measures that claim. One cache per hit path (the C accelerator and
pure Python) and cachetools.LRUCache.get as the peer, timed over an all-hits stream in
rounds that alternate: without exporters, then with a PrometheusCollector registered
and OTel instruments on (scraped and collected after the round), and so on. The same
objects both ways, so only the exporters differ; medians of the rounds.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
from collections.abc import Callable
from typing import Any

from bench._interleave import median_ns

NAME = "metrics"
KEYS = 5_000
CAPACITY = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=200_000, help="reads per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)


def _cache(source: dict[int, Any], pure_python: bool, name: str) -> Any:
    from cachewise import Cache, MappingSource, MemoryStore, ReadThrough

    saved = os.environ.get("CACHEWISE_PURE_PYTHON")
    os.environ["CACHEWISE_PURE_PYTHON"] = "1" if pure_python else "0"
    try:
        return Cache(
            MemoryStore(max_entries=CAPACITY, ttl=3600),
            MappingSource(source),
            read=ReadThrough(),
            name=name,
        )
    finally:
        if saved is None:
            del os.environ["CACHEWISE_PURE_PYTHON"]
        else:
            os.environ["CACHEWISE_PURE_PYTHON"] = saved


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cachetools
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from cachewise.metrics import PrometheusCollector, instrument

    rng = random.Random(args.seed)
    source = {k: {"id": k, "name": f"item {k}"} for k in range(KEYS)}
    keys = [rng.randrange(KEYS) for _ in range(args.ops)]
    caches = {
        path: _cache(source, pure, path) for path, pure in (("C", False), ("pure Python", True))
    }
    lru: cachetools.LRUCache[int, Any] = cachetools.LRUCache(maxsize=CAPACITY)
    for key in range(KEYS):
        lru[key] = source[key]
    fns: dict[str, Callable[[int], Any]] = {p: c.read for p, c in caches.items()}
    fns["cachetools LRUCache.get"] = lru.get
    for fn in fns.values():  # warm: every read below is a hit
        for key in range(KEYS):
            fn(key)

    # The same cache objects with and without exporters, alternating round by round.
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    collector = PrometheusCollector(*caches.values(), registry=None)
    timings: dict[str, list[float]] = {}
    for round_no in range(2 * args.rounds):
        exported = round_no % 2 == 1
        handle = None
        if exported:  # on, scraped and collected once (as a scraper would), then timed
            registry.register(collector)
            handle = instrument(provider, caches=list(caches.values()))
            generate_latest(registry)
            reader.get_metrics_data()
        gc.collect()  # the scrape's garbage is not collected inside the next timing
        for fn in fns.values():  # nor are the CPU caches it cooled: warm both states alike
            for key in keys[:2000]:
                fn(key)
        for name, ns in median_ns(fns, keys, 1).items():
            label = f"{name}: {'with' if exported else 'without'} exporters"
            timings.setdefault(label, []).append(ns)
        if handle is not None:
            handle.close()
            registry.unregister(collector)
    provider.shutdown()
    ns_per_op = {name: statistics.median(v) for name, v in timings.items()}
    peer = statistics.median(
        timings["cachetools LRUCache.get: with exporters"]
        + timings["cachetools LRUCache.get: without exporters"]
    )
    results = {
        name: {"ns_per_op": round(ns, 1), "vs_cachetools": round(ns / peer, 3)}
        for name, ns in ns_per_op.items()
    }
    overhead = {
        path: round(
            ns_per_op[f"{path}: with exporters"] / ns_per_op[f"{path}: without exporters"], 3
        )
        for path in (*caches, "cachetools LRUCache.get")
    }
    # Per pair of rounds, each side against the peer timed in the same round: cancels the
    # machine's drift between rounds (other work on shared cores).
    peer_with = timings["cachetools LRUCache.get: with exporters"]
    peer_without = timings["cachetools LRUCache.get: without exporters"]
    paired = {
        path: round(
            statistics.median(
                (w / pw) / (wo / pwo)
                for w, pw, wo, pwo in zip(
                    timings[f"{path}: with exporters"],
                    peer_with,
                    timings[f"{path}: without exporters"],
                    peer_without,
                    strict=True,
                )
            ),
            3,
        )
        for path in caches
    }
    for name, row in sorted(results.items(), key=lambda kv: kv[1]["ns_per_op"]):
        print(f"  {name:46s} {row['ns_per_op']:8.1f} ns   {row['vs_cachetools']:5.2f}x")
    for path, ratio in overhead.items():
        print(f"  {path}: with exporters / without = {ratio:.3f}")
    for path, ratio in paired.items():
        print(f"  {path}: with / without, each against the peer in its round = {ratio:.3f}")
    return {
        "ops_per_round": args.ops,
        "rounds_each": args.rounds,
        "readers": results,
        "with_over_without": overhead,
        "with_over_without_vs_peer": paired,
        "load_average": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    run(parser.parse_args())
