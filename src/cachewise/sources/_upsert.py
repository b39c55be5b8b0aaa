"""Dialect upserts for SQLSource: one statement per batch, built from the reflected Table.

Each form takes a connection, the target and a list of rows that all have the same
columns (in table order) and writes them with one upsert statement (``COPY`` also
loads a temporary table first). The conflict target is the key columns; with a version
column an existing row is replaced only by a strictly newer version (a row whose version
is NULL counts as older than any), so replaying an old batch never overwrites newer data.
``bench/upsert.py`` measures every form; the fastest per dialect is ``DEFAULT_FORMS``.

MariaDB/MySQL's ``ON DUPLICATE KEY UPDATE`` takes no conflict target: it fires on a
clash with *any* unique index. When the key is not the table's only unique index, a
new row whose other unique column (an email, say) equals another row's would silently
update that other row. ``own_row_form`` is the form for such tables: it only ever
changes the row of each written key, and a clash on another unique index is an
IntegrityError (which SQLSource reports as RejectedError) with nothing changed.

Identifiers always come from the reflected ``Table`` and are quoted by the dialect's
own identifier preparer; values always travel as bound parameters (or COPY data).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Target:
    """What an upsert writes: the table, its conflict key and optional version column."""

    table: sa.Table
    key: tuple[str, ...]
    version: str | None = None


UpsertForm = Callable[[Connection, Target, Sequence[str], Sequence[Mapping[str, Any]]], None]
"""Writes rows (all with exactly ``columns``) with one upsert statement."""


def _pg_sqlite_conflict(
    insert: postgresql.Insert | sqlite.Insert, target: Target, columns: Sequence[str]
) -> sa.Executable:
    table = target.table
    updated = [c for c in columns if c not in target.key]
    if not updated:
        return insert.on_conflict_do_nothing(index_elements=list(target.key))
    excluded = insert.excluded
    where = None
    if target.version is not None:
        # The version guard: an older (or equal) incoming version leaves the row alone.
        # A row whose version is NULL is older than any version (a NULL comparison would
        # otherwise be NULL, and the row could never be updated again).
        stored = table.c[target.version]
        where = sa.or_(stored.is_(None), stored < excluded[target.version])
    return insert.on_conflict_do_update(
        index_elements=list(target.key),
        set_={c: excluded[c] for c in updated},
        where=where,
    )


def _mysql_assignments(
    insert: mysql.Insert, target: Target, columns: Sequence[str]
) -> list[tuple[str, Any]]:
    """The ON DUPLICATE KEY UPDATE assignments, in the order MariaDB applies them."""
    table = target.table
    new = insert.inserted
    updated = [c for c in columns if c not in target.key and c != target.version]
    if target.version is None:
        if not updated:
            # Only key columns: a no-op assignment keeps INSERT idempotent.
            first = target.key[0]
            return [(first, new[first])]
        return [(c, new[c]) for c in updated]
    version = target.version
    # NULL is older than any version (see _pg_sqlite_conflict).
    newer = sa.or_(table.c[version].is_(None), new[version] > table.c[version])
    # MariaDB applies the assignments left to right on the updated row, so the version
    # column must come last: every earlier guard still compares with the old version.
    return [(c, sa.case((newer, new[c]), else_=table.c[c])) for c in [*updated, version]]


def _mysql_duplicate(insert: mysql.Insert, target: Target, columns: Sequence[str]) -> sa.Executable:
    return insert.on_duplicate_key_update(_mysql_assignments(insert, target, columns))


def insert_for(dialect_name: str, table: sa.Table) -> Any:
    """The dialect's INSERT construct that knows its own upsert clause."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    if dialect_name in {"mysql", "mariadb"}:
        return mysql.insert(table)
    raise NotImplementedError(dialect_name)


def upsert_clause(dialect_name: str, insert: Any, target: Target, columns: Sequence[str]) -> Any:
    """Add the dialect's conflict clause to ``insert``."""
    if dialect_name in {"mysql", "mariadb"}:
        return _mysql_duplicate(insert, target, columns)
    return _pg_sqlite_conflict(insert, target, columns)


def values_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """One multi-row ``INSERT ... VALUES (...), (...) <upsert clause>``."""
    name = conn.dialect.name
    insert = insert_for(name, target.table).values(list(rows))
    conn.execute(upsert_clause(name, insert, target, columns))


@functools.lru_cache(maxsize=64)
def _prepared_values(
    dialect_name: str, target: Target, columns: tuple[str, ...], count: int
) -> Any:
    """A multi-row upsert for ``count`` rows whose values are named bind parameters.

    Built once per shape and reused, so SQLAlchemy compiles it once (its statement
    cache) instead of coercing rows x columns literal values on every batch.
    """
    rows = [
        {
            c: sa.bindparam(f"cw_{j}_{i}", type_=target.table.c[c].type)
            for j, c in enumerate(columns)
        }
        for i in range(count)
    ]
    insert = insert_for(dialect_name, target.table).values(rows)
    return upsert_clause(dialect_name, insert, target, columns)


def prepared_values_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """One multi-row ``INSERT ... VALUES`` upsert, compiled once per batch shape."""
    statement = _prepared_values(conn.dialect.name, target, tuple(columns), len(rows))
    params = {f"cw_{j}_{i}": row[c] for i, row in enumerate(rows) for j, c in enumerate(columns)}
    conn.execute(statement, params)


def executemany_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """One single-row upsert executed with the driver's ``executemany``."""
    name = conn.dialect.name
    insert = insert_for(name, target.table)
    conn.execute(upsert_clause(name, insert, target, columns), list(rows))


def _own_row_duplicate(insert: mysql.Insert, target: Target, columns: Sequence[str]) -> Any:
    """The ON DUPLICATE KEY UPDATE clause for rows whose own key is known to exist.

    The key columns are assigned first, to the incoming key: a no-op on the row's own
    row, and a duplicate-key error if the clash was with another row (through another
    unique index), since the incoming key is already taken by its own row.
    """
    new = insert.inserted
    rest = [(c, v) for c, v in _mysql_assignments(insert, target, columns) if c not in target.key]
    return insert.on_duplicate_key_update([*[(c, new[c]) for c in target.key], *rest])


def _as_kinds(found: tuple[Any, ...], kinds: Sequence[type]) -> tuple[Any, ...]:
    """A key read back from the database in the Python types the written keys have.

    A key column of a type cache keys do not have (a DATE keyed by ``"2026-12-04"``)
    reads back as another type; compared as is, an existing row would look new.
    """
    return tuple(
        part if isinstance(part, kind) or kind not in (str, int) else kind(part)
        for part, kind in zip(found, kinds, strict=True)
    )


def own_row_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """MariaDB/MySQL with other unique indexes: each write changes its own key's row only.

    In the batch's transaction: lock the rows of the keys that exist (``FOR UPDATE``;
    under InnoDB's REPEATABLE READ the gaps of the absent ones too), update those with
    ``_own_row_duplicate``, then insert the others with a plain INSERT, which refuses any
    unique clash instead of updating someone else's row. Updates go first so a batch
    that moves a unique value from an existing row to a new one is written.
    """
    table = target.table
    key_cols = [table.c[c] for c in target.key]
    keys = [tuple(row[c] for c in target.key) for row in rows]
    lookup = sa.select(*key_cols).where(sa.tuple_(*key_cols).in_(keys)).with_for_update()
    kinds = [type(part) for part in keys[0]]
    existing = {_as_kinds(tuple(found), kinds) for found in conn.execute(lookup)}
    old = [row for row, key in zip(rows, keys, strict=True) if key in existing]
    new = [row for row, key in zip(rows, keys, strict=True) if key not in existing]
    if old:
        insert = mysql.insert(table)
        conn.execute(_own_row_duplicate(insert, target, columns), old)
    if new:
        conn.execute(mysql.insert(table), new)


def array_element_type(column: sa.Column[Any]) -> Any:
    """The array element type to send a column's values as.

    An explicit cast to ``varchar(n)`` or ``char(n)`` silently truncates, where an
    INSERT of a too-long value fails; sending such columns as ``text[]`` leaves the
    length check to the assignment, exactly as a plain INSERT would.
    """
    kind = column.type
    if isinstance(kind, sa.String) and not isinstance(kind, sa.Enum):
        return sa.Text()
    return kind


def _unnest_statement(target: Target, columns: Sequence[str]) -> Any:
    table = target.table
    arrays = [
        sa.bindparam(f"cw_a{i}", type_=postgresql.ARRAY(array_element_type(table.c[c])))
        for i, c in enumerate(columns)
    ]
    rows = (
        sa.func.unnest(*arrays)
        .table_valued(*[f"cw_c{i}" for i in range(len(columns))])
        .render_derived()
    )
    insert = postgresql.insert(table).from_select(list(columns), sa.select(*rows.c))
    return _pg_sqlite_conflict(insert, target, columns)


def unnest_supported(target: Target, columns: Sequence[str]) -> bool:
    """Whether unnest() carries these columns faithfully.

    unnest() flattens nested arrays, and an explicit cast to ``bit(n)`` pads or
    truncates, so tables with such columns use the VALUES form instead.
    """
    awkward = (sa.ARRAY, postgresql.BIT)
    return not any(isinstance(target.table.c[c].type, awkward) for c in columns)


def unnest_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """PostgreSQL: ``INSERT ... SELECT FROM unnest($1::t1[], $2::t2[], ...)``, one array per column.

    The statement text is the same for every batch size, so it is compiled once and
    the server receives a handful of parameters instead of rows x columns.
    """
    if not unnest_supported(target, columns):
        values_form(conn, target, columns, rows)
        return
    params = {f"cw_a{i}": [row[c] for row in rows] for i, c in enumerate(columns)}
    conn.execute(_unnest_statement(target, columns), params)


def _scratch_name(target: Target, columns: tuple[str, ...]) -> str:
    """Our own name for the COPY scratch table: fixed per table and column set."""
    digest = hashlib.sha256(repr((target.table.fullname, columns)).encode()).hexdigest()
    return f"cw_upsert_{digest[:16]}"


@functools.lru_cache(maxsize=64)
def _copy_upsert(target: Target, columns: tuple[str, ...]) -> Any:
    # The same statement object every time, so SQLAlchemy compiles it once and the
    # engine's statement cache is not flooded with one entry per batch.
    # pg_temp: the session's own temporary schema, so never a real table of that name.
    scratch = sa.table(
        _scratch_name(target, columns), *[sa.column(c) for c in columns], schema="pg_temp"
    )
    insert = postgresql.insert(target.table).from_select(
        list(columns), sa.select(*[scratch.c[c] for c in columns])
    )
    return _pg_sqlite_conflict(insert, target, columns)


def copy_form(
    conn: Connection, target: Target, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """PostgreSQL: ``COPY`` into a temporary table, then ``INSERT ... SELECT`` with the upsert.

    The scratch table has the written columns' types and no constraints (``AS SELECT
    ... WITH NO DATA``: a partial row must not trip a NOT NULL the upsert would not).
    It is dropped after each chunk (and at commit or rollback at the latest), so it
    holds no state between transactions and works behind PgBouncer in transaction
    mode. Values pass through the columns' SQLAlchemy bind processors first, as they
    would in any other statement.
    """
    table = target.table
    dialect = conn.dialect
    preparer = dialect.identifier_preparer
    names = tuple(columns)
    scratch = preparer.quote(_scratch_name(target, names))
    quoted = ", ".join(preparer.quote(c) for c in names)
    processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in names]
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - a live connection always has one
        raise RuntimeError("no driver connection")
    with driver.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE {scratch} ON COMMIT DROP AS "
            f"SELECT {quoted} FROM {preparer.format_table(table)} WITH NO DATA"
        )
        with cursor.copy(f"COPY pg_temp.{scratch} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [
                        row[c] if process is None else process(row[c])
                        for c, process in zip(names, processors, strict=True)
                    ]
                )
    conn.execute(_copy_upsert(target, names))
    with driver.cursor() as cursor:
        cursor.execute(f"DROP TABLE pg_temp.{scratch}")


FORMS: dict[str, dict[str, UpsertForm]] = {
    "sqlite": {
        "values": values_form,
        "prepared_values": prepared_values_form,
        "executemany": executemany_form,
    },
    "postgresql": {
        "values": values_form,
        "prepared_values": prepared_values_form,
        "executemany": executemany_form,
        "unnest": unnest_form,
        "copy": copy_form,
    },
    "mysql": {
        "values": values_form,
        "prepared_values": prepared_values_form,
        "executemany": executemany_form,
        "own_row": own_row_form,
    },
    "mariadb": {
        "values": values_form,
        "prepared_values": prepared_values_form,
        "executemany": executemany_form,
        "own_row": own_row_form,
    },
}
"""Every upsert form each dialect can run (the benchmark measures them all)."""

DEFAULT_FORMS: dict[str, str] = {
    "sqlite": "executemany",
    "postgresql": "copy",
    "mysql": "executemany",
    "mariadb": "executemany",
}
"""The form ``SQLSource.save_many`` uses per dialect: the fastest measured (bench/README.md)."""

OWN_ROW_FORMS: dict[str, str] = {"mysql": "own_row", "mariadb": "own_row"}
"""The form used instead where the upsert clause cannot name its conflict target and
the table has unique indexes besides the key (see the module docstring)."""

PARAMETER_LIMITS: dict[str, int] = {"sqlite": 32_766, "postgresql": 65_535}
"""Bound parameters one statement may carry; a chunk is split so one statement fits."""


def rows_per_statement(dialect: sa.Dialect, form: str, columns: int, chunk_size: int) -> int:
    """How many rows one statement of ``form`` may carry without exceeding the driver's limit."""
    if form not in {"values", "prepared_values"}:
        return chunk_size  # executemany, unnest and COPY carry a fixed number of parameters
    limit = PARAMETER_LIMITS.get(dialect.name, 65_535)
    if dialect.name == "sqlite":
        version = getattr(dialect.dbapi, "sqlite_version_info", (3, 32, 0))
        if version < (3, 32, 0):
            limit = 999
    return max(1, min(chunk_size, limit // max(1, columns)))
