"""Aggregates through a database outage, on a PostgreSQL server of our own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from cachewise import Aggregate, OnChange, connect
from cachewise.errors import SourceError
from tests.servers import PostgresServer, need_pg_bin

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    need_pg_bin()
    pg = PostgresServer()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def _wait_until(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except SourceError:
            pass  # the server is still coming back
        time.sleep(0.05)
    return False


def test_outage_serves_cached_rows_fails_refresh_then_recovers(server: PostgresServer) -> None:
    engine = connect(server.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE src (id INT PRIMARY KEY, grp TEXT, amount INT)"))
        conn.execute(sa.text("INSERT INTO src VALUES (1, 'a', 1), (2, 'b', 2)"))
    refresh = OnChange(tables=["src"], debounce=0.1, poll=0.05)
    query = "SELECT grp, SUM(amount) AS total FROM src GROUP BY grp"
    agg = Aggregate(engine, "totals", query, key="grp", refresh=refresh, check_interval=0.05)
    try:
        assert agg.read("a")["total"] == 1
        server.stop("immediate")
        assert agg.read("a")["total"] == 1  # a hot row is served from memory
        with pytest.raises(SourceError):
            agg.read("b")  # a miss needs the database
        with pytest.raises(SourceError):
            agg.refresh()
        assert agg.last_error is not None
        server.start()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO src VALUES (3, 'c', 3)"))
        # The LISTEN connection is reopened and the aggregate catches up on its own.
        assert _wait_until(lambda: agg.read("c") is not None), "no refresh after the outage"
        assert agg.read("c")["total"] == 3
        assert agg.last_error is None
    finally:
        agg.close()
        engine.dispose()
