"""Pgpool-II load balancing: a read balanced to a standby misses a write just made.

A real primary and a real streaming standby (its replay paused, so the lag is certain
rather than a race), behind a real Pgpool-II that sends reads to the standby. Through
``connect(url, pgpool=True)`` every statement carries ``/*NO LOAD BALANCE*/`` and reads
see the write; with ``load_balance=True`` they may not, which is what that option says.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cachewise import Cache, MemoryStore, ReadThrough, SQLSource, WriteAround, connect
from cachewise._pgpool import Pgpool
from tests.servers import PostgresServer, StandbyServer, need_pg_bin

pytestmark = [pytest.mark.pgpool, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[PostgresServer, StandbyServer, Pgpool]]:
    need_pg_bin()
    primary = PostgresServer()
    standby: StandbyServer | None = None
    pgpool: Pgpool | None = None
    try:
        primary.start()
        setup = sa.create_engine(primary.url, poolclass=sa.pool.NullPool)
        with setup.begin() as conn:
            conn.execute(sa.text("CREATE TABLE items (id integer PRIMARY KEY, v text)"))
        setup.dispose()
        standby = StandbyServer(primary)
        standby.start()
        pgpool = Pgpool(
            (("127.0.0.1", primary.port, 0), ("127.0.0.1", standby.port, 1)), load_balance=True
        )
        pgpool.start()
        yield primary, standby, pgpool
    finally:
        if pgpool is not None:
            pgpool.close()
        if standby is not None:
            standby.close()
        primary.close()


def _pause_replay(standby: StandbyServer) -> sa.Engine:
    engine = sa.create_engine(standby.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        for _ in range(200):  # the table must have reached the standby first
            if conn.execute(sa.text("SELECT to_regclass('items')")).scalar() is not None:
                break
            conn.execute(sa.text("SELECT pg_sleep(0.05)"))
        conn.execute(sa.text("SELECT pg_wal_replay_pause()"))
        conn.commit()
    return engine


def test_reads_through_connect_see_the_write_balanced_reads_do_not(
    replicated: tuple[PostgresServer, StandbyServer, Pgpool],
) -> None:
    _, standby, pgpool = replicated
    paused = _pause_replay(standby)
    url = pgpool.url("postgres") + "?pgpool=true"
    # A new client session per request: Pgpool-II picks a session's read node when it
    # starts, and keeps reads after a write in the same session on the primary anyway.
    strict = connect(url, pool_size=0)
    balanced = connect(url, pool_size=0, load_balance=True)
    read = sa.text("SELECT v FROM items WHERE id = 1")
    try:
        with strict.begin() as conn:
            conn.execute(sa.text("INSERT INTO items VALUES (1, 'new')"))
        with balanced.connect() as conn:
            assert conn.execute(read).scalar() is None  # served by the paused standby
        with strict.connect() as conn:
            assert conn.execute(read).scalar() == "new"  # /*NO LOAD BALANCE*/: the primary
    finally:
        strict.dispose()
        balanced.dispose()
        with paused.connect() as conn:
            conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
            conn.commit()
        paused.dispose()


def test_read_through_after_write_around_loads_the_new_value(
    replicated: tuple[PostgresServer, StandbyServer, Pgpool],
) -> None:
    _, standby, pgpool = replicated
    paused = _pause_replay(standby)
    engine = connect(pgpool.url("postgres") + "?pgpool=true", pool_size=0)
    source = SQLSource(engine, table="items", key="id")
    try:
        with Cache(MemoryStore(), source, read=ReadThrough(), write=WriteAround()) as cache:
            cache.write(2, {"id": 2, "v": "written"})  # to the primary; the cache drops key 2
            assert cache.read(2) == {"id": 2, "v": "written"}  # not the standby's "absent"
    finally:
        with paused.connect() as conn:
            conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
            conn.commit()
        paused.dispose()
