"""The pooling case: the same requests with a new connection each, pooled, and through poolers.

Each request opens (or borrows) a connection, reads one row by key and gives the
connection back. "new-connection" opens a fresh DBAPI connection per request
(SQLAlchemy ``NullPool``); "pool" borrows from ``cachewise.connect()``'s pool;
"django-persistent" is Django's implicit pooling (its persistent connection per
thread, ``CONN_MAX_AGE=None``, through Django's own connection handling; PostgreSQL and
Django only); "pgbouncer" and "pgpool" open a new connection per request to PgBouncer or
Pgpool-II, which keep the server connections: the ones given with
``--param pooling.pgbouncer=URL`` / ``pooling.pgpool=URL``, or on PostgreSQL ones the
lab starts for the run (when their binaries are installed). In the report's columns,
read latency is request latency, source reads are requests and the hit ratio is the
share of requests served by a reused connection.

Every contender makes the same request the same way: one ``SELECT`` in autocommit, as
Django does by default and as ``SQLSource`` reads; a SQLAlchemy checkout's own
transaction (``BEGIN`` ... ``ROLLBACK``, two more round trips) would otherwise be
measured as the pool's cost (docs/pooling.md, "A fair comparison").
"""

from __future__ import annotations

import importlib
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from cachewise._djangopool import django_requests
from cachewise._pgbouncer import PgBouncer
from cachewise._pgpool import Pgpool
from cachewise._redact import redact
from cachewise.errors import ConfigurationError
from cachewise.lab.assemble import Environment
from cachewise.lab.database import create_tables, drop_tables, table_names
from cachewise.lab.metrics import percentile
from cachewise.lab.objective import Criterion, Objective, cost, decide
from cachewise.lab.runner import CaseResult, KindResult, Progress
from cachewise.lab.scenario import Case, Kind, Params, Scenario
from cachewise.lab.workloads import History
from cachewise.pool import connect, direct_url, statement_prefix
from cachewise.sources import _fastlane

Samples = dict[str, list[float]]
"""Request latencies in µs, per contender."""


def _no_scenario(params: Params, rng: random.Random) -> Scenario:
    raise ConfigurationError("the pooling case has no cache scenario")


POOLING = Case(
    name="pooling",
    title="Connection pooling",
    story=(
        "The same request load five ways: a new database connection per request, "
        "connections reused from a pool, Django's persistent connection per thread, and "
        "(where available) through PgBouncer and Pgpool-II."
    ),
    kinds=(
        Kind(
            name="connections",
            table="",
            workshop="pool",
            objective=Objective(
                (
                    Criterion("read_p50_us", rel=0.1),
                    Criterion("read_p99_us", rel=0.5),
                    Criterion("hit_ratio", goal="max", rel=0.05),
                ),
                "request latency first, then its tail, then fewest connections opened",
            ),
            candidates=("new-connection", "pool", "django-persistent", "pgbouncer", "pgpool"),
        ),
    ),
    defaults={"requests": 2000, "rows": 200, "pgbouncer": "", "pgpool": ""},
    quick={"requests": 400},
    build=_no_scenario,
    workshop_says="a pool (PgBouncer for many processes)",
)


_POOLERS = {"pgbouncer": "PgBouncer (transaction mode)", "pgpool": "Pgpool-II (pooling mode)"}


def _poolers(
    env: Environment, params: Params, notes: list[str]
) -> tuple[dict[str, str], list[PgBouncer | Pgpool]]:
    """URLs through PgBouncer and Pgpool-II to measure ("" skips one), and those we started."""
    urls: dict[str, str] = {}
    started: list[PgBouncer | Pgpool] = []
    for name, title in _POOLERS.items():
        if params[name]:
            urls[name] = str(params[name])
            continue
        # PostgreSQL itself: a --database URL through a pooler (?pgbouncer=true&direct=...)
        # must not get a second pooler stacked on the first.
        try:
            url = direct_url(str(env.database.url))
        except ConfigurationError:
            notes.append(f"{name}: skipped (the database URL is a PgBouncer without ?direct=)")
            continue
        if url.get_backend_name() != "postgresql":
            notes.append(
                f"{name}: skipped (a PostgreSQL pooler; run with --database postgresql://... "
                f"or give --param pooling.{name}=URL)"
            )
            continue
        host, port = url.host or "127.0.0.1", url.port or 5432
        try:
            # One client at a time: a few children, each caching one server connection.
            server = (
                PgBouncer(host, port)
                if name == "pgbouncer"
                else Pgpool(((host, port, 1),), children=4)
            )
        except (OSError, RuntimeError) as exc:
            notes.append(f"{name}: skipped ({str(exc).splitlines()[0]})")
            continue
        try:
            server.start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            server.close()
            notes.append(f"{name}: skipped (could not start it: {str(exc).splitlines()[0]})")
            continue
        started.append(server)
        notes.append(f"{name}: started for this run on port {server.port}, {title}")
        urls[name] = server.url(database=url.database or "postgres", user=url.username or "root")
    return urls, started


def _engines(env: Environment, poolers: dict[str, str]) -> dict[str, Engine]:
    # The in-process contenders talk to the database itself, as Django's does: given a
    # URL through PgBouncer or Pgpool-II (``?direct=`` says where the server is), an
    # extra hop for some contenders only would decide the case. The poolers are rows of
    # their own, each in front of the same server.
    url: str | URL
    try:
        url = direct_url(str(env.database.url))
    except ConfigurationError:  # a PgBouncer URL without ?direct=: through it, as given
        url = str(env.database.url)
    # On PostgreSQL every connection is opened in autocommit, as Django's are: the
    # request is one statement, and no contender switches modes per request.
    kw: dict[str, Any] = {}
    if sa.make_url(url).get_backend_name() == "postgresql":
        kw["connect_args"] = {"autocommit": True}
    engines = {
        # connect() reads the URL's ?pgbouncer=/?direct= options; pool_size=0 is NullPool.
        "new-connection": connect(url, pool_size=0, **kw),
        "pool": connect(url, pool_size=5, **kw),
    }
    # A new client connection per request through each pooler.
    if "pgbouncer" in poolers:  # no server-side prepares (transaction mode)
        engines["pgbouncer"] = connect(poolers["pgbouncer"], pool_size=0, pgbouncer=True, **kw)
    if "pgpool" in poolers:
        engines["pgpool"] = connect(poolers["pgpool"], pool_size=0, pgpool=True, **kw)
    return engines


def run_pooling(
    env: Environment,
    *,
    quick: bool = False,
    overrides: dict[str, str] | None = None,
    seed: int = 7,
    progress: Progress = lambda: None,
) -> CaseResult:
    """Measure every connection strategy on the same seeded request sequence."""
    started = time.perf_counter()
    params = POOLING.params(quick, overrides or {})
    rng = random.Random(f"pooling:{seed}")
    history = History(("conn",), 1)
    for i in range(params["rows"]):
        history.seed("conn", f"r{i}", 100)
    keys = [f"r{rng.randrange(params['rows'])}" for _ in range(params["requests"])]
    kind = POOLING.kinds[0]
    notes: list[str] = []
    if env.database.is_sqlite:
        notes.append(
            "SQLite: a connection is a file open, far cheaper than a PostgreSQL "
            "connection (~4-10 ms); run with --database postgresql://... for the real gap"
        )
    setup = env.database.engine()
    names = table_names(("conn",))
    results: dict[str, dict[str, float]] = {}
    try:
        create_tables(setup, names, history.workload.seed_rows)
    except BaseException:
        setup.dispose()
        raise
    engines: dict[str, Engine] = {}
    servers: list[PgBouncer | Pgpool] = []
    try:
        table = sa.Table(names["conn"], sa.MetaData(), autoload_with=setup)
        poolers, servers = _poolers(env, params, notes)
        engines = _engines(env, poolers)
        contenders = {name: _engine_contender(e, table) for name, e in engines.items()}
        django = _django_contender(env, names["conn"], notes)
        if django is not None:
            contenders["django-persistent"] = django
        try:
            samples = _interleaved({name: c.request for name, c in contenders.items()}, keys)
        finally:
            for contender in contenders.values():
                contender.close()
        for name, contender in contenders.items():
            results[name] = _figures(samples[name], len(keys), contender.opened[0])
            progress()
        if django is None:
            progress()
    finally:
        for engine in engines.values():
            engine.dispose()
        drop_tables(setup, names)
        setup.dispose()
        for server in servers:
            server.close()
    order = [c for c in kind.candidates if c in results]
    decision = decide(results, kind.objective, order)
    runner_up = decision.runner_up
    kinds = [
        KindResult(
            kind=kind,
            results=results,
            decision=decision,
            cost=cost(results, kind.objective, decision.winner, runner_up) if runner_up else "",
            workshop_cost=None
            if decision.winner == kind.workshop
            else cost(results, kind.objective, decision.winner, kind.workshop),
            journal_lost={},
        )
    ]
    return CaseResult(
        name=POOLING.name,
        title=POOLING.title,
        story=POOLING.story,
        workshop_says=POOLING.workshop_says,
        # reports show params: the poolers' URLs without passwords
        params={**params, **{name: redact(params[name]) for name in _POOLERS}},
        kinds=kinds,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _Contender:
    """One way of making a request, the connections it opened, how to clean it up."""

    request: Callable[[str], object]
    opened: list[int]
    close: Callable[[], None]


def _interleaved(
    requests: dict[str, Callable[[str], object]], keys: list[str], block: int = 50
) -> Samples:
    """Each contender's latency (µs) per key, the contenders taking turns by blocks of keys.

    Every contender requests the same keys; the order rotates every block, so a stall
    of the shared machine falls on any of them alike instead of on whichever was being
    measured at the time. Blocks rather than single keys: a new connection's teardown
    on the server would otherwise land on the next contender's request.
    """
    names = list(requests)
    samples: Samples = {name: [] for name in names}
    for turn, first in enumerate(range(0, len(keys), block)):
        chunk = keys[first : first + block]
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            request, out = requests[name], samples[name]
            for key in chunk:
                start = time.perf_counter_ns()
                request(key)
                out.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _django_contender(env: Environment, table: str, notes: list[str]) -> _Contender | None:
    """Django's persistent connection (its defaults: autocommit, ``CONN_MAX_AGE=None``)."""
    try:
        url = direct_url(str(env.database.url))
    except ConfigurationError:
        notes.append("django-persistent: skipped (a PgBouncer URL without ?direct=)")
        return None
    if url.get_backend_name() != "postgresql":
        notes.append("django-persistent: skipped (measured on PostgreSQL)")
        return None
    try:
        django = django_requests(url)
        signals = importlib.import_module("django.db.backends.signals")
    except ImportError:
        notes.append("django-persistent: skipped (pip install 'cachewise[django]')")
        return None
    opened = [0]

    def on_created(sender: Any, connection: Any, **_: Any) -> None:
        opened[0] += 1

    signals.connection_created.connect(on_created, weak=False)
    sql = f'SELECT * FROM "{table}" WHERE k = %s'

    def close() -> None:
        signals.connection_created.disconnect(on_created)
        django.close_thread()

    notes.append(
        "django-persistent: Django's defaults (autocommit, CONN_MAX_AGE=None); every "
        "contender reads in autocommit alike (one round trip per request, no BEGIN/ROLLBACK)"
    )
    return _Contender(lambda key: django.query(sql, (key,)), opened, close)


def _request(engine: Engine, table: sa.Table) -> Callable[[str], object]:
    """One request in autocommit, as Django makes it: one statement, no BEGIN/ROLLBACK.

    On PostgreSQL (psycopg) through the driver connection, as ``SQLSource`` reads
    (its fast lane: the statement compiled once, Pgpool-II's routing hint included),
    on connections opened in autocommit (``_engines``); elsewhere through the Engine
    with ``isolation_level="AUTOCOMMIT"``.
    """
    query = sa.select(table).where(table.c.k == sa.bindparam("key"))
    if _fastlane.supported(engine):
        sql = statement_prefix(engine) + str(query.compile(dialect=engine.dialect))

        def direct(key: str) -> object:
            with _fastlane.driver_connection(engine, autocommit=True) as conn:
                return conn.execute(sql, {"key": key}).fetchone()

        return direct
    reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    def core(key: str) -> object:
        with reads.connect() as conn:
            return conn.execute(query, {"key": key}).first()

    return core


def _engine_contender(engine: Engine, table: sa.Table) -> _Contender:
    """Requests through ``engine``, counting the connections its pool opens."""
    opened = [0]

    def on_connect(*_: Any) -> None:
        opened[0] += 1

    sa.event.listen(engine, "connect", on_connect)
    return _Contender(
        _request(engine, table),
        opened,
        lambda: sa.event.remove(engine, "connect", on_connect),
    )


def _figures(samples: list[float], requests: int, opened: int) -> dict[str, float]:
    return {
        "hit_ratio": 1.0 - opened / requests if requests else 0.0,
        "source_reads": requests,
        "source_writes": 0,
        "read_p50_us": percentile(samples, 0.5),
        "read_p99_us": percentile(samples, 0.99),
        "write_p50_us": 0.0,
        "write_p99_us": 0.0,
        "stale_reads": 0,
        "lost_writes": 0,
        "app_calls": requests,
        "cache_ops": 0,
        "evictions": 0,
        "connections_opened": opened,
    }
