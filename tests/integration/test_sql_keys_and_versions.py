"""SQLSource keys are typed like their columns; a NULL version is older than any version.

Issue 11 items 15 and 16, on SQLite, PostgreSQL and MariaDB. Key checks are counted in
statements: a refused key runs none.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from cachewise import Cache, MemoryStore, ReadThrough, SQLSource, WriteThrough
from cachewise._types import Key
from cachewise.errors import InvalidKeyError
from cachewise.sources import _upsert
from tests.integration.test_sql_source import Db, db  # noqa: F401 - the fixture

BINARY_KEY = sa.LargeBinary(8).with_variant(mysql.VARBINARY(8), "mysql", "mariadb")


def _keyed(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50)),
    )


def test_a_key_of_another_type_than_its_column_is_refused_before_any_io(
    db: Db,  # noqa: F811 - the fixture
    unique_name: str,
) -> None:
    db.create(_keyed(unique_name))
    source = SQLSource(db.engine, unique_name)
    cache = Cache(MemoryStore(), source, read=ReadThrough(), write=WriteThrough())
    cache.write(1, {"id": 1, "name": "old"})
    cache.write(1, {"id": 1, "name": "new"})
    cache.delete(1)
    before = len(db.statements)
    # SQLite compared "1" with the integer column by affinity: read("1") found row 1,
    # cached it under "1", and served it after write(1, ...) and delete(1).
    for call in (
        lambda: cache.read("1"),
        lambda: cache.read(b"1"),
        lambda: cache.read_many([1, "1"]),
        lambda: cache.write("1", {"name": "x"}),
        lambda: cache.write_many({2: {"name": "y"}, "2": {"name": "z"}}),
        lambda: cache.delete("1"),
        lambda: cache.invalidate("1"),
        lambda: source.load("1"),
        lambda: source.load_many(["1"]),
        lambda: source.save("1", {"name": "x"}),
        lambda: source.remove("1"),
    ):
        with pytest.raises(InvalidKeyError, match="'id' holds int"):
            call()
    assert len(db.statements) == before  # nothing reached the database
    assert cache.read(1) is None
    assert cache.stats.source_writes == 3


def test_tuple_keys_are_checked_per_column(db: Db, unique_name: str) -> None:  # noqa: F811
    db.create(
        sa.Table(
            unique_name,
            sa.MetaData(),
            sa.Column("shop", sa.String(20), primary_key=True),
            sa.Column("sku", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("code", BINARY_KEY),
            sa.Column("qty", sa.Integer),
        )
    )
    source = SQLSource(db.engine, unique_name, key=("shop", "sku"))
    cache = Cache(MemoryStore(), source)
    cache.write(("a", 1), {"qty": 3})
    before = len(db.statements)
    bad: list[Any] = [("a", "1"), (1, 1), (b"a", 1), ("a", True), ("a", (1,))]
    for key in bad:
        with pytest.raises(InvalidKeyError):
            cache.read(key)
        with pytest.raises(InvalidKeyError):
            cache.write(key, {"qty": 0})
    assert len(db.statements) == before
    assert cache.read(("a", 1))["qty"] == 3


def test_text_and_binary_key_columns_take_str_and_bytes(db: Db, unique_name: str) -> None:  # noqa: F811
    for suffix, kind, good, wrong in (
        ("t", sa.String(20), "7", 7),
        ("b", BINARY_KEY, b"7", "7"),
    ):
        name = f"{unique_name}_{suffix}"
        db.create(
            sa.Table(
                name,
                sa.MetaData(),
                sa.Column("k", kind, primary_key=True),
                sa.Column("v", sa.Integer),
            )
        )
        source = SQLSource(db.engine, name, key="k")
        source.save(good, {"v": 1})
        assert source.load(good)["v"] == 1
        with pytest.raises(InvalidKeyError):
            source.load(wrong)


# -- NULL versions ----------------------------------------------------------------------


def _versioned(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50)),
        sa.Column("seq", sa.BigInteger, nullable=True),
    )


def test_a_row_whose_version_is_null_is_older_than_any_version(db: Db, unique_name: str) -> None:  # noqa: F811
    table = db.create(_versioned(unique_name))
    with db.engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "name": "legacy", "seq": None}])
    with SQLSource(db.engine, unique_name, version="seq") as source:
        assert source.load(1) == {"id": 1, "name": "legacy", "seq": None}
        source.save_many({1: {"name": "first versioned write", "seq": 1}})
        assert source.load(1) == {"id": 1, "name": "first versioned write", "seq": 1}
        source.save_many({1: {"name": "older", "seq": 0}})  # the version guard still holds
        assert source.load(1)["name"] == "first versioned write"


def test_every_upsert_form_replaces_a_null_version(db: Db, unique_name: str) -> None:  # noqa: F811
    table = db.create(_versioned(unique_name))
    reflected = sa.Table(unique_name, sa.MetaData(), autoload_with=db.engine)
    target = _upsert.Target(reflected, ("id",), "seq")
    rows: list[dict[str, Any]] = [{"id": i, "name": f"v{i}", "seq": -(2**40)} for i in range(3)]
    for name, form in _upsert.FORMS[db.engine.dialect.name].items():
        with db.engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(
                table.insert(), [{"id": i, "name": "legacy", "seq": None} for i in range(3)]
            )
            form(conn, target, ["id", "name", "seq"], rows)
        with db.engine.connect() as conn:
            found = [dict(r) for r in conn.execute(table.select().order_by("id")).mappings()]
        assert found == rows, name


def test_a_cache_write_through_a_null_version_row_reaches_the_source(
    db: Db,  # noqa: F811
    unique_name: str,
) -> None:
    table = db.create(_versioned(unique_name))
    with db.engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 5, "name": "legacy", "seq": None}])
    source = SQLSource(db.engine, unique_name, version="seq")
    cache = Cache(MemoryStore(), source)
    key: Key = 5
    cache.write(key, {"name": "new", "seq": 1})
    cache.invalidate(key)
    assert cache.read(key) == {"id": 5, "name": "new", "seq": 1}  # not silently ignored
