"""Builders: create, refresh and drop an aggregate's database object, one per dialect.

PostgreSQL keeps a ``MATERIALIZED VIEW`` with a unique index on the key and refreshes
it ``CONCURRENTLY`` (readers are never blocked) inside a transaction that holds an
advisory lock on the aggregate's name, so one refresh runs at a time across processes;
transaction-scoped locks also work through PgBouncer in transaction mode.

SQLite and MariaDB keep a summary table. A refresh builds the result into
``NAME__cw_new`` and swaps it in by rename: on SQLite inside one ``BEGIN IMMEDIATE``
transaction (which also serialises refreshes), on MariaDB with one atomic multi-table
``RENAME TABLE`` under ``GET_LOCK``. Readers see the old result or the new one, never
half of one. The unique index on the key is built on every rebuild, so a result whose
key stopped being unique fails the refresh and leaves the previous result in place.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cachewise.aggregates import _sql
from cachewise.errors import ConfigurationError, SourceError


@dataclass(frozen=True)
class State:
    """What the registry says about an aggregate's last refresh."""

    generation: int
    refreshed_at: float | None
    refresh_duration: float | None
    last_error: str | None
    query: str
    key_columns: tuple[str, ...]
    fingerprint: str
    built: bool = False
    """True when this call computed the result (not when it found it in place)."""


def _state(row: sa.Row[tuple[object, ...]]) -> State:
    m = row._mapping
    return State(
        generation=int(m["generation"]),
        refreshed_at=m["refreshed_at"],
        refresh_duration=m["refresh_duration"],
        last_error=m["last_error"],
        query=str(m["query"]),
        key_columns=tuple(json.loads(str(m["key_columns"]))),
        fingerprint=str(m["fingerprint"]),
    )


class Builder:
    """The dialect-independent part: registry bookkeeping and the create/attach decision."""

    kind = "summary table"

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        dialect = engine.dialect
        self.q_name = _sql.quote(dialect, name)
        self.q_new = _sql.quote(dialect, name + "__cw_new")
        self.q_old = _sql.quote(dialect, name + "__cw_old")
        self.q_index = _sql.quote(dialect, name + "__cw_key")
        self._percent = dialect.paramstyle in {"format", "pyformat"}

    # -- statements ------------------------------------------------------------------

    def run(self, conn: Connection, statement: str) -> None:
        """Execute DDL text without parameters (a literal ``%`` survives the driver)."""
        conn.exec_driver_sql(statement.replace("%", "%%") if self._percent else statement)

    def columns_of(self, sql: str) -> list[str]:
        """The result columns of ``sql``, asked of the database without running it."""
        probe = f"SELECT * FROM (\n{sql}\n) cw_probe WHERE 1 = 0"
        with self.engine.connect() as conn:
            text = probe.replace("%", "%%") if self._percent else probe
            try:
                result = conn.exec_driver_sql(text)
                names = list(result.keys())
                result.close()
            except sa.exc.DBAPIError as exc:
                raise ConfigurationError(
                    f"aggregate {self.name!r}: the query failed: {_first_line(exc)}"
                ) from exc
            finally:
                conn.rollback()
        return names

    def key_list(self, keys: tuple[str, ...]) -> str:
        return ", ".join(_sql.quote(self.engine.dialect, k) for k in keys)

    # -- registry --------------------------------------------------------------------

    def ensure_registry(self) -> None:
        with self.engine.connect() as conn:
            _sql.ensure_tables(conn, _sql.registry)
            conn.commit()

    def read_state(self, conn: Connection, *, lock: bool = False) -> State | None:
        query = sa.select(_sql.registry).where(_sql.registry.c.name == self.name)
        if lock and self.engine.dialect.name != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        return _state(row) if row is not None else None

    def state(self) -> State | None:
        """The registry's row for this aggregate (None if it was never created)."""
        with self.engine.connect() as conn:
            found = self.read_state(conn)
            conn.rollback()
        return found

    def record(
        self,
        conn: Connection,
        sql: str,
        keys: tuple[str, ...],
        started: float,
        wall: float,
    ) -> State:
        """Bump the generation after a successful build or refresh (same transaction)."""
        reg = _sql.registry
        previous = self.read_state(conn, lock=True)
        duration = time.perf_counter() - started
        digest = _sql.fingerprint(sql, keys)
        values: dict[str, object] = {
            "query": sql,
            "key_columns": json.dumps(list(keys)),
            "fingerprint": digest,
            "refreshed_at": wall,
            "refresh_duration": duration,
            "last_error": None,
        }
        if previous is None:
            generation = 1
            conn.execute(sa.insert(reg).values(name=self.name, generation=generation, **values))
        else:
            generation = previous.generation + 1
            conn.execute(
                sa.update(reg)
                .where(reg.c.name == self.name)
                .values(generation=generation, **values)
            )
        return State(
            generation=generation,
            refreshed_at=wall,
            refresh_duration=duration,
            last_error=None,
            query=sql,
            key_columns=keys,
            fingerprint=digest,
            built=True,
        )

    def record_error(self, message: str) -> None:
        """Note a failed refresh in the registry (best effort: the database may be down)."""
        reg = _sql.registry
        with self.engine.connect() as conn:
            conn.execute(sa.update(reg).where(reg.c.name == self.name).values(last_error=message))
            conn.commit()

    # -- the decision ----------------------------------------------------------------

    def check_owned(self, conn: Connection, state: State | None) -> str | None:
        """The kind of object named ``name``; refuse one cachewise did not create."""
        kind = self.object_kind(conn)
        if kind is not None and state is None:
            raise ConfigurationError(
                f"a {kind} named {self.name!r} exists and is not a cachewise aggregate; "
                "pick another name (cachewise never replaces objects it did not create)"
            )
        if kind is not None and kind != self.kind:
            raise ConfigurationError(
                f"{self.name!r} is a {kind}, not the {self.kind} cachewise created"
            )
        return kind

    def ensure(self, sql: str, keys: tuple[str, ...]) -> State:
        """Create the aggregate, or attach to it if it exists with this definition."""
        raise NotImplementedError

    def key_types(self, keys: tuple[str, ...]) -> list[str] | None:
        """SQL types of the key columns, where batched reads use them (PostgreSQL)."""
        return None

    def refresh(self, sql: str, keys: tuple[str, ...]) -> State:
        """Recompute the result and swap it in atomically; return the new state."""
        raise NotImplementedError

    def drop(self) -> None:
        """Drop the database object and its registry row."""
        raise NotImplementedError

    def object_kind(self, conn: Connection) -> str | None:
        raise NotImplementedError

    def _forget(self, conn: Connection) -> None:
        reg = _sql.registry
        conn.execute(sa.delete(reg).where(reg.c.name == self.name))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def not_unique(name: str, keys: tuple[str, ...], exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"aggregate {name!r}: key {', '.join(keys)} is not unique in the query's result "
        f"({_first_line(exc)})"
    )


class Postgres(Builder):
    """A materialized view, refreshed concurrently under a transaction advisory lock."""

    kind = "materialized view"

    def lock(self, conn: Connection) -> None:
        conn.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '.' || :n, 0))"
            ),
            {"n": self.name},
        )

    def key_types(self, keys: tuple[str, ...]) -> list[str] | None:
        # Types as the catalog formats them (format_type quotes what needs quoting).
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) "
                    "FROM pg_attribute a WHERE a.attrelid = to_regclass(:q) "
                    "AND a.attnum > 0 AND NOT a.attisdropped"
                ),
                {"q": self.q_name},
            )
            found = {str(name): str(kind) for name, kind in rows}
            conn.rollback()
        if not all(k in found for k in keys):
            return None
        return [found[k] for k in keys]

    def object_kind(self, conn: Connection) -> str | None:
        kind = conn.execute(
            sa.text(
                "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = :n AND n.nspname = current_schema()"
            ),
            {"n": self.name},
        ).scalar()
        if kind is None:
            return None
        return {"m": "materialized view", "v": "view", "r": "table", "p": "table"}.get(
            str(kind), "relation"
        )

    def ensure(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.engine.connect() as conn:
            self.lock(conn)
            state = self.read_state(conn, lock=True)
            kind = self.check_owned(conn, state)
            if kind is not None and state is not None:
                if state.fingerprint == _sql.fingerprint(sql, keys):
                    conn.rollback()
                    return state
                self.run(conn, f"DROP MATERIALIZED VIEW {self.q_name}")
            self.run(conn, f"CREATE MATERIALIZED VIEW {self.q_name} AS\n{sql}\n")
            try:
                self.run(
                    conn,
                    f"CREATE UNIQUE INDEX {self.q_index} ON {self.q_name} ({self.key_list(keys)})",
                )
            except sa.exc.IntegrityError as exc:
                conn.rollback()
                raise not_unique(self.name, keys, exc) from exc
            new = self.record(conn, sql, keys, started, wall)
            conn.commit()
        return new

    def refresh(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.engine.connect() as conn:
            self.lock(conn)
            self.rebuild(conn, sql, keys)
            new = self.record(conn, sql, keys, started, wall)
            conn.commit()
        return new

    def rebuild(self, conn: Connection, sql: str, keys: tuple[str, ...]) -> None:
        """Recompute the view (the step that runs under the lock)."""
        self.run(conn, f"REFRESH MATERIALIZED VIEW CONCURRENTLY {self.q_name}")

    def drop(self) -> None:
        with self.engine.connect() as conn:
            self.lock(conn)
            self.run(conn, f"DROP MATERIALIZED VIEW IF EXISTS {self.q_name}")
            self._forget(conn)
            conn.commit()


class SQLite(Builder):
    """A summary table rebuilt and renamed into place inside one BEGIN IMMEDIATE."""

    @contextlib.contextmanager
    def immediate(self) -> Iterator[Connection]:
        """A connection in a ``BEGIN IMMEDIATE`` transaction: one writer at a time.

        pysqlite opens its own transactions lazily and not before DDL; the driver's
        implicit transaction handling is turned off for the duration, so the one we
        begin covers every statement, and restored before the connection goes back.
        """
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            saved = raw.isolation_level  # type: ignore[union-attr]
            raw.isolation_level = None  # type: ignore[union-attr]
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if raw.in_transaction:  # type: ignore[union-attr]
                        conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            finally:
                raw.isolation_level = saved  # type: ignore[union-attr]

    def object_kind(self, conn: Connection) -> str | None:
        kind = conn.execute(
            sa.text("SELECT type FROM sqlite_master WHERE name = :n"), {"n": self.name}
        ).scalar()
        if kind is None:
            return None
        return "summary table" if kind == "table" else str(kind)

    def swap_in(self, conn: Connection, sql: str, keys: tuple[str, ...]) -> None:
        """Build the result as a new table and rename it over the old one."""
        self.run(conn, f"DROP TABLE IF EXISTS {self.q_new}")
        self.run(conn, f"CREATE TABLE {self.q_new} AS\n{sql}\n")
        self.run(conn, f"DROP TABLE IF EXISTS {self.q_name}")
        # Views of the user's over the summary table dangle for an instant here; modern
        # RENAME re-checks every view and would refuse. The legacy rename leaves them
        # alone, and they resolve to the new table by name once it is in place.
        self.run(conn, "PRAGMA legacy_alter_table = ON")
        try:
            self.run(conn, f"ALTER TABLE {self.q_new} RENAME TO {self.q_name}")
        finally:
            self.run(conn, "PRAGMA legacy_alter_table = OFF")
        self.run(
            conn, f"CREATE UNIQUE INDEX {self.q_index} ON {self.q_name} ({self.key_list(keys)})"
        )

    def ensure(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.immediate() as conn:
            state = self.read_state(conn)
            kind = self.check_owned(conn, state)
            if (
                kind is not None
                and state is not None
                and state.fingerprint == _sql.fingerprint(sql, keys)
            ):
                return state
            try:
                self.swap_in(conn, sql, keys)
            except sa.exc.IntegrityError as exc:
                raise not_unique(self.name, keys, exc) from exc
            return self.record(conn, sql, keys, started, wall)

    def refresh(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.immediate() as conn:
            self.rebuild(conn, sql, keys)
            return self.record(conn, sql, keys, started, wall)

    def rebuild(self, conn: Connection, sql: str, keys: tuple[str, ...]) -> None:
        """Recompute the table (the step that runs under the lock)."""
        self.swap_in(conn, sql, keys)

    def drop(self) -> None:
        with self.immediate() as conn:
            self.run(conn, f"DROP TABLE IF EXISTS {self.q_name}")
            self.run(conn, f"DROP TABLE IF EXISTS {self.q_new}")
            self._forget(conn)


_LOCK_NAME = "SHA1(CONCAT('cachewise.aggregate:', DATABASE(), '.', :n))"
"""A server-wide lock name per database and aggregate, within GET_LOCK's 64 characters."""


class MariaDB(Builder):
    """A summary table swapped in by one atomic RENAME TABLE under GET_LOCK."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[Connection]:
        """A connection holding the aggregate's named lock (waits for another holder)."""
        with self.engine.connect() as conn:
            # MariaDB has no "wait forever" (a negative timeout returns NULL at once):
            # wait in slices until the lock is ours; NULL means an error, not a wait.
            while True:
                got = conn.execute(
                    sa.text(f"SELECT GET_LOCK({_LOCK_NAME}, 5)"), {"n": self.name}
                ).scalar()
                if got == 1:
                    break
                if got is None:
                    raise SourceError(f"GET_LOCK failed for aggregate {self.name!r}")
            try:
                yield conn
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.rollback()
                    conn.execute(sa.text(f"SELECT RELEASE_LOCK({_LOCK_NAME})"), {"n": self.name})
                    conn.commit()

    def object_kind(self, conn: Connection) -> str | None:
        kind = conn.execute(
            sa.text(
                "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = :n"
            ),
            {"n": self.name},
        ).scalar()
        if kind is None:
            return None
        return "summary table" if kind == "BASE TABLE" else str(kind).lower()

    def swap_in(self, conn: Connection, sql: str, keys: tuple[str, ...], exists: bool) -> None:
        """Build the result as a new table and swap it in with one atomic RENAME."""
        self.run(conn, f"DROP TABLE IF EXISTS {self.q_new}, {self.q_old}")
        try:
            self.run(conn, f"CREATE TABLE {self.q_new} AS\n{sql}\n")
            self.run(
                conn,
                f"ALTER TABLE {self.q_new} ADD UNIQUE KEY {self.q_index} ({self.key_list(keys)})",
            )
        except BaseException:
            with contextlib.suppress(sa.exc.DBAPIError):
                self.run(conn, f"DROP TABLE IF EXISTS {self.q_new}")
            raise
        if exists:
            self.run(
                conn,
                f"RENAME TABLE {self.q_name} TO {self.q_old}, {self.q_new} TO {self.q_name}",
            )
            self.run(conn, f"DROP TABLE {self.q_old}")
        else:
            self.run(conn, f"RENAME TABLE {self.q_new} TO {self.q_name}")

    def ensure(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.locked() as conn:
            state = self.read_state(conn)
            kind = self.check_owned(conn, state)
            if (
                kind is not None
                and state is not None
                and state.fingerprint == _sql.fingerprint(sql, keys)
            ):
                return state
            try:
                self.swap_in(conn, sql, keys, exists=kind is not None)
            except sa.exc.IntegrityError as exc:
                raise not_unique(self.name, keys, exc) from exc
            new = self.record(conn, sql, keys, started, wall)
            conn.commit()
            return new

    def refresh(self, sql: str, keys: tuple[str, ...]) -> State:
        started, wall = time.perf_counter(), time.time()
        with self.locked() as conn:
            self.rebuild(conn, sql, keys)
            new = self.record(conn, sql, keys, started, wall)
            conn.commit()
            return new

    def rebuild(self, conn: Connection, sql: str, keys: tuple[str, ...]) -> None:
        """Recompute the table (the step that runs under the lock)."""
        self.swap_in(conn, sql, keys, exists=self.object_kind(conn) is not None)

    def drop(self) -> None:
        with self.locked() as conn:
            self.run(conn, f"DROP TABLE IF EXISTS {self.q_name}, {self.q_new}, {self.q_old}")
            self._forget(conn)
            conn.commit()


def builder_for(engine: Engine, name: str) -> Builder:
    """The builder for ``engine``'s dialect; an unsupported one is a ConfigurationError."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return Postgres(engine, name)
    if dialect == "sqlite":
        return SQLite(engine, name)
    if dialect in {"mysql", "mariadb"}:
        return MariaDB(engine, name)
    raise ConfigurationError(
        f"aggregates run on PostgreSQL, SQLite and MariaDB/MySQL, not {dialect!r}"
    )
