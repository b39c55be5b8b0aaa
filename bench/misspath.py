"""Miss path: ``Cache.read(k, loader=...)`` on a stream with misses, against peers' get/set loops.

The stream (seeded, :func:`scan_stream`): Zipf(0.99) requests over 200,000 keys with a
one-hit scan of 60,000 new keys in the middle; the cache holds 20,000 entries. Every
contender runs the same stream from a cold cache, each miss calling one shared loader
that counts its calls, and contenders are interleaved round by round (the order
rotates). Reported: process CPU and wall-clock ns per request (medians of rounds, the
bare loop subtracted), the ratio of CPU time to the cachetools ``LRUCache`` loop of the
same round (median over rounds), and the miss ratio.

Peers (the ``bench`` extra): cachetools, theine, moka-py, cachebox and
``functools.lru_cache``; a peer that is not installed is left out and named.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import random
import statistics
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

NAME = "misspath"
KEYS = 200_000
SCAN = 60_000
CAPACITY = 20_000
ZIPF_REQUESTS = 600_000
ALPHA = 0.99

Loader = Callable[[Any], Any]
Loop = Callable[[list[int], Loader], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--requests", type=int, default=ZIPF_REQUESTS, help="Zipf requests (the scan is extra)"
    )
    parser.add_argument(
        "--only", default="", help="';'-separated parts of contender labels (default: all)"
    )
    parser.add_argument("--no-pure", action="store_true", help="skip the pure-Python paths")


def scan_stream(seed: int = 15, requests: int = ZIPF_REQUESTS) -> list[int]:
    """Zipf(0.99) over ``KEYS`` keys with a one-hit scan of ``SCAN`` new keys halfway.

    The scan's keys (``KEYS`` and up) are requested once each and never again: a policy
    that admits every new key flushes its hot set with them.
    """
    rng = random.Random(seed)
    cumulative = list(accumulate(1.0 / (rank + 1) ** ALPHA for rank in range(KEYS)))
    ids = list(range(KEYS))
    rng.shuffle(ids)
    ranks = rng.choices(range(KEYS), cum_weights=cumulative, k=requests)
    zipf = [ids[r] for r in ranks]
    half = requests // 2
    return zipf[:half] + list(range(KEYS, KEYS + SCAN)) + zipf[half:]


# -- contenders: each is a loop over the stream, built fresh per round ---------------


def cachewise_loop(eviction: str, pure_python: bool) -> Loop:
    """``Cache.read(k, loader=load)`` over a MemoryStore of ``CAPACITY`` entries."""
    from cachewise import Cache, MemoryStore

    saved = os.environ.get("CACHEWISE_PURE_PYTHON")
    os.environ["CACHEWISE_PURE_PYTHON"] = "1" if pure_python else "0"
    try:
        cache = Cache(MemoryStore(max_entries=CAPACITY, eviction=eviction))
    finally:
        if saved is None:
            del os.environ["CACHEWISE_PURE_PYTHON"]
        else:
            os.environ["CACHEWISE_PURE_PYTHON"] = saved
    read = cache.read

    def loop(keys: list[int], load: Loader) -> None:
        for key in keys:
            read(key, loader=load)

    return loop


def cachetools_loop() -> Loop:
    import cachetools

    lru: Any = cachetools.LRUCache(maxsize=CAPACITY)
    get = lru.get

    def loop(keys: list[int], load: Loader) -> None:
        for key in keys:
            value = get(key)
            if value is None:
                lru[key] = load(key)

    return loop


def theine_loop() -> Loop:
    from theine import Cache as Theine

    cache: Any = Theine(CAPACITY)
    get, put = cache.get, cache.set

    def loop(keys: list[int], load: Loader) -> None:
        for key in keys:
            _value, ok = get(key)
            if not ok:
                put(key, load(key))

    return loop


def moka_loop() -> Loop:
    from moka_py import Moka

    cache: Any = Moka(CAPACITY)
    get, put = cache.get, cache.set

    def loop(keys: list[int], load: Loader) -> None:
        for key in keys:
            value = get(key)
            if value is None:
                put(key, load(key))

    return loop


def cachebox_loop() -> Loop:
    import cachebox

    cache: Any = cachebox.LRUCache(CAPACITY)
    get, put = cache.get, cache.insert

    def loop(keys: list[int], load: Loader) -> None:
        for key in keys:
            value = get(key)
            if value is None:
                put(key, load(key))

    return loop


def lru_cache_loop() -> Loop:
    def loop(keys: list[int], load: Loader) -> None:
        cached = functools.lru_cache(maxsize=CAPACITY)(load)
        for key in keys:
            cached(key)

    return loop


PEERS: dict[str, tuple[str, Callable[[], Loop]]] = {
    "cachetools LRUCache": ("cachetools", cachetools_loop),
    "theine Cache (W-TinyLFU, Rust)": ("theine", theine_loop),
    "moka-py Moka (TinyLFU, Rust)": ("moka_py", moka_loop),
    "cachebox LRUCache (Rust)": ("cachebox", cachebox_loop),
    "functools.lru_cache": ("functools", lru_cache_loop),
}
PEER = "cachetools LRUCache"


def contenders(pure: bool) -> tuple[dict[str, Callable[[], Loop]], list[str]]:
    """Loop builders by label, and the peers left out because they are not installed."""
    from cachewise.stores.eviction import DEFAULT_POLICY

    built: dict[str, Callable[[], Loop]] = {}
    for eviction in (DEFAULT_POLICY, "wtinylfu", "lru", "sieve"):
        label = f"cachewise Cache.read, {eviction}"
        if eviction == DEFAULT_POLICY:
            label += " (default)"
        built[label] = functools.partial(cachewise_loop, eviction, False)
        if pure:
            built[label + ", pure Python"] = functools.partial(cachewise_loop, eviction, True)
    missing = []
    for label, (module, builder) in PEERS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(label)
            continue
        built[label] = builder
    return built, missing


def run(args: argparse.Namespace) -> dict[str, Any]:
    keys = scan_stream(args.seed, args.requests)
    built, missing = contenders(pure=not args.no_pure)
    if args.only:
        wanted = [w.strip() for w in args.only.split(";") if w.strip()]
        built = {k: v for k, v in built.items() if k == PEER or any(w in k for w in wanted)}
    labels = list(built)
    calls = [0]

    def load(key: int) -> tuple[int, str]:
        calls[0] += 1
        return (key, "row")

    # Per contender and round: wall-clock and process CPU ns per request (the bare loop
    # subtracted). CPU time counts every thread of the process (a peer's background
    # maintenance too) and, on a loaded machine, not the time spent waiting for a core.
    wall: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    misses: dict[str, int] = {}
    for round_no in range(args.rounds):
        shift = round_no % len(labels)
        this_round: dict[str, float] = {}
        for label in labels[shift:] + labels[:shift]:
            loop = built[label]()
            calls[0] = 0
            bare_wall, bare_cpu = _timed(lambda: _bare(keys))
            spent_wall, spent_cpu = _timed(lambda loop=loop: loop(keys, load))  # type: ignore[misc]
            wall[label].append((spent_wall - bare_wall) / len(keys) * 1e9)
            this_round[label] = (spent_cpu - bare_cpu) / len(keys) * 1e9
            misses[label] = calls[0]
        for label, value in this_round.items():
            cpu[label].append(value)
            ratios[label].append(value / this_round[PEER])
    rows = {
        label: {
            "cpu_ns_per_request": round(statistics.median(cpu[label]), 1),
            "wall_ns_per_request": round(statistics.median(wall[label]), 1),
            "vs_cachetools": round(statistics.median(ratios[label]), 3),
            "vs_cachetools_rounds": [round(r, 3) for r in ratios[label]],
            "miss_ratio": round(misses[label] / len(keys), 4),
        }
        for label in labels
    }
    _print(rows, missing)
    return {
        "stream": {
            "zipf_alpha": ALPHA,
            "keys": KEYS,
            "zipf_requests": args.requests,
            "scan": SCAN,
            "capacity": CAPACITY,
            "seed": args.seed,
            "requests": len(keys),
        },
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "missing_peers": missing,
        "contenders": rows,
    }


def _bare(keys: list[int]) -> None:
    for _key in keys:
        pass


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _print(rows: dict[str, Any], missing: list[str]) -> None:
    print("| contender | CPU ns/request | wall ns/request | × cachetools (CPU) | miss ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, row in sorted(rows.items(), key=lambda kv: kv[1]["cpu_ns_per_request"]):
        print(
            f"| {label} | {row['cpu_ns_per_request']:,.0f} | {row['wall_ns_per_request']:,.0f} "
            f"| {row['vs_cachetools']:.2f}× | {row['miss_ratio']:.4f} |"
        )
    if missing:
        print("not installed (pip install 'cachewise[bench]'):", ", ".join(missing))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    run(parser.parse_args())
