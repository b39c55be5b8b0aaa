"""Benchmark: the custom aggregation level on PostgreSQL (materialized view + cache).

Two workloads, each on 1M generated source rows (``INSERT ... SELECT generate_series``):

* orders: ``SUM/COUNT per customer`` (10,000 customers). The peer is the aggregate
  query run directly: the whole ``GROUP BY``, and the per-key form an application
  would run for one customer (``WHERE customer = :c GROUP BY customer``, with an index
  on ``customer``). Ours: ``agg.read(key)`` from memory (hot) and from the view's
  unique index (cold cache). Also the time to create and to refresh the view.
* page views (the lab's case 6): views per page per hour, 1,000 pages over a week.
  Reads/s of one dashboard cell ``(page, hour)`` three ways: the raw ``GROUP BY`` over
  the events (index on ``(page, viewed_at)``), the summary (materialized view) read
  directly, and ``agg.read((page, hour))`` through the cache.

Keys are drawn from a skewed distribution (a few hot customers/pages), the usual
shape of dashboard traffic. Big tables are dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

if __package__ in {None, ""}:  # run as a script: make ``bench`` and ``cachewise`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cachewise import Aggregate, connect

NAME = "aggregates"
DEFAULT_POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"
RESULTS = Path(__file__).parent / "results" / "aggregates.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000, help="source rows per workload")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=1_000)
    parser.add_argument("--hours", type=int, default=168, help="hours of page views")
    parser.add_argument("--seconds", type=float, default=2.0, help="per reads/s measurement")
    parser.add_argument("--trace", type=int, default=50_000, help="dashboard reads in the trace")
    parser.add_argument("--samples", type=int, default=200, help="timed single reads per case")
    parser.add_argument("--refreshes", type=int, default=3, help="timed refreshes (median)")
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL", DEFAULT_POSTGRES))


def _skewed(n: int, rng: random.Random) -> int:
    """A key index in [0, n): Pareto-like, a few keys take most reads."""
    return min(n - 1, int(n * (rng.random() ** 3)))


def _timed(fn: Callable[[], object], samples: int) -> dict[str, float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1000, 4),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 4),
    }


def _rate(fn: Callable[[], object], seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(20):
            fn()
        done += 20
    return round(done / (time.perf_counter() - start), 1)


def _rates(
    contenders: dict[str, Callable[[], object]], seconds: float, rounds: int
) -> dict[str, float]:
    """Reads/s of each contender: ``rounds`` interleaved runs, the median kept.

    Interleaving spreads the shared machine's load bursts over every contender.
    """
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            runs[name].append(_rate(fn, seconds / rounds))
    return {name: round(statistics.median(r), 1) for name, r in runs.items()}


def _orders(engine: sa.Engine, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    table = f"{prefix}_orders"
    rng = random.Random(7)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, customer INT, amount INT)")
        )
        started = time.perf_counter()
        conn.execute(
            sa.text(
                f"INSERT INTO {table} SELECT i, i % :c, (i::bigint * 7919) % 1000 "
                "FROM generate_series(1, :n) AS i"
            ),
            {"c": args.customers, "n": args.rows},
        )
        conn.execute(sa.text(f"CREATE INDEX ON {table} (customer)"))
        conn.execute(sa.text(f"ANALYZE {table}"))
        load_s = time.perf_counter() - started
    query = f"SELECT customer, SUM(amount) AS total, COUNT(*) AS n FROM {table} GROUP BY customer"
    per_key = sa.text(
        f"SELECT customer, SUM(amount) AS total, COUNT(*) AS n FROM {table} "
        "WHERE customer = :c GROUP BY customer"
    )
    out: dict[str, Any] = {
        "source_rows": args.rows,
        "keys": args.customers,
        "load_s": round(load_s, 2),
    }
    started = time.perf_counter()
    agg = Aggregate(
        engine, f"{prefix}_by_customer", query, key="customer", max_entries=args.customers * 2
    )
    out["create_s"] = round(time.perf_counter() - started, 3)
    try:
        with engine.connect() as conn:
            out["direct_group_by_all"] = _timed(lambda: conn.execute(sa.text(query)).all(), 3)
            out["direct_per_key"] = _timed(
                lambda: conn.execute(per_key, {"c": _skewed(args.customers, rng)}).all(),
                args.samples,
            )
            conn.rollback()

        def checkout_and_query() -> object:
            # What a request handler does: take a pooled connection, query, give it back.
            with engine.connect() as conn:
                return conn.execute(per_key, {"c": _skewed(args.customers, rng)}).all()

        out["direct_per_key_checkout"] = _timed(checkout_and_query, args.samples)
        # Cold: every read misses the cache and reads the view by its unique index.
        cold_keys = rng.sample(range(args.customers), min(args.samples, args.customers))
        it = iter(cold_keys)
        out["agg_read_cold"] = _timed(lambda: agg.read(next(it)), len(cold_keys))
        for c in range(args.customers):  # warm every key: the hot summary rows
            agg.read(c)
        out["agg_read_hot"] = _timed(
            lambda: agg.read(_skewed(args.customers, rng)), args.samples * 10
        )
        assert agg.read(3)["n"] == len(range(3, args.rows + 1, args.customers))
        refresh_times = []
        for _ in range(args.refreshes):
            with engine.begin() as conn:  # 1% of the rows change between refreshes
                conn.execute(
                    sa.text(f"UPDATE {table} SET amount = amount + 1 WHERE id % 100 = :r"),
                    {"r": rng.randrange(100)},
                )
            started = time.perf_counter()
            agg.refresh()
            refresh_times.append(time.perf_counter() - started)
        out["refresh_s_median"] = round(statistics.median(refresh_times), 3)
        out["refresh_s_all"] = [round(t, 3) for t in refresh_times]
        direct_ms = out["direct_per_key"]["median_ms"]
        out["ratio_direct_per_key_over_agg_hot"] = round(
            direct_ms / out["agg_read_hot"]["median_ms"], 1
        )
        out["ratio_direct_per_key_checkout_over_agg_cold"] = round(
            out["direct_per_key_checkout"]["median_ms"] / out["agg_read_cold"]["median_ms"], 2
        )
        out["ratio_direct_per_key_over_agg_cold"] = round(
            direct_ms / out["agg_read_cold"]["median_ms"], 2
        )
        out["ratio_group_by_all_over_agg_hot"] = round(
            out["direct_group_by_all"]["median_ms"] / out["agg_read_hot"]["median_ms"], 0
        )
        out["read_cache"] = {"hits": agg.stats.hits, "loads": agg.stats.loads}
    finally:
        agg.drop()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    return out


def _page_views(engine: sa.Engine, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    table = f"{prefix}_page_views"
    rng = random.Random(11)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, page TEXT, viewed_at TIMESTAMPTZ)"
            )
        )
        started = time.perf_counter()
        # Pages skewed (a few pages get most views), times spread over the week.
        conn.execute(
            sa.text(
                f"INSERT INTO {table} SELECT i, '/page/' || floor(:p * power(random(), 3))::int, "
                ":start + (random() * :h) * interval '1 hour' FROM generate_series(1, :n) AS i"
            ),
            {"p": args.pages, "h": args.hours, "n": args.rows, "start": start},
        )
        conn.execute(sa.text(f"CREATE INDEX ON {table} (page, viewed_at)"))
        conn.execute(sa.text(f"ANALYZE {table}"))
        load_s = time.perf_counter() - started
    query = (
        f"SELECT page, date_trunc('hour', viewed_at) AS hour, COUNT(*) AS views "
        f"FROM {table} GROUP BY page, date_trunc('hour', viewed_at)"
    )
    out: dict[str, Any] = {"source_rows": args.rows, "load_s": round(load_s, 2)}
    started = time.perf_counter()
    agg = Aggregate(engine, f"{prefix}_hourly", query, key=("page", "hour"), max_entries=200_000)
    out["create_s"] = round(time.perf_counter() - started, 3)
    try:
        with engine.connect() as conn:
            out["summary_rows"] = conn.execute(
                sa.text(f"SELECT COUNT(*) FROM {prefix}_hourly")
            ).scalar()
            conn.rollback()

        # One dashboard trace for every contender: skewed pages, any hour of the week.
        trace = [
            (
                f"/page/{_skewed(args.pages, rng)}",
                start + dt.timedelta(hours=rng.randrange(args.hours)),
            )
            for _ in range(args.trace)
        ]
        cell = itertools.cycle(trace).__next__

        page, hour = "/page/0", start + dt.timedelta(hours=5)
        with engine.connect() as conn:
            expected = conn.execute(
                sa.text(
                    f"SELECT COUNT(*) FROM {table} WHERE page = :page "
                    "AND viewed_at >= :hour AND viewed_at < :hour + interval '1 hour'"
                ),
                {"page": page, "hour": hour},
            ).scalar()
            conn.rollback()
        assert agg.read((page, hour))["views"] == expected  # the summary is the query's answer

        week = [start + dt.timedelta(hours=h) for h in range(args.hours)]
        out.update(_page_reads(engine, agg, table, cell=cell, trace=trace, week=week, args=args))
        started = time.perf_counter()
        agg.refresh()
        out["refresh_s"] = round(time.perf_counter() - started, 3)
        out["read_cache"] = {"hits": agg.stats.hits, "loads": agg.stats.loads}
    finally:
        agg.drop()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    return out


def _page_reads(
    engine: sa.Engine,
    agg: Aggregate,
    table: str,
    *,
    cell: Callable[[], tuple[str, dt.datetime]],
    trace: list[tuple[str, dt.datetime]],
    week: list[dt.datetime],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Reads/s of dashboard reads: raw GROUP BY, the summary directly, agg.read(_many)."""
    raw_cell = sa.text(
        f"SELECT page, date_trunc('hour', viewed_at) AS hour, COUNT(*) AS views FROM {table} "
        "WHERE page = :page AND viewed_at >= :hour AND viewed_at < :hour + interval '1 hour' "
        "GROUP BY page, date_trunc('hour', viewed_at)"
    )
    summary_cell = sa.text(
        f"SELECT page, hour, views FROM {agg.name} WHERE page = :page AND hour = :hour"
    )
    raw_week = sa.text(
        f"SELECT date_trunc('hour', viewed_at) AS hour, COUNT(*) AS views FROM {table} "
        "WHERE page = :page GROUP BY date_trunc('hour', viewed_at)"
    )
    summary_week = sa.text(f"SELECT hour, views FROM {agg.name} WHERE page = :page")
    out: dict[str, Any] = {}
    # First pass over the trace: mostly misses, loaded from the view by its unique index.
    out["agg_read_first_pass_reads_per_s"] = _rate(lambda: agg.read(cell()), args.seconds / 2)
    # Warm the trace's cells (batched read_many), then measure everyone, interleaved.
    cells = list(dict.fromkeys(trace))
    started = time.perf_counter()
    for i in range(0, len(cells), 1000):
        agg.read_many(cells[i : i + 1000])
    out["trace_distinct_cells"] = len(cells)
    out["warm_read_many_s"] = round(time.perf_counter() - started, 3)
    pages = [p for p, _ in trace]
    next_page = itertools.cycle(pages).__next__
    with engine.connect() as conn:

        def one(statement: sa.TextClause) -> Callable[[], object]:
            def read() -> object:
                p, h = cell()
                return conn.execute(statement, {"page": p, "hour": h}).first()

            return read

        def page_week(statement: sa.TextClause) -> Callable[[], object]:
            return lambda: conn.execute(statement, {"page": next_page()}).all()

        def agg_week() -> object:
            p = next_page()
            return agg.read_many([(p, h) for h in week])

        out["cell_reads_per_s"] = _rates(
            {
                "raw_group_by": one(raw_cell),
                "summary_direct": one(summary_cell),
                "agg_read": lambda: agg.read(cell()),
            },
            args.seconds * 3,
            rounds=3,
        )
        # Warm the week of every page the trace touches, then the whole-week reads.
        for p in dict.fromkeys(pages):
            agg.read_many([(p, h) for h in week])
        out["page_week_reads_per_s"] = _rates(
            {
                "raw_group_by": page_week(raw_week),
                "summary_direct": page_week(summary_week),
                "agg_read_many": agg_week,
            },
            args.seconds * 3,
            rounds=3,
        )
        conn.rollback()
    for kind in ("cell_reads_per_s", "page_week_reads_per_s"):
        rates = out[kind]
        base = rates["raw_group_by"]
        out[kind.replace("reads_per_s", "ratios_over_raw")] = {
            name: round(rate / base, 2) for name, rate in rates.items() if name != "raw_group_by"
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = connect(args.postgres_url)
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
            conn.rollback()
        result: dict[str, Any] = {
            "database": f"PostgreSQL {version}",
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}",
        }
        print(f"orders: {args.rows:,} rows, {args.customers:,} customers ...", flush=True)
        result["orders"] = _orders(engine, args, prefix)
        print(json.dumps(result["orders"], indent=2))
        print(
            f"page views: {args.rows:,} rows, {args.pages:,} pages x {args.hours} h ...", flush=True
        )
        result["page_views"] = _page_views(engine, args, prefix)
        print(json.dumps(result["page_views"], indent=2))
    finally:
        engine.dispose()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    namespace = parser.parse_args()
    outcome = run(namespace)
    namespace.out.parent.mkdir(parents=True, exist_ok=True)
    namespace.out.write_text(json.dumps({"benchmark": NAME, "result": outcome}, indent=2) + "\n")
    print(f"wrote {namespace.out}")
