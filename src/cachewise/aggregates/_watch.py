"""Change watchers for ``OnChange``: told (PostgreSQL NOTIFY) or polling a counter.

PostgreSQL: a statement-level trigger on each source table calls ``pg_notify`` on the
``cachewise_changes`` channel with ``schema.table``; the watcher LISTENs on its own
direct connection (never through a pool or PgBouncer, which cannot keep a LISTEN).
A statement that inserts 1,000 rows sends one notification, and PostgreSQL folds
identical notifications of one transaction into one.

SQLite and MariaDB have no NOTIFY: row triggers bump a counter per table in
``cachewise_changes`` and the watcher polls the counters (one indexed read).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise.aggregates import _sql
from cachewise.errors import ConfigurationError, SourceError
from cachewise.pool import direct_url

logger = logging.getLogger("cachewise.aggregates")

CHANNEL = "cachewise_changes"


class Watcher(Protocol):
    """Reports whether a watched source table changed."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if a change was seen."""
        ...

    def close(self) -> None:
        """Release the watcher's connection."""
        ...


# -- source tables ---------------------------------------------------------------------


def resolve_tables(engine: Engine, tables: tuple[str, ...]) -> list[str]:
    """Check every source table exists; return their identities as triggers report them.

    PostgreSQL: ``schema.table`` as ``TG_TABLE_SCHEMA.TG_TABLE_NAME`` name it. SQLite
    and MariaDB: the table name (schema-qualified names are PostgreSQL only).
    """
    dialect = engine.dialect
    found: list[str] = []
    with engine.connect() as conn:
        for table in tables:
            if dialect.name == "postgresql":
                row = conn.execute(
                    sa.text(
                        "SELECT n.nspname, c.relname FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.oid = to_regclass(:t) AND c.relkind IN ('r', 'p')"
                    ),
                    {"t": _sql.quote_table(dialect, table)},
                ).first()
                if row is None:
                    raise ConfigurationError(f"OnChange: no table {table!r} to watch")
                found.append(f"{row[0]}.{row[1]}")
            else:
                if "." in table:
                    raise ConfigurationError(
                        f"OnChange: schema-qualified tables ({table!r}) are PostgreSQL only"
                    )
                if not sa.inspect(conn).has_table(table):
                    raise ConfigurationError(f"OnChange: no table {table!r} to watch")
                found.append(table)
        conn.rollback()
    return found


def _trigger_name(op: str, table: str) -> str:
    name = f"cw_chg_{op}_{table}"
    if len(name) <= 64:
        return name
    return f"cw_chg_{op}_{hashlib.blake2b(table.encode(), digest_size=8).hexdigest()}"


def install_triggers(engine: Engine, tables: list[str]) -> None:
    """Install the change triggers on the source tables (idempotent, concurrency-safe)."""
    dialect = engine.dialect
    if dialect.name == "postgresql":
        with engine.connect() as conn:
            # CREATE OR REPLACE of one function by two sessions at once can fail with
            # "tuple concurrently updated": serialise cachewise's trigger DDL.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('cachewise.triggers'))"))
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION cachewise_notify_change() RETURNS trigger "
                "LANGUAGE plpgsql AS $cw$ BEGIN "
                f"PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME); "
                "RETURN NULL; END $cw$"
            )
            for table in tables:
                conn.exec_driver_sql(
                    "CREATE OR REPLACE TRIGGER cachewise_changes "
                    "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "
                    f"{_sql.quote_table(dialect, table)} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION cachewise_notify_change()"
                )
            conn.commit()
        return
    mysql = dialect.name != "sqlite"
    with engine.connect() as conn:
        _sql.ensure_tables(conn, _sql.changes)
        conn.commit()
        for table in tables:
            ignore = "INSERT IGNORE" if mysql else "INSERT OR IGNORE"
            conn.execute(
                sa.text(f"{ignore} INTO cachewise_changes (table_name, changes) VALUES (:t, 0)"),
                {"t": table},
            )
            bump = (
                "UPDATE cachewise_changes SET changes = changes + 1 "
                f"WHERE table_name = {_sql.literal(table)}"
            )
            for op in ("INSERT", "UPDATE", "DELETE"):
                trigger = _sql.quote(dialect, _trigger_name(op.lower()[:3], table))
                target = _sql.quote(dialect, table)
                if mysql:
                    body = f"FOR EACH ROW {bump}"
                else:
                    body = f"FOR EACH ROW BEGIN {bump}; END"
                conn.exec_driver_sql(
                    f"CREATE TRIGGER IF NOT EXISTS {trigger} AFTER {op} ON {target} {body}"
                )
            conn.commit()


# -- watchers ----------------------------------------------------------------------------


def _conninfo(url: sa.URL) -> str:
    import psycopg.conninfo  # noqa: PLC0415 - psycopg is the optional postgres extra

    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    for name, value in url.query.items():
        params[name] = value if isinstance(value, str) else value[-1]
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


class PostgresListener:
    """LISTENs for the source tables' NOTIFYs on a direct psycopg connection."""

    def __init__(self, engine: Engine, tables: list[str]) -> None:
        self._conninfo = _conninfo(direct_url(engine))
        self._accept = frozenset(tables)
        self._conn: Any = None
        self.open()

    def open(self) -> None:
        """(Re)connect and LISTEN; the constructor returns once the LISTEN is live."""
        import psycopg  # noqa: PLC0415 - psycopg is the optional postgres extra

        self.close()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            # psycopg's message names host and port, never the password.
            raise SourceError(f"cannot open the LISTEN connection: {exc}") from None
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        import psycopg  # noqa: PLC0415 - psycopg is the optional postgres extra

        if self._conn is None:
            self.open()
        seen = False
        try:
            for note in self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                seen = seen or note.payload in self._accept
        except psycopg.Error as exc:
            self.close()
            raise SourceError(f"the LISTEN connection failed: {exc}") from exc
        return seen

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class CounterPoller:
    """Polls the trigger-maintained counters of the source tables."""

    def __init__(
        self, engine: Engine, tables: list[str], poll: float, stop: threading.Event
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._poll = poll
        self._stop = stop
        self._last = self._read()

    def _read(self) -> int:
        c = _sql.changes.c
        query = sa.select(sa.func.coalesce(sa.func.sum(c.changes), 0)).where(
            c.table_name.in_(self._tables)
        )
        try:
            with self._engine.connect() as conn:
                total = int(conn.execute(query).scalar_one())
                conn.rollback()
        except sa.exc.DBAPIError as exc:
            raise SourceError(f"cannot read the change counters: {exc.orig}") from exc
        return total

    def wait(self, timeout: float) -> bool:
        if self._stop.wait(min(max(timeout, 0.0), self._poll)):
            return False
        now = self._read()
        changed = now != self._last
        self._last = now
        return changed

    def close(self) -> None:
        pass


def watcher_for(engine: Engine, tables: list[str], poll: float, stop: threading.Event) -> Watcher:
    """The watcher for ``engine``'s dialect."""
    if engine.dialect.name == "postgresql":
        return PostgresListener(engine, tables)
    return CounterPoller(engine, tables, poll, stop)
