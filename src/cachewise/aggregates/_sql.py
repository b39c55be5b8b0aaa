"""SQL pieces every dialect shares: names, the query's text, cache keys, the registry.

The registry table ``cachewise_aggregates`` (in the connection's current schema) holds
one row per aggregate: its query, key columns and a fingerprint of both, a generation
that every refresh increments, and when and how the last refresh went. It lets
``cachewise aggregate refresh NAME`` rebuild an aggregate from its name alone, lets
another process notice a refresh (the generation), and keeps cachewise from ever
replacing a table or view it did not create.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.elements import ClauseElement

from cachewise._types import Key
from cachewise.errors import ConfigurationError, InvalidKeyError

NAME_MAX: Final = 48
"""Longest aggregate name: room for the ``__cw_new``/``__cw_key`` suffixes in 63 bytes."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

metadata = sa.MetaData()

registry = sa.Table(
    "cachewise_aggregates",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("key_columns", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("refreshed_at", sa.Double),
    sa.Column("refresh_duration", sa.Double),
    sa.Column("last_error", sa.Text),
)

changes = sa.Table(
    "cachewise_changes",
    metadata,
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("changes", sa.BigInteger, nullable=False),
)
"""Trigger-maintained change counters (SQLite, MariaDB): one row per watched table."""


def check_name(name: object) -> str:
    """Return ``name`` if it is a plain identifier that fits, else ConfigurationError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"aggregate name must be a plain identifier (letters, digits, _), got {name!r}"
        )
    if len(name) > NAME_MAX:
        raise ConfigurationError(f"aggregate name {name!r} is longer than {NAME_MAX} characters")
    if name.lower().startswith("cachewise_"):
        raise ConfigurationError(f"aggregate name {name!r}: the cachewise_ prefix is reserved")
    return name


def check_key_columns(key: object) -> tuple[str, ...]:
    """Return the key column names as a tuple; a str is one column."""
    columns = (key,) if isinstance(key, str) else key
    if not isinstance(columns, (tuple, list)) or not columns:
        raise ConfigurationError(f"key must be a column name or a tuple of them, got {key!r}")
    for column in columns:
        if not isinstance(column, str) or not column:
            raise ConfigurationError(f"key column names must be non-empty str, got {column!r}")
    if len(set(columns)) != len(columns):
        raise ConfigurationError(f"key names a column twice: {key!r}")
    return tuple(columns)


def query_text(query: object, dialect: Dialect) -> str:
    """The query as SQL text for ``dialect`` (a selectable is compiled, values inlined)."""
    if isinstance(query, str):
        text = query
    elif isinstance(query, ClauseElement):
        try:
            compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigurationError(f"cannot compile the aggregate's query: {exc}") from exc
        text = str(compiled)
    else:
        raise ConfigurationError(
            f"query must be SQL text or a SQLAlchemy selectable, got {type(query).__name__}"
        )
    text = text.strip().rstrip(";").strip()
    if not text:
        raise ConfigurationError("query is empty")
    return text


def fingerprint(sql: str, key_columns: tuple[str, ...]) -> str:
    """A digest of the definition: a different query or key means a rebuild."""
    payload = json.dumps([sql, list(key_columns)]).encode()
    return hashlib.sha256(payload).hexdigest()


def quote(dialect: Dialect, name: str) -> str:
    """``name`` quoted as an identifier for ``dialect`` (always, so case is kept)."""
    return dialect.identifier_preparer.quote_identifier(name)


def quote_table(dialect: Dialect, name: str) -> str:
    """A table name, ``schema.table`` allowed, each part quoted."""
    return ".".join(quote(dialect, part) for part in name.split("."))


def literal(text: str) -> str:
    """``text`` as a SQL string literal (for trigger bodies, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def ensure_tables(conn: Connection, *tables: sa.Table) -> None:
    """Create cachewise's own tables if absent; a concurrent creator is not an error."""
    for table in tables:
        try:
            with conn.begin_nested() if conn.in_transaction() else conn.begin():
                table.create(conn, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between our check and our CREATE.
            if not sa.inspect(conn).has_table(table.name):
                raise


# -- cache keys ----------------------------------------------------------------------

_TAGS: Final[dict[type, str]] = {
    dt.datetime: "datetime",
    dt.date: "date",
    dt.time: "time",
    Decimal: "decimal",
    uuid.UUID: "uuid",
    float: "float",
    bool: "bool",
}
_DECODE: Final[dict[str, Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "float": float.fromhex,
    "bool": lambda text: text == "1",
}


def encode_part(value: object) -> Key:
    """One key column's value as a cache key part, injectively and with its type.

    str, int and bytes are cache keys already; other values a SQL key column can hold
    (timestamps for hourly buckets, decimals, UUIDs) become a ``(tag, text)`` pair.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bytes:
        return value  # type: ignore[return-value]
    tag = _TAGS.get(kind)
    if tag is None:
        raise InvalidKeyError(
            f"cannot read an aggregate by a {kind.__name__} key value {value!r}: "
            "key values are str, int, bytes, datetime, date, time, Decimal, UUID, float, bool"
        )
    if tag == "float":
        text = float.hex(value)  # type: ignore[arg-type]
    elif tag == "bool":
        text = "1" if value else "0"
    elif tag in {"datetime", "date", "time"}:
        text = value.isoformat()  # type: ignore[attr-defined]
    else:
        text = str(value)
    return ("\x00" + tag, text)


def decode_part(part: Key) -> object:
    """The SQL value a cache key part stands for (inverse of :func:`encode_part`)."""
    if isinstance(part, tuple):
        tag, text = part
        assert isinstance(tag, str)
        assert isinstance(text, str)
        return _DECODE[tag[1:]](text)
    return part
