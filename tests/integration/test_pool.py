"""cachewise.connect() and pool_stats() against real PostgreSQL, PgBouncer and SQLite."""

from __future__ import annotations

import os
import re
import threading
import traceback
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

import cachewise
from cachewise import SQLSource, errors
from cachewise._pgbouncer import free_port
from cachewise.errors import ConfigurationError
from cachewise.pool import (
    PoolStats,
    connect,
    connect_direct,
    dbapi_connection,
    direct_url,
    is_pgbouncer,
    is_pgpool,
    plan,
    pool_stats,
    redact,
)

SECRET = "s3cr3t-Pa55"


def _chain_text(err: BaseException) -> str:
    """Everything a traceback would print about ``err``, causes and contexts included."""
    return "".join(traceback.format_exception(err)) + repr(err)


# --------------------------------------------------------------------------- no server


def test_public_names() -> None:
    assert cachewise.connect is connect
    assert cachewise.pool_stats is pool_stats
    assert cachewise.PoolStats is PoolStats


def test_plain_postgresql_url_becomes_psycopg3() -> None:
    assert plan("postgresql://u@h:5432/d").url.drivername == "postgresql+psycopg"
    assert plan("postgresql+psycopg2://u@h/d").url.drivername == "postgresql+psycopg2"


def test_plain_mysql_url_becomes_pymysql() -> None:
    # The mysql extra installs PyMySQL; SQLAlchemy's default driver is mysqlclient.
    assert plan("mysql://u@h:3306/d").url.drivername == "mysql+pymysql"
    assert plan("mariadb://u@h/d").url.drivername == "mariadb+pymysql"
    assert plan("mysql+mysqldb://u@h/d").url.drivername == "mysql+mysqldb"
    assert plan("postgresql://u@h/d", direct_url="mysql://u@h/d").direct is not None


def test_a_driver_that_is_not_installed_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"psycopg2 driver .* is not installed"):
        connect("postgresql+psycopg2://u:s3cret@h/d")


@pytest.mark.mysql
def test_a_plain_mysql_url_connects_through_pymysql(mysql_url: str, unique_name: str) -> None:
    url = mysql_url.replace("mysql+pymysql://", "mysql://", 1)
    engine = connect(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {unique_name} (id INT PRIMARY KEY, v TEXT)")
        source = SQLSource(url, table=unique_name)
        source.save(1, {"id": 1, "v": "tea"})
        assert source.load(1) == {"id": 1, "v": "tea"}
        source.close()
        assert engine.dialect.driver == "pymysql"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {unique_name}")
        engine.dispose()


def test_pgbouncer_options_are_consumed_not_passed_to_the_driver() -> None:
    p = plan("postgresql://u:pw@h:6432/d?pgbouncer=true&direct=db.local:5432&sslmode=disable")
    assert p.pgbouncer
    assert p.direct is not None
    assert (p.direct.host, p.direct.port, p.direct.password) == ("db.local", 5432, "pw")
    assert dict(p.url.query) == {"sslmode": "disable"}
    assert not plan("postgresql://u@h/d?pgbouncer=false").pgbouncer
    assert plan("postgresql://u@h/d?pgbouncer=false", pgbouncer=True).pgbouncer


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("postgresql://u@h/d?pgbouncer=maybe", {}),
        ("postgresql://u@h/d?direct=nohostport", {}),
        ("sqlite:///x.db?pgbouncer=true", {}),
        ("postgresql://u@h/d", {"pool_size": -1}),
        ("postgresql://u@h/d", {"pool_size": True}),
        ("postgresql://u@h/d", {"max_overflow": -1}),
        ("postgresql://u@h/d", {"timeout": 0}),
        ("postgresql://u@h/d", {"recycle": -5}),
        ("postgresql://u@h/d", {"lifetime_jitter": 1.0}),
        ("no-scheme-at-all", {}),
        ("nosuchdb://u@h/d", {}),
    ],
)
def test_bad_configuration_is_refused(url: str, options: dict[str, object]) -> None:
    with pytest.raises(errors.ConfigurationError):
        connect(url, **options)  # type: ignore[arg-type]


def test_bad_url_error_never_shows_the_password() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        connect(f"postgresql://alice:{SECRET}@db.example:notaport/app")
    text = _chain_text(info.value)
    assert SECRET not in text
    assert "alice:***@db.example" in text


def test_redact_hides_passwords_in_urls_and_conninfo() -> None:
    assert SECRET not in redact(f"postgresql://a:{SECRET}@h/d")
    assert SECRET not in redact(f"host=h password={SECRET} dbname=d")
    assert SECRET not in redact(sa.make_url(f"postgresql://a:{SECRET}@h/d"))
    assert SECRET not in redact(sa.make_url(f"postgresql://a@h/d?password={SECRET}"))


def test_pgbouncer_mode_survives_execution_options_and_dispose() -> None:
    engine = connect("postgresql://u@h:6432/d?pgbouncer=true&direct=h:5432")
    try:
        copy = engine.execution_options(isolation_level="AUTOCOMMIT")
        assert is_pgbouncer(copy)
        assert direct_url(copy).port == 5432
        engine.dispose()
        assert is_pgbouncer(engine)
    finally:
        engine.dispose()


def test_engine_repr_and_url_text_hide_the_password() -> None:
    engine = connect(f"postgresql://alice:{SECRET}@127.0.0.1:1/app")
    try:
        assert SECRET not in repr(engine)
        assert SECRET not in str(engine.url)
        assert SECRET not in repr(pool_stats(engine))
    finally:
        engine.dispose()


def test_unreachable_database_is_a_source_error_without_the_password() -> None:
    engine = connect(f"postgresql://alice:{SECRET}@127.0.0.1:{free_port()}/app", timeout=2)
    try:
        with pytest.raises(errors.SourceError) as info, engine.connect():
            pass
        text = _chain_text(info.value)
        assert SECRET not in text
        assert "alice:***@127.0.0.1" in str(info.value)
        stats = pool_stats(engine)
        assert (stats.opened, stats.checked_out) == (0, 0)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- SQLite


def test_sqlite_file_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    engine = connect(sqlite_url, timeout=7)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        for _ in range(5):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
        stats = pool_stats(engine)
        assert (stats.acquires, stats.opened, stats.checked_out) == (6, 1, 0)
    finally:
        engine.dispose()


def test_pool_stats_of_an_engine_not_built_by_connect(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        first = pool_stats(engine)  # starts counting here
        assert first.waiting is None
        assert first.acquire_wait_mean is None
        assert first.timeouts is None
        for _ in range(3):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        stats = pool_stats(engine)
        assert stats.acquires == 3
        assert stats.opened == 1
        assert stats.checked_out == 0
    finally:
        engine.dispose()


def test_pool_stats_refuses_what_is_not_an_engine() -> None:
    with pytest.raises(errors.ConfigurationError):
        pool_stats("sqlite://")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_connections_are_reused(postgres_url: str) -> None:
    engine = connect(postgres_url, pool_size=3)
    try:
        pids = set()
        for _ in range(20):
            with engine.connect() as conn:
                pids.add(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        stats = pool_stats(engine)
        assert stats.acquires == 20
        assert stats.opened == 1
        assert stats.checked_out == 0
        assert stats.acquire_wait_mean is not None
        assert stats.acquire_wait_p99 is not None
        assert stats.acquire_wait_p99 >= 0
        assert set(stats.as_dict()) >= {"size", "checked_out", "waiting", "timeouts"}
        if not is_pgbouncer(engine):
            assert len(pids) == 1  # behind PgBouncer the server session may differ
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_many_threads_share_a_bounded_pool(postgres_url: str) -> None:
    engine = connect(postgres_url, pool_size=3)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1").scalar()
        except BaseException as err:
            failures.append(err)

    try:
        workers = [threading.Thread(target=work) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not failures
        stats = pool_stats(engine)
        assert stats.acquires == 200
        assert stats.opened <= 3
        assert stats.checked_out == 0
        assert stats.waiting == 0
        assert stats.timeouts == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_exhausted_pool_raises_pool_timeout_with_its_numbers(postgres_url: str) -> None:
    engine = connect(postgres_url, pool_size=1, max_overflow=0, timeout=0.2)
    try:
        with engine.connect() as held:
            held.exec_driver_sql("SELECT 1")
            with pytest.raises(errors.PoolTimeout) as info:
                engine.connect()
            message = str(info.value)
            assert "pool size 1" in message
            assert "checked out 1" in message
            assert "0.2s" in message
            assert pool_stats(engine).checked_out == 1
        stats = pool_stats(engine)
        assert stats.timeouts == 1
        assert stats.checked_out == 0
        assert stats.waiting == 0
        with engine.connect() as conn:  # the pool still works
            assert conn.exec_driver_sql("SELECT 2").scalar() == 2
        assert pool_stats(engine).opened == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_dbapi_connection_commits_or_rolls_back(postgres_url: str, unique_name: str) -> None:
    engine = connect(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {unique_name} (id int PRIMARY KEY)")
        with dbapi_connection(engine) as raw:
            cursor = raw.cursor()
            cursor.execute(f"INSERT INTO {unique_name} VALUES (1)")
            cursor.close()

        def insert_then_fail() -> None:
            with dbapi_connection(engine) as raw:
                cursor = raw.cursor()
                cursor.execute(f"INSERT INTO {unique_name} VALUES (2)")
                cursor.close()
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            insert_then_fail()
        with engine.connect() as conn:
            ids = conn.exec_driver_sql(f"SELECT id FROM {unique_name}").scalars().all()
        assert ids == [1]
        assert pool_stats(engine).checked_out == 0
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {unique_name}")
        engine.dispose()


@pytest.mark.postgres
def test_direct_url_of_a_direct_engine_is_its_own(postgres_url: str) -> None:
    engine = connect(postgres_url)
    try:
        if is_pgbouncer(engine) or is_pgpool(engine):  # their URLs name PostgreSQL (?direct=)
            assert direct_url(engine).port != engine.url.port
        else:
            assert direct_url(engine) == engine.url
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- PgBouncer


def _two_sessions_alternating(engine: sa.Engine) -> list[str]:
    """Two client connections commit different statements in turn; return what went wrong.

    psycopg prepares a statement server-side after 5 executions (counts reset on
    rollback, so committed work is what gets prepared), naming it ``_pg3_0`` on both
    connections. Behind a transaction pooler both transactions land on the same server
    session, where the name means the other connection's statement.
    """
    problems: list[str] = []
    with engine.connect() as first, engine.connect() as second:
        for i in range(12):
            for offset, conn in enumerate((first, second)):
                try:
                    with conn.begin():
                        got = conn.execute(sa.text(f"SELECT :x + {offset}"), {"x": i}).scalar()
                    if got != i + offset:
                        problems.append(f"wrong answer {got} for {i} + {offset}")
                except sa.exc.DBAPIError as err:
                    problems.append(type(err.orig).__name__)
    return problems


@pytest.mark.postgres
def test_pgbouncer_mode_turns_off_server_side_prepares(pgbouncer_url: str) -> None:
    engine = connect(pgbouncer_url, pool_size=2)
    try:
        assert is_pgbouncer(engine)
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            assert raw.prepare_threshold is None
        assert _two_sessions_alternating(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_without_pgbouncer_mode_prepared_statements_break_behind_pgbouncer(
    pgbouncer_url: str,
) -> None:
    # The control for the test above: the same work, the mode off, goes wrong.
    engine = connect(pgbouncer_url, pool_size=2, pgbouncer=False)
    try:
        assert _two_sessions_alternating(engine) != []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_listen_notify_goes_through_the_direct_connection(pgbouncer_url: str) -> None:
    engine = connect(pgbouncer_url)
    direct = connect_direct(engine)
    try:
        assert direct_url(engine).port == direct.url.port
        assert direct.url.port != engine.url.port
        assert not is_pgbouncer(direct)
        listener = psycopg.connect(
            direct_url(engine).set(drivername="postgresql").render_as_string(False),
            autocommit=True,
        )
        try:
            listener.execute("LISTEN cw_pool_test")
            with engine.begin() as conn:  # NOTIFY is fine through PgBouncer
                conn.exec_driver_sql("NOTIFY cw_pool_test, 'hello'")
            got = next(listener.notifies(timeout=5.0, stop_after=1))
            assert got.payload == "hello"
        finally:
            listener.close()
        with direct.connect() as conn:  # a session advisory lock needs the same session
            assert conn.exec_driver_sql("SELECT pg_try_advisory_lock(424242)").scalar()
            assert conn.exec_driver_sql("SELECT pg_advisory_unlock(424242)").scalar()
    finally:
        direct.dispose()
        engine.dispose()


@pytest.mark.postgres
def test_pgbouncer_engine_without_direct_url_says_what_to_do(pgbouncer_url: str) -> None:
    url = sa.make_url(pgbouncer_url).difference_update_query(["direct"])
    engine = connect(url)
    try:
        with pytest.raises(errors.ConfigurationError, match="direct"):
            direct_url(engine)
    finally:
        engine.dispose()


def test_direct_url_of_a_url_string() -> None:
    assert direct_url("postgresql://u:pw@h:5432/d").drivername == "postgresql+psycopg"
    through = f"postgresql://u:{SECRET}@h:6432/d?pgbouncer=true&direct=db:5432"
    found = direct_url(through)
    assert (found.host, found.port, found.password, dict(found.query)) == ("db", 5432, SECRET, {})
    with pytest.raises(errors.ConfigurationError) as info:
        direct_url(f"postgresql://u:{SECRET}@h:6432/d?pgbouncer=true")
    assert SECRET not in _chain_text(info.value)


def test_waiters_are_served_in_arrival_order(sqlite_url: str) -> None:
    # A returned connection goes to the oldest waiter, never to a later arrival.
    engine = connect(sqlite_url, pool_size=1, timeout=30)
    served: list[int] = []

    def wait_then_record(n: int) -> None:
        with engine.connect():
            served.append(n)

    try:
        held = engine.connect()
        workers = []
        for n in range(4):
            worker = threading.Thread(target=wait_then_record, args=(n,))
            worker.start()
            workers.append(worker)
            for _ in range(2000):  # until this one is queued (counts, not time)
                if pool_stats(engine).waiting == n + 1:
                    break
                threading.Event().wait(0.005)
            assert pool_stats(engine).waiting == n + 1
        held.close()
        for worker in workers:
            worker.join()
        assert served == [0, 1, 2, 3]
        assert pool_stats(engine).opened == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_connections_are_retired_after_their_lifetime(postgres_url: str) -> None:
    engine = connect(postgres_url, pool_size=1, recycle=0.05, lifetime_jitter=0)
    try:
        with engine.connect() as conn:
            first = conn.connection.driver_connection
        threading.Event().wait(0.1)  # outlive the lifetime
        with engine.connect() as conn:
            assert conn.connection.driver_connection is not first
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        stats = pool_stats(engine)
        assert (stats.recycled, stats.invalidated, stats.opened) == (1, 0, 2)
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_pooling_measurement_runs_every_contender(postgres_url: str) -> None:
    from cachewise._poolmeasure import CONTENDERS, measure

    found = measure(postgres_url, threads=(2,), seconds=0.05, rounds=1, rows=50, layers=False)
    ran = {row["contender"]: row for row in found["results"]}
    # A contender is left out only with a note saying why (a pooler that cannot start here).
    left_out = set(CONTENDERS) - set(ran)
    assert all(any(n.startswith(c.split()[0]) for n in found["notes"]) for c in left_out)
    assert {"new connection", "psycopg_pool", "Django persistent connection"} <= set(ran)
    assert all(row["requests"] > 0 and row["threads"] == 2 for row in ran.values())
    assert found["ratios"]["psycopg_pool @2"]["x_psycopg_pool"] == 1.0
    engine = connect(postgres_url)
    try:
        with engine.connect() as conn:  # the measurement's table is gone
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE %(p)s",
                {"p": f"cw_poolbench_{os.getpid()}_%"},
            ).scalar()
        assert left == 0
    finally:
        engine.dispose()


def test_timeouts_racing_hand_offs_lose_no_connection(sqlite_url: str) -> None:
    # Waiters time out while connections are being handed to them: every connection must
    # end up back in the pool, none opened beyond the pool's size.
    engine = connect(sqlite_url, pool_size=2, timeout=0.002)
    outcomes = {"ok": 0, "timeout": 0}
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(60):
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                key = "ok"
            except errors.PoolTimeout:
                key = "timeout"
            with lock:
                outcomes[key] += 1

    try:
        workers = [threading.Thread(target=hammer) for _ in range(10)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert outcomes["ok"] + outcomes["timeout"] == 600, outcomes
        stats = pool_stats(engine)
        assert (stats.checked_out, stats.waiting) == (0, 0)
        assert stats.opened <= 2
        assert stats.acquires == outcomes["ok"]
        assert stats.timeouts == outcomes["timeout"]
        both = [engine.connect(), engine.connect()]  # both connections are free again
        for conn in both:
            conn.close()
        assert pool_stats(engine).opened <= 2
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_mysql_connections_are_reused_and_pinged(mysql_url: str) -> None:
    engine = connect(mysql_url, pool_size=2)
    try:
        assert engine.pool._pre_ping  # a round-trip ping: no cheaper check for MySQL
        for _ in range(5):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        stats = pool_stats(engine)
        assert (stats.acquires, stats.opened, stats.checked_out) == (5, 1, 0)
    finally:
        engine.dispose()


def test_the_examples_in_docs_pooling_run(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "pooling.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the examples write shop.db in the current directory
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "docs_example"}
        exec(compile(block, str(page), "exec"), namespace)
        engine = namespace.get("engine")
        if isinstance(engine, sa.Engine):
            engine.dispose()


@pytest.mark.postgres
def test_pool_size_zero_opens_a_connection_per_checkout(postgres_url: str) -> None:
    engine = connect(postgres_url, pool_size=0)  # the "no pool" baseline, same settings
    try:
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
                raw = conn.connection.driver_connection
                assert isinstance(raw, psycopg.Connection)
                if is_pgbouncer(engine):
                    assert raw.prepare_threshold is None
        stats = pool_stats(engine)
        assert (stats.acquires, stats.opened, stats.checked_out) == (3, 3, 0)
    finally:
        engine.dispose()
