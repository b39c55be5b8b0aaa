"""SQLSource against real databases: SQLite (a temp file), PostgreSQL and MariaDB.

Every test creates its own uniquely named table and drops it. Statement counts come
from SQLAlchemy's ``before_cursor_execute`` event, so "one SELECT per chunk" and "one
upsert per chunk" are proven by counting, never by timing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from cachewise import MISSING, Source, SQLSource, connect
from cachewise._types import Key
from cachewise.errors import ConfigurationError, SourceError
from cachewise.pool import NO_LOAD_BALANCE

DIALECTS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]

MICRO_DATETIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@dataclass
class Db:
    """An engine on one dialect, the statements it ran, and the tables to drop."""

    engine: sa.Engine
    name: str
    statements: list[str] = field(default_factory=list)
    tables: list[sa.Table] = field(default_factory=list)

    def create(self, table: sa.Table) -> sa.Table:
        table.create(self.engine)
        self.tables.append(table)
        return table

    def count(self, verb: str) -> int:
        # Through Pgpool-II every statement starts with connect()'s routing hint.
        plain = (s.removeprefix(NO_LOAD_BALANCE).lstrip().upper() for s in self.statements)
        return sum(1 for s in plain if s.startswith(verb))


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    url = request.getfixturevalue(
        {"sqlite": "sqlite_url", "postgres": "postgres_url", "mysql": "mysql_url"}[request.param]
    )
    engine = connect(url)
    found = Db(engine, request.param)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        found.statements.append(statement)

    try:
        yield found
    finally:
        for table in reversed(found.tables):
            table.drop(engine, checkfirst=True)
        engine.dispose()


def products(name: str, *, version: bool = False) -> sa.Table:
    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100)),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("added", MICRO_DATETIME),
        sa.Column("born", sa.Date),
        sa.Column("blob", sa.LargeBinary),
    ]
    if version:
        columns.append(sa.Column("seq", sa.BigInteger, nullable=False))
    return sa.Table(name, sa.MetaData(), *columns)


def sample(db: Db, i: int) -> dict[str, Any]:
    tz = dt.timezone(dt.timedelta(hours=2)) if db.name == "postgres" else None
    return {
        "id": i,
        "name": f"café ñ {i}",
        "price": Decimal(f"{i}.25"),
        "added": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=tz),
        "born": dt.date(2020, 1, 1 + i % 28),
        "blob": bytes([i % 256, 0, 255]),
    }


def test_sqlsource_is_a_source(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name) as source:
        assert isinstance(source, Source)


def test_round_trip_of_sql_row_types(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name) as source:
        row = sample(db, 7)
        source.save(7, row)
        loaded = source.load(7)
        assert loaded == row
        if db.name == "postgres":  # timestamptz keeps the instant, aware
            assert loaded["added"].tzinfo is not None
        source.save(8, {"name": None, "price": None, "added": None, "born": None, "blob": None})
        assert source.load(8) == {
            "id": 8,
            "name": None,
            "price": None,
            "added": None,
            "born": None,
            "blob": None,
        }
        assert source.load(9) is MISSING


def test_save_replaces_and_remove_deletes(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name) as source:
        source.save(1, {"name": "old", "price": Decimal("1.00")})
        source.save(1, {"name": "new", "price": Decimal("2.00")})
        assert source.load(1)["name"] == "new"
        assert source.load(1)["price"] == Decimal("2.00")
        source.remove(1)
        assert source.load(1) is MISSING
        source.remove(1)  # an absent key is not an error


def test_batches_bigger_than_chunk_size_use_one_statement_per_chunk(
    db: Db, unique_name: str
) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name, chunk_size=10) as source:
        items: dict[Key, Any] = {i: sample(db, i) for i in range(25)}
        db.statements.clear()
        source.save_many(items)
        assert db.count("INSERT") == 3  # 10 + 10 + 5 rows, one upsert each

        db.statements.clear()
        found = source.load_many([*range(25), 100, 101])
        assert db.count("SELECT") == 3  # 27 keys, chunks of 10
        assert found == items

        db.statements.clear()
        source.remove_many(range(20))
        assert db.count("DELETE") == 2
        assert set(source.load_many(range(25))) == set(range(20, 25))


def test_save_many_is_one_transaction(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name, chunk_size=5) as source:
        items: dict[Key, Any] = {i: {"name": f"n{i}"} for i in range(12)}
        # The last chunk fails in the database (a name too long for MariaDB and
        # PostgreSQL; on SQLite a type the driver cannot bind): nothing is written.
        items[11] = {"name": object() if db.name == "sqlite" else "x" * 500}
        with pytest.raises(SourceError):
            source.save_many(items)
        assert source.load_many(range(12)) == {}


def test_save_many_is_idempotent(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine, unique_name, chunk_size=4) as source:
        items: dict[Key, Any] = {i: sample(db, i) for i in range(10)}
        source.save_many(items)
        first = source.load_many(range(10))
        source.save_many(items)
        assert source.load_many(range(10)) == first == items
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(db.tables[0])).scalar() == 10


def test_tuple_keys(db: Db, unique_name: str) -> None:
    table = db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("region", sa.String(20), primary_key=True),
            sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("hits", sa.Integer),
        )
    )
    with SQLSource(db.engine, unique_name, key=("region", "day"), chunk_size=3) as source:
        days = [20240101 + d for d in range(4)]
        items: dict[Key, Any] = {
            (r, d): {"hits": n} for n, (r, d) in enumerate((r, d) for r in "ab" for d in days)
        }
        db.statements.clear()
        source.save_many(items)
        assert db.count("INSERT") == 3  # 8 rows in chunks of 3
        assert source.load(("a", days[0])) == {"region": "a", "day": days[0], "hits": 0}
        db.statements.clear()
        found = source.load_many([*items, ("zz", days[0])])
        assert db.count("SELECT") == 3
        assert {k: v["hits"] for k, v in found.items()} == {k: v["hits"] for k, v in items.items()}
        source.remove_many([("a", d) for d in days])
        with db.engine.connect() as conn:
            left = conn.execute(sa.select(table.c.region).distinct()).scalars().all()
        assert left == ["b"]


def test_tuple_key_on_a_unique_constraint(db: Db, unique_name: str) -> None:
    db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sku", sa.String(20), nullable=False),
            sa.Column("shop", sa.Integer, nullable=False),
            sa.Column("stock", sa.Integer),
            sa.UniqueConstraint("sku", "shop"),
        )
    )
    with SQLSource(db.engine, unique_name, key=("sku", "shop")) as source:
        source.save_many({("x", 1): {"stock": 5}, ("x", 2): {"stock": 6}})
        source.save_many({("x", 1): {"stock": 7}})
        assert source.load(("x", 1))["stock"] == 7
        assert source.load(("x", 2))["stock"] == 6


def test_versioned_upsert_refuses_older_versions(db: Db, unique_name: str) -> None:
    db.create(products(unique_name, version=True))
    with SQLSource(db.engine, unique_name, version="seq") as source:
        source.save_many({1: {"name": "v5", "seq": 5}, 2: {"name": "v5", "seq": 5}})
        newer: dict[Key, Any] = {1: {"name": "v7", "seq": 7, "price": Decimal("7.00")}}
        older: dict[Key, Any] = {
            1: {"name": "v6", "seq": 6, "price": Decimal("6.00")},
            2: {"name": "v6", "seq": 6, "price": Decimal("6.00")},
        }
        source.save_many(newer)
        source.save_many(older)  # a late retry of an old batch
        assert source.load(1)["name"] == "v7"
        assert source.load(1)["price"] == Decimal("7.00")
        assert source.load(1)["seq"] == 7
        assert source.load(2)["name"] == "v6"  # older than the batch, so replaced
        source.save_many({2: {"name": "same", "seq": 6}})  # equal version: not replaced
        assert source.load(2)["name"] == "v6"
        source.save_many({3: {"name": "new", "seq": 1}})  # absent: inserted at any version
        assert source.load(3)["name"] == "new"


def test_a_dropped_table_is_a_source_error(db: Db, unique_name: str) -> None:
    table = db.create(products(unique_name))
    with SQLSource(db.engine, unique_name) as source:
        source.save(1, {"name": "x"})
        table.drop(db.engine)
        for call in (
            lambda: source.load(1),
            lambda: source.load_many([1, 2]),
            lambda: source.save(1, {"name": "y"}),
            lambda: source.remove_many([1]),
        ):
            with pytest.raises(SourceError, match=unique_name) as info:
                call()
            # SQLAlchemy's wrapper, or the driver's own error from a raw COPY.
            driver_error = db.engine.dialect.dbapi.Error  # type: ignore[union-attr]
            assert isinstance(info.value.__cause__, (sa.exc.DBAPIError, driver_error))


def test_unknown_table_and_columns_are_configuration_errors(db: Db, unique_name: str) -> None:
    db.create(products(unique_name, version=True))
    with pytest.raises(ConfigurationError, match="no table"):
        SQLSource(db.engine, unique_name + "_absent")
    with pytest.raises(ConfigurationError, match="'sku'"):
        SQLSource(db.engine, unique_name, key="sku")
    with pytest.raises(ConfigurationError, match="'rev'"):
        SQLSource(db.engine, unique_name, version="rev")
    with pytest.raises(ConfigurationError, match="conflict target"):
        SQLSource(db.engine, unique_name, key="name")
    with pytest.raises(ConfigurationError, match="integer"):
        SQLSource(db.engine, unique_name, version="name")


@pytest.mark.parametrize(
    "hostile",
    [
        "products; DROP TABLE {t}; --",
        '{t}" ; DROP TABLE "{t}',
        "{t}` ; DROP TABLE `{t}",
        "{t}' OR '1'='1",
    ],
)
def test_injection_looking_names_are_configuration_errors(
    db: Db, unique_name: str, hostile: str
) -> None:
    table = db.create(products(unique_name))
    name = hostile.format(t=unique_name)
    with pytest.raises(ConfigurationError):
        SQLSource(db.engine, name)
    with pytest.raises(ConfigurationError):
        SQLSource(db.engine, unique_name, key=name)
    with pytest.raises(ConfigurationError):
        SQLSource(db.engine, unique_name, version=name)
    with SQLSource(db.engine, unique_name) as source, pytest.raises(ConfigurationError):
        source.save(1, {name: 1})
    assert sa.inspect(db.engine).has_table(table.name)  # still there


def test_an_owned_engine_is_disposed_on_close(db: Db, unique_name: str) -> None:
    db.create(products(unique_name))
    with SQLSource(db.engine.url, unique_name) as source:
        assert source.engine is not db.engine
        source.save(1, {"name": "x"})
        assert source.load(1)["name"] == "x"
    pool = source.engine.pool
    assert isinstance(pool, sa.QueuePool)
    assert pool.checkedin() == 0  # disposed: its pool holds no connection


def test_every_upsert_form_writes_the_same_rows(db: Db, unique_name: str) -> None:
    from cachewise.sources import _upsert

    db.create(products(unique_name, version=True))
    table = sa.Table(unique_name, sa.MetaData(), autoload_with=db.engine)
    target = _upsert.Target(table, ("id",), "seq")
    columns = ["id", "name", "price", "added", "born", "blob", "seq"]
    newer = [{**sample(db, i), "seq": 2} for i in range(5)]
    older = [{**sample(db, i + 1), "id": i, "seq": 1} for i in range(5)]
    forms = _upsert.FORMS[db.engine.dialect.name]
    assert _upsert.DEFAULT_FORMS[db.engine.dialect.name] in forms
    for name, form in forms.items():
        with db.engine.begin() as conn:
            conn.execute(table.delete())
            form(conn, target, columns, older[:2])  # absent rows: inserted at any version
            form(conn, target, columns, newer)
            form(conn, target, columns, newer)  # idempotent
            form(conn, target, columns, older)  # refused: older versions
        with db.engine.connect() as conn:
            found = [dict(r) for r in conn.execute(table.select().order_by("id")).mappings()]
        assert found == newer, name


def test_partial_rows_keep_other_columns(db: Db, unique_name: str) -> None:
    db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(50), nullable=False),
            sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
        )
    )
    with SQLSource(db.engine, unique_name) as source:
        source.save_many({1: {"name": "a", "qty": 5}})
        source.save_many({1: {"name": "b"}, 2: {"name": "c"}})  # qty NOT NULL, left out
        assert source.load_many([1, 2]) == {
            1: {"id": 1, "name": "b", "qty": 5},
            2: {"id": 2, "name": "c", "qty": 0},
        }


@pytest.mark.postgres
def test_unnest_does_not_truncate_varchar(postgres_url: str, unique_name: str) -> None:
    from cachewise.sources import _upsert

    engine = connect(postgres_url)
    table = products(unique_name)
    table.create(engine)
    try:
        target = _upsert.Target(table, ("id",))
        # An explicit ::varchar(100)[] cast would cut the value to 100 characters.
        with pytest.raises(sa.exc.DataError), engine.begin() as conn:
            _upsert.unnest_form(conn, target, ["id", "name"], [{"id": 1, "name": "x" * 101}])
    finally:
        table.drop(engine)
        engine.dispose()


def test_keys_are_compared_whole(db: Db, unique_name: str) -> None:
    # A key longer than its varchar column, or beyond its integer column's range,
    # is simply absent: never truncated into another row's key, never an error.
    db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("code", sa.String(5), primary_key=True),
            sa.Column("n", sa.SmallInteger, primary_key=True, autoincrement=False),
            sa.Column("v", sa.Integer),
        )
    )
    with SQLSource(db.engine, unique_name, key=("code", "n")) as source:
        source.save(("abcde", 1), {"v": 1})
        assert source.load(("abcdef", 1)) is MISSING
        assert source.load_many([("abcdef", 1), ("abcde", 1), ("abcde", 2**40)]) == {
            ("abcde", 1): {"code": "abcde", "n": 1, "v": 1}
        }
        source.remove_many([("abcdef", 1), ("abcde", 2**40)])
        assert source.load(("abcde", 1)) == {"code": "abcde", "n": 1, "v": 1}


@pytest.mark.postgres
def test_postgres_types_round_trip_through_the_default_form(
    postgres_url: str, unique_name: str
) -> None:
    import uuid

    from sqlalchemy.dialects import postgresql as pg

    engine = connect(postgres_url)
    meta = sa.MetaData()
    sa.Table(
        unique_name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("doc", pg.JSONB),
        sa.Column("tags", pg.ARRAY(sa.Integer)),
        sa.Column("uid", sa.Uuid),
        sa.Column("mood", pg.ENUM("happy", "sad", name=f"{unique_name}_mood")),
        sa.Column("ok", sa.Boolean),
        sa.Column("ratio", sa.Float),
        sa.Column("took", sa.Interval),
        sa.Column("at", sa.Time),
    )
    meta.create_all(engine)
    try:
        row = {
            "doc": {"a": [1, "x", None]},
            "tags": [1, 2, 3],
            "uid": uuid.uuid4(),
            "mood": "sad",
            "ok": True,
            "ratio": 1.5,
            "took": dt.timedelta(seconds=5),
            "at": dt.time(1, 2, 3),
        }
        with SQLSource(engine, unique_name) as source:
            source.save_many({1: row, 2: {"tags": None, "mood": "happy"}})
            assert source.load(1) == {"id": 1, **row}
            assert source.load(2)["tags"] is None
            source.save_many({1: {"mood": "happy", "doc": {"b": 2}}})
            assert source.load(1) == {**row, "id": 1, "mood": "happy", "doc": {"b": 2}}
    finally:
        meta.drop_all(engine)
        engine.dispose()
