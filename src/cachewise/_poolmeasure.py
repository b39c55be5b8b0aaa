"""Measure connection pooling on PostgreSQL: a primary-key SELECT per request, many ways.

The contenders answer the same request (``SELECT id, name, price FROM t WHERE id = k``)
with a new connection each time, with ``cachewise.connect()`` (through SQLAlchemy's Engine,
through ``dbapi_connection()``, and in autocommit through the driver connection as
``SQLSource`` reads), with psycopg_pool (also in autocommit), with SQLAlchemy's stock
``QueuePool`` engine, with Django's persistent connection per thread (its implicit
pooling), and with a new client connection each time through PgBouncer and through
Pgpool-II.
They run interleaved in short rounds, so the noise of a shared machine falls on all of
them alike; requests/s is the median over rounds, latencies are pooled over rounds.
Used by ``python -m bench pooling`` and by the lab.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from cachewise._djangopool import django_requests
from cachewise._pgbouncer import PgBouncer
from cachewise._pgpool import Pgpool
from cachewise.pool import DEFAULT_POOL_SIZE, connect, dbapi_connection, direct_url
from cachewise.sources._fastlane import driver_connection

Request = Callable[[int], object]

CONTENDERS = (
    "new connection",
    "cachewise.connect() Engine",
    "cachewise.connect() dbapi_connection",
    "cachewise.connect() autocommit",
    "psycopg_pool",
    "psycopg_pool autocommit",
    "SQLAlchemy stock QueuePool",
    "Django persistent connection",
    "PgBouncer new connection",
    "Pgpool-II new connection",
)
_POOLERS = ("PgBouncer new connection", "Pgpool-II new connection")
"""Every contender, in report order."""


@dataclass
class _Contender:
    name: str
    request: Request
    close: Callable[[], None]
    thread_exit: Callable[[], None] = lambda: None
    """Run by each worker thread when it ends (a per-thread connection to close)."""


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _setup_table(conninfo: str, table: str, rows: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, name text NOT NULL,"
            " price numeric(12, 2) NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT g, 'product ' || g, g %% 1000 / 10.0"
            " FROM generate_series(1, %s) AS g",
            (rows,),
        )
        conn.execute(f"ANALYZE {table}")


def _drop_table(conninfo: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def _engine_request(engine: Engine, table: str) -> Request:
    t = sa.table(table, sa.column("id"), sa.column("name"), sa.column("price"))
    stmt = sa.select(t.c.id, t.c.name, t.c.price).where(t.c.id == sa.bindparam("id"))

    def request(key: int) -> object:
        with engine.connect() as conn:
            return conn.execute(stmt, {"id": key}).first()

    return request


def _build_outside(name: str, url: URL, sql: str, poolers: dict[str, str]) -> _Contender | None:
    """The contenders whose pooling lives outside our process's pool: poolers, Django."""
    if name in _POOLERS:
        through = poolers[name]
        # PgBouncer (transaction mode) cannot keep prepared statements; Pgpool-II can.
        prepare = None if name.startswith("PgBouncer") else 5

        def bounced(key: int) -> object:
            with psycopg.connect(through, prepare_threshold=prepare) as conn:
                return conn.execute(sql, (key,)).fetchone()

        return _Contender(name, bounced, lambda: None)
    if name == "Django persistent connection":
        django = django_requests(url)

        def persistent(key: int) -> object:
            return django.query(sql, (key,))

        return _Contender(name, persistent, lambda: None, django.close_thread)
    return None


def _build(name: str, url: URL, table: str, pool_size: int, poolers: dict[str, str]) -> _Contender:
    conninfo = _conninfo(url)
    sql = f"SELECT id, name, price FROM {table} WHERE id = %s"
    if name == "new connection":

        def fresh(key: int) -> object:
            with psycopg.connect(conninfo) as conn:
                return conn.execute(sql, (key,)).fetchone()

        return _Contender(name, fresh, lambda: None)
    outside = _build_outside(name, url, sql, poolers)
    if outside is not None:
        return outside
    if name.startswith("psycopg_pool"):
        # "autocommit": one round trip per SELECT, as Django runs by default (no BEGIN/COMMIT).
        autocommit = name.endswith("autocommit")
        pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=pool_size,
            max_size=pool_size,
            open=True,
            kwargs={"autocommit": autocommit},
        )
        pool.wait(30.0)

        def pooled(key: int) -> object:
            with pool.connection() as conn:
                return conn.execute(sql, (key,)).fetchone()

        return _Contender(name, pooled, pool.close)
    if name == "SQLAlchemy stock QueuePool":
        stock = sa.create_engine(url)
        return _Contender(name, _engine_request(stock, table), stock.dispose)
    return _build_ours(name, connect(url, pool_size=pool_size), table, sql)


def _build_ours(name: str, engine: Engine, table: str, sql: str) -> _Contender:
    """The contenders on ``cachewise.connect()``'s pool (``engine``)."""
    if name == "cachewise.connect() Engine":
        return _Contender(name, _engine_request(engine, table), engine.dispose)
    if name == "cachewise.connect() dbapi_connection":

        def fast(key: int) -> object:
            with dbapi_connection(engine) as conn:
                cursor = conn.cursor()
                try:
                    cursor.execute(sql, (key,))
                    return cursor.fetchone()
                finally:
                    cursor.close()

        return _Contender(name, fast, engine.dispose)
    if name == "cachewise.connect() autocommit":
        # SQLSource's fast lane: one round trip, as Django's and psycopg_pool autocommit.
        def lane(key: int) -> object:
            with driver_connection(engine, autocommit=True) as conn:
                return conn.execute(sql, (key,)).fetchone()

        return _Contender(name, lane, engine.dispose)
    engine.dispose()
    raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")


def _run_round(
    request: Request,
    threads: int,
    seconds: float,
    rows: int,
    thread_exit: Callable[[], None] = lambda: None,
) -> tuple[int, float, list[float], float]:
    """Run ``threads`` workers for ``seconds``: (requests, elapsed, latencies, client CPU)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    cpu = [0.0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(slot: int) -> None:
        rng = random.Random(slot)
        mine = latencies[slot]
        start.wait()
        cpu0 = time.thread_time()
        end = deadline[0]
        clock = time.perf_counter
        try:
            while True:
                t0 = clock()
                if t0 >= end:
                    break
                request(rng.randint(1, rows))
                mine.append(clock() - t0)
        except BaseException as err:  # reported by the caller
            errors.append(err)
        cpu[slot] = time.thread_time() - cpu0
        thread_exit()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for lat in latencies for x in lat]
    return len(flat), elapsed, flat, sum(cpu)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def _layers(url: URL, table: str, repeat: int = 2000) -> dict[str, float]:
    """Client CPU µs per operation, one thread: where SQLAlchemy's time goes."""
    conninfo = _conninfo(url)
    sql = f"SELECT id, name, price FROM {table} WHERE id = %s"
    pool = psycopg_pool.ConnectionPool(conninfo, min_size=1, max_size=1, open=True)
    engine = connect(url, pool_size=1)
    stock = sa.create_engine(url, pool_size=1)
    select = _engine_request(engine, table)
    try:
        pool.wait(30.0)

        def pp_checkout() -> None:
            conn = pool.getconn()
            pool.putconn(conn)

        def sa_checkout(e: Engine) -> Callable[[], None]:
            def run() -> None:
                e.raw_connection().close()

            return run

        def sa_connection() -> None:
            with engine.connect():
                pass

        def dbapi_select() -> None:
            with dbapi_connection(engine) as conn:
                cursor = conn.cursor()
                cursor.execute(sql, (7,))
                cursor.fetchone()
                cursor.close()

        def pp_select() -> None:
            with pool.connection() as conn:
                conn.execute(sql, (7,)).fetchone()

        ops: dict[str, Callable[[], object]] = {
            "psycopg_pool getconn+putconn": pp_checkout,
            "QueuePool checkout+checkin (stock)": sa_checkout(stock),
            "QueuePool checkout+checkin (cachewise)": sa_checkout(engine),
            "Engine.connect()+close() (cachewise)": sa_connection,
            "psycopg_pool SELECT by key": pp_select,
            "dbapi_connection() SELECT by key": dbapi_select,
            "Engine SELECT by key (Core)": lambda: select(7),
        }
        found: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(5):
            for name, op in ops.items():
                cpu0 = time.thread_time()
                for _ in range(repeat // 5):
                    op()
                found[name].append((time.thread_time() - cpu0) / (repeat // 5) * 1e6)
        return {name: round(statistics.median(v), 1) for name, v in found.items()}
    finally:
        pool.close()
        engine.dispose()
        stock.dispose()


@contextmanager
def _maybe_poolers(
    url: URL, wanted: Sequence[str], notes: list[str], clients: int
) -> Iterator[dict[str, str]]:
    """Conninfos through a PgBouncer and a Pgpool-II of our own, for those wanted and startable.

    Pgpool-II gets one child per client thread and a spare: each child keeps its own
    server connection, so more children would only spend PostgreSQL's ``max_connections``.
    """
    started: dict[str, PgBouncer | Pgpool] = {}
    through: dict[str, str] = {}
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        for name in wanted:
            if name not in _POOLERS:
                continue
            try:
                server = (
                    PgBouncer(host, port)
                    if name.startswith("PgBouncer")
                    else Pgpool(((host, port, 1),), children=clients + 1, max_pool=1)
                )
                started[name] = server
                server.start()
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                notes.append(f"{name.split()[0]} left out: {str(err).splitlines()[0]}")
                continue
            through[name] = _conninfo(url.set(host="127.0.0.1", port=server.port))
        yield through
    finally:
        for server in started.values():
            server.close()


def measure(
    url: str | URL,
    *,
    threads: Sequence[int] = (1, 16),
    seconds: float = 0.6,
    rounds: int = 5,
    rows: int = 10_000,
    pool_size: int | None = None,
    contenders: Sequence[str] = CONTENDERS,
    layers: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every contender at each thread count; return figures and ratios as a dict.

    ``pool_size`` (default: cachewise's default) sizes cachewise's pool and psycopg_pool
    alike; the stock QueuePool keeps SQLAlchemy's defaults (5 + 10 overflow). The
    small version for the lab: ``measure(url, threads=(1,), seconds=0.3, rounds=2)``.
    """
    # PostgreSQL itself: a URL through PgBouncer would put every contender behind it.
    parsed = direct_url(url)
    size = pool_size or DEFAULT_POOL_SIZE
    table = f"cw_poolbench_{os.getpid()}_{random.randrange(1 << 30):x}"
    say = progress or (lambda _: None)
    conninfo = _conninfo(parsed)
    _setup_table(conninfo, table, rows)
    out: dict[str, Any] = {
        "query": "SELECT id, name, price FROM t WHERE id = :key (10k rows, random keys)",
        "pool_size": size,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "cores": os.cpu_count(),
        "notes": [],
        "results": [],
    }
    try:
        with _maybe_poolers(parsed, contenders, out["notes"], max(threads)) as poolers:
            names = [n for n in contenders if n not in _POOLERS or n in poolers]
            built = []
            for name in names:
                try:
                    built.append(_build(name, parsed, table, size, poolers))
                except ImportError as err:  # Django is an optional extra
                    out["notes"].append(f"{name} left out: {err}")
            try:
                for n_threads in threads:
                    for c in built:  # warm up: fill pools, prepare statements
                        _run_round(c.request, n_threads, min(0.2, seconds), rows, c.thread_exit)
                    per: dict[str, dict[str, Any]] = {
                        c.name: {"rates": [], "lat": [], "cpu": 0.0, "n": 0} for c in built
                    }
                    for r in range(rounds):
                        order = built[r % len(built) :] + built[: r % len(built)]
                        for c in order:
                            n, elapsed, lat, cpu = _run_round(
                                c.request, n_threads, seconds, rows, c.thread_exit
                            )
                            slot = per[c.name]
                            slot["rates"].append(n / elapsed)
                            slot["lat"].extend(lat)
                            slot["cpu"] += cpu
                            slot["n"] += n
                    for c in built:
                        slot = per[c.name]
                        lat = sorted(slot["lat"])
                        row = {
                            "contender": c.name,
                            "threads": n_threads,
                            "req_per_s": round(statistics.median(slot["rates"]), 1),
                            "p50_ms": round(_percentile(lat, 0.50) * 1e3, 3),
                            "p99_ms": round(_percentile(lat, 0.99) * 1e3, 3),
                            "requests": slot["n"],
                            "client_cpu_us_per_request": round(
                                slot["cpu"] / max(slot["n"], 1) * 1e6, 1
                            ),
                        }
                        out["results"].append(row)
                        say(
                            f"{n_threads:>3} threads  {c.name:<38} {row['req_per_s']:>9.0f} req/s"
                            f"  p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
                        )
            finally:
                for c in built:
                    with suppress(Exception):
                        c.close()
        if layers:
            out["layers_cpu_us"] = _layers(parsed, table)
    finally:
        _drop_table(conninfo, table)
    out["ratios"] = ratios(out["results"])
    return out


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per thread count: each contender's req/s over "new connection" and over psycopg_pool."""
    found: dict[str, dict[str, float]] = {}
    by_threads: dict[int, dict[str, float]] = {}
    for row in results:
        by_threads.setdefault(row["threads"], {})[row["contender"]] = row["req_per_s"]
    for n_threads, rates in by_threads.items():
        base = rates.get("new connection")
        peer = rates.get("psycopg_pool")
        for name, rate in rates.items():
            entry = found.setdefault(f"{name} @{n_threads}", {})
            if base:
                entry["x_new_connection"] = round(rate / base, 2)
            if peer:
                entry["x_psycopg_pool"] = round(rate / peer, 3)
    return found
