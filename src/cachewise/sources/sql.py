"""SQLSource: one SQL table as the authoritative data source, through SQLAlchemy Core.

A value is the row as a ``dict`` (column -> value); the cache key is the key column's
value, or a tuple of values when ``key`` names several columns. The table is reflected
once at construction, and every identifier in every statement comes from that
reflected ``Table`` (quoted by the dialect), never from text: a table or column name
that does not exist is a ``ConfigurationError`` at construction.

Batches are cheap in round trips: ``load_many`` is one ``SELECT ... WHERE key IN (...)``
per chunk, ``remove_many`` one ``DELETE ... WHERE key IN (...)`` per chunk, and
``save_many`` one upsert per chunk in the dialect's own syntax (see ``_upsert.py``),
all chunks of a call in one transaction. ``save_many`` is idempotent, so a write-back
batch replayed after a crash leaves the same state; with ``version=`` it also never
lets an old batch overwrite a newer row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cachewise._redact import leaks, redact, scrub, secrets
from cachewise._types import MISSING, Key, check_key, check_positive
from cachewise.errors import (
    CachewiseError,
    ClosedError,
    ConfigurationError,
    InvalidKeyError,
    InvalidValueError,
    RejectedError,
    SourceError,
)
from cachewise.pool import connect
from cachewise.sources import _fastlane, _keysets, _upsert

_RowGroups = dict[frozenset[str], list[Mapping[str, Any]]]
"""Rows to upsert, grouped by the set of columns they carry (one statement shape each)."""


def _engine_for(url: str | sa.URL) -> Engine:
    """Build the engine for a URL the source was given (and therefore owns)."""
    return connect(url)


class SQLSource:
    """One table of a SQL database (SQLite, PostgreSQL, MariaDB) as the source of record.

    ``engine_or_url`` is an ``Engine`` (the caller's: ``close()`` leaves it open) or a
    URL (the source builds the engine with ``cachewise.connect`` and disposes it in
    ``close()``). ``key`` is a column name or a tuple of column names that form the
    primary key or a unique constraint (the upsert's conflict target). ``version``
    names an integer column: ``save_many`` then replaces a row only with a strictly
    newer version. ``chunk_size`` bounds the keys or rows per statement.
    """

    _lone_kind: type | None = None
    """The one type a lone key column takes (``check_key``'s shortcut), once reflected."""

    def __init__(
        self,
        engine_or_url: Engine | str | sa.URL,
        table: str = "products",
        key: str | tuple[str, ...] = "id",
        *,
        version: str | None = None,
        chunk_size: int = 1000,
        schema: str | None = None,
    ) -> None:
        key_columns = self._key_columns = check_arguments(table, key, version, schema, chunk_size)
        if isinstance(engine_or_url, Engine):
            self._engine = engine_or_url
            self._owns_engine = False
        elif isinstance(engine_or_url, (str, sa.URL)):
            try:
                self._engine = _engine_for(engine_or_url)
            except CachewiseError:
                raise
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
                raise ConfigurationError(
                    f"SQLSource: not a usable database URL ({type(exc).__name__})"
                ) from None
            self._owns_engine = True
        else:
            raise ConfigurationError(
                f"engine_or_url must be a SQLAlchemy Engine or a URL, got "
                f"{type(engine_or_url).__name__}"
            )
        self._closed = False
        self._where = f"table {table!r} at {redact(self._engine.url)}"
        self.chunk_size: int = chunk_size
        try:
            check_dialect(self._engine.dialect)
            _check_sqlite_file(self._engine.url, table)
            self._prepare(self._reflect_on(self._engine, table, schema), key_columns, version)
        except BaseException:
            self._dispose()
            raise

    def _prepare(self, table: sa.Table, key_columns: tuple[str, ...], version: str | None) -> None:
        """Check the reflected table and build what every statement needs from it."""
        self._table = table
        self._target = self._check_columns(key_columns, version)
        self._key_cols = [self._table.c[name] for name in key_columns]
        self._key_kinds = [_key_kind(col) for col in self._key_cols]
        self._key_names = key_columns
        self._single_key = key_columns[0] if len(key_columns) == 1 else None
        if self._single_key is not None:
            self._lone_kind = self._key_kinds[0]
        self._column_order = [c.name for c in self._table.c]
        self._column_names = frozenset(self._column_order)
        self._required = frozenset(
            c.name for c in self._table.c if c.name not in key_columns and _required(c)
        )
        """Columns every saved row must carry: NOT NULL, no default, not generated."""
        self._dialect = self._engine.dialect.name
        self._keyset = _keysets.KeySet(self._table, key_columns, self._engine.dialect)
        self._form_name = _upsert.DEFAULT_FORMS[self._dialect]
        if self._dialect in _upsert.OWN_ROW_FORMS and _other_unique(table, key_columns):
            # ON DUPLICATE KEY UPDATE would fire on those indexes too (see _upsert).
            self._form_name = _upsert.OWN_ROW_FORMS[self._dialect]
        self._form = _upsert.FORMS[self._dialect][self._form_name]
        self._lane = _fastlane.FastLane.build(
            self._engine, self._key_cols, self._keyset, self._target
        )
        """PostgreSQL on psycopg: statements compiled once, run on the driver connection."""

    # -- construction -------------------------------------------------------------

    def _reflect_on(self, bind: Engine | Connection, table: str, schema: str | None) -> sa.Table:
        try:
            # has_table binds the name as a parameter (or quotes it) before reflection
            # ever runs, so a hostile name is just a table that does not exist.
            if not sa.inspect(bind).has_table(table, schema=schema):
                where = f"{schema}.{table}" if schema else table
                raise ConfigurationError(f"SQLSource: no table {where!r} in the database")
            return sa.Table(table, sa.MetaData(), autoload_with=bind, schema=schema)
        except sa.exc.NoSuchTableError:
            raise ConfigurationError(f"SQLSource: no table {table!r} in the database") from None
        except sa.exc.SQLAlchemyError as exc:
            self._fail("reflecting the table", exc)

    def _check_columns(self, key: tuple[str, ...], version: str | None) -> _upsert.Target:
        table = self._table
        for name in (*key, *((version,) if version else ())):
            if name not in table.c:
                raise ConfigurationError(f"SQLSource: table {table.name!r} has no column {name!r}")
        if not _is_unique(table, key):
            raise ConfigurationError(
                f"SQLSource: key columns {list(key)} of table {table.name!r} are neither its "
                "primary key nor a unique constraint, so an upsert has no conflict target"
            )
        if version is not None:
            if version in key:
                raise ConfigurationError(f"SQLSource: version column {version!r} is a key column")
            if not isinstance(table.c[version].type, sa.Integer):
                raise ConfigurationError(
                    f"SQLSource: version column {version!r} must be an integer column, "
                    f"it is {table.c[version].type}"
                )
        return _upsert.Target(table, key, version)

    # -- lifecycle ----------------------------------------------------------------

    def __repr__(self) -> str:
        key = self.key[0] if len(self.key) == 1 else self.key
        state = " closed" if self._closed else ""
        return f"<SQLSource {self._where} key={key!r}{state}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (and its pool) this source reads and writes through."""
        return self._engine

    @property
    def table(self) -> sa.Table:
        """The reflected table."""
        return self._table

    @property
    def key(self) -> tuple[str, ...]:
        """The key column names, in cache-key order."""
        return self._target.key

    @property
    def version(self) -> str | None:
        """The version column name, or None when saves are not versioned."""
        return self._target.version

    @property
    def upsert_form(self) -> str:
        """The upsert form ``save_many`` uses on this dialect (see bench/README.md)."""
        return self._form_name

    def close(self) -> None:
        """Release the engine if this source created it; later calls raise ClosedError."""
        self._closed = True
        self._dispose()

    def _dispose(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> SQLSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the Source protocol ------------------------------------------------------

    def load(self, key: Key) -> Any:
        checked = self.check_key(key)
        lane = self._lane
        if lane is not None and lane.open(self._engine):
            found = self._load_fast(lane, [checked], "load")
            if found is not None:
                return found.get(checked, MISSING)
        with self._connect("load") as conn:
            return self._load_on(conn, self._match(checked))

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        wanted = self._unique_keys(keys)
        if not wanted:
            return {}
        lane = self._lane
        if lane is not None and lane.open(self._engine):
            found = self._load_fast(lane, wanted, "load_many")
            if found is not None:
                return found
        with self._connect("load_many") as conn:
            return self._load_many_on(conn, wanted)

    def save(self, key: Key, value: Any) -> None:
        self.save_many({key: value})

    def validate(self, key: Key, value: Any) -> None:
        """Refuse, without I/O, a write this table cannot take (``ValidatingSource``).

        The key must fit the key columns; a value (``MISSING`` for a removal) must be a
        mapping of existing columns that carries every NOT NULL column without a default
        and agrees with the key on the key columns. Raises InvalidKeyError or
        InvalidValueError; write-back calls it before acknowledging a write.
        """
        checked = self.check_key(key)
        if value is MISSING:
            return
        # The common case in a few set operations (this runs on every write-back
        # write); anything unusual goes through _row_for, which says what is wrong.
        if (
            type(value) is dict
            and self._column_names.issuperset(value)
            and self._required.issubset(value)
            and self._target.version is None
        ):
            single = self._single_key
            if single is not None:
                if value.get(single, checked) == checked:
                    return
            elif isinstance(checked, tuple) and all(
                value.get(n, p) == p for n, p in zip(self._key_names, checked, strict=True)
            ):
                return
        self._row_for(checked, value)

    def save_many(self, items: Mapping[Key, Any]) -> None:
        groups = self._row_groups(items)
        if not groups:
            return
        lane = self._lane
        if lane is not None and len(groups) == 1 and self._save_fast(lane, groups):
            return
        with self._connect("save_many", begin=True) as conn:
            self._save_groups_on(conn, groups)

    def remove(self, key: Key) -> None:
        where = self._match(self.check_key(key))
        with self._connect("remove", begin=True) as conn:
            self._remove_on(conn, where)

    def remove_many(self, keys: Iterable[Key]) -> None:
        wanted = self._unique_keys(keys)
        if not wanted:
            return
        with self._connect("remove_many", begin=True) as conn:
            self._remove_many_on(conn, wanted)

    # -- the fast lane (PostgreSQL on psycopg; see _fastlane.py) -------------------

    def _load_fast(
        self, lane: _fastlane.FastLane, wanted: list[Key], operation: str
    ) -> dict[Key, Any] | None:
        """The rows of ``wanted`` read on the driver connection; None: take the Core path.

        One key is the compiled primary-key SELECT, several the key set's array SELECT
        per chunk, all on one connection in autocommit (one round trip per statement).
        """
        found: dict[Key, Any] = {}
        with self._driver(operation) as conn:
            if len(wanted) == 1:
                cursor = conn.execute(lane.load, lane.key_params(self._parts(wanted[0])))
                if not lane.check_result(cursor.description):
                    return None
                for value in _fastlane.as_dicts(cursor.description, cursor.fetchall()):
                    found[wanted[0]] = value
                return found
            single = self._single_key is not None
            for chunk in _chunks(wanted, self.chunk_size):
                params = {"cw_k0": list(chunk)} if single else self._keyset.params(chunk)
                cursor = conn.execute(lane.load_many, params)
                if not lane.check_result(cursor.description):
                    return None
                found.update(_fastlane.keyed_dicts(cursor.description, cursor.fetchall(), self.key))
        return found

    def _save_fast(self, lane: _fastlane.FastLane, groups: _RowGroups) -> bool:
        """Save a lone row with the compiled upsert; False: take the Core path.

        One statement in autocommit is its own transaction, committed by the server
        before it answers: one round trip instead of ``BEGIN``, upsert, ``COMMIT``.
        """
        ((names, rows),) = groups.items()
        if len(rows) != 1 or not lane.open(self._engine):
            return False
        columns = [name for name in self._column_order if name in names]
        sql = lane.upsert(columns)
        if sql is None:
            return False
        with self._driver("save_many") as conn:
            conn.execute(sql, lane.row_params(columns, rows[0]))
        return True

    @contextmanager
    def _driver(self, operation: str) -> Iterator[Any]:
        """The lane's pooled psycopg connection; errors translated as ``_connect``'s."""
        if self._closed:
            raise ClosedError(f"SQLSource {self._where} is closed")
        dbapi_error: type[Exception] = getattr(
            self._engine.dialect.dbapi, "Error", sa.exc.DBAPIError
        )
        try:
            with _fastlane.driver_connection(self._engine, autocommit=True) as conn:
                yield conn
        except (sa.exc.SQLAlchemyError, dbapi_error) as exc:
            self._fail(operation, exc)

    # -- statements on a connection (the sync and the async source share them) ---------

    def _load_on(self, conn: Connection, where: sa.ColumnElement[bool]) -> Any:
        result = conn.execute(sa.select(self._table).where(where))
        names = _plain_names(result)
        row = result.first()
        return MISSING if row is None else dict(zip(names, row, strict=True))

    def _load_many_on(self, conn: Connection, wanted: list[Key]) -> dict[Key, Any]:
        found: dict[Key, Any] = {}
        for chunk in _chunks(wanted, self.chunk_size):
            query, params = self._keyset.select([self._parts(k) for k in chunk])
            result = conn.execute(query, params)
            names = _plain_names(result)
            for row in result:
                value = dict(zip(names, row, strict=True))
                found[self._row_key(value)] = value
        return found

    def _row_groups(
        self, items: Mapping[Key, Any]
    ) -> dict[frozenset[str], list[Mapping[str, Any]]]:
        """The rows to upsert, grouped by column set; every row checked first."""
        if not isinstance(items, Mapping):
            raise ConfigurationError(f"save_many takes a mapping, got {type(items).__name__}")
        # Every row is checked before the first statement: bad input changes nothing.
        groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
        for key, value in items.items():
            row = self._row_for(self.check_key(key), value)
            groups.setdefault(frozenset(row), []).append(row)
        return groups

    def _save_groups_on(self, conn: Connection, groups: _RowGroups) -> None:
        for names, rows in groups.items():
            columns = [name for name in self._column_order if name in names]
            per_statement = _upsert.rows_per_statement(
                conn.dialect, self._form_name, len(columns), self.chunk_size
            )
            for chunk in _chunks(rows, per_statement):
                self._form(conn, self._target, columns, chunk)

    def _remove_on(self, conn: Connection, where: sa.ColumnElement[bool]) -> None:
        conn.execute(sa.delete(self._table).where(where))

    def _remove_many_on(self, conn: Connection, wanted: list[Key]) -> None:
        for chunk in _chunks(wanted, self.chunk_size):
            statement, params = self._keyset.delete([self._parts(k) for k in chunk])
            conn.execute(statement, params)

    # -- keys and rows ------------------------------------------------------------

    def check_key(self, key: Key) -> Key:
        """Return ``key`` if it fits the key columns (count and types), else InvalidKeyError.

        An integer column takes an ``int``, a text column a ``str``, a binary column
        ``bytes`` (per column for a tuple key); a column of any other type takes any key
        the database can compare with it. Checked before any I/O, so ``"1"`` is refused
        for an integer key on every dialect (SQLite would otherwise find the row ``1``).
        """
        if type(key) is self._lone_kind:
            return key  # the common case, in one test (this runs per key of every batch)
        check_key(key)
        # An AsyncSQLSource reflects its table on first use: until then, the shape only.
        kinds: list[type | None] | None = getattr(self, "_key_kinds", None)
        names = self.key if kinds is not None else self._key_columns
        width = len(names)
        if width == 1:
            if isinstance(key, tuple):
                raise InvalidKeyError(
                    f"SQLSource {self._where} has the single key column {names[0]!r}; "
                    f"got the tuple key {key!r}"
                )
        elif not isinstance(key, tuple) or len(key) != width:
            raise InvalidKeyError(
                f"SQLSource {self._where} has key columns {list(names)}; a key is a tuple "
                f"of {width} values in that order, got {key!r}"
            )
        for name, kind, part in zip(names, kinds or (), self._parts(key), strict=False):
            if kind is not None and type(part) is not kind:
                raise InvalidKeyError(
                    f"SQLSource {self._where}: key column {name!r} holds {kind.__name__} "
                    f"values, got {type(part).__name__} {part!r}"
                )
        return key

    def _unique_keys(self, keys: Iterable[Key]) -> list[Key]:
        if isinstance(keys, (str, bytes)):
            raise InvalidKeyError("keys must be an iterable of keys, not a single str or bytes")
        kind = self._lone_kind
        if kind is not None and type(keys) is list and set(map(type, keys)) <= {kind}:
            return list(dict.fromkeys(keys))  # every key checked at once, in C
        return list(dict.fromkeys(self.check_key(k) for k in keys))

    def _parts(self, key: Key) -> tuple[Any, ...]:
        return key if isinstance(key, tuple) else (key,)

    def _row_key(self, row: Mapping[str, Any]) -> Key:
        if len(self.key) == 1:
            return row[self.key[0]]  # type: ignore[no-any-return]
        return tuple(row[name] for name in self.key)

    def _match(self, key: Key) -> sa.ColumnElement[bool]:
        return sa.and_(
            *(col == part for col, part in zip(self._key_cols, self._parts(key), strict=True))
        )

    def _row_for(self, key: Key, value: Any) -> Mapping[str, Any]:
        """The row to write for ``key``: checked, with the key columns filled in.

        The caller's mapping is never changed; it is copied only when a key column
        has to be added. This runs per row of every flush, hence the set arithmetic.
        """
        if not isinstance(value, Mapping):
            raise InvalidValueError(
                f"SQLSource {self._where}: a value is a mapping of column -> value, "
                f"got {type(value).__name__} for key {key!r}"
            )
        if not self._column_names.issuperset(value):
            name = sorted(value.keys() - self._column_names, key=repr)[0]
            raise InvalidValueError(
                f"SQLSource {self._where}: no column {name!r} (value for key {key!r})"
            )
        if not self._required.issubset(value):
            absent = sorted(self._required - value.keys())
            raise InvalidValueError(
                f"SQLSource {self._where}: the value for key {key!r} lacks the column(s) "
                f"{', '.join(map(repr, absent))}, NOT NULL without a default"
            )
        row: Mapping[str, Any] = value
        for name, part in zip(self.key, self._parts(key), strict=True):
            if name not in row:
                if row is value:
                    row = dict(value)
                row[name] = part  # type: ignore[index]
            elif row[name] != part:
                raise InvalidValueError(
                    f"SQLSource {self._where}: key {key!r} but the value's column "
                    f"{name!r} is {row[name]!r}"
                )
        version = self._target.version
        if version is not None:
            stamp = row.get(version)
            if isinstance(stamp, bool) or not isinstance(stamp, int):
                raise InvalidValueError(
                    f"SQLSource {self._where}: a versioned save needs an integer "
                    f"{version!r} in every value, got {stamp!r} for key {key!r}"
                )
        return row

    # -- I/O boundary -------------------------------------------------------------

    @contextmanager
    def _connect(self, operation: str, *, begin: bool = False) -> Iterator[Connection]:
        if self._closed:
            raise ClosedError(f"SQLSource {self._where} is closed")
        dbapi_error: type[Exception] = getattr(
            self._engine.dialect.dbapi, "Error", sa.exc.DBAPIError
        )
        try:
            if begin:
                with self._engine.begin() as conn:
                    yield conn
            else:
                with self._engine.connect() as conn:
                    yield conn
        except (sa.exc.SQLAlchemyError, dbapi_error) as exc:
            self._fail(operation, exc)

    def _fail(self, operation: str, exc: Exception) -> NoReturn:
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        hidden = secrets(self._engine.url)
        kind = RejectedError if _row_level(exc, cause) else SourceError
        error = kind(
            f"SQLSource {self._where}: {operation} failed: {type(cause).__name__}: "
            f"{scrub(reason, hidden)}"
        )
        raise error from (None if leaks(exc, hidden) else exc)


def _check_sqlite_file(url: sa.URL, table: str) -> None:
    """Refuse a SQLite file that does not exist before connecting, which would create it.

    A source reads an existing table: a new empty file can only be a typo or the wrong
    working directory, and leaving it behind hides the mistake on the next run.
    """
    if url.get_backend_name() != "sqlite" or url.query.get("uri"):
        return  # file: URIs carry their own mode; leave them to SQLite
    path = url.database
    if path and path != ":memory:" and not os.path.exists(path):
        raise ConfigurationError(
            f"SQLSource: no table {table!r}: the SQLite database {path!r} does not exist "
            f"(in {os.getcwd()!r})"
        )


_ROW_LEVEL_SQLSTATE_CLASSES = ("22", "23")
"""SQLSTATE classes of errors about the data itself: data exception, integrity violation."""

_MYSQL_ROW_LEVEL_CODES = frozenset({1364, 3819, 4025})
"""MySQL/MariaDB row errors PyMySQL raises as OperationalError: a NOT NULL column without
a default left out (1364), a CHECK constraint violated (MySQL 3819, MariaDB 4025)."""


def _row_level(exc: Exception, cause: object) -> bool:
    """Whether the database refused the rows themselves, not the connection or the query.

    Retrying such a batch fails the same way; write-back isolates the rows instead.
    """
    if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError)):
        return True
    state = getattr(cause, "sqlstate", None)
    if isinstance(state, str) and state[:2] in _ROW_LEVEL_SQLSTATE_CLASSES:
        return True
    args: tuple[Any, ...] = getattr(cause, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_ROW_LEVEL_CODES


def _required(column: sa.Column[Any]) -> bool:
    """Whether an inserted row must name ``column``: NOT NULL, no default, not generated.

    A lone integer primary key may be generated without saying so (SQLite's
    ``INTEGER PRIMARY KEY`` is the rowid): never required here; if the database does
    need it, it refuses the row at flush time instead.
    """
    table = column.table
    lone_integer_key = (
        column.primary_key
        and len(table.primary_key.columns) == 1
        and isinstance(column.type, sa.Integer)
    )
    return (
        not column.nullable
        and column.server_default is None
        and column.computed is None
        and column.identity is None
        and column.autoincrement is not True
        and not lone_integer_key
    )


def check_arguments(
    table: object, key: str | tuple[str, ...], version: object, schema: object, chunk_size: int
) -> tuple[str, ...]:
    """Validate a SQL source's arguments (sync or async) before anything connects."""
    check_positive(chunk_size, "chunk_size", integer=True)
    if not isinstance(table, str) or not table:
        raise ConfigurationError(f"table must be a non-empty table name, got {table!r}")
    key_columns = _key_columns(key)
    if version is not None and (not isinstance(version, str) or not version):
        raise ConfigurationError(f"version must be a column name or None, got {version!r}")
    if schema is not None and (not isinstance(schema, str) or not schema):
        raise ConfigurationError(f"schema must be a schema name or None, got {schema!r}")
    return key_columns


def check_dialect(dialect: sa.Dialect) -> None:
    """ConfigurationError unless the dialect is one SQLSource builds statements for."""
    if dialect.name not in _upsert.FORMS:
        raise ConfigurationError(
            f"SQLSource supports SQLite, PostgreSQL and MariaDB/MySQL, not {dialect.name}"
        )


def _plain_names(result: sa.CursorResult[Any]) -> list[str]:
    """Column names as plain ``str``, so rows round-trip through Redis and journals.

    SQLAlchemy hands out ``quoted_name`` (a str subclass), which strict codecs refuse.
    """
    return [str(name) for name in result.keys()]  # noqa: SIM118 - a Result, not a dict


def _key_columns(key: str | tuple[str, ...]) -> tuple[str, ...]:
    names = (key,) if isinstance(key, str) else key
    if (
        not isinstance(names, tuple)
        or not names
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ConfigurationError(
            f"key must be a column name or a tuple of column names, got {key!r}"
        )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"key names a column twice: {key!r}")
    return names


def _key_kind(column: sa.Column[Any]) -> type | None:
    """The one key type a key column takes (None: any key the database compares).

    Every dialect is held to the same rule: SQLite would compare ``"1"`` with an integer
    column by affinity, PostgreSQL would refuse it, MariaDB would cast it.
    """
    try:
        python: type = column.type.python_type
    except NotImplementedError:  # a type SQLAlchemy cannot map (NullType, some reflected)
        return None
    return python if python in (int, str, bytes) else None


def _is_unique(table: sa.Table, key: tuple[str, ...]) -> bool:
    """Whether ``key`` is exactly the primary key, a unique constraint or a unique index."""
    return set(key) in _unique_sets(table)


def _other_unique(table: sa.Table, key: tuple[str, ...]) -> bool:
    """Whether the table has a unique index (or primary key) besides the key's own."""
    return any(columns != set(key) for columns in _unique_sets(table))


def _unique_sets(table: sa.Table) -> list[set[str]]:
    """The column sets of the primary key and every full unique constraint or index."""
    candidates: list[set[str]] = [{c.name for c in table.primary_key.columns}]
    candidates += [
        {c.name for c in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    candidates += [
        {c.name for c in index.columns}
        for index in table.indexes
        # A partial unique index (WHERE ...) is no conflict target for every row.
        if index.unique
        and index.dialect_kwargs.get("postgresql_where") is None
        and index.dialect_kwargs.get("sqlite_where") is None
    ]
    return [columns for columns in candidates if columns]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
