"""Benchmark: write-back (with and without its journal) against write-through, per write.

On SQLite (WAL) and PostgreSQL, Zipf(1.0) updates over ``--keys`` keys from 1 and 8
writer threads, for ``--seconds`` each: accepted writes/s and p50/p99 latency of
``Cache.write`` for write-through (the peer: one committed upsert per write),
write-back without a journal, and write-back with a journal at each fsync mode. Then
the flush path (rows/s of a ``flush()`` of 50k dirty keys in 1,000-row batches), and
coalescing: rows written to the source per 1,000 writes with ``flush_interval=1.0``
under Zipf(1.0) over 10k keys.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cachewise import Cache, MappingSource, MemoryStore, SQLSource, WriteBack, WriteThrough
from cachewise._types import Key
from cachewise.policies import WritePolicy

NAME = "writeback"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
RESULTS = Path(__file__).parent / "results" / "writeback.json"
MODES = ("write-through", "write-back", "journal-no", "journal-everysec", "journal-always")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, default=100_000, help="Zipf(1.0) key space")
    parser.add_argument("--seconds", type=float, default=0.8, help="per configuration run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs (median kept)")
    parser.add_argument("--threads", default="1,8", help="writer thread counts")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--flush-rows", type=int, default=50_000)
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))


class Zipf:
    """Draws keys 0..n-1 with P(k) proportional to 1/(k+1) (Zipf, exponent 1.0)."""

    def __init__(self, n: int, seed: int) -> None:
        self._cum = list(itertools.accumulate(1.0 / (k + 1) for k in range(n)))
        self._rng = random.Random(seed)

    def draw(self, count: int) -> list[int]:
        total = self._cum[-1]
        cum, rnd = self._cum, self._rng.random
        return [bisect.bisect_left(cum, rnd() * total) for _ in range(count)]


def _table(engine: sa.Engine, name: str) -> None:
    meta = sa.MetaData()
    sa.Table(
        name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.BigInteger, nullable=False),
        sa.Column("note", sa.String(80), nullable=False),
    )
    meta.drop_all(engine)
    meta.create_all(engine)


def _drop(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def _policy(mode: str, journal: Path, flush_interval: float = 1.0) -> WritePolicy:
    if mode == "write-through":
        return WriteThrough()
    if mode == "write-back":
        return WriteBack(flush_interval=flush_interval)
    fsync = mode.split("-", 1)[1]
    return WriteBack(flush_interval=flush_interval, journal=journal, fsync=fsync)  # type: ignore[arg-type]


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def _drive(cache: Cache, threads: int, seconds: float, keys: list[list[int]]) -> dict[str, Any]:
    """Write from ``threads`` threads for ``seconds``; return writes/s and latency in µs."""
    latencies: list[list[int]] = [[] for _ in range(threads)]
    cpu_ns = [0] * threads
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def writer(n: int) -> None:
        mine, out, write, clock = keys[n], latencies[n], cache.write, time.perf_counter_ns
        barrier.wait()
        cpu_start = time.thread_time_ns()
        for i, key in enumerate(itertools.cycle(mine)):
            if stop.is_set():
                break
            start = clock()
            write(key, {"id": key, "v": i, "note": "zipf update"})
            out.append(clock() - start)
        cpu_ns[n] = time.thread_time_ns() - cpu_start

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    merged = sorted(itertools.chain.from_iterable(latencies))
    return {
        "writes": len(merged),
        "writes_per_s": round(len(merged) / elapsed),
        "p50_us": round(_percentile(merged, 0.50), 1),
        "p99_us": round(_percentile(merged, 0.99), 1),
        "mean_us": round(statistics.fmean(merged) / 1000.0, 2) if merged else None,
        # The writer threads' own CPU per write: what a write costs this process, free of
        # GIL waits, the flusher thread and the other tenants of a shared machine.
        "cpu_us_per_write": round(sum(cpu_ns) / len(merged) / 1000.0, 2) if merged else None,
    }


def _engine(dialect: str, args: argparse.Namespace, tmp: Path) -> sa.Engine | None:
    url = f"sqlite:///{tmp}/writeback.db" if dialect == "sqlite" else args.postgres_url
    engine = sa.create_engine(url, pool_size=10, max_overflow=10)
    try:
        with engine.connect() as conn:
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sa.exc.OperationalError as exc:
        print(f"skipping {dialect}: {type(exc.orig).__name__}", file=sys.stderr)
        engine.dispose()
        return None
    return engine


def _writes(
    engine: sa.Engine, table: str, args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    """Every mode, ``--repeat`` times interleaved (A B C A B C ...); the median run is kept.

    Interleaving spreads the shared machine's noise over all modes alike.
    """
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        zipf = Zipf(args.keys, seed=threads)
        keys = [zipf.draw(200_000) for _ in range(threads)]
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for rep in range(args.repeat):
            for mode in MODES:
                _table(engine, table)
                journal = tmp / f"journal-{mode}-{threads}-{rep}"
                cache = Cache(MemoryStore(max_entries=args.keys), SQLSource(engine, table=table),
                              write=_policy(mode, journal))  # fmt: skip
                try:
                    runs[mode].append(_drive(cache, threads, args.seconds, keys))
                finally:
                    cache.close()
                shutil.rmtree(journal, ignore_errors=True)
        for mode in MODES:
            ordered = sorted(runs[mode], key=lambda r: r["writes_per_s"])
            median = ordered[len(ordered) // 2]
            row = {"dialect": engine.dialect.name, "threads": threads, "mode": mode, **median,
                   "writes_per_s_runs": [r["writes_per_s"] for r in runs[mode]]}  # fmt: skip
            print(
                f"{row['dialect']:10} {threads} thr {mode:17} {row['writes_per_s']:>10,}/s "
                f"p50 {row['p50_us']:>8} µs  p99 {row['p99_us']:>9} µs  "
                f"cpu {row['cpu_us_per_write']:>7} µs  "
                f"runs {row['writes_per_s_runs']}"
            )
            rows.append(row)
    return rows


def _flush_rate(engine: sa.Engine, table: str, rows: int, tmp: Path, repeat: int) -> dict[str, Any]:
    """Rows/s of flushing ``rows`` dirty keys in 1,000-row batches; median of interleaved runs."""
    runs: dict[str, list[int]] = {"save_many-direct": [], "no-journal": [], "journal-everysec": []}
    for rep in range(repeat):
        for label, rates in runs.items():
            journal = tmp / f"journal-flush-{rep}" if label != "no-journal" else None
            _table(engine, table)
            if label == "save_many-direct":  # the peer: SQLSource alone, same batches
                rates.append(_save_many_rate(engine, table, rows))
                continue
            policy = WriteBack(flush_interval=3600, max_batch=1000, max_dirty=rows + 1,
                               journal=journal)  # fmt: skip
            cache = Cache(MemoryStore(max_entries=rows + 1), SQLSource(engine, table=table),
                          write=policy)  # fmt: skip
            try:
                items: dict[Key, Any] = {k: {"id": k, "v": 1, "note": "flush"} for k in range(rows)}
                cache.write_many(items)
                # write_many wakes the background flusher (the backlog is over max_batch);
                # flush() waits for it and writes what is left: together, the whole backlog.
                start = time.perf_counter()
                cache.flush()
                elapsed = time.perf_counter() - start
                written = cache.stats.source_writes
            finally:
                cache.close()
            if journal is not None:
                shutil.rmtree(journal, ignore_errors=True)
            rates.append(round(written / elapsed))
    out: dict[str, Any] = {}
    for label, rates in runs.items():
        out[label] = sorted(rates)[len(rates) // 2]
        out[f"{label}_runs"] = rates
        print(f"{engine.dialect.name:10} flush {label:17} {out[label]:>10,} rows/s  runs {rates}")
    return out


def _save_many_rate(engine: sa.Engine, table: str, rows: int) -> int:
    source = SQLSource(engine, table=table)
    items = [(k, {"id": k, "v": 1, "note": "flush"}) for k in range(rows)]
    start = time.perf_counter()
    for i in range(0, rows, 1000):
        source.save_many(dict(items[i : i + 1000]))
    return round(rows / (time.perf_counter() - start))


def _journal_cost(tmp: Path, repeat: int) -> dict[str, Any]:
    """The journal's own cost per write: no flusher running, no database, writer CPU time.

    A MappingSource and a flush interval longer than the run keep the background flusher
    out of the picture, so the difference between the modes is the journal alone.
    """
    writes = 50_000
    keys = Zipf(100_000, seed=3).draw(writes)
    runs: dict[str, list[float]] = {"write-back": [], "journal-no": [], "journal-everysec": []}
    for rep in range(repeat):
        for mode, cpus in runs.items():
            journal = tmp / f"journal-cost-{mode}-{rep}"
            policy = _policy(mode, journal, flush_interval=3600)
            assert isinstance(policy, WriteBack)
            policy = WriteBack(flush_interval=3600, max_batch=writes + 1, max_dirty=writes + 1,
                               journal=policy.journal, fsync=policy.fsync)  # fmt: skip
            cache = Cache(MemoryStore(max_entries=writes + 1), MappingSource(), write=policy)
            try:
                start = time.thread_time_ns()
                for i, key in enumerate(keys):
                    cache.write(key, {"id": key, "v": i, "note": "zipf update"})
                cpus.append((time.thread_time_ns() - start) / writes / 1000.0)
            finally:
                cache.close()
            shutil.rmtree(journal, ignore_errors=True)
    out: dict[str, Any] = {}
    for mode, cpus in runs.items():
        out[mode] = round(statistics.median(cpus), 2)
        out[f"{mode}_runs"] = [round(c, 2) for c in cpus]
    base = out["write-back"]
    out["everysec_vs_no_journal"] = round(out["journal-everysec"] / base, 2)
    out["no_vs_no_journal"] = round(out["journal-no"] / base, 2)
    print(
        f"journal cost (CPU µs per write, no flusher): no journal {base}, fsync=no "
        f"{out['journal-no']} ({out['no_vs_no_journal']}x), everysec "
        f"{out['journal-everysec']} ({out['everysec_vs_no_journal']}x)"
    )
    return out


def _coalescing(engine: sa.Engine, table: str, seconds: float) -> dict[str, Any]:
    """Rows written to the source per 1,000 writes, flush_interval=1.0, Zipf over 10k keys."""
    out: dict[str, Any] = {}
    for label, pace in (("full-speed", None), ("2000-writes-per-s", 2000)):
        _table(engine, table)
        keys = Zipf(10_000, seed=7).draw(400_000)
        cache = Cache(
            MemoryStore(), SQLSource(engine, table=table), write=WriteBack(flush_interval=1.0)
        )
        writes = 0
        try:
            start = time.perf_counter()
            for i, key in enumerate(keys):
                now = time.perf_counter()
                if now - start >= seconds:
                    break
                if pace is not None and i > pace * (now - start):
                    time.sleep(0.001)
                cache.write(key, {"id": key, "v": i, "note": "coalesce"})
                writes += 1
        finally:
            cache.close()  # the final flush counts too
        saved = cache.stats.source_writes
        out[label] = {"writes": writes, "rows_written": saved,
                      "rows_per_1000_writes": round(1000 * saved / writes, 1)}  # fmt: skip
        print(f"{engine.dialect.name:10} coalescing {label:18} {out[label]}")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"keys": args.keys, "seconds_per_config": args.seconds,
                              "cpus": os.cpu_count(), "writes": [], "flush_rows_per_s": {},
                              "coalescing": {}}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-wb-"))
    table = f"cw_bench_wb_{os.getpid()}"
    try:
        result["journal_cost_cpu_us"] = _journal_cost(tmp, max(args.repeat, 5))
        for dialect in args.dialects.split(","):
            engine = _engine(dialect, args, tmp)
            if engine is None:
                continue
            try:
                result["writes"] += _writes(engine, table, args, tmp)
                result["flush_rows_per_s"][dialect] = _flush_rate(
                    engine, table, args.flush_rows, tmp, args.repeat
                )
                if dialect == "postgresql":
                    result["coalescing"][dialect] = _coalescing(engine, table, 3.0)
            finally:
                _drop(engine, table)
                engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["ratios"] = _ratios(result["writes"])
    for line in _summary(result):
        print(line)
    return result


def _ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["dialect"], r["threads"], r["mode"]): r for r in rows}
    out: dict[str, Any] = {}
    for (dialect, threads, mode), row in by.items():
        if mode != "write-back":
            continue
        peer = by.get((dialect, threads, "write-through"))
        everysec = by.get((dialect, threads, "journal-everysec"))
        key = f"{dialect}/{threads}"
        out[key] = {
            "writeback_vs_writethrough": round(row["writes_per_s"] / peer["writes_per_s"], 1)
            if peer else None,
            "everysec_cost_vs_no_journal": round(row["writes_per_s"] / everysec["writes_per_s"], 2)
            if everysec else None,
            "everysec_p50_vs_no_journal": round(everysec["p50_us"] / row["p50_us"], 2)
            if everysec else None,
            "everysec_cpu_vs_no_journal":
                round(everysec["cpu_us_per_write"] / row["cpu_us_per_write"], 2)
            if everysec else None,
        }  # fmt: skip
    return out


def _summary(result: dict[str, Any]) -> list[str]:
    lines = ["", "ratios (same run):"]
    for key, ratio in result["ratios"].items():
        lines.append(
            f"  {key}: write-back/write-through writes/s = {ratio['writeback_vs_writethrough']}x; "
            f"everysec per-write cost = {ratio['everysec_cost_vs_no_journal']}x no journal "
            f"(p50 {ratio['everysec_p50_vs_no_journal']}x, "
            f"writer CPU {ratio['everysec_cpu_vs_no_journal']}x)"
        )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parsed = parser.parse_args()
    started = time.time()
    outcome = run(parsed)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "result": outcome,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")
