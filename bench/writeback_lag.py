"""Benchmark: write-back lag on PostgreSQL under load, and the backlog across an outage.

1. The maximum flush throughput: rows/s of flushing ``--flush-rows`` dirty keys in
   1,000-row batches (median of 3), on the shared PostgreSQL.
2. Load: one writer thread writes Zipf(1.0) updates over ``--keys`` keys (``write_many``
   of 10 at a time) at a paced
   rate of 25%, 50% and 90% (then 150%, to find where it breaks) of that
   maximum, for ``--seconds`` each, through ``WriteBack(flush_interval=0.2)``. Reported
   per load: writes/s offered and achieved, rows/s flushed, the lag (``Stats.lag_p50``,
   ``lag_p99``, ``lag_max``, over the run) against the bound ``flush_interval`` + the
   flush time measured in the same run (each flush and each ``save_many`` batch timed;
   the bound uses the flushes' p99), and the largest ``oldest_dirty_age`` sampled. Each
   level runs under Python's default GIL switch interval (5 ms) and under 0.5 ms,
   interleaved: the flusher thread waits up to one interval for the GIL after each
   database round trip while the writer thread runs Python code.
3. Outage: a PostgreSQL of our own (``tests/servers.py``) is stopped for
   ``--outage`` seconds under a 25% load and started again; ``dirty``,
   ``oldest_dirty_age`` and the lag are sampled every 0.25 s before, during and after,
   until the backlog has drained.
4. The hot write path: CPU per ``Cache.write`` with the lag's write sampling as shipped
   and with it switched off (``SAMPLE_EVERY`` out of reach), and through a SQLSource
   (which validates every write) against a MappingSource, interleaved, median of 5.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.writeback import Zipf, _drop, _table
from cachewise import Cache, MappingSource, MemoryStore, SQLSource, WriteBack
from cachewise._types import Key
from cachewise.policies import Retry
from cachewise.writeback import flusher as flusher_mod

NAME = "writeback-lag"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
INTERVAL = 0.2
LOADS = (0.25, 0.50, 0.90, 1.50)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, default=100_000, help="Zipf(1.0) key space")
    parser.add_argument("--seconds", type=float, default=15.0, help="per load level")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the database is down")
    parser.add_argument("--flush-rows", type=int, default=50_000)
    parser.add_argument(
        "--switch-intervals",
        default="0.005,0.0005",
        help="sys.setswitchinterval values the load levels run under, interleaved",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))


class TimedSource(SQLSource):
    """SQLSource that records how long each ``save_many`` (one flush batch) takes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_seconds: list[float] = []
        self.batch_rows: list[int] = []

    def save_many(self, items: Mapping[Key, Any]) -> None:
        started = time.perf_counter()
        super().save_many(items)
        self.batch_seconds.append(time.perf_counter() - started)
        self.batch_rows.append(len(items))


def _row(key: int, i: int) -> dict[str, Any]:
    return {"id": key, "v": i, "note": "zipf update"}


def _max_flush(engine: sa.Engine, table: str, rows: int) -> dict[str, Any]:
    """Rows/s of flushing ``rows`` dirty keys in 1,000-row batches (median of 3)."""
    rates = []
    for _ in range(3):
        _table(engine, table)
        policy = WriteBack(flush_interval=3600, max_batch=1000, max_dirty=rows + 1)
        cache = Cache(MemoryStore(max_entries=rows + 1), SQLSource(engine, table=table),
                      write=policy)  # fmt: skip
        try:
            cache.write_many({k: _row(k, 1) for k in range(rows)})
            started = time.perf_counter()
            cache.flush()  # waits for the flush write_many woke, then writes the rest
            rates.append(round(cache.stats.source_writes / (time.perf_counter() - started)))
        finally:
            cache.close()
    return {"rows_per_s": sorted(rates)[1], "runs": rates}


CHUNK = 10
"""Writes per ``write_many`` call: one Python writer thread could not offer the higher
loads with single writes (and a CPU-bound writer starves the flusher of the GIL)."""


def _pace(cache: Cache, zipf: Zipf, rate: float, seconds: float, stop: threading.Event) -> int:
    """Write at ``rate`` writes/s for ``seconds`` (or until ``stop``); return writes done."""
    keys = zipf.draw(max(CHUNK, min(int(rate * seconds * 1.1), 1_000_000)))
    started = time.perf_counter()
    done = 0
    for i in itertools.count():
        now = time.perf_counter() - started
        if now >= seconds or stop.is_set():
            break
        ahead = i * CHUNK / rate - now
        if ahead > 0.001:
            time.sleep(ahead)
        first = (i * CHUNK) % (len(keys) - CHUNK + 1)
        items: dict[Key, Any] = {k: _row(k, done) for k in keys[first : first + CHUNK]}
        cache.write_many(items)
        done += len(items)
    return done


def _sample_ages(cache: Cache, stop: threading.Event, ages: list[float]) -> None:
    while not stop.wait(0.1):
        ages.append(cache.stats.oldest_dirty_age)


def _time_flushes(cache: Cache) -> list[float]:
    """Record how long each flush (all its batches) takes: the benchmark's own probe."""
    flusher: Any = cache._flusher
    inner = flusher._flush_flow  # a flow (generator) the flusher runs: timed from start to end
    seconds: list[float] = []

    def timed(*args: Any) -> Generator[Any, Any, int]:
        started = time.perf_counter()
        try:
            return int((yield from inner(*args)))
        finally:
            seconds.append(time.perf_counter() - started)

    flusher._flush_flow = timed
    return seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _load(engine: sa.Engine, table: str, args: argparse.Namespace, max_rows: int) -> list[Any]:
    """Every load level under every switch interval, interleaved (A B A B per level)."""
    out = []
    shipped = sys.getswitchinterval()
    try:
        for fraction in LOADS:
            for interval in [float(x) for x in args.switch_intervals.split(",")]:
                sys.setswitchinterval(interval)
                out.append(_one_load(engine, table, args, max_rows, fraction))
                out[-1]["switch_interval"] = interval
    finally:
        sys.setswitchinterval(shipped)
    return out


def _one_load(
    engine: sa.Engine, table: str, args: argparse.Namespace, max_rows: int, fraction: float
) -> dict[str, Any]:
    _table(engine, table)
    source = TimedSource(engine, table=table)
    policy = WriteBack(flush_interval=INTERVAL, max_dirty=args.keys + 1)
    cache = Cache(MemoryStore(max_entries=args.keys + 1), source, write=policy)
    rate = fraction * max_rows
    flushes = _time_flushes(cache)
    ages: list[float] = []
    stop = threading.Event()

    sampler = threading.Thread(target=_sample_ages, args=(cache, stop, ages))
    sampler.start()
    try:
        started = time.perf_counter()
        writes = _pace(cache, Zipf(args.keys, seed=int(fraction * 100)), rate, args.seconds,
                       threading.Event())  # fmt: skip
        elapsed = time.perf_counter() - started
        stats = cache.stats  # the lag window (60 s) covers the run
    finally:
        stop.set()
        sampler.join()
        cache.close()
    batch_p50 = _percentile(source.batch_seconds, 0.50)
    batch_p99 = _percentile(source.batch_seconds, 0.99)
    flush_p50 = _percentile(flushes, 0.50)
    flush_p99 = _percentile(flushes, 0.99)
    bound = INTERVAL + flush_p99
    row = {
        "load": fraction,
        "offered_writes_per_s": round(rate),
        "writes_per_s": round(writes / elapsed),
        "rows_per_s": round(stats.source_writes / elapsed),
        "rows_vs_max": round(stats.source_writes / elapsed / max_rows, 2),
        "batches": len(source.batch_seconds),
        "rows_per_batch_p50": _percentile([float(r) for r in source.batch_rows], 0.5),
        "batch_s_p50": round(batch_p50, 4),
        "batch_s_p99": round(batch_p99, 4),
        "flushes": len(flushes),
        "flush_s_p50": round(flush_p50, 4),
        "flush_s_p99": round(flush_p99, 4),
        "lag_p50": round(stats.lag_p50, 3),
        "lag_p99": round(stats.lag_p99, 3),
        "lag_max": round(stats.lag_max, 3),
        "bound": round(bound, 3),
        "p99_within_bound": stats.lag_p99 <= bound,
        "oldest_dirty_age_max": round(max(ages, default=0.0), 3),
    }
    print(
        f"load {fraction:4.0%} switch {sys.getswitchinterval() * 1000:.1f} ms: "
        f"{row['writes_per_s']:>6,}/{row['offered_writes_per_s']:,} "
        f"writes/s, {row['rows_per_s']:>6,} rows/s ({row['rows_vs_max']:.0%} of max), "
        f"batch p50 {batch_p50 * 1000:.0f} ms p99 {batch_p99 * 1000:.0f} ms, flush p50 "
        f"{flush_p50 * 1000:.0f} ms p99 {flush_p99 * 1000:.0f} ms; lag p50 "
        f"{stats.lag_p50:.3f} p99 {stats.lag_p99:.3f} max {stats.lag_max:.3f} s "
        f"(bound {bound:.3f} s: {'within' if row['p99_within_bound'] else 'OVER'}); "
        f"oldest age max {row['oldest_dirty_age_max']:.3f} s"
    )
    return row


def _outage(args: argparse.Namespace) -> dict[str, Any]:
    """A PostgreSQL of our own stopped for ``--outage`` seconds under a 25% load."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        engine = sa.create_engine(server.url)
        _table(engine, "lag_outage")
        max_rows = _max_flush(engine, "lag_outage", args.flush_rows)["rows_per_s"]
        _table(engine, "lag_outage")
        source = SQLSource(engine, table="lag_outage")
        policy = WriteBack(flush_interval=INTERVAL, max_dirty=args.keys + 1,
                           retry=Retry(initial=0.1, maximum=1.0))  # fmt: skip
        cache = Cache(MemoryStore(max_entries=args.keys + 1), source, write=policy)
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        began = time.perf_counter()

        def sample() -> None:
            while not stop.wait(0.25):
                s = cache.stats
                samples.append({
                    "t": round(time.perf_counter() - began, 2), "dirty": s.dirty,
                    "oldest_dirty_age": round(s.oldest_dirty_age, 2),
                    "lag_p99": round(s.lag_p99, 2), "lag_max": round(s.lag_max, 2),
                    "flush_failures": s.flush_failures, "source_writes": s.source_writes,
                })  # fmt: skip

        rate = 0.25 * max_rows
        writer = threading.Thread(
            target=_pace, args=(cache, Zipf(args.keys, seed=9), rate, 3600.0, stop)
        )
        sampler = threading.Thread(target=sample)
        writer.start()
        sampler.start()
        time.sleep(3.0)
        down_at = time.perf_counter() - began
        server.stop("immediate")
        time.sleep(args.outage)
        up_at = time.perf_counter() - began
        server.start()
        steady = None
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            time.sleep(0.25)
            if samples and samples[-1]["t"] > up_at and samples[-1]["oldest_dirty_age"] < 1.0:
                steady = samples[-1]["t"]
                break
        time.sleep(3.0)
        stop.set()
        writer.join()
        sampler.join()
        cache.close()
        engine.dispose()
    finally:
        server.close()
    peak = max(samples, key=lambda s: s["dirty"])
    print(
        f"outage: down at {down_at:.1f} s for {args.outage:.0f} s, 25% load = {rate:,.0f} "
        f"writes/s (max {max_rows:,} rows/s on this server); backlog peak {peak['dirty']:,} "
        f"keys at {peak['t']} s; age back under 1 s at {steady} s "
        f"({(steady or 0) - up_at:.1f} s after the restart)"
    )
    for s in samples[:: max(1, len(samples) // 40)]:
        print(f"  t={s['t']:6.2f} dirty={s['dirty']:>6,} age={s['oldest_dirty_age']:6.2f} "
              f"lag_p99={s['lag_p99']:6.2f} failures={s['flush_failures']}")  # fmt: skip
    return {"max_rows_per_s": max_rows, "writes_per_s": round(rate), "down_at": round(down_at, 2),
            "up_at": round(up_at, 2), "age_under_1s_at": steady, "samples": samples}  # fmt: skip


def _hot_path(repeat: int = 5) -> dict[str, Any]:
    """CPU per write-back ``write``: lag sampling on and off, and validation on and off.

    Validation: a SQLSource (a SQLite table, never flushed during the run) against a
    MappingSource, which validates nothing; all interleaved in one run.
    """
    keys = Zipf(100_000, seed=3).draw(100_000)
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-lag-"))
    with sqlite3.connect(tmp / "hot.db") as db:
        db.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, note TEXT)")
    runs: dict[str, list[float]] = {"sampling": [], "no-sampling": [], "sqlsource": []}
    shipped = getattr(flusher_mod, "SAMPLE_EVERY")  # noqa: B009 - patched for a run
    try:
        for _ in range(repeat):
            for mode, cpus in runs.items():
                setattr(flusher_mod, "SAMPLE_EVERY", 10**12 if mode == "no-sampling" else shipped)  # noqa: B010
                source: Any = (
                    SQLSource(f"sqlite:///{tmp}/hot.db", table="hot")
                    if mode == "sqlsource"
                    else MappingSource()
                )
                policy = WriteBack(flush_interval=3600, max_batch=10**6, max_dirty=10**6)
                cache = Cache(MemoryStore(max_entries=10**6), source, write=policy)
                try:
                    started = time.thread_time_ns()
                    for i, key in enumerate(keys):
                        cache.write(key, _row(key, i))
                    cpus.append((time.thread_time_ns() - started) / len(keys) / 1000.0)
                finally:
                    cache.close()
    finally:
        setattr(flusher_mod, "SAMPLE_EVERY", shipped)  # noqa: B010
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {mode: round(statistics.median(c), 2) for mode, c in runs.items()}
    out["runs"] = {mode: [round(c, 2) for c in cpus] for mode, cpus in runs.items()}
    out["sampling_ratio"] = round(out["sampling"] / out["no-sampling"], 3)
    out["validation_ratio"] = round(out["sqlsource"] / out["sampling"], 3)
    print(f"hot path: {out['sampling']} µs CPU per write with lag sampling, "
          f"{out['no-sampling']} without ({out['sampling_ratio']}x); through a validating "
          f"SQLSource {out['sqlsource']} ({out['validation_ratio']}x a MappingSource)")  # fmt: skip
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    # The outage makes every flush fail for a while: one warning each is noise here.
    logging.getLogger("cachewise").setLevel(logging.ERROR)
    result: dict[str, Any] = {"keys": args.keys, "flush_interval": INTERVAL,
                              "seconds_per_load": args.seconds, "cpus": os.cpu_count(),
                              "loadavg_start": os.getloadavg()}  # fmt: skip
    result["hot_path_cpu_us"] = _hot_path()
    engine = sa.create_engine(args.postgres_url, pool_size=5)
    table = f"cw_bench_lag_{os.getpid()}"
    try:
        result["max_flush"] = _max_flush(engine, table, args.flush_rows)
        max_rows = result["max_flush"]["rows_per_s"]
        print(f"max flush: {max_rows:,} rows/s (runs {result['max_flush']['runs']})")
        result["loads"] = _load(engine, table, args, max_rows)
    finally:
        _drop(engine, table)
        engine.dispose()
    result["outage"] = _outage(args)
    result["loadavg_end"] = os.getloadavg()
    return result
