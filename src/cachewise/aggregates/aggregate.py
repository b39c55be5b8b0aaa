"""Aggregate: a named query kept as a materialized view or summary table, read by key.

Freshness across processes. Every refresh, in any process (the CLI from cron
included), increments the aggregate's generation in the registry in the same
transaction as the swap (MariaDB: right after its atomic rename). Cache keys carry
the generation, so a refresh makes every older cached row unreachable at once, and a
slow read that started before the refresh can only fill a key nobody asks for any
more. A reader looks at the registry at most every ``check_interval`` seconds (one
primary-key read) to adopt a generation another process made.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise._events import event
from cachewise._redact import redact
from cachewise._types import Key, check_seconds, implements
from cachewise.aggregates import _sql
from cachewise.aggregates._dialects import Builder, State, builder_for
from cachewise.aggregates._runner import Runner
from cachewise.aggregates._watch import Watcher, install_triggers, resolve_tables, watcher_for
from cachewise.aggregates.schedules import OnChange, Schedule, check_schedule
from cachewise.cache import Cache
from cachewise.errors import (
    CachewiseError,
    ClosedError,
    ConfigurationError,
    InvalidKeyError,
    SourceError,
)
from cachewise.policies import ReadThrough
from cachewise.pool import connect
from cachewise.stats import Stats
from cachewise.stores.base import Store
from cachewise.stores.memory import MemoryStore

logger = logging.getLogger("cachewise.aggregates")

_T = TypeVar("_T")

ABSENT: Final = None
"""What the cache holds for a key with no row: within one generation the answer cannot
change, so dashboards asking for empty cells (an hour with no views) hit memory too."""

_BATCH = 500
"""Keys per ``IN (...)`` when loading many rows."""
_ARRAY_BATCH = 5000
"""Keys per ``unnest(arrays)`` join (PostgreSQL): one parameter per key column."""


class _ViewSource:
    """A read-only Source over the aggregate's view or table, keyed by cache keys.

    A cache key is ``(generation, "k", key)`` for one row or ``(generation, "rows")``
    for the whole result; the generation only keeps refreshes apart in the cache.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        columns: list[str],
        keys: tuple[str, ...],
        key_types: list[str] | None = None,
    ) -> None:
        # One statement is one consistent snapshot already; on PostgreSQL autocommit
        # saves the BEGIN and ROLLBACK round trips around it (psycopg sets it locally).
        self._autocommit = engine.dialect.name == "postgresql"
        self._engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._autocommit else engine
        )
        cols: list[sa.ColumnClause[Any]] = [sa.column(sa.sql.quoted_name(c, True)) for c in columns]
        self._table = sa.table(sa.sql.quoted_name(name, True), *cols)
        self._keys = [self._table.c[k] for k in keys]
        self._multi = len(keys) > 1
        self._all = sa.select(self._table).order_by(*self._keys)
        # Built once: a read by one key only binds values (no statement construction).
        self._one = sa.select(self._table).where(
            sa.and_(*(col == sa.bindparam(f"k{i}") for i, col in enumerate(self._keys)))
        )
        self._unnest: sa.TextClause | None = None
        if key_types is not None:
            # PostgreSQL: one array parameter per key column, joined by unnest. A
            # 1,000-key row-value IN list costs ~3x more (statement size, parsing,
            # planning an OR of 1,000 index probes) than this one hash/index join.
            q = engine.dialect.identifier_preparer.quote_identifier
            arrays = ", ".join(f"CAST(:k{i} AS {t}[])" for i, t in enumerate(key_types))
            names = ", ".join(f"k{i}" for i in range(len(keys)))
            on = " AND ".join(f"v.{q(k)} = w.k{i}" for i, k in enumerate(keys))
            self._unnest = sa.text(
                f"SELECT v.* FROM {q(name)} v JOIN unnest({arrays}) AS w({names}) ON {on}"
            )

    def __repr__(self) -> str:
        return f"_ViewSource({self._table.name!r})"

    def _where(self, wanted: list[tuple[object, ...]]) -> sa.ColumnElement[bool]:
        if self._multi:
            return sa.tuple_(*self._keys).in_(wanted)
        return self._keys[0].in_([w[0] for w in wanted])

    def _fetch(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        try:
            with self._engine.connect() as conn:
                result = conn.execute(statement, params or {})
                # Plain str column names (SQLAlchemy's quoted_name is a str subclass
                # that a codec crossing a process boundary need not know).
                names = [str(k) for k in result.keys()]  # noqa: SIM118 - a Result
                rows = [dict(zip(names, r, strict=True)) for r in result]
                if not self._autocommit:
                    conn.rollback()
        except sa.exc.DBAPIError as exc:
            raise SourceError(f"cannot read aggregate {self._table.name!r}: {exc.orig}") from exc
        return rows

    def load(self, key: Key) -> Any:
        assert isinstance(key, tuple)
        if key[1] == "rows":
            return self._fetch(self._all)
        values = _decode(key[2], self._multi)
        rows = self._fetch(self._one, {f"k{i}": v for i, v in enumerate(values)})
        return rows[0] if rows else ABSENT

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        by_value: dict[tuple[object, ...], Key] = {}
        for key in keys:
            assert isinstance(key, tuple)
            by_value[_decode(key[2], self._multi)] = key
        found: dict[Key, Any] = {}
        wanted = list(by_value)
        names = [k.name for k in self._keys]
        batch = _BATCH if self._unnest is None else _ARRAY_BATCH
        for start in range(0, len(wanted), batch):
            chunk = wanted[start : start + batch]
            if self._unnest is not None:
                arrays = {f"k{i}": [w[i] for w in chunk] for i in range(len(names))}
                rows = self._fetch(self._unnest, arrays)
            else:
                rows = self._fetch(sa.select(self._table).where(self._where(chunk)))
            for row in rows:
                cache_key = by_value.get(tuple(row[n] for n in names))
                if cache_key is not None:
                    found[cache_key] = row
        for key in by_value.values():
            found.setdefault(key, ABSENT)
        return found

    def save(self, key: Key, value: Any) -> None:
        raise ConfigurationError("an aggregate is read-only: it changes by refresh()")

    def save_many(self, items: Mapping[Key, Any]) -> None:
        raise ConfigurationError("an aggregate is read-only: it changes by refresh()")

    def remove(self, key: Key) -> None:
        raise ConfigurationError("an aggregate is read-only: it changes by refresh()")

    def remove_many(self, keys: Iterable[Key]) -> None:
        raise ConfigurationError("an aggregate is read-only: it changes by refresh()")


def _decode(encoded: Key, multi: bool) -> tuple[object, ...]:
    if multi:
        assert isinstance(encoded, tuple)
        return tuple(_sql.decode_part(p) for p in encoded)
    return (_sql.decode_part(encoded),)


def _engine_of(engine_or_url: object) -> tuple[Engine, bool]:
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    if isinstance(engine_or_url, (str, sa.URL)):
        return connect(engine_or_url), True
    raise ConfigurationError(
        f"engine_or_url must be a SQLAlchemy Engine or a database URL, got "
        f"{type(engine_or_url).__name__}"
    )


class Aggregate:
    """A named SQL query whose result the database keeps, readable by key through a cache.

    PostgreSQL keeps it as a materialized view, SQLite and MariaDB as a summary table,
    named exactly ``name`` in the connection's current schema. It is created (or
    attached to, if it exists with the same definition) at construction. ``refresh``
    is ``None`` (by hand only), ``Every(seconds)``, ``Cron("...")`` or
    ``OnChange(tables=[...])``. Reads go through a ``Cache`` over ``store`` (default:
    a ``MemoryStore`` of ``max_entries``) that a refresh invalidates.
    """

    def __init__(
        self,
        engine_or_url: Engine | str | sa.URL,
        name: str,
        query: str | sa.ClauseElement,
        key: str | tuple[str, ...],
        refresh: Schedule | None = None,
        *,
        store: Store | None = None,
        max_entries: int = 10_000,
        check_interval: float | None = 1.0,
    ) -> None:
        name = _sql.check_name(name)
        keys = _sql.check_key_columns(key)
        schedule = check_schedule(refresh)
        check_seconds(check_interval, "check_interval", optional=True)
        if store is not None and not implements(store, Store):
            raise ConfigurationError(f"store must implement the Store protocol, got {store!r}")
        self._owns_store = store is None
        self._store: Store = store if store is not None else MemoryStore(max_entries=max_entries)
        engine, owned = _engine_of(engine_or_url)
        self.name = name
        self.key_columns = keys
        self.schedule = schedule
        self._engine = engine
        self._owns_engine = owned
        self._closed = True
        try:
            self._builder: Builder = builder_for(engine, name)
            self.sql = _sql.query_text(query, engine.dialect)
            self.columns = self._builder.columns_of(self.sql)
            _check_keys_in(name, keys, self.columns)
            sources: list[str] = []
            if isinstance(schedule, OnChange):
                sources = resolve_tables(engine, schedule.tables)
            self._builder.ensure_registry()
            state = self._translate(lambda: self._builder.ensure(self.sql, keys), "create")
        except BaseException:
            if owned:
                engine.dispose()
            raise
        self._setup(state, check_interval)
        self._closed = False
        self._runner: Runner | None = None
        self._watcher: Watcher | None = None
        if schedule is not None:
            try:
                self._start(schedule, sources)
            except BaseException:
                self.close()
                raise

    def _setup(self, state: State, check_interval: float | None) -> None:
        """Staleness bookkeeping and the read cache, once the database object exists."""
        self._lock = threading.RLock()
        self._check_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._check_interval = check_interval
        self._next_check = time.monotonic() + (check_interval or 0.0)
        self._state = state
        self.created = state.built
        """Whether construction computed the result (created or rebuilt the object)."""
        self._generation = state.generation
        self._last_error: str | None = state.last_error
        self._refreshes = 0
        self._failing = 0
        """Scheduled refreshes failed in a row (one outage is logged once)."""
        source = _ViewSource(
            self._engine,
            self.name,
            self.columns,
            self.key_columns,
            self._builder.key_types(self.key_columns),
        )
        self._cache = Cache(
            self._store, source=source, read=ReadThrough(), name=f"aggregate:{self.name}"
        )

    @classmethod
    def existing(
        cls,
        engine_or_url: Engine | str | sa.URL,
        name: str,
        refresh: Schedule | None = None,
        **options: Any,
    ) -> Aggregate:
        """Attach to an aggregate created earlier (by any process), by its name alone."""
        name = _sql.check_name(name)
        engine, owned = _engine_of(engine_or_url)
        try:
            state = _registered(builder_for(engine, name))
            agg = cls(engine, name, state.query, state.key_columns, refresh, **options)
        except BaseException:
            if owned:
                engine.dispose()
            raise
        agg._owns_engine = owned
        return agg

    def _start(self, schedule: Schedule, sources: list[str]) -> None:
        stop = threading.Event()
        watcher: Watcher | None = None
        if isinstance(schedule, OnChange):
            install_triggers(self._engine, sources)
            watcher = watcher_for(self._engine, sources, schedule.poll, stop)
        self._watcher = watcher
        # An aggregate found in place (not computed now) may be behind its schedule.
        last = None if self.created else self._state.refreshed_at
        self._runner = Runner(
            self.name, schedule, self._scheduled, watcher, stop=stop, last_run=last
        )
        self._runner.start()

    def __repr__(self) -> str:
        where = redact(self._engine.url)
        return (
            f"Aggregate({self.name!r}, key={self.key_columns!r}, refresh={self.schedule!r}, "
            f"database={where!r}, generation={self._generation})"
        )

    # -- refresh ---------------------------------------------------------------------

    def _translate(self, step: Callable[[], _T], what: str) -> _T:
        try:
            result = step()
        except CachewiseError:
            raise
        except sa.exc.DBAPIError as exc:
            raise SourceError(
                f"aggregate {self.name!r}: {what} failed: {_first_line(exc)}"
            ) from exc
        return result

    def refresh(self) -> None:
        """Recompute the result now and swap it in atomically; waits for another refresh.

        On failure the previous result stays in place, ``last_error`` says why, and
        ``SourceError`` is raised.
        """
        with self._lock:
            self._check_open()
            try:
                state = self._translate(
                    lambda: self._builder.refresh(self.sql, self.key_columns), "refresh"
                )
            except CachewiseError as exc:
                self._last_error = str(exc)
                try:
                    self._builder.record_error(self._last_error)
                except (sa.exc.DBAPIError, CachewiseError):  # the database may be down
                    logger.debug("aggregate %s: could not record the error", self.name)
                raise
            self._refreshes += 1
            self._last_error = None
            self._adopt(state)

    def _scheduled(self) -> bool:
        """One scheduled refresh; an outage is logged once, and its end once."""
        try:
            self.refresh()
        except ClosedError:
            return True
        except CachewiseError as exc:
            self._failing += 1
            first = self._failing == 1
            event(
                logger,
                logging.WARNING if first else logging.DEBUG,
                "aggregate_refresh_failed" if first else "aggregate_refresh_retry_failed",
                "aggregate %s: scheduled refresh failed (%s)%s",
                self.name,
                exc,
                "; logged once until a refresh succeeds" if first else "",
                aggregate=self.name,
                attempt=self._failing,
                error=type(exc.__cause__ or exc).__name__,
            )
            return False
        if self._failing:
            event(
                logger,
                logging.INFO,
                "aggregate_refresh_recovered",
                "aggregate %s: refreshed again after %d failed scheduled refreshes",
                self.name,
                self._failing,
                aggregate=self.name,
                attempts=self._failing,
            )
            self._failing = 0
        return True

    def _adopt(self, state: State, *, unless_refreshed_since: int | None = None) -> None:
        with self._state_lock:
            if unless_refreshed_since is not None and self._refreshes != unless_refreshed_since:
                return  # a refresh in this process finished first: its state is newer
            self._state = state
            if state.generation != self._generation:
                self._generation = state.generation
                if self._owns_store:
                    # Older generations are unreachable already; free their memory.
                    self._store.clear()

    def _maybe_check(self) -> None:
        """Adopt a refresh another process made (at most every ``check_interval`` s)."""
        interval = self._check_interval
        if interval is None:
            return
        now = time.monotonic()
        if now < self._next_check or not self._check_lock.acquire(blocking=False):
            return
        try:
            self._next_check = now + interval
            seen = self._refreshes
            state = self._builder.state()
            if state is not None:
                self._last_error = state.last_error
                self._adopt(state, unless_refreshed_since=seen)
        except (sa.exc.DBAPIError, CachewiseError) as exc:
            # The database is unreachable (pool.connect() raises SourceError): the
            # cached rows are still the best answer we have.
            logger.debug("aggregate %s: freshness check failed: %s", self.name, exc)
        finally:
            self._check_lock.release()

    # -- reads -----------------------------------------------------------------------

    def _cache_key(self, key: object) -> Key:
        if len(self.key_columns) == 1:
            return (self._generation, "k", _sql.encode_part(key))
        if not isinstance(key, tuple) or len(key) != len(self.key_columns):
            raise InvalidKeyError(
                f"aggregate {self.name!r} is keyed by {self.key_columns!r}: "
                f"read it with a tuple of {len(self.key_columns)} values, got {key!r}"
            )
        return (self._generation, "k", tuple(map(_sql.encode_part, key)))

    def read(self, key: object, default: Any = None) -> Any:
        """The result row (a dict of column to value) whose key is ``key``, or ``default``.

        The row is shared with the cache: treat it as read-only.
        """
        self._check_open()
        self._maybe_check()
        row = self._cache.read(self._cache_key(key), ABSENT)
        return default if row is ABSENT else row

    def read_many(self, keys: Iterable[object]) -> dict[Any, dict[str, Any]]:
        """The rows found for ``keys``, by key; misses are loaded in batched selects."""
        self._check_open()
        self._maybe_check()
        wanted = {self._cache_key(k): k for k in keys}
        found = self._cache.read_many(list(wanted))
        return {wanted[ck]: row for ck, row in found.items() if row is not ABSENT}

    def rows(self) -> list[dict[str, Any]]:
        """Every row of the result, ordered by key: one consistent snapshot."""
        self._check_open()
        self._maybe_check()
        rows: list[dict[str, Any]] = self._cache.read((self._generation, "rows"), [])
        return list(rows)

    # -- staleness -------------------------------------------------------------------

    @property
    def refreshed_at(self) -> dt.datetime | None:
        """When the result was last computed (by any process), in UTC."""
        at = self._state.refreshed_at
        return None if at is None else dt.datetime.fromtimestamp(at, tz=dt.timezone.utc)

    @property
    def refresh_duration(self) -> float | None:
        """Seconds the last successful refresh took (lock wait included)."""
        return self._state.refresh_duration

    @property
    def last_error(self) -> str | None:
        """Why the last refresh failed, or None if it succeeded."""
        return self._last_error

    @property
    def generation(self) -> int:
        """How many times the result has been computed: +1 per refresh, any process."""
        return self._generation

    @property
    def refreshes(self) -> int:
        """Successful refreshes this object made (by hand or on its schedule)."""
        return self._refreshes

    @property
    def stats(self) -> Stats:
        """The read cache's counters: hits are rows served from memory, loads from the DB."""
        return self._cache.stats

    @property
    def engine(self) -> Engine:
        """The engine the aggregate reads and refreshes through."""
        return self._engine

    # -- lifecycle -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"aggregate {self.name!r} is closed")

    def close(self) -> None:
        """Stop scheduled refreshes, release connections; the database object stays."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.stop()
        if self._watcher is not None:
            self._watcher.close()
        if self._owns_store:
            self._cache.close()
        if self._owns_engine:
            self._engine.dispose()

    def drop(self) -> None:
        """Drop the view or table and its registry entry, then close."""
        if self._runner is not None:
            self._runner.stop()
        try:
            self._translate(self._builder.drop, "drop")
        finally:
            self.close()

    def __enter__(self) -> Aggregate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _check_keys_in(name: str, keys: tuple[str, ...], columns: list[str]) -> None:
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ConfigurationError(
            f"aggregate {name!r}: key column(s) {', '.join(missing)} not in the "
            f"query's result (columns: {', '.join(columns)})"
        )


def _registered(builder: Builder) -> State:
    try:
        state = builder.state()
    except sa.exc.DBAPIError as exc:
        # No registry table: nothing was ever created in this schema.
        logger.debug("no aggregate registry: %s", exc)
        state = None
    if state is None:
        raise ConfigurationError(f"no aggregate named {builder.name!r} in this database")
    return state
