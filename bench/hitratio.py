"""Miss-ratio benchmark: replay cache traces through our eviction policies and libCacheSim's.

Each trace (gzip, one integer key per line) is decoded once and replayed through
each policy object alone, the way ``MemoryStore`` drives it (insert, then evict while
over capacity), at 0.1%, 1% and 10% of its distinct keys. When ``libcachesim`` is
importable the same requests go through its LRU, FIFO, Clock, LFU, ARC, S3-FIFO,
SIEVE, W-TinyLFU and Bélády (via an oracleGeneral binary file, which carries the
next-access times Bélády needs). The table gives the best online peer per row and
our default policy's gap to it and to LRU. It also times each policy's hit path.

Run: ``python -m bench hitratio [--traces a,b] [--policies lru,adaptive] [--no-peer]``
(or ``python bench/hitratio.py ...``); ``--hit-cost-only`` re-times the hit path alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cachewise.stores.eviction import DEFAULT_POLICY, POLICIES, EvictionPolicy, make_policy

NAME = "hitratio"

SIZES = (0.001, 0.01, 0.1)
ROOT = Path(__file__).resolve().parent
DEFAULT_TRACES = ROOT.parent.parent / "shared" / "traces"
RESULTS = ROOT / "results" / "hitratio.json"

# libCacheSim class name by the column name we print; Bélády is offline (not "online").
PEER_ONLINE = {
    "LRU": "LRU",
    "FIFO": "FIFO",
    "Clock": "Clock",
    "LFU": "LFU",
    "ARC": "ARC",
    "S3-FIFO": "S3FIFO",
    "SIEVE": "Sieve",
    "W-TinyLFU": "WTinyLFU",
}
PEER_OFFLINE = {"Belady": "Belady"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare this benchmark's options."""
    parser.add_argument("--trace-dir", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--traces", default="", help="comma-separated trace names (default all)")
    parser.add_argument("--policies", default="", help="our policies (default all registered)")
    parser.add_argument("--sizes", default="", help="cache sizes as fractions, e.g. 0.01,0.1")
    parser.add_argument("--no-peer", action="store_true", help="skip libCacheSim")
    parser.add_argument("--no-hit-cost", action="store_true", help="skip hit-path timing")
    parser.add_argument(
        "--hit-cost-only",
        action="store_true",
        help="only time the hit path; merge into the existing --out file",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))


def load_trace(path: Path) -> list[int]:
    """Decode a gzip trace of one integer key per line into a list."""
    with gzip.open(path, "rb") as f:
        return [int(token) for token in f.read().split()]


def replay(keys: Sequence[int], policy: EvictionPolicy, capacity: int) -> int:
    """Return the misses of ``policy`` at ``capacity`` over ``keys`` (cold misses counted)."""
    resident: set[int] = set()
    add, remove = resident.add, resident.remove
    on_hit, on_insert, evict = policy.on_hit, policy.on_insert, policy.evict
    misses = 0
    for key in keys:
        if key in resident:
            on_hit(key)
            continue
        misses += 1
        add(key)
        on_insert(key)
        if len(resident) > capacity:
            remove(evict())  # type: ignore[arg-type]
    return misses


def capacity_for(distinct: int, fraction: float) -> int:
    """Cache size in entries for a fraction of the distinct keys (as the anchor rounds)."""
    return max(1, round(distinct * fraction))


def _oracle_file(keys: Sequence[int], directory: str) -> str:
    """Write libCacheSim's oracleGeneral format: time u32, id u64, size u32, next i64."""
    import numpy as np

    n = len(keys)
    ids = np.asarray(keys, dtype=np.uint64)
    # next access: for each position, the next position of the same key (-1: none)
    order = np.lexsort((np.arange(n), ids))
    following = np.full(n, -1, dtype=np.int64)
    same = ids[order[1:]] == ids[order[:-1]]
    following[order[:-1][same]] = order[1:][same]
    record = np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    rows = np.zeros(n, dtype=record)
    rows["t"] = np.arange(1, n + 1)
    rows["id"] = ids
    rows["size"] = 1
    rows["next"] = following
    path = os.path.join(directory, "trace.oracleGeneral.bin")
    rows.tofile(path)
    return path


def _peer_rows(keys: Sequence[int], capacities: list[int]) -> list[dict[str, float]]:
    import libcachesim

    with tempfile.TemporaryDirectory() as tmp:
        reader = libcachesim.TraceReader(
            _oracle_file(keys, tmp), libcachesim.TraceType.ORACLE_GENERAL_TRACE
        )
        rows = []
        for capacity in capacities:
            row = {}
            for column, cls in {**PEER_ONLINE, **PEER_OFFLINE}.items():
                cache = getattr(libcachesim, cls)(capacity)
                row[column] = float(cache.process_trace(reader)[0])
            rows.append(row)
    return rows


def run_trace(path: Path, policies: list[str], sizes: list[float], peer: bool) -> dict[str, Any]:
    """Replay one trace through every policy and size; return its rows and timings."""
    keys = load_trace(path)
    distinct = len(set(keys))
    capacities = [capacity_for(distinct, f) for f in sizes]
    rows: list[dict[str, Any]] = [
        {"size": f, "capacity": c, "ours": {}, "seconds": {}}
        for f, c in zip(sizes, capacities, strict=True)
    ]
    for name in policies:
        for row in rows:
            started = time.perf_counter()
            misses = replay(keys, make_policy(name, row["capacity"]), row["capacity"])
            row["seconds"][name] = round(time.perf_counter() - started, 2)
            row["ours"][name] = misses / len(keys)
    if peer:
        for row, peer_row in zip(rows, _peer_rows(keys, capacities), strict=True):
            row["peer"] = peer_row
            online = {k: v for k, v in peer_row.items() if k in PEER_ONLINE}
            best = min(online, key=lambda k: online[k])
            row["best_online"] = {"policy": best, "miss": online[best]}
    return {
        "trace": path.name.removesuffix(".txt.gz"),
        "requests": len(keys),
        "distinct": distinct,
        "rows": rows,
    }


def hit_cost(policies: list[str], entries: int = 10_000, hits: int = 100_000) -> dict[str, Any]:
    """Nanoseconds per ``on_hit`` and per ``MemoryStore.get`` hit, with cachetools' LRU.

    Rounds alternate between the candidates and keep each one's best, so a noisy
    neighbour slows every candidate alike instead of whichever ran at the time.
    """
    import cachetools

    from cachewise.stores.memory import MemoryStore

    keys = [f"key:{i}" for i in range(entries)]
    probe = [keys[(i * 7919) % entries] for i in range(hits)]
    calls: dict[str, Callable[[str], object]] = {"loop baseline (len)": len}
    for name in policies:
        policy = make_policy(name, entries)
        for key in keys:
            policy.on_insert(key)
        calls[f"{name}.on_hit"] = policy.on_hit
        store = MemoryStore(max_entries=entries, eviction=name)
        for key in keys:
            store.set(key, key)
        calls[f"MemoryStore[{name}].get"] = store.get
    lru: cachetools.LRUCache[str, str] = cachetools.LRUCache(maxsize=entries)
    for key in keys:
        lru[key] = key
    calls["cachetools.LRUCache.get"] = lru.get
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(7):
        for label, fn in calls.items():
            started = time.perf_counter()
            for key in probe:
                fn(key)
            best[label] = min(best[label], (time.perf_counter() - started) / hits * 1e9)
    return {"entries": entries, "ns_per_call": {k: round(v, 1) for k, v in best.items()}}


def _pp(value: float) -> str:
    return f"{value * 100:+.2f}"


def summarise(traces: list[dict[str, Any]], default: str) -> dict[str, Any]:
    """Per-row gaps of our default to the best online peer and to LRU; worst cases."""
    worst_best = worst_lru = worst_lru_err = worst_lfu_err = -1.0
    misses: list[str] = []
    for trace in traces:
        for row in trace["rows"]:
            ours = row["ours"]
            peer = row.get("peer", {})
            if "lru" in ours and peer:
                worst_lru_err = max(worst_lru_err, abs(ours["lru"] - peer["LRU"]) * 100)
            if "lfu" in ours and peer:
                worst_lfu_err = max(worst_lfu_err, abs(ours["lfu"] - peer["LFU"]) * 100)
            if default not in ours:
                continue
            label = f"{trace['trace']}@{row['size']:.1%}"
            if "lru" in ours:
                row["default_vs_lru_pp"] = (ours[default] - ours["lru"]) * 100
                worst_lru = max(worst_lru, row["default_vs_lru_pp"])
                if row["default_vs_lru_pp"] > 0.5:
                    misses.append(f"{label}: {row['default_vs_lru_pp']:.2f} pp worse than LRU")
            if "best_online" in row:
                gap = (ours[default] - row["best_online"]["miss"]) * 100
                row["default_vs_best_pp"] = gap
                worst_best = max(worst_best, gap)
                if gap > 1.0:
                    misses.append(f"{label}: {gap:.2f} pp above best online")
    return {
        "default": default,
        "worst_gap_to_best_online_pp": worst_best,
        "worst_gap_to_lru_pp": worst_lru,
        "lru_reproduction_error_pp": worst_lru_err,
        "lfu_reproduction_error_pp": worst_lfu_err,
        "targets_missed": misses,
    }


def print_table(traces: list[dict[str, Any]], policies: list[str], default: str) -> None:
    """Print the miss-ratio table as Markdown."""
    peers = list(PEER_ONLINE) + list(PEER_OFFLINE)
    has_peer = any("peer" in row for t in traces for row in t["rows"])
    head = ["trace", "size", "objects", *policies]
    if has_peer:
        head += [f"lcs {p}" for p in peers] + ["best online", f"{default} − best (pp)"]
    head.append(f"{default} − LRU (pp)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for trace in traces:
        for row in trace["rows"]:
            cells = [trace["trace"], f"{row['size']:.1%}", f"{row['capacity']:,}"]
            cells += [f"{row['ours'][p]:.4f}" for p in policies]
            if has_peer and "peer" in row:
                cells += [f"{row['peer'][p]:.4f}" for p in peers]
                best = row["best_online"]
                cells += [f"{best['miss']:.4f} ({best['policy']})"]
                cells += [
                    _pp(row["ours"][default] - best["miss"]) if default in row["ours"] else ""
                ]
            vs_lru = row.get("default_vs_lru_pp")
            cells.append("" if vs_lru is None else f"{vs_lru:+.2f}")
            print("| " + " | ".join(cells) + " |")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark as configured by ``args``; print and save the results."""
    names = [n for n in args.traces.split(",") if n] or sorted(
        p.name.removesuffix(".txt.gz") for p in args.trace_dir.glob("*.txt.gz")
    )
    paths = [args.trace_dir / f"{n}.txt.gz" for n in names]
    for path in paths:
        if not path.exists():
            raise SystemExit(f"no trace {path}")
    policies = [p for p in args.policies.split(",") if p] or list(POLICIES)
    if args.hit_cost_only:
        saved: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        saved = saved.get("result", saved)  # python -m bench wraps the result in a record
        saved["hit_cost"] = hit_cost(policies)
        print(json.dumps(saved["hit_cost"], indent=2))
        _save(args, saved)
        return saved
    sizes = [float(s) for s in args.sizes.split(",") if s] or list(SIZES)
    peer = not args.no_peer
    if peer:
        try:
            import libcachesim  # noqa: F401
        except ImportError:
            peer = False
    started = time.perf_counter()
    # Largest traces first so the two workers finish together.
    paths.sort(key=lambda p: p.stat().st_size, reverse=True)
    # One task per trace and size, so the workers stay busy to the end.
    by_name: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_trace, p, policies, [f], peer) for p in paths for f in sizes]
        for future in as_completed(futures):
            done = future.result()
            merged = by_name.setdefault(done["trace"], {**done, "rows": []})
            merged["rows"] = sorted([*merged["rows"], *done["rows"]], key=lambda r: r["size"])
            elapsed = time.perf_counter() - started
            size = done["rows"][0]["size"]
            print(
                f"[{elapsed:6.0f}s] {done['trace']} @{size:.1%} done", file=sys.stderr, flush=True
            )
    traces = [by_name[n] for n in names]
    summary = summarise(traces, DEFAULT_POLICY)
    result: dict[str, Any] = {
        "benchmark": NAME,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "default_policy": DEFAULT_POLICY,
        "policies": policies,
        "sizes": sizes,
        "peer": "libcachesim " + _peer_version() if peer else None,
        "traces": traces,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.no_hit_cost:
        result["hit_cost"] = hit_cost(policies)
    print_table(traces, policies, DEFAULT_POLICY)
    print(json.dumps(summary, indent=2))
    if "hit_cost" in result:
        print(json.dumps(result["hit_cost"], indent=2))
    _save(args, result)
    return result


def _save(args: argparse.Namespace, result: dict[str, Any]) -> None:
    # Under ``python -m bench`` the runner writes the file; standalone, we do.
    if getattr(args, "standalone", False):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def _peer_version() -> str:
    from importlib.metadata import version

    return version("libcachesim")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="hitratio", description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_arguments(parser)
    run(parser.parse_args(argv, argparse.Namespace(standalone=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
