"""The fast lane of the SQL sources: statements compiled once, run on the driver connection.

A short primary-key query through SQLAlchemy's Engine costs ~60 µs of client CPU in its
``Connection``, execution-context and ``Result`` layers, and a checkout that starts a
transaction costs a ``BEGIN`` and a ``ROLLBACK`` round trip on top (bench/README.md,
"sqlmiss"). On PostgreSQL with psycopg 3 both sources (``SQLSource`` and
``AsyncSQLSource``) skip them: the statements are SQLAlchemy's own (the reflected table,
the dialect's quoting and casts), compiled once per source, and run on the pooled
psycopg connection (the same pool, checkout checks and statistics) in autocommit: each
statement (a read, or the upsert of one row) is its own transaction, one round trip.
Rows come back as the Core path would give them, so the lane is only taken when
SQLAlchemy would hand every value through unchanged: no bind processor on a key or
written column (checked when compiling), no result processor on a read column (checked
on the first result, when the server has said each column's type). Anything else, and
every other dialect, takes the Core path.

An Engine whose statements someone watches (a tracer's or a test's
``before_cursor_execute`` listener, ``echo``) keeps the Core path, so they see every
statement. Pgpool-II's ``/*NO LOAD BALANCE*/`` hint, which ``connect()`` adds to every
statement through an Engine event, is added here to the compiled text, since driver
connections see no Engine events; behind PgBouncer the connections already have no
prepared statements (``connect()`` sets that when it opens them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise.pool import statement_listeners, statement_prefix
from cachewise.sources import _keysets, _upsert


def supported(engine: Engine) -> bool:
    """Whether ``engine`` (a sync engine, or an async engine's ``sync_engine``) has a lane."""
    return engine.dialect.name == "postgresql" and engine.driver == "psycopg"


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        python: type = column.type.python_type
    except NotImplementedError:
        return None
    return python


def _plain_bind(kind: Any, dialect: sa.Dialect) -> bool:
    """Whether SQLAlchemy sends values of the type ``kind`` to the driver unchanged."""
    kind = sa.types.to_instance(kind)
    return kind.dialect_impl(dialect).bind_processor(dialect) is None


class FastLane:
    """One source's statements as psycopg SQL text, and the checks that keep them exact.

    ``load`` reads one key, ``load_many`` a chunk of keys (the key set's array SELECT),
    ``upsert(columns)`` writes one row of those columns with the dialect's conflict
    clause (None when a column needs SQLAlchemy's processing). ``rows_plain`` is None
    until the first result was checked, then whether results may skip SQLAlchemy.
    """

    def __init__(
        self,
        engine: Engine,
        key_cols: Sequence[sa.Column[Any]],
        keyset: _keysets.KeySet,
        target: _upsert.Target,
    ) -> None:
        self._dialect = engine.dialect
        self._prefix = statement_prefix(engine)
        self._target = target
        self.key_names = [f"cw_k{i}" for i in range(len(key_cols))]
        where = sa.and_(
            *(col == sa.bindparam(name) for col, name in zip(key_cols, self.key_names, strict=True))
        )
        self.load = self._text(sa.select(target.table).where(where))
        self.load_many = self._text(keyset.select([])[0])
        if all(_python_type(col) is int for col in key_cols):
            # Integer key arrays travel in binary: psycopg's text form of an array checks
            # every element for quoting (~0.5 µs a key); the statement's cast is the same.
            for name in self.key_names:
                self.load_many = self.load_many.replace(f"%({name})s", f"%({name})b")
        self.rows_plain: bool | None = None
        self._upserts: dict[tuple[str, ...], str | None] = {}

    @classmethod
    def build(
        cls,
        engine: Engine,
        key_cols: Sequence[sa.Column[Any]],
        keyset: _keysets.KeySet,
        target: _upsert.Target,
    ) -> FastLane | None:
        """The lane for a source, or None when its engine or key columns have none."""
        if not supported(engine):
            return None
        dialect = engine.dialect
        for column in key_cols:  # as a parameter of the key SELECT and in the array one
            element = _keysets.key_element_type(column)
            if not _plain_bind(column.type, dialect) or not _plain_bind(element, dialect):
                return None
        return cls(engine, key_cols, keyset, target)

    def _text(self, statement: Any) -> str:
        compiled: Any = statement.compile(dialect=self._dialect)
        return self._prefix + str(compiled)

    def open(self, engine: Engine) -> bool:
        """Whether a call may take the lane now: results not refused, statements unwatched."""
        return self.rows_plain is not False and not statement_listeners(engine)

    def key_params(self, parts: tuple[Any, ...]) -> dict[str, Any]:
        """The parameters of ``load`` for one key's parts."""
        return dict(zip(self.key_names, parts, strict=True))

    def upsert(self, columns: Sequence[str]) -> str | None:
        """The single-row upsert of ``columns`` (parameters ``cw_v0``...), compiled once."""
        shape = tuple(columns)
        if shape not in self._upserts:
            table = self._target.table
            sql: str | None = None
            if all(_plain_bind(table.c[name].type, self._dialect) for name in shape):
                values: dict[str, Any] = {
                    name: sa.bindparam(f"cw_v{i}") for i, name in enumerate(shape)
                }
                insert = _upsert.insert_for(self._dialect.name, table).values(values)
                sql = self._text(
                    _upsert.upsert_clause(self._dialect.name, insert, self._target, shape)
                )
            self._upserts[shape] = sql
        return self._upserts[shape]

    @staticmethod
    def row_params(columns: Sequence[str], row: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters of ``upsert(columns)`` for one row."""
        return {f"cw_v{i}": row[name] for i, name in enumerate(columns)}

    def check_result(self, description: Any) -> bool:
        """Decide, from the first result's columns, whether results may skip SQLAlchemy."""
        if self.rows_plain is None:
            self.rows_plain = self._unprocessed(description)
        return self.rows_plain

    def _unprocessed(self, description: Any) -> bool:
        dialect, table = self._dialect, self._target.table
        for d in description:
            column = table.c.get(str(d.name))
            if column is None:
                return False
            impl = column.type.dialect_impl(dialect)
            if impl.result_processor(dialect, d.type_code) is not None:
                return False
        return True


def keyed_dicts(
    description: Any, rows: Sequence[tuple[Any, ...]], key: Sequence[str]
) -> dict[Any, dict[str, Any]]:
    """``as_dicts`` keyed by the rows' key (its value, or a tuple for several columns)."""
    names = tuple(str(d.name) for d in description)
    make = row_maker(names)
    if len(key) == 1:
        at = names.index(key[0])
        return {row[at]: make(row) for row in rows}
    places = [names.index(name) for name in key]
    return {tuple(row[i] for i in places): make(row) for row in rows}


def as_dicts(description: Any, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows as ``dict`` of plain ``str`` column names, as the Core path returns them."""
    make = row_maker(tuple(str(d.name) for d in description))
    return [make(row) for row in rows]


@functools.lru_cache(maxsize=256)
def row_maker(names: tuple[str, ...]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function making a row's ``dict`` as one dict display: 3-5x ``dict(zip(...))``.

    The generated source holds only parameter names and indexes (``k0``, ``r[0]``...),
    never a column name: the names are bound as the outer function's arguments.
    """
    count = len(names)
    keys = ", ".join(f"k{i}" for i in range(count))
    items = ", ".join(f"k{i}: r[{i}]" for i in range(count))
    source = f"lambda {keys}: lambda r: {{{items}}}" if count else "lambda: lambda r: {}"
    outer: Any = eval(source, {"__builtins__": {}})  # noqa: S307 - text from integers only
    made: Callable[[Sequence[Any]], dict[str, Any]] = outer(*names)
    return made


_IDLE = 0
"""libpq's PQTRANS_IDLE: no transaction open on the connection."""


@contextmanager
def driver_connection(engine: Engine, *, autocommit: bool) -> Iterator[Any]:
    """A pooled psycopg connection for one statement, given back to the pool as it was taken.

    Checked out of ``engine``'s pool (its checkout checks and statistics apply). In
    ``autocommit`` every statement is its own transaction, committed by the server
    before it answers: one round trip, no ``BEGIN``, and the pool's reset on return
    finds nothing to roll back. Otherwise the statements run in one transaction,
    committed on a clean exit and rolled back on an error. A connection an error broke
    is invalidated, not pooled again.
    """
    fairy = engine.raw_connection()
    conn: Any = fairy.driver_connection
    was = conn.autocommit
    try:
        if autocommit and not was:
            conn.autocommit = True
        yield conn
        if not autocommit or conn.info.transaction_status != _IDLE:
            # Pgpool-II (4.3, seen here) can hold the first statement after a switch to
            # autocommit in a transaction it reports open: commit it, or the pool's
            # reset on return would roll the write back.
            conn.commit()
    except BaseException as exc:
        if conn.closed or conn.broken:
            fairy.invalidate(exc if isinstance(exc, Exception) else None)
        elif not autocommit:
            with suppress(Exception):  # the caller's error matters more
                conn.rollback()
        raise
    finally:
        if conn.autocommit != was and not conn.closed:
            try:
                conn.autocommit = was
            except Exception as exc:  # never pooled again in the wrong mode
                fairy.invalidate(exc)
        fairy.close()
