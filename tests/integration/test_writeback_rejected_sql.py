"""Refused rows on every dialect (issue 11, item 2): SQLSource tells rows the database
refuses (RejectedError) from an unreachable database (SourceError), knows the required
columns from the reflected table, and write-back isolates and parks refused rows on
SQLite, PostgreSQL and MariaDB alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import Cache, MemoryStore, SQLSource, WriteBack, connect
from cachewise.errors import FlushError, InvalidValueError, RejectedError, SourceError


@dataclass
class Db:
    """An engine on one dialect and the table the test made there."""

    engine: sa.Engine
    name: str
    table: sa.Table | None = None

    def create(self, table: sa.Table) -> sa.Table:
        table.create(self.engine)
        self.table = table
        return table


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ]
)
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    url = request.getfixturevalue(f"{request.param}_url")
    found = Db(connect(url), request.param)
    try:
        yield found
    finally:
        if found.table is not None:
            found.table.drop(found.engine, checkfirst=True)
        found.engine.dispose()


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(3), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
        sa.Column("email", sa.String(40), unique=True),
        sa.Column("note", sa.String(40)),
        sa.CheckConstraint("qty >= 0", name=f"{name}_qty"),
    )


def _row(key: int, **values: Any) -> dict[str, Any]:
    return {"id": key, "name": "ok", **values}


def test_row_errors_are_rejected_and_an_unreachable_database_is_not(
    db: Db, unique_name: str
) -> None:
    table = db.create(_table(unique_name))
    source = SQLSource(db.engine, table=table.name)
    with pytest.raises(RejectedError, match="qty"):
        source.save_many({1: _row(1, qty=-1)})  # CHECK
    source.save(2, _row(2, email="a@b"))
    with pytest.raises(RejectedError):
        source.save_many({3: _row(3, email="a@b")})  # UNIQUE (test_sql_other_unique.py)
    if db.name != "sqlite":  # SQLite does not enforce lengths
        with pytest.raises(RejectedError):
            source.save_many({4: _row(4, name="too long")})
    with pytest.raises(RejectedError):  # NOT NULL, sent as an explicit NULL
        source.save_many({5: _row(5, name=None)})
    if db.name != "sqlite":
        down = sa.create_engine(db.engine.url.set(host="127.0.0.1", port=1))
        with pytest.raises(SourceError) as info:
            SQLSource(down, table=table.name)
        assert not isinstance(info.value, RejectedError)
        down.dispose()


def test_required_columns_come_from_the_reflected_table(db: Db, unique_name: str) -> None:
    table = db.create(_table(unique_name))
    source = SQLSource(db.engine, table=table.name)
    source.validate(1, {"name": "ok"})  # qty has a default, the others are nullable
    with pytest.raises(InvalidValueError, match=r"lacks the column.s. 'name'"):
        source.validate(1, {"id": 1, "qty": 3})
    with pytest.raises(InvalidValueError, match="no column 'colour'"):
        source.validate(1, {"name": "ok", "colour": "red"})


def test_write_back_parks_what_the_database_refuses_and_writes_the_rest(
    db: Db, unique_name: str
) -> None:
    table = db.create(_table(unique_name))
    source = SQLSource(db.engine, table=table.name)
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    try:
        cache.write_many({k: _row(k, qty=-k if k in (4, 17) else k) for k in range(20)})
        with pytest.raises(FlushError, match="refused the writes of 2 keys") as info:
            cache.flush()
        assert set(info.value.rejected) == {4, 17}
        assert set(cache.rejected()) == {4, 17}
        assert set(source.load_many(range(20))) == set(range(20)) - {4, 17}
    finally:
        cache.close()


@pytest.mark.postgres
def test_retry_after_the_constraint_is_fixed_in_postgres(
    postgres_url: str, unique_name: str
) -> None:
    engine = connect(postgres_url)
    _table(unique_name).create(engine)
    cache = Cache(
        MemoryStore(), SQLSource(engine, table=unique_name), write=WriteBack(flush_interval=3600)
    )
    try:
        cache.write(1, _row(1, qty=-5))
        cache.write(2, _row(2, qty=5))
        with pytest.raises(FlushError, match="violates check constraint"):
            cache.flush()
        with engine.begin() as conn:  # the fix: the rule was wrong
            conn.execute(
                sa.text(f'ALTER TABLE "{unique_name}" DROP CONSTRAINT "{unique_name}_qty"')
            )
        assert cache.retry_rejected() == 1
        assert cache.flush() == 1
        assert cache.rejected() == {}
    finally:
        cache.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
        engine.dispose()


@pytest.mark.postgres
def test_a_delete_refused_by_a_foreign_key_is_parked_and_the_others_removed(
    postgres_url: str, unique_name: str
) -> None:
    engine = connect(postgres_url)
    parent, child = f"{unique_name}_p", f"{unique_name}_c"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{parent}" (id integer PRIMARY KEY, v text)'))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{child}" (id integer PRIMARY KEY, p integer REFERENCES "{parent}")'
            )
        )
        conn.execute(sa.text(f"INSERT INTO \"{parent}\" VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
        conn.execute(sa.text(f'INSERT INTO "{child}" VALUES (10, 2)'))
    source = SQLSource(engine, table=parent)
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    try:
        for key in (1, 2, 3):
            cache.delete(key)
        with pytest.raises(FlushError, match="foreign key") as info:
            cache.flush()
        assert set(info.value.rejected) == {2}
        assert set(source.load_many([1, 2, 3])) == {2}
    finally:
        cache.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{child}", "{parent}"'))
        engine.dispose()


def test_a_generated_integer_primary_key_is_not_required(db: Db, unique_name: str) -> None:
    table = db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sku", sa.String(20), nullable=False, unique=True),
            sa.Column("stock", sa.Integer),
        )
    )
    source = SQLSource(db.engine, table=table.name, key="sku")
    source.validate("x", {"stock": 5})  # the database assigns id (SQLite: the rowid)
    source.save_many({"x": {"stock": 5}})
    assert source.load("x")["stock"] == 5
