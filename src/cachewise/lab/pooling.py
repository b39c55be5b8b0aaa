"""The pooling case: the same requests with a new connection each, with the pool, via PgBouncer.

Each request opens (or borrows) a connection, reads one row by key and gives the
connection back. "new-connection" opens a fresh DBAPI connection per request
(SQLAlchemy ``NullPool``); "pool" borrows from ``cachewise.connect()``'s pool;
"pgbouncer" opens a new connection per request to PgBouncer, which keeps the server
connections: the one given with ``--param pooling.pgbouncer=URL``, or on PostgreSQL one
the lab starts for the run (when the ``pgbouncer`` binary is installed). In the report's columns,
read latency is request latency, source reads are requests and the hit ratio is the
share of requests served by a reused connection.
"""

from __future__ import annotations

import random
import subprocess
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise._pgbouncer import PgBouncer
from cachewise._redact import redact
from cachewise.errors import ConfigurationError
from cachewise.lab.assemble import Environment
from cachewise.lab.database import create_tables, drop_tables, table_names
from cachewise.lab.metrics import percentile
from cachewise.lab.objective import Criterion, Objective, cost, decide
from cachewise.lab.runner import CaseResult, KindResult, Progress
from cachewise.lab.scenario import Case, Kind, Params, Scenario
from cachewise.lab.workloads import History
from cachewise.pool import connect, direct_url


def _no_scenario(params: Params, rng: random.Random) -> Scenario:
    raise ConfigurationError("the pooling case has no cache scenario")


POOLING = Case(
    name="pooling",
    title="Connection pooling",
    story=(
        "The same request load three ways: a new database connection per request, "
        "connections reused from a pool, and (where available) through PgBouncer."
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
            candidates=("new-connection", "pool", "pgbouncer"),
        ),
    ),
    defaults={"requests": 2000, "rows": 200, "pgbouncer": ""},
    quick={"requests": 400},
    build=_no_scenario,
    workshop_says="a pool (PgBouncer for many processes)",
)


def _bouncer(env: Environment, params: Params, notes: list[str]) -> tuple[str, PgBouncer | None]:
    """The PgBouncer URL to measure through ("" to skip), and the one we started, if any."""
    if params["pgbouncer"]:
        return str(params["pgbouncer"]), None
    # PostgreSQL itself: a --database URL through PgBouncer (?pgbouncer=true&direct=...)
    # must not get a second PgBouncer stacked on the first.
    try:
        url = direct_url(str(env.database.url))
    except ConfigurationError:
        notes.append("pgbouncer: skipped (the database URL is a PgBouncer without ?direct=)")
        return "", None
    if url.get_backend_name() != "postgresql":
        notes.append(
            "pgbouncer: skipped (a PostgreSQL pooler; run with --database postgresql://... "
            "or give --param pooling.pgbouncer=URL)"
        )
        return "", None
    try:
        bouncer = PgBouncer(url.host or "127.0.0.1", url.port or 5432)
    except (OSError, RuntimeError) as exc:
        notes.append(f"pgbouncer: skipped ({str(exc).splitlines()[0]})")
        return "", None
    try:
        bouncer.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        bouncer.close()
        notes.append(f"pgbouncer: skipped (could not start it: {str(exc).splitlines()[0]})")
        return "", None
    notes.append(f"pgbouncer: started for this run on port {bouncer.port} (transaction mode)")
    return bouncer.url(database=url.database or "postgres", user=url.username or "root"), bouncer


def _engines(env: Environment, bouncer_url: str) -> dict[str, Engine]:
    url = str(env.database.url)
    engines = {
        # connect() reads the URL's ?pgbouncer=/?direct= options; pool_size=0 is NullPool.
        "new-connection": connect(url, pool_size=0),
        "pool": connect(url, pool_size=5),
    }
    if bouncer_url:
        # A new client connection per request; no server-side prepares (transaction mode).
        engines["pgbouncer"] = connect(bouncer_url, pool_size=0, pgbouncer=True)
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
    bouncer: PgBouncer | None = None
    try:
        table = sa.Table(names["conn"], sa.MetaData(), autoload_with=setup)
        bouncer_url, bouncer = _bouncer(env, params, notes)
        engines = _engines(env, bouncer_url)
        for name, engine in engines.items():
            results[name] = _measure(engine, table, keys)
            progress()
    finally:
        for engine in engines.values():
            engine.dispose()
        drop_tables(setup, names)
        setup.dispose()
        if bouncer is not None:
            bouncer.close()
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
        params={**params, "pgbouncer": redact(params["pgbouncer"])},  # reports show params
        kinds=kinds,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def _measure(engine: Engine, table: sa.Table, keys: list[str]) -> dict[str, float]:
    opened = [0]

    def on_connect(*_: Any) -> None:
        opened[0] += 1

    sa.event.listen(engine, "connect", on_connect)
    query = sa.select(table).where(table.c.k == sa.bindparam("key"))
    samples: list[float] = []
    try:
        for key in keys:
            start = time.perf_counter_ns()
            with engine.connect() as conn:
                conn.execute(query, {"key": key}).first()
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        sa.event.remove(engine, "connect", on_connect)
    return {
        "hit_ratio": 1.0 - opened[0] / len(keys) if keys else 0.0,
        "source_reads": len(keys),
        "source_writes": 0,
        "read_p50_us": percentile(samples, 0.5),
        "read_p99_us": percentile(samples, 0.99),
        "write_p50_us": 0.0,
        "write_p99_us": 0.0,
        "stale_reads": 0,
        "lost_writes": 0,
        "app_calls": len(keys),
        "cache_ops": 0,
        "evictions": 0,
        "connections_opened": opened[0],
    }
