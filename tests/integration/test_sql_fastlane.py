"""SQLSource's fast lane on PostgreSQL (psycopg): the same rows and errors as the Core path.

Each test runs two sources on one table: ``lane`` on a plain ``connect()`` engine (the
fast lane) and ``core`` on an engine whose statements a ``before_cursor_execute``
listener watches, which keeps the Core path. Everything either one reads or refuses
must be the same. Directly, through PgBouncer in transaction mode (no prepared
statements) and through Pgpool-II (every statement carries the routing hint).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MISSING, Cache, MemoryStore, SQLSource, connect
from cachewise.errors import RejectedError
from cachewise.pool import NO_LOAD_BALANCE

pytestmark = pytest.mark.postgres

ROUTES = [
    pytest.param("postgres_url", id="direct"),
    pytest.param("pgbouncer_url", id="pgbouncer"),
    pytest.param("pgpool_url", id="pgpool", marks=pytest.mark.pgpool),
]


@dataclass
class Pair:
    """A plain engine (fast lane) and a watched one (Core path) on the same database."""

    lane: sa.Engine
    core: sa.Engine
    statements: list[str]
    route: str

    def sources(self, table: str, **kwargs: Any) -> tuple[SQLSource, SQLSource]:
        return SQLSource(self.lane, table, **kwargs), SQLSource(self.core, table, **kwargs)


@pytest.fixture(params=ROUTES)
def pair(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Pair]:
    url = str(request.getfixturevalue(request.param))
    lane, core = connect(url, pool_size=1), connect(url, pool_size=1)
    statements: list[str] = []

    @sa.event.listens_for(core, "before_cursor_execute")
    def _watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        yield Pair(lane, core, statements, request.param)
    finally:
        with core.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
            conn.execute(sa.text(f'DROP TYPE IF EXISTS "{unique_name}_mood"'))
        lane.dispose()
        core.dispose()


def _create(pair: Pair, ddl: str) -> None:
    with pair.core.begin() as conn:
        conn.execute(sa.text(ddl))


def _products(pair: Pair, name: str) -> None:
    _create(
        pair,
        f'CREATE TABLE "{name}" (id integer PRIMARY KEY, name varchar(100), '
        "price numeric(12, 2), added timestamptz, born date, blob bytea, "
        "seq bigint NOT NULL DEFAULT 0)",
    )


def _row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"café ñ {i}",
        "price": Decimal(f"{i}.25"),
        "added": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        "born": dt.date(2020, 1, 1 + i % 28),
        "blob": bytes([i % 256, 0, 255]),
        "seq": i,
    }


def test_the_lane_reads_and_writes_what_the_core_path_does(pair: Pair, unique_name: str) -> None:
    _products(pair, unique_name)
    lane, core = pair.sources(unique_name, chunk_size=7)
    assert lane._lane is not None
    for i in range(20):  # more than psycopg's prepare threshold (5), one row per call
        lane.save(i, _row(i))
    lane.save(20, {"id": 20})  # NULLs in every other column (seq has a default)
    pair.statements.clear()
    assert core.load(3) == _row(3)
    assert pair.statements  # the watched engine really took the Core path
    for i in range(21):
        assert lane.load(i) == core.load(i)
    assert lane.load(20) == {**dict.fromkeys(_row(0), None), "id": 20, "seq": 0}
    assert lane.load(999) is MISSING
    wanted = [*range(0, 21, 2), 500, 501]  # several chunks of 7, two absent keys
    assert lane.load_many(wanted) == core.load_many(wanted)
    assert set(lane.load_many(wanted)) == set(range(0, 21, 2))
    assert lane._lane.rows_plain is True  # the lane served these reads
    names = [type(name) for row in lane.load_many(range(3)).values() for name in row]
    assert set(names) == {str}  # plain str column names, as the Core path gives


def test_the_lane_leaves_pooled_connections_as_it_found_them(pair: Pair, unique_name: str) -> None:
    _products(pair, unique_name)
    lane, _ = pair.sources(unique_name)
    lane.save(1, _row(1))
    assert lane.load(1) == _row(1)
    with pair.lane.connect() as conn:  # a Core transaction on a connection the lane used
        raw: Any = conn.connection.driver_connection
        assert raw.autocommit is False
        conn.execute(sa.text(f'UPDATE "{unique_name}" SET name = :n'), {"n": "rolled back"})
        conn.rollback()
    assert lane.load(1)["name"] == _row(1)["name"]


def test_versions_null_keys_and_tuple_keys_on_the_lane(pair: Pair, unique_name: str) -> None:
    _create(
        pair,
        f'CREATE TABLE "{unique_name}" (region text, code bytea, n integer, ver bigint, '
        "PRIMARY KEY (region, code))",
    )
    lane, core = pair.sources(unique_name, key=("region", "code"), version="ver")
    lane.save(("eu", b"\x00a"), {"n": 1, "ver": 2})
    lane.save(("eu", b"\x00a"), {"n": 9, "ver": 1})  # older: never overwrites
    lane.save(("us", b"b"), {"n": None, "ver": 1})
    assert lane.load(("eu", b"\x00a")) == {"region": "eu", "code": b"\x00a", "n": 1, "ver": 2}
    assert lane.load(("eu", b"\x00a")) == core.load(("eu", b"\x00a"))
    keys = [("eu", b"\x00a"), ("us", b"b"), ("xx", b"")]
    assert lane.load_many(keys) == core.load_many(keys)
    assert set(lane.load_many(keys)) == {("eu", b"\x00a"), ("us", b"b")}


def test_the_database_refusing_a_row_is_a_rejected_error_on_the_lane(
    pair: Pair, unique_name: str
) -> None:
    _create(
        pair,
        f'CREATE TABLE "{unique_name}" (id integer PRIMARY KEY, name varchar(3) NOT NULL, '
        "qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0))",
    )
    lane, core = pair.sources(unique_name)
    for source in (lane, core):
        with pytest.raises(RejectedError, match="check constraint") as lane_error:
            source.save(1, {"name": "ok", "qty": -1})
        with pytest.raises(RejectedError, match="StringDataRightTruncation"):
            source.save(2, {"name": "too long"})
        assert "CheckViolation" in str(lane_error.value)
    lane.save(3, {"name": "ok"})  # the connection is still good after the refusals
    assert core.load(3) == {"id": 3, "name": "ok", "qty": 0}
    assert lane.load(1) is MISSING


def test_columns_sqlalchemy_processes_take_the_core_path(pair: Pair, unique_name: str) -> None:
    _create(pair, f"CREATE TYPE \"{unique_name}_mood\" AS ENUM ('sad', 'ok')")
    _create(
        pair,
        f'CREATE TABLE "{unique_name}" (id integer PRIMARY KEY, tags text[], '
        f'mood "{unique_name}_mood", doc jsonb, flag boolean)',
    )
    lane, core = pair.sources(unique_name)
    row = {"id": 1, "tags": ["a", "b"], "mood": "ok", "doc": {"k": [1, 2]}, "flag": True}
    lane.save(1, row)  # jsonb and boolean have bind processors: the Core upsert
    assert lane.load(1) == core.load(1) == row
    assert lane._lane is not None
    assert lane._lane.rows_plain is False  # arrays and enums have result processors
    assert lane.load_many([1, 2]) == {1: row}


def test_a_write_through_cache_on_the_lane(pair: Pair, unique_name: str) -> None:
    _products(pair, unique_name)
    lane, core = pair.sources(unique_name)
    cache = Cache(MemoryStore(), lane)
    try:
        cache.write(5, _row(5))
        assert core.load(5) == _row(5)
        assert cache.read(5) == _row(5)
        assert cache.read_many([5, 6]) == {5: _row(5)}
    finally:
        cache.close()


@pytest.mark.pgpool
def test_lane_statements_carry_the_pgpool_hint(pgpool_url: str, unique_name: str) -> None:
    engine = connect(pgpool_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{unique_name}" (id integer PRIMARY KEY, '
                    "q text DEFAULT current_query())"
                )
            )
        source = SQLSource(engine, unique_name)
        assert source._lane is not None
        assert source._lane.load.startswith(NO_LOAD_BALANCE)
        source.save(1, {"id": 1})  # the default records the statement the server got
        assert source.load(1)["q"].startswith(NO_LOAD_BALANCE)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
        engine.dispose()


def test_the_array_select_binds_key_arrays_as_the_core_path_does(
    pair: Pair, unique_name: str
) -> None:
    _create(pair, f'CREATE TABLE "{unique_name}" (k varchar(5) PRIMARY KEY, v integer)')
    lane, core = pair.sources(unique_name, key="k")
    for n in range(3):
        lane.save(f"k{n}", {"v": n})
    keys = ["k0", "k2", "zzzzzzzz"]  # longer than varchar(5): no match, no truncation
    assert (
        lane.load_many(keys)
        == core.load_many(keys)
        == {
            "k0": {"k": "k0", "v": 0},
            "k2": {"k": "k2", "v": 2},
        }
    )


def test_integer_key_arrays_of_any_magnitude_match_the_core_path(
    pair: Pair, unique_name: str
) -> None:
    _create(pair, f'CREATE TABLE "{unique_name}" (a smallint, b bigint, PRIMARY KEY (a, b))')
    lane, core = pair.sources(unique_name, key=("a", "b"))
    assert lane._lane is not None
    assert "b::" in lane._lane.load_many  # integer arrays are sent in binary
    for a, b in [(1, 2), (300, 2**40), (-5, -(2**62))]:
        lane.save((a, b), {})
    keys = [(1, 2), (300, 2**40), (-5, -(2**62)), (7, 7)]
    assert lane.load_many(keys) == core.load_many(keys)
    assert set(lane.load_many(keys)) == set(keys[:3])


@pytest.mark.pgpool
@pytest.mark.parametrize("mode", ["pgpool=true", "unannounced"])
def test_a_lane_write_through_pgpool_is_committed_after_a_core_transaction(
    pgpool_url: str, unique_name: str, mode: str
) -> None:
    # Pgpool-II 4.3 holds the first statement after a switch to autocommit in a
    # transaction it reports open; a connection that just ran a Core transaction is
    # switched by the lane. The write must be committed, also for an engine that was
    # not told it goes through Pgpool-II.
    url = sa.make_url(pgpool_url)
    if mode == "unannounced":
        url = url.difference_update_query(["pgpool", "direct", "load_balance"])
    engine = connect(url, pool_size=1)
    check = connect(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE TABLE "{unique_name}" (id integer PRIMARY KEY, v int)'))
        source = SQLSource(engine, unique_name)
        for n in range(3):
            with engine.connect() as conn:  # a Core transaction on the one connection
                conn.execute(sa.text("SELECT 1"))
            source.save(n, {"v": n})
        with check.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT id, v FROM "{unique_name}" ORDER BY id'))
            assert rows.all() == [(0, 0), (1, 1), (2, 2)]
        with engine.connect() as conn:  # the connection came back in its own mode
            assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
    finally:
        with check.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
        engine.dispose()
        check.dispose()
