"""connect() through a real Pgpool-II: what differs from PgBouncer, each difference checked.

Pgpool-II in connection-pooling mode binds a client connection to one of its children
for the whole session (session pooling), and caches the backend connection after the
client leaves, resetting it (``DISCARD ALL``) first. So, unlike PgBouncer in transaction
mode: server-side prepared statements, session state, LISTEN and session advisory locks
all work through it. What it adds is load balancing of reads (see
tests/faults/test_pgpool_load_balance.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cachewise import connect
from cachewise._pgpool import Pgpool
from cachewise.errors import ConfigurationError
from cachewise.invalidation import Invalidation, PostgresBus
from cachewise.pool import NO_LOAD_BALANCE, direct_url, is_pgbouncer, is_pgpool

pytestmark = pytest.mark.pgpool


@pytest.fixture
def engine(pgpool_url: str) -> Iterator[sa.Engine]:
    e = connect(pgpool_url, pool_size=1)
    yield e
    e.dispose()


def test_url_options_make_a_pgpool_engine(engine: sa.Engine, pgpool_url: str) -> None:
    assert is_pgpool(engine)
    assert not is_pgbouncer(engine)
    assert "pgpool" not in str(engine.url)  # consumed by connect(), never sent to libpq
    assert direct_url(engine).port != engine.url.port  # ?direct= names PostgreSQL itself
    without = connect(pgpool_url.split("&direct=", maxsplit=1)[0], pool_size=1)
    assert direct_url(without) == without.url  # session features work through Pgpool-II
    without.dispose()


def test_every_statement_carries_the_no_load_balance_hint(pgpool_url: str) -> None:
    strict = connect(pgpool_url, pool_size=1)
    balanced = connect(pgpool_url, pool_size=1, load_balance=True)
    try:
        with strict.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT current_query()"))
                .scalar_one()
                .startswith(NO_LOAD_BALANCE)
            )
        with balanced.connect() as conn:
            assert conn.execute(sa.text("SELECT current_query()")).scalar_one() == (
                "SELECT current_query()"
            )
    finally:
        strict.dispose()
        balanced.dispose()


def test_prepared_statements_work_through_pgpool(engine: sa.Engine) -> None:
    # psycopg prepares a statement on the server after 5 committed runs; session pooling
    # keeps it on the one server connection behind our client connection.
    query = sa.text("SELECT CAST(:n AS integer) * 2")
    for n in range(12):
        with engine.connect() as conn:
            assert conn.execute(query, {"n": n}).scalar_one() == 2 * n
            conn.commit()
    with engine.connect() as conn:
        prepared = conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar()
    assert prepared is not None
    assert prepared >= 1


def test_session_state_lives_with_the_client_and_is_reset_for_the_next(
    engine: sa.Engine, pgpool_url: str
) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SET application_name = 'cw-session'"))
        conn.commit()
    with engine.connect() as conn:  # the same pooled client connection: state kept
        name = conn.execute(sa.text("SELECT current_setting('application_name')")).scalar()
        assert name == "cw-session"
    fresh = connect(pgpool_url, pool_size=0)  # a new client each time: Pgpool-II resets
    try:
        with fresh.connect() as conn:
            conn.execute(sa.text("SET application_name = 'cw-leak'"))
            conn.commit()
        with fresh.connect() as conn:
            name = conn.execute(sa.text("SELECT current_setting('application_name')")).scalar()
            assert name != "cw-leak"
    finally:
        fresh.dispose()


def test_session_advisory_lock_holds_across_transactions(
    engine: sa.Engine, pgpool_url: str
) -> None:
    other = connect(pgpool_url, pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(914)")).scalar() is True
            conn.commit()
            with other.connect() as rival:
                assert rival.execute(sa.text("SELECT pg_try_advisory_lock(914)")).scalar() is False
            conn.execute(sa.text("SELECT pg_advisory_unlock(914)"))
            conn.commit()
    finally:
        other.dispose()


def test_listen_notify_bus_works_through_pgpool(pgpool_url: str, unique_name: str) -> None:
    received: list[Invalidation] = []
    through = pgpool_url.split("&direct=", maxsplit=1)[0]  # LISTEN through Pgpool-II, not around it
    bus = PostgresBus(through, channel=unique_name)
    try:
        bus.subscribe(received.append)
        bus.publish(["k1", ("k", 2)], origin="other")
        deadline = 200
        while not any(m.keys for m in received) and deadline:
            deadline -= 1
            threading_wait(0.05)
        assert any(m.keys == ("k1", ("k", 2)) for m in received)
    finally:
        bus.close()


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)


def test_pool_larger_than_pgpool_children_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Pgpool(children=2) as small:
        engine = connect(small.url() + "?pgpool=true", pool_size=3, max_overflow=1)
        try:
            with caplog.at_level(logging.WARNING, logger="cachewise"), engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    assert any("num_init_children=2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://u@h/db?pgpool=true&pgbouncer=true", "not PgBouncer"),
        ("sqlite:///x.db?pgpool=true", "for PostgreSQL"),
        ("postgresql://u@h/db?load_balance=true", "pgpool=True"),
        ("postgresql://u@h/db?pgpool=maybe", "not a boolean"),
    ],
)
def test_pgpool_options_are_checked_before_anything_opens(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        connect(url)
