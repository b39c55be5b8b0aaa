"""AsyncSQLSource: ``SQLSource`` on SQLAlchemy's asyncio extension.

Every statement is ``SQLSource``'s: the reflected table, the key checks, the batch
``SELECT``/``DELETE`` per dialect and the dialect's upsert run unchanged on the sync
face of an async connection (``AsyncConnection.run_sync``), so the two sources cannot
disagree on what a row, a key or an idempotent batch is. The drivers are async
(psycopg 3 for PostgreSQL, aiosqlite for SQLite, asyncmy for MariaDB): the event loop
never waits on the database. The table is reflected on first use, because a
constructor cannot await; a wrong table or column is a ``ConfigurationError`` then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cachewise._redact import redact
from cachewise._types import MISSING, Key
from cachewise.errors import CachewiseError, ClosedError, ConfigurationError
from cachewise.pool import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, plan
from cachewise.sources import _fastlane, _upsert
from cachewise.sources.sql import (
    SQLSource,
    _check_sqlite_file,
    check_arguments,
    check_dialect,
)

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+asyncmy",
}
"""The async driver per database family (MariaDB: asyncmy, measured in docs/asyncio.md)."""
_ASYNC_NAMES = frozenset(
    {"aiosqlite", "psycopg", "psycopg_async", "asyncmy", "aiomysql", "asyncpg"}
)
_SYNC_ONLY_FORMS = {"copy": "unnest"}
"""Upsert forms that drive the DBAPI cursor directly, and what runs instead on async:
COPY needs the sync psycopg cursor; unnest is the same one-statement batch through
SQLAlchemy (bench/README.md measures both)."""


def connect_async(
    url: str | sa.URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    timeout: float = DEFAULT_TIMEOUT,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url``, read as ``cachewise.connect`` reads it.

    A sync driver name is replaced by its family's async driver (``sqlite://`` becomes
    aiosqlite, ``mysql+pymysql://`` asyncmy); ``?pgbouncer=true`` turns off psycopg's
    server-side prepared statements, as for the sync engine.
    """
    p = plan(url, pool_size=pool_size, max_overflow=max_overflow, timeout=timeout)
    target = p.url
    if target.get_driver_name() not in _ASYNC_NAMES:
        driver = ASYNC_DRIVERS.get(p.family)
        if driver is None:
            raise ConfigurationError(f"no async driver known for {redact(target)}")
        target = target.set(drivername=driver)
    kwargs: dict[str, Any] = {}
    if p.pgbouncer and target.get_driver_name().startswith("psycopg"):
        kwargs["connect_args"] = {"prepare_threshold": None}
    if p.family != "sqlite":  # SQLAlchemy picks SQLite's pool (NullPool or static) itself
        kwargs.update(
            pool_size=max(1, p.pool_size),
            max_overflow=p.max_overflow,
            pool_timeout=p.timeout,
            pool_pre_ping=pre_ping and p.family == "mysql",
        )
    try:
        return create_async_engine(target, **kwargs)
    except sa.exc.NoSuchModuleError:
        raise ConfigurationError(f"no async driver installed for {redact(target)}") from None
    except (sa.exc.ArgumentError, TypeError, ValueError):
        raise ConfigurationError(f"cannot build an async engine for {redact(target)}") from None


class AsyncSQLSource(SQLSource):
    """One table as the source of record for an AsyncCache; ``SQLSource``'s arguments.

    ``url_or_async_engine`` is an ``AsyncEngine`` (the caller's: ``close()`` leaves it
    open) or a URL (the source builds the engine with :func:`connect_async` and
    disposes it in ``close()``).
    """

    def __init__(
        self,
        url_or_async_engine: AsyncEngine | str | sa.URL,
        table: str = "products",
        key: str | tuple[str, ...] = "id",
        *,
        version: str | None = None,
        chunk_size: int = 1000,
        schema: str | None = None,
    ) -> None:
        self._key_columns = check_arguments(table, key, version, schema, chunk_size)
        if isinstance(url_or_async_engine, AsyncEngine):
            self._async_engine = url_or_async_engine
            self._owns_engine = False
        elif isinstance(url_or_async_engine, (str, sa.URL)):
            try:
                self._async_engine = connect_async(url_or_async_engine)
            except CachewiseError:
                raise
            except (sa.exc.ArgumentError, ValueError) as exc:
                raise ConfigurationError(
                    f"AsyncSQLSource: not a usable database URL ({type(exc).__name__})"
                ) from None
            self._owns_engine = True
        else:
            raise ConfigurationError(
                f"url_or_async_engine must be a SQLAlchemy AsyncEngine or a URL, got "
                f"{type(url_or_async_engine).__name__}"
            )
        self._engine = self._async_engine.sync_engine  # its URL and dialect; no I/O
        self._closed = False
        self._where = f"table {table!r} at {redact(self._engine.url)}"
        self.chunk_size = chunk_size
        self._names = (table, schema, version)
        self._ready_lock = asyncio.Lock()
        self._prepared = False
        self._reads = self._async_engine.execution_options(isolation_level="AUTOCOMMIT")
        check_dialect(self._engine.dialect)
        _check_sqlite_file(self._engine.url, table)

    def __repr__(self) -> str:
        return f"<AsyncSQLSource {self._where}>"

    def validate(self, key: Key, value: Any) -> None:
        """SQLSource's check of a write, once the table is reflected (at the first I/O).

        Before that nothing is known about the table: the flush's own checks then catch
        what this would have, and write-back parks the row instead of refusing it.
        """
        if self._prepared:
            super().validate(key, value)

    @property
    def engine(self) -> AsyncEngine:  # type: ignore[override]
        """The async engine (and its pool) this source reads and writes through."""
        return self._async_engine

    async def _ready(self) -> None:
        """Reflect the table on first use (a constructor cannot await)."""
        if self._prepared:
            return
        async with self._ready_lock:
            await self._prepare_once()

    async def _prepare_once(self) -> None:
        if not self._prepared:  # another task may have prepared while we waited
            table, schema, version = self._names
            reflected = await self._run("reflecting the table", self._reflect_on, table, schema)
            self._prepare(reflected, self._key_columns, version)
            if self._form_name in _SYNC_ONLY_FORMS:
                self._form_name = _SYNC_ONLY_FORMS[self._form_name]
                self._form = _upsert.FORMS[self._dialect][self._form_name]
            self._prepared = True

    async def _run(
        self, operation: str, fn: Callable[..., Any], *args: Any, begin: bool = False
    ) -> Any:
        """Run ``fn(sync_connection, *args)`` on a pooled async connection; errors translated."""
        if self._closed:
            raise ClosedError(f"AsyncSQLSource {self._where} is closed")
        dbapi_error: type[Exception] = getattr(
            self._engine.dialect.dbapi, "Error", sa.exc.DBAPIError
        )
        try:
            # Reads are one statement each: autocommit spares a BEGIN and a ROLLBACK
            # round trip per checkout (each statement sees committed data, as under the
            # default READ COMMITTED). Writes run in one transaction per call.
            opened = self._async_engine.begin() if begin else self._reads.connect()
            async with opened as conn:
                result = await conn.run_sync(fn, *args)
        except (sa.exc.SQLAlchemyError, dbapi_error) as exc:
            self._fail(operation, exc)
        return result

    async def load(self, key: Key) -> Any:
        await self._ready()
        where = self._match(self.check_key(key))
        lane = self._lane
        if lane is None or not lane.open(self._engine):
            return await self._run("load", self._load_on, where)
        return await self._load_direct(lane, key)

    async def _load_direct(self, lane: _fastlane.FastLane, key: Key) -> Any:
        """One primary-key SELECT on the pooled driver connection (PostgreSQL).

        The statement and its checks are the sync source's fast lane (``_fastlane``):
        SQLAlchemy's own statement compiled once, rows that skip the Result layer only
        when no column needs a result processor (so they are what the Core path returns).
        """
        params = lane.key_params(self._parts(key))
        if self._closed:
            raise ClosedError(f"AsyncSQLSource {self._where} is closed")
        dbapi_error: type[Exception] = getattr(self._engine.dialect.dbapi, "Error", Exception)
        try:
            async with self._reads.connect() as conn:
                raw = await conn.get_raw_connection()
                cursor = await raw.driver_connection.execute(lane.load, params)  # type: ignore[union-attr]
                row = await cursor.fetchone()
                description = cursor.description
        except (sa.exc.SQLAlchemyError, dbapi_error) as exc:
            self._fail("load", exc)
        # The first result says what each column's type is: the lane stays only if
        # SQLAlchemy would hand every value through unchanged.
        if not lane.check_result(description):
            return await self.load(key)
        return MISSING if row is None else _fastlane.as_dicts(description, [row])[0]

    async def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:  # type: ignore[override]
        await self._ready()
        wanted = self._unique_keys(keys)
        found: dict[Key, Any] = (
            await self._run("load_many", self._load_many_on, wanted) if wanted else {}
        )
        return found

    async def save(self, key: Key, value: Any) -> None:  # type: ignore[override]
        await self.save_many({key: value})

    async def save_many(self, items: Mapping[Key, Any]) -> None:  # type: ignore[override]
        await self._ready()
        groups = self._row_groups(items)
        if groups:
            await self._run("save_many", self._save_groups_on, groups, begin=True)

    async def remove(self, key: Key) -> None:  # type: ignore[override]
        await self._ready()
        where = self._match(self.check_key(key))
        await self._run("remove", self._remove_on, where, begin=True)

    async def remove_many(self, keys: Iterable[Key]) -> None:  # type: ignore[override]
        await self._ready()
        wanted = self._unique_keys(keys)
        if wanted:
            await self._run("remove_many", self._remove_many_on, wanted, begin=True)

    async def close(self) -> None:  # type: ignore[override]
        """Dispose of the engine if this source created it; later calls raise ClosedError."""
        self._closed = True
        if self._owns_engine:
            await self._async_engine.dispose()

    def _dispose(self) -> None:  # the async engine is disposed by close()
        return
