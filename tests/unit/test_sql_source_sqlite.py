"""SQLSource on SQLite (a temp file, no server): argument checks, key rules, lifecycle.

The cross-dialect behaviour (row types, chunking, upserts, versions) is in
tests/integration/test_sql_source.py, which runs on SQLite too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import MISSING, SQLSource
from cachewise._types import Key
from cachewise.errors import ClosedError, ConfigurationError, InvalidKeyError, SourceError


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, "
            "qty INTEGER NOT NULL DEFAULT 0, seq INTEGER)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE stock (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, "
            "shop INTEGER NOT NULL, n INTEGER, note TEXT, UNIQUE (sku, shop))"
        )
        conn.exec_driver_sql("CREATE TABLE logs (id INTEGER, msg TEXT)")  # no key at all
    yield engine
    engine.dispose()


@pytest.fixture
def statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    return seen


def rows(engine: sa.Engine, table: str = "products") -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").all())


def test_defaults_are_products_by_id(engine: sa.Engine) -> None:
    with SQLSource(engine) as source:
        assert source.table.name == "products"
        assert source.key == ("id",)
        assert source.version is None
        assert source.upsert_form == "executemany"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": ""}, "table"),
        ({"table": 3}, "table"),
        ({"key": ()}, "key"),
        ({"key": ("id", "id")}, "twice"),
        ({"key": 5}, "key"),
        ({"version": ""}, "version"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"schema": ""}, "schema"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    engine: sa.Engine, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SQLSource(engine, **kwargs)


def test_not_an_engine_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Engine or a URL"):
        SQLSource(42)  # type: ignore[arg-type]


def test_key_must_be_a_conflict_target(engine: sa.Engine) -> None:
    with pytest.raises(ConfigurationError, match="conflict target"):
        SQLSource(engine, "stock", key="sku")  # half of a unique constraint
    with pytest.raises(ConfigurationError, match="conflict target"):
        SQLSource(engine, "logs", key="id")
    with SQLSource(engine, "stock", key=("shop", "sku")) as source:  # any column order
        source.save(
            (1, "a"),
            {"n": 3},
        )
        assert source.load((1, "a"))["n"] == 3


def test_version_column_must_be_an_integer_and_not_a_key(engine: sa.Engine) -> None:
    with pytest.raises(ConfigurationError, match="integer"):
        SQLSource(engine, version="name")
    with pytest.raises(ConfigurationError, match="key column"):
        SQLSource(engine, "stock", key=("sku", "shop"), version="shop")


def test_key_shapes_are_checked(engine: sa.Engine) -> None:
    with SQLSource(engine) as single, SQLSource(engine, "stock", key=("sku", "shop")) as pair:
        with pytest.raises(InvalidKeyError):
            single.load((1,))
        with pytest.raises(InvalidKeyError):
            single.load(1.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError):
            pair.load("a")
        with pytest.raises(InvalidKeyError):
            pair.load(("a", 1, 2))
        with pytest.raises(InvalidKeyError):
            single.load_many("abc")


def test_bad_values_change_nothing(engine: sa.Engine, statements: list[str]) -> None:
    with SQLSource(engine) as source:
        source.save(1, {"name": "kept"})
        before = rows(engine)
        statements.clear()
        bad_batches: list[dict[Key, Any]] = [
            {2: {"name": "ok"}, 3: {"colour": "red"}},  # unknown column
            {2: {"name": "ok"}, 3: {"id": 4, "name": "x"}},  # key disagrees with the value
            {2: {"name": "ok"}, 3: ["not", "a", "mapping"]},
            {2: {"name": "ok"}, 3: {1: "x"}},  # a column name that is not a str
        ]
        for batch in bad_batches:
            with pytest.raises(ConfigurationError):
                source.save_many(batch)
        with pytest.raises(ConfigurationError):
            source.save_many([(2, {"name": "x"})])  # type: ignore[arg-type]
        assert statements == []  # refused before any statement ran
        assert rows(engine) == before


def test_the_key_column_is_filled_from_the_key(engine: sa.Engine) -> None:
    with SQLSource(engine) as source:
        value = {"name": "a"}
        source.save(5, value)
        assert value == {"name": "a"}  # the caller's dict is not changed
        source.save(6, {"id": 6, "name": "b"})  # present and equal: fine
        assert rows(engine) == [(5, "a", 0, None), (6, "b", 0, None)]


def test_partial_rows_update_only_their_columns(engine: sa.Engine, statements: list[str]) -> None:
    with SQLSource(engine) as source:
        source.save_many({1: {"name": "a", "qty": 5}, 2: {"name": "b", "qty": 6}})
        statements.clear()
        source.save_many({1: {"qty": 7}, 2: {"name": "c"}, 3: {"name": "d"}})
        assert len(statements) == 2  # one upsert per distinct column set
        assert rows(engine) == [(1, "a", 7, None), (2, "c", 6, None), (3, "d", 0, None)]
        source.save(4, {})  # key columns only: inserted, and a no-op when present
        source.save(4, {})
        assert source.load(4) == {"id": 4, "name": None, "qty": 0, "seq": None}


def test_versioned_saves_need_the_version(engine: sa.Engine) -> None:
    with SQLSource(engine, version="seq") as source:
        for bad in ({"name": "x"}, {"name": "x", "seq": None}, {"seq": True}, {"seq": "3"}):
            with pytest.raises(ConfigurationError, match="seq"):
                source.save_many({1: {"name": "ok", "seq": 1}, 2: bad})
        assert rows(engine) == []


def test_empty_batches_touch_nothing(engine: sa.Engine, statements: list[str]) -> None:
    with SQLSource(engine) as source:
        statements.clear()
        assert source.load_many([]) == {}
        source.save_many({})
        source.remove_many([])
        assert statements == []


def test_duplicate_keys_are_loaded_once(engine: sa.Engine, statements: list[str]) -> None:
    with SQLSource(engine, chunk_size=2) as source:
        source.save_many({1: {"name": "a"}, 2: {"name": "b"}})
        statements.clear()
        found = source.load_many([1, 1, 2, 2, 1])
        assert found == {1: {"id": 1, "name": "a", "qty": 0, "seq": None}, 2: source.load(2)}
        assert len(statements) == 2  # one chunk of {1, 2}, then the load(2)


def test_values_form_splits_at_the_parameter_limit(engine: sa.Engine) -> None:
    # The multi-row VALUES form must keep rows x columns under SQLite's bound
    # parameter limit, whatever chunk_size says.
    from cachewise.sources import _upsert

    limit = 999 if sqlite3.sqlite_version_info < (3, 32) else 32_766
    per = _upsert.rows_per_statement(engine.dialect, "values", 10, 100_000)
    assert per * 10 <= limit < (per + 1) * 10
    assert _upsert.rows_per_statement(engine.dialect, "values", 10, 50) == 50
    assert _upsert.rows_per_statement(engine.dialect, "executemany", 10, 100_000) == 100_000


def test_every_form_writes_the_same_rows(engine: sa.Engine) -> None:
    from cachewise.sources import _upsert

    table = sa.Table("products", sa.MetaData(), autoload_with=engine)
    target = _upsert.Target(table, ("id",), "seq")
    batch = [{"id": i, "name": f"n{i}", "seq": 2} for i in range(5)]
    older = [{"id": i, "name": "old", "seq": 1} for i in range(5)]
    for form in _upsert.FORMS["sqlite"].values():
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM products")
            form(conn, target, ["id", "name", "seq"], batch)
            form(conn, target, ["id", "name", "seq"], batch)  # idempotent
            form(conn, target, ["id", "name", "seq"], older)  # refused: older version
        assert rows(engine) == [(i, f"n{i}", 0, 2) for i in range(5)]


def test_closed_source_refuses_work_but_leaves_the_callers_engine(engine: sa.Engine) -> None:
    source = SQLSource(engine)
    source.close()
    assert "closed" in repr(source)
    with pytest.raises(ClosedError):
        source.load(1)
    with pytest.raises(ClosedError):
        source.save(1, {"name": "x"})
    with engine.connect() as conn:  # the engine passed in is still usable
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_a_url_makes_an_owned_engine(engine: sa.Engine, sqlite_url: str) -> None:
    with SQLSource(sqlite_url) as source:
        source.save(1, {"name": "x"})
        assert source.load(1)["name"] == "x"
        assert source.engine is not engine
    assert rows(engine) == [(1, "x", 0, None)]


def test_unknown_table_with_an_owned_engine_is_a_configuration_error(sqlite_url: str) -> None:
    # The engine it built is disposed on the way out (filterwarnings=error would
    # turn a leaked connection into a failure).
    with pytest.raises(ConfigurationError, match="no table 'nope'"):
        SQLSource(sqlite_url, "nope")


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "newfile.db"
    with pytest.raises(ConfigurationError, match=r"no table 'products'.* does not exist"):
        SQLSource(f"sqlite:///{path}", table="products")
    engine = sa.create_engine(f"sqlite:///{path}")  # the caller's engine: same answer
    with pytest.raises(ConfigurationError, match="does not exist"):
        SQLSource(engine)
    engine.dispose()
    assert not path.exists()


def test_passwords_stay_out_of_errors_and_repr() -> None:
    url = "postgresql+psycopg://user:hunter2-secret@127.0.0.1:1/db"
    with pytest.raises(SourceError) as info:
        SQLSource(url)
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all("hunter2-secret" not in str(e) and "hunter2-secret" not in repr(e) for e in chain)


def test_repr_names_the_table_and_key(engine: sa.Engine) -> None:
    with SQLSource(engine, "stock", key=("sku", "shop")) as source:
        assert "'stock'" in repr(source)
        assert "('sku', 'shop')" in repr(source)
        assert source.load(("x", 1)) is MISSING


def test_a_database_error_is_a_source_error(engine: sa.Engine) -> None:
    with SQLSource(engine) as source:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE products")
        with pytest.raises(SourceError, match="no such table") as info:
            source.load(1)
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        with pytest.raises(SourceError):
            source.save_many({1: {"name": "x"}, 2: {"name": "y"}})


@pytest.mark.parametrize("row_values", [True, False])
def test_tuple_key_batches_with_and_without_row_values(engine: sa.Engine, row_values: bool) -> None:
    # SQLite before 3.15 has no row values: the OR-of-ANDs form must match the same rows.
    from cachewise.sources._keysets import KeySet

    with SQLSource(engine, "stock", key=("sku", "shop")) as source:
        source.save_many({("a", 1): {"n": 1}, ("a", 2): {"n": 2}, ("b", 1): {"n": 3}})
        keyset = KeySet(source.table, ["sku", "shop"], engine.dialect)
        keyset.row_values = row_values
        query, params = keyset.select([("a", 2), ("b", 1), ("b", 2)])
        with engine.connect() as conn:
            found = sorted((r.sku, r.shop, r.n) for r in conn.execute(query, params))
        assert found == [("a", 2, 2), ("b", 1, 3)]
        compiled = str(query.compile(dialect=engine.dialect))  # type: ignore[attr-defined]
        assert (" IN " in compiled) is row_values


def test_rows_have_plain_str_column_names_so_strict_codecs_take_them(tmp_path: Path) -> None:
    from cachewise.codecs import MsgpackCodec

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    sa.Table("items", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Text))
    meta.create_all(engine)
    with SQLSource(engine, table="items") as source:
        source.save_many({1: {"n": "a"}, 2: {"n": "b"}})
        rows = [source.load(1), *source.load_many([2]).values()]
    engine.dispose()
    codec = MsgpackCodec()
    for row in rows:
        assert all(type(name) is str for name in row)
        assert codec.decode(codec.encode(row)) == row
