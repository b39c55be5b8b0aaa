"""Batch key lookups for SQLSource: one SELECT or DELETE per chunk of keys, per dialect.

PostgreSQL gets the keys as one array per key column (``= ANY($1)`` for one column,
a join with ``unnest($1, $2)`` for several): the statement text is the same for every
batch, so it is compiled once, and the server receives a few parameters instead of
one per key; measured 3-10x faster than a 1,000-item ``IN (...)`` list (docs/sources.md).
SQLite and MariaDB get ``IN (...)``, with row values for tuple keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cachewise.sources._upsert import array_element_type


class KeySet:
    """Builds the statements that select or delete a chunk of keys of one table."""

    def __init__(self, table: sa.Table, key: Sequence[str], dialect: sa.Dialect) -> None:
        self.table = table
        self.columns = [table.c[name] for name in key]
        self.arrays = dialect.name == "postgresql"
        self.row_values = _row_values_supported(dialect)
        if self.arrays:
            self._select, self._delete = self._array_statements()

    def _array_statements(self) -> tuple[sa.Select[Any], sa.Delete]:
        table, columns = self.table, self.columns
        params = [
            sa.bindparam(f"cw_k{i}", type_=postgresql.ARRAY(key_element_type(col)))
            for i, col in enumerate(columns)
        ]
        if len(columns) == 1:
            where = columns[0] == sa.any_(params[0])
            return sa.select(table).where(where), sa.delete(table).where(where)
        keys = (
            sa.func.unnest(*params)
            .table_valued(*[f"cw_k{i}" for i in range(len(columns))])
            .render_derived()
        )
        on = sa.and_(*(col == keys.c[f"cw_k{i}"] for i, col in enumerate(columns)))
        # DELETE ... USING unnest(...) on PostgreSQL: the extra FROM comes from ``on``.
        return sa.select(table).join(keys, on), sa.delete(table).where(on)

    def params(self, keys: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
        """The array parameters (one list per key column) of the PostgreSQL statements."""
        return {f"cw_k{i}": [key[i] for key in keys] for i in range(len(self.columns))}

    def _where(self, keys: Sequence[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
        if len(self.columns) == 1:
            return self.columns[0].in_([key[0] for key in keys])
        if self.row_values:
            return sa.tuple_(*self.columns).in_(list(keys))
        return sa.or_(
            *(
                sa.and_(*(col == part for col, part in zip(self.columns, key, strict=True)))
                for key in keys
            )
        )

    def select(self, keys: Sequence[tuple[Any, ...]]) -> tuple[sa.Executable, dict[str, Any]]:
        """The statement (and its parameters) reading the rows of ``keys`` (distinct)."""
        if self.arrays:
            return self._select, self.params(keys)
        return sa.select(self.table).where(self._where(keys)), {}

    def delete(self, keys: Sequence[tuple[Any, ...]]) -> tuple[sa.Executable, dict[str, Any]]:
        """The statement (and its parameters) deleting the rows of ``keys``."""
        if self.arrays:
            return self._delete, self.params(keys)
        return sa.delete(self.table).where(self._where(keys)), {}


def key_element_type(column: sa.Column[Any]) -> Any:
    """The array element type to send a key column's values as.

    Integer keys go as bigint: a key out of a small column's range then finds nothing
    (as ``col = value`` would) instead of failing the cast of the whole array.
    """
    if isinstance(column.type, sa.Integer):
        return sa.BigInteger()
    return array_element_type(column)


def _row_values_supported(dialect: sa.Dialect) -> bool:
    """Whether ``(a, b) IN ((..), (..))`` works; SQLite has row values since 3.15."""
    if dialect.name == "sqlite":
        version: tuple[int, ...] = getattr(dialect.dbapi, "sqlite_version_info", (3, 15, 0))
        return version >= (3, 15, 0)
    return True
