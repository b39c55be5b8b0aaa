"""A write changes only the row of its own key, whatever other unique indexes the table has.

MariaDB's ``ON DUPLICATE KEY UPDATE`` fires on any unique index: before the fix, a new
row for key 2 whose email was row 1's email silently overwrote row 1. On every dialect
such a clash must be a RejectedError with nothing changed: write-back parks the key
and writes the rest, write-through raises and leaves the cache as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import Cache, MemoryStore, SQLSource, WriteBack, WriteThrough, connect
from cachewise.aio import AsyncSQLSource
from cachewise.errors import FlushError, RejectedError


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ]
)
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    found = connect(request.getfixturevalue(f"{request.param}_url"))
    try:
        yield found
    finally:
        found.dispose()


@pytest.fixture
def people(engine: sa.Engine, unique_name: str) -> Iterator[sa.Table]:
    """id (primary key), email (UNIQUE), name; rows 1 and 2."""
    table = sa.Table(
        unique_name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(40)),
        sa.Column("seq", sa.Integer),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": 1, "email": "one@x", "name": "one", "seq": 1},
                {"id": 2, "email": "two@x", "name": "two", "seq": 1},
            ],
        )
    try:
        yield table
    finally:
        table.drop(engine, checkfirst=True)


def _rows(engine: sa.Engine, table: sa.Table) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        return {
            row["id"]: dict(row)
            for row in conn.execute(sa.select(table).order_by(table.c.id)).mappings()
        }


BEFORE = {
    1: {"id": 1, "email": "one@x", "name": "one", "seq": 1},
    2: {"id": 2, "email": "two@x", "name": "two", "seq": 1},
}


def test_a_new_row_clashing_on_another_unique_index_is_rejected(
    engine: sa.Engine, people: sa.Table
) -> None:
    source = SQLSource(engine, table=people.name)
    with pytest.raises(RejectedError):
        source.save_many({3: {"email": "one@x", "name": "thief"}})
    with pytest.raises(RejectedError):  # and in a batch with a good row: all or nothing
        source.save_many(
            {4: {"email": "four@x", "name": "four"}, 3: {"email": "one@x", "name": "thief"}}
        )
    assert _rows(engine, people) == BEFORE


def test_an_existing_row_taking_another_rows_unique_value_is_rejected(
    engine: sa.Engine, people: sa.Table
) -> None:
    source = SQLSource(engine, table=people.name)
    with pytest.raises(RejectedError):
        source.save(2, {"email": "one@x", "name": "thief"})
    assert _rows(engine, people) == BEFORE


def test_own_rows_are_still_updated_and_inserted(engine: sa.Engine, people: sa.Table) -> None:
    source = SQLSource(engine, table=people.name)
    # Row 1 gives its email up and the new row 3 takes it, in one batch.
    source.save_many(
        {
            1: {"email": "uno@x", "name": "uno"},
            3: {"email": "one@x", "name": "three"},
            2: {"email": "two@x"},
        }
    )
    source.save_many({2: {"email": "two@x"}})  # idempotent replay
    assert _rows(engine, people) == {
        1: {"id": 1, "email": "uno@x", "name": "uno", "seq": 1},
        2: BEFORE[2],
        3: {"id": 3, "email": "one@x", "name": "three", "seq": None},
    }


def test_versioned_saves_keep_their_guard(engine: sa.Engine, people: sa.Table) -> None:
    source = SQLSource(engine, table=people.name, version="seq")
    source.save_many({1: {"email": "one@x", "name": "old", "seq": 0}})  # older: ignored
    source.save_many({2: {"email": "two@x", "name": "new", "seq": 2}})
    with pytest.raises(RejectedError):
        source.save_many({2: {"email": "one@x", "name": "newer", "seq": 3}})
    rows = _rows(engine, people)
    assert rows[1] == BEFORE[1]
    assert rows[2] == {"id": 2, "email": "two@x", "name": "new", "seq": 2}


def test_a_clash_through_the_primary_key_of_a_table_keyed_by_another_column(
    engine: sa.Engine, people: sa.Table
) -> None:
    source = SQLSource(engine, table=people.name, key="email")
    with pytest.raises(RejectedError):  # a new email carrying row 1's id
        source.save("new@x", {"id": 1, "name": "thief"})
    with pytest.raises(RejectedError):  # row 2's email carrying row 1's id
        source.save("two@x", {"id": 1, "name": "thief"})
    assert _rows(engine, people) == BEFORE
    source.save("two@x", {"id": 2, "name": "deux"})
    assert _rows(engine, people)[2]["name"] == "deux"


def test_write_back_parks_the_clashing_key_and_writes_the_rest(
    engine: sa.Engine, people: sa.Table
) -> None:
    source = SQLSource(engine, table=people.name)
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    try:
        cache.write_many(
            {
                3: {"id": 3, "email": "one@x", "name": "thief"},
                4: {"id": 4, "email": "four@x", "name": "four"},
                2: {"id": 2, "email": "two@x", "name": "deux"},
            }
        )
        with pytest.raises(FlushError) as info:
            cache.flush()
        assert set(info.value.rejected) == {3}
        assert set(cache.rejected()) == {3}
        assert cache.flush() == 0  # parked, not retried for ever
    finally:
        cache.close()
    rows = _rows(engine, people)
    assert rows[1] == BEFORE[1]
    assert rows[2]["name"] == "deux"
    assert set(rows) == {1, 2, 4}


def test_write_through_raises_and_changes_nothing(engine: sa.Engine, people: sa.Table) -> None:
    source = SQLSource(engine, table=people.name)
    cache = Cache(MemoryStore(), source, write=WriteThrough())
    try:
        assert cache.read(1) == BEFORE[1]
        with pytest.raises(RejectedError):
            cache.write(3, {"id": 3, "email": "one@x", "name": "thief"})
        with pytest.raises(RejectedError):
            cache.write(1, {"id": 1, "email": "two@x", "name": "thief"})
        assert cache.read(1) == BEFORE[1]
        assert cache.read(3) is None
    finally:
        cache.close()
    assert _rows(engine, people) == BEFORE


@pytest.mark.anyio
async def test_the_async_source_rejects_the_clash_too(engine: sa.Engine, people: sa.Table) -> None:
    source = AsyncSQLSource(engine.url.render_as_string(hide_password=False), table=people.name)
    try:
        with pytest.raises(RejectedError):
            await source.save_many({3: {"email": "one@x", "name": "thief"}})
        await source.save_many({3: {"email": "three@x", "name": "three"}})
    finally:
        await source.close()
    rows = _rows(engine, people)
    assert rows[1] == BEFORE[1]
    assert rows[3]["email"] == "three@x"


def test_tuple_and_date_keys_keep_finding_their_own_rows(
    engine: sa.Engine, unique_name: str
) -> None:
    # SQLAlchemy's SQLite Date takes date objects only: a text day there.
    day: Any = sa.String(10) if engine.dialect.name == "sqlite" else sa.Date
    table = sa.Table(
        unique_name,
        sa.MetaData(),
        sa.Column("shop", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("day", day, primary_key=True),
        sa.Column("code", sa.String(10), nullable=False, unique=True),
        sa.Column("total", sa.Integer),
    )
    table.create(engine)
    try:
        source = SQLSource(engine, table=unique_name, key=("shop", "day"))
        source.save_many({(1, "2026-12-04"): {"code": "a", "total": 1}})
        source.save_many({(1, "2026-12-04"): {"code": "a", "total": 2}})  # its own row
        with pytest.raises(RejectedError):
            source.save_many({(2, "2026-12-04"): {"code": "a", "total": 9}})
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.shop, table.c.code, table.c.total)).all()
        assert [tuple(r) for r in rows] == [(1, "a", 2)]
    finally:
        table.drop(engine)
