"""Pool faults on a PostgreSQL of our own: killed backends, restarts, timed-out waiters, fork."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from cachewise import errors
from cachewise.pool import connect, pool_stats
from tests.servers import PostgresServer, need_pg_bin

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster this module may kill and restart (never the shared one)."""
    need_pg_bin()
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _admin(server: PostgresServer) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=root dbname=postgres", autocommit=True
    )


def _sessions(server: PostgresServer, application: str) -> int:
    with _admin(server) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_terminated_backend_is_replaced_before_the_caller_sees_it(
    own_postgres: PostgresServer,
) -> None:
    engine = connect(own_postgres.url, pool_size=1)
    try:
        victim = _backend_pid(engine)
        with _admin(own_postgres) as admin:
            # With a timeout it returns once the backend has exited and closed its socket.
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (victim,))
        # No error reaches the caller: the dead connection is swapped at checkout.
        assert _backend_pid(engine) != victim
        stats = pool_stats(engine)
        assert stats.invalidated == 1
        assert stats.opened == 2
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_restart_is_survived(own_postgres: PostgresServer, mode: str) -> None:
    engine = connect(own_postgres.url, pool_size=3)
    try:
        held = [engine.connect() for _ in range(3)]  # fill the pool with 3 sessions
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
            conn.close()
        before = pool_stats(engine).opened
        own_postgres.restart(mode)  # "immediate" is a crash followed by recovery
        for _ in range(10):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        stats = pool_stats(engine)
        assert stats.invalidated >= 1
        assert stats.opened > before
        assert stats.checked_out == 0
    finally:
        engine.dispose()


def test_timed_out_waiters_do_not_leak_connections(own_postgres: PostgresServer) -> None:
    application = f"cw-leak-{os.getpid()}"
    engine = connect(
        own_postgres.url,
        pool_size=2,
        max_overflow=0,
        timeout=0.1,
        connect_args={"application_name": application},
    )
    timeouts: list[BaseException] = []

    def wait_in_vain() -> None:
        try:
            with engine.connect():
                pass
        except errors.PoolTimeout as err:
            timeouts.append(err)

    try:
        held = [engine.connect() for _ in range(2)]
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
        waiters = [threading.Thread(target=wait_in_vain) for _ in range(5)]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        assert len(timeouts) == 5
        for conn in held:
            conn.close()
        stats = pool_stats(engine)
        assert (stats.timeouts, stats.checked_out, stats.waiting) == (5, 0, 0)
        assert stats.opened == 2
        assert _sessions(own_postgres, application) == 2
        again = [engine.connect() for _ in range(2)]  # both are free again
        for conn in again:
            conn.close()
        assert pool_stats(engine).opened == 2
    finally:
        engine.dispose()


def test_forked_child_opens_its_own_connections(own_postgres: PostgresServer) -> None:
    engine = connect(own_postgres.url, pool_size=1)
    try:
        parent_pid = _backend_pid(engine)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.close(read_end)
                os.write(write_end, str(_backend_pid(engine)).encode())
                engine.dispose()
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            child_backend = int(pipe.read() or "0")
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_backend not in {0, parent_pid}
        # The child neither used nor closed the parent's session: it still works.
        assert _backend_pid(engine) == parent_pid
        assert pool_stats(engine).invalidated == 0
    finally:
        engine.dispose()
