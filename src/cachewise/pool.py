"""Connection pooling: ``connect()`` builds a configured engine, ``pool_stats()`` observes it.

We do not write a pool. ``connect()`` picks and configures SQLAlchemy's ``QueuePool``
for the URL's dialect and makes it observable:

* PostgreSQL runs on psycopg 3 (``postgresql://`` becomes ``postgresql+psycopg://``).
  Liveness is checked at checkout without a round trip: an idle pooled connection whose
  socket is readable has been closed or terminated by the server (an idle backend sends
  nothing else), so it is replaced before the caller sees it. Connections are retired
  after ``recycle`` seconds minus a random ``lifetime_jitter`` share, so a pool started
  at once does not reconnect all at once.
* PgBouncer in transaction mode (``pgbouncer=True`` or ``?pgbouncer=true`` in the URL)
  turns off psycopg's server-side prepared statements, which a transaction pooler cannot
  keep on one server connection; session features (LISTEN, session advisory locks) go to
  PostgreSQL itself through ``direct_url()`` / ``connect_direct()``.
* Pgpool-II (``pgpool=True`` or ``?pgpool=true``) pools by session, so prepared
  statements, LISTEN and session locks work through it; what it adds is load balancing
  of reads to standbys, which may not yet have a write just made. Every statement gets
  Pgpool-II's ``/*NO LOAD BALANCE*/`` hint (reads see writes) unless ``load_balance=True``.
* SQLite files run in WAL mode with a busy timeout, so readers do not block the writer.
* Waiting callers are served first come, first served: the pool's queue hands a returned
  connection straight to the oldest waiter (psycopg_pool's discipline) instead of
  waking one that may find it taken back; see ``_HandoffQueue``.
* ``dbapi_connection()`` lends a pooled DBAPI connection for one transaction, skipping
  SQLAlchemy's Connection/Result layers, which cost more per short query than the pool.

Statistics come from a ``QueuePool`` subclass that only times ``connect()`` and from pool
events (``connect``, ``invalidate``, ``checkout``); each handler is a counter increment.
After ``os.fork()`` a child drops the pools it inherited without closing them.
Errors are translated at this boundary: an exhausted pool raises ``PoolTimeout`` with the
pool's numbers, an unreachable database ``SourceError``, a bad URL ``ConfigurationError``;
none of them carries a password, not even in the ``__cause__`` chain.
"""

from __future__ import annotations

import logging
import os
import random
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, Pool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from cachewise._events import event as log_event
from cachewise._redact import leaks, redact, scrub, secrets, splits_at_first_at
from cachewise._types import check_seconds
from cachewise.errors import ConfigurationError, PoolTimeout, SourceError
from cachewise.stats import Counter, Histogram, HistogramSnapshot, PoolStats

__all__ = [
    "PoolStats",
    "connect",
    "connect_direct",
    "dbapi_connection",
    "direct_url",
    "is_pgbouncer",
    "is_pgpool",
    "pool_stats",
    "redact",
    "statement_listeners",
    "statement_prefix",
]

DEFAULT_POOL_SIZE: Final = 5
DEFAULT_MAX_OVERFLOW: Final = 0
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_RECYCLE: Final = 3600.0
DEFAULT_LIFETIME_JITTER: Final = 0.1

_WAIT_WINDOW: Final = 4096
_LOG_EVERY: Final = 60.0
"""Seconds between two log lines about one saturated pool."""

logger = logging.getLogger("cachewise.pool")
"""Acquire waits kept for the p99: the most recent ones, a bounded memory cost."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_OUR_QUERY_KEYS: Final = ("pgbouncer", "direct", "pgpool", "load_balance")
NO_LOAD_BALANCE: Final = "/*NO LOAD BALANCE*/ "
"""Pgpool-II sends a statement that starts with this comment to the primary."""
"""URL query options ``connect()`` consumes; the driver would reject them."""


# --------------------------------------------------------------------------- secrets


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Plan:
    """What ``connect()`` will build for a URL: a plain object, decided without I/O."""

    url: URL
    family: str  # "postgresql", "sqlite", "mysql" or "other"
    pool_size: int
    max_overflow: int
    timeout: float
    recycle: float | None
    pre_ping: bool
    lifetime_jitter: float
    pgbouncer: bool
    direct: URL | None
    memory_sqlite: bool
    pgpool: bool = False
    load_balance: bool = False


def _parse_url(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a str or sqlalchemy.URL, got {type(url).__name__}")
    if not splits_at_first_at(url):
        # SQLAlchemy (like libpq) ends the password at its first "@": the rest of it
        # would become the host or the database, and we would connect there.
        raise ConfigurationError(
            f"cannot read the database URL {redact(url)}: percent-encode '@' in the user "
            "name and password (urllib.parse.quote(password, safe=''))"
        )
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        # SQLAlchemy's message repeats the whole URL, password included: drop the cause.
        raise ConfigurationError(f"not a database URL: {redact(url)!r}") from None
    return parsed


def _flag(value: str, name: str, url: URL) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"URL option {name}={value!r} is not a boolean in {redact(url)}")


def _query_value(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(f"URL option {name} is given more than once in {redact(url)}")


def _direct_from_option(url: URL, value: str) -> URL:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigurationError(f"URL option direct={value!r} must be HOST:PORT in {redact(url)}")
    return url.set(host=host, port=int(port))


_DEFAULT_DRIVERS: Final = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
"""A URL without a driver gets the one our extras install (SQLAlchemy's defaults are
psycopg2 and mysqlclient, which we do not depend on)."""

_EXTRAS: Final = {"psycopg": "postgres", "pymysql": "mysql"}


def _default_driver(url: URL) -> URL:
    driver = _DEFAULT_DRIVERS.get(url.drivername)
    return url if driver is None else url.set(drivername=driver)


def _family(url: URL) -> str:
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return "postgresql"
    if backend in {"sqlite", "mysql", "mariadb"}:
        return "mysql" if backend == "mariadb" else backend
    return "other"


def plan(
    url: str | URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    timeout: float = DEFAULT_TIMEOUT,
    recycle: float | None = DEFAULT_RECYCLE,
    pre_ping: bool = True,
    lifetime_jitter: float = DEFAULT_LIFETIME_JITTER,
    pgbouncer: bool | None = None,
    direct_url: str | URL | None = None,
    pgpool: bool | None = None,
    load_balance: bool | None = None,
) -> _Plan:
    """Validate ``connect()``'s arguments and decide the engine's shape, without I/O."""
    parsed = _parse_url(url)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
        raise ConfigurationError(f"pool_size must be an integer >= 0, got {pool_size!r}")
    if isinstance(max_overflow, bool) or not isinstance(max_overflow, int) or max_overflow < 0:
        raise ConfigurationError(f"max_overflow must be an integer >= 0, got {max_overflow!r}")
    check_seconds(timeout, "timeout")
    check_seconds(recycle, "recycle", optional=True)
    if (
        isinstance(lifetime_jitter, bool)
        or not isinstance(lifetime_jitter, (int, float))
        or not 0 <= lifetime_jitter < 1
    ):
        raise ConfigurationError(
            f"lifetime_jitter must be a fraction in [0, 1), got {lifetime_jitter!r}"
        )

    option = _query_value(parsed, "pgbouncer")
    url_bouncer = _flag(option, "pgbouncer", parsed) if option is not None else None
    direct_option = _query_value(parsed, "direct")
    pool_flags = {}
    for name, given in (("pgpool", pgpool), ("load_balance", load_balance)):
        value = _query_value(parsed, name)
        from_url = _flag(value, name, parsed) if value is not None else False
        pool_flags[name] = bool(given) if given is not None else from_url
    parsed = parsed.difference_update_query(_OUR_QUERY_KEYS)

    family = _family(parsed)
    parsed = _default_driver(parsed)
    bouncer = bool(pgbouncer) if pgbouncer is not None else bool(url_bouncer)
    if (bouncer or direct_option or direct_url is not None) and family != "postgresql":
        raise ConfigurationError(
            f"pgbouncer mode and direct URLs are for PostgreSQL, not {redact(parsed)}"
        )
    if pool_flags["pgpool"] and (family != "postgresql" or bouncer):
        raise ConfigurationError(
            f"pgpool mode is for PostgreSQL through Pgpool-II, not PgBouncer: {redact(parsed)}"
        )
    if pool_flags["load_balance"] and not pool_flags["pgpool"]:
        raise ConfigurationError("load_balance is a Pgpool-II option: add pgpool=True")

    direct: URL | None = None
    if direct_url is not None:
        direct = _parse_url(direct_url).difference_update_query(_OUR_QUERY_KEYS)
        direct = _default_driver(direct)
    elif direct_option:
        direct = _direct_from_option(parsed, direct_option)

    memory = family == "sqlite" and parsed.database in {None, "", ":memory:"}
    return _Plan(
        url=parsed,
        family=family,
        pool_size=pool_size,
        max_overflow=max_overflow,
        timeout=float(timeout),
        recycle=float(recycle) if recycle is not None else None,
        pre_ping=bool(pre_ping),
        lifetime_jitter=float(lifetime_jitter),
        pgbouncer=bouncer,
        direct=direct,
        memory_sqlite=memory,
        pgpool=pool_flags["pgpool"],
        load_balance=pool_flags["load_balance"],
    )


# --------------------------------------------------------------------------- statistics


class _Recorder:
    """Counters fed by one pool's events and checkouts.

    Every update is O(1) and lock-free except the wait sum (an uncontended lock).
    """

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.acquires = Counter()
        self.timeouts = Counter()
        self.opened = Counter()
        self.invalidated = Counter()
        self.recycled = Counter()
        self.waits: deque[float] = deque(maxlen=_WAIT_WINDOW)
        self.wait_histogram = Histogram()
        self.label = "?"
        """The pool's URL, password hidden (for log lines)."""
        self._logged_at = -_LOG_EVERY
        self._wait_total = 0.0
        self._lock = threading.Lock()

    def timed_out(self, message: str) -> None:
        """Log a saturated pool at most once a minute (a count of the timeouts since)."""
        now = time.monotonic()
        if now - self._logged_at < _LOG_EVERY:
            return
        timeouts = self.timeouts.value
        log_event(
            logger,
            logging.WARNING,
            "pool_timeout",
            "pool %s: %s (%d timeouts so far; logged at most once a minute)",
            self.label,
            message,
            timeouts,
            pool=self.label,
            timeouts=timeouts,
        )
        self._logged_at = now

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.wait_histogram.observe(seconds)
        with self._lock:
            self._wait_total += seconds

    def wait_mean(self, acquires: int) -> float | None:
        if not self.timed:
            return None
        with self._lock:
            total = self._wait_total
        return total / acquires if acquires else 0.0

    def wait_p99(self) -> float | None:
        if not self.timed:
            return None
        recent = sorted(self.waits)
        if not recent:
            return 0.0
        return recent[min(len(recent) - 1, int(len(recent) * 0.99))]


class _Waiter:
    """One caller waiting for a connection: a locked lock that ``put`` releases."""

    __slots__ = ("item", "lock")

    def __init__(self) -> None:
        self.item: Any = None
        self.lock = threading.Lock()
        self.lock.acquire()


class _HandoffQueue(sqla_queue.Queue[Any]):
    """QueuePool's queue with psycopg_pool's waiting discipline: FIFO waiters, hand-off.

    SQLAlchemy's queue wakes a waiter with ``Condition.notify`` and lets any thread take
    the returned connection; under the GIL the thread that returned it usually takes it
    back, and the woken waiter sleeps again (measured: ~50 us of CPU per request at 16
    threads on 5 connections). Here a returned connection goes straight to the oldest
    waiter, so nobody wakes for nothing and waits are served in order.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[_Waiter] = deque()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self.mutex:
            if not self._empty():  # never non-empty while someone waits: put() hands off
                return self._get()
            if not block:
                raise sqla_queue.Empty
            waiter = _Waiter()
            self._waiters.append(waiter)
        if timeout is None:
            waiter.lock.acquire()
        else:
            waiter.lock.acquire(True, max(timeout, 0.0))
        with self.mutex:
            if waiter.item is None:
                # A put() may still run re-entrantly here (the mutex is an RLock for the
                # pool's weakref callbacks) and hand off to us: then we are not queued.
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            if waiter.item is not None:  # handed off, possibly just as we timed out
                return waiter.item
            raise sqla_queue.Empty

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.item = item
                waiter.lock.release()
                return
            if self._full():  # QueuePool only puts without blocking
                raise sqla_queue.Full
            self._put(item)


class _ObservedQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool`` with the time to get a connection measured.

    Only ``connect()`` is wrapped: checkout, pre-ping, recycling and return are
    SQLAlchemy's own code.
    """

    _queue_class = _HandoffQueue

    def __init__(self, *args: Any, **kw: Any) -> None:
        recorder = kw.pop("_cw_recorder", None)
        super().__init__(*args, **kw)
        self._cw: _Recorder = recorder if recorder is not None else _Recorder(timed=True)

    def connect(self) -> Any:  # PoolProxiedConnection; Any keeps the override compatible
        recorder = self._cw
        start = time.perf_counter()
        try:
            conn = super().connect()
        except exc.TimeoutError as err:
            recorder.timeouts.add()
            message = (
                f"no connection free within {self._timeout:g}s: pool size {self.size()}, "
                f"checked out {self.checkedout()}, overflow {max(self.overflow(), 0)}"
                f"/{self._max_overflow}, waiting {self.waiting()}"
            )
            recorder.timed_out(message)
            raise PoolTimeout(message) from err
        recorder.acquires.add()
        recorder.waited(time.perf_counter() - start)
        return conn

    def waiting(self) -> int:
        """Callers queued for a connection now."""
        return len(self._pool._waiters) if isinstance(self._pool, _HandoffQueue) else 0

    def recreate(self) -> _ObservedQueuePool:
        # dispose() swaps in a new pool; the counters live on across it.
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            pool_size=self._pool.maxsize,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            use_lifo=self._pool.use_lifo,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
            _cw_recorder=self._cw,
        )


_FOREIGN: weakref.WeakKeyDictionary[Engine, _Recorder] = weakref.WeakKeyDictionary()
_FOREIGN_LOCK = threading.Lock()


def _recorder_of(engine: Engine) -> _Recorder:
    pool = engine.pool
    if isinstance(pool, _ObservedQueuePool):
        return pool._cw
    with _FOREIGN_LOCK:
        recorder = _FOREIGN.get(engine)
        if recorder is None:
            # An engine we did not build: count from now on, with what events show.
            recorder = _FOREIGN[engine] = _Recorder(timed=False)
            _listen_counts(engine, recorder, count_checkouts=True)
        return recorder


def _listen_counts(engine: Engine, recorder: _Recorder, *, count_checkouts: bool) -> None:
    def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        recorder.opened.add()

    def on_invalidate(dbapi_conn: Any, record: ConnectionPoolEntry, err: Any) -> None:
        if record.info.pop("cw_recycle", False):
            recorder.recycled.add()
        else:
            recorder.invalidated.add()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "invalidate", on_invalidate)
    event.listen(engine, "soft_invalidate", on_invalidate)
    if count_checkouts:

        def on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
            recorder.acquires.add()

        event.listen(engine, "checkout", on_checkout)


def pool_stats(engine: Engine) -> PoolStats:
    """A snapshot of ``engine``'s pool: sizes now, counters since it was built.

    Works for any SQLAlchemy engine; for one not built by ``connect()`` the counters
    start at the first call and the waiting and timing fields are ``None``.
    """
    if not isinstance(engine, Engine):
        raise ConfigurationError(f"pool_stats needs a SQLAlchemy Engine, got {engine!r}")
    recorder = _recorder_of(engine)
    pool: Pool = engine.pool
    size = checked_out = overflow = 0
    if isinstance(pool, QueuePool):
        size, checked_out, overflow = pool.size(), pool.checkedout(), max(pool.overflow(), 0)
    elif hasattr(pool, "checkedout"):
        checked_out = int(pool.checkedout())
    acquires = recorder.acquires.value
    return PoolStats(
        size=size,
        checked_out=checked_out,
        overflow=overflow,
        waiting=pool.waiting() if isinstance(pool, _ObservedQueuePool) else None,
        acquires=acquires,
        acquire_wait_mean=recorder.wait_mean(acquires),
        acquire_wait_p99=recorder.wait_p99(),
        timeouts=recorder.timeouts.value if recorder.timed else None,
        opened=recorder.opened.value,
        invalidated=recorder.invalidated.value,
        recycled=recorder.recycled.value,
    )


def acquire_waits(engine: Engine) -> HistogramSnapshot | None:
    """The distribution of ``engine``'s acquire waits in seconds (``connect()`` engines only)."""
    if not isinstance(engine, Engine):
        raise ConfigurationError(f"acquire_waits needs a SQLAlchemy Engine, got {engine!r}")
    recorder = _recorder_of(engine)
    return recorder.wait_histogram.snapshot() if recorder.timed else None


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _EngineInfo:
    pgbouncer: bool
    direct: URL | None
    pgpool: bool = False
    prefix: str = ""
    """What every statement starts with (Pgpool-II's no-load-balance hint, or nothing)."""


_INFO: weakref.WeakKeyDictionary[Any, _EngineInfo] = weakref.WeakKeyDictionary()
"""Keyed by the engine's dialect: shared with ``engine.execution_options()`` copies and
kept across ``dispose()``."""
_BUILT: weakref.WeakSet[Engine] = weakref.WeakSet()
_OWN_LISTENERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""connect()'s own statement hooks (Pgpool-II's hint), which the fast lane reproduces."""


def built_engines() -> list[Engine]:
    """Every engine ``connect()`` built that is still alive (for metrics)."""
    return list(_BUILT)


def _after_fork_in_child() -> None:
    # The child must not use (or close) sockets it shares with the parent: drop the
    # pool without closing its connections; the child opens its own on demand.
    for engine in list(_BUILT):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _socket_says_gone(dbapi_conn: Any) -> bool:
    """True if an idle PostgreSQL connection is closed, broken, or has unread input."""
    if getattr(dbapi_conn, "closed", False) or getattr(dbapi_conn, "broken", False):
        return True
    try:
        fd = dbapi_conn.fileno()
    except Exception:  # a connection that cannot tell its socket is gone
        return True
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def _install_checkout_checks(engine: Engine, p: _Plan) -> None:
    check_socket = p.pre_ping and p.family == "postgresql" and p.url.get_driver_name() == "psycopg"
    lifetime = p.recycle if p.family != "sqlite" else None
    if not check_socket and lifetime is None:
        return
    jitter = p.lifetime_jitter

    def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        if lifetime is not None:
            record.info["cw_expires"] = time.monotonic() + lifetime * (1 - jitter * random.random())

    def on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        expires = record.info.get("cw_expires")
        if expires is not None and time.monotonic() > expires:
            record.info["cw_recycle"] = True
            raise exc.DisconnectionError("connection reached its lifetime")
        if check_socket and _socket_says_gone(dbapi_conn):
            raise exc.DisconnectionError("server closed the idle connection")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)


def _install_sqlite_pragmas(engine: Engine, p: _Plan) -> None:
    busy_ms = int(p.timeout * 1000)
    memory = p.memory_sqlite

    def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_conn.cursor()
        try:
            # Waits for a lock instead of failing at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not memory:
                # Readers no longer block the writer, nor the writer the readers.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)


def _install_connect_translation(engine: Engine, p: _Plan) -> None:
    hidden = secrets(p.url)
    shown = redact(p.url)

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except (dialect.loaded_dbapi.Error, OSError, ValueError) as err:
            # Not only the driver's errors: PyMySQL, for one, raises UnicodeEncodeError
            # (whose args hold the password) for a password outside latin-1.
            failure = err
        # Raised outside the handler, so a cause that names a secret is not even context.
        text = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
        error = SourceError(
            f"cannot connect to {shown}: {scrub(text or type(failure).__name__, hidden)}"
        )
        raise error from (None if leaks(failure, hidden) else failure)

    event.listen(engine, "do_connect", do_connect)


def _install_pgpool(engine: Engine, p: _Plan) -> None:
    """Pgpool-II mode: reads go to the primary unless balanced on purpose; a sizing check."""
    if not p.load_balance:

        def to_primary(*args: Any) -> tuple[str, Any]:
            # (conn, cursor, statement, parameters, context, executemany): SQLAlchemy's
            statement, params = args[2], args[3]
            return NO_LOAD_BALANCE + statement, params

        event.listen(engine, "before_cursor_execute", to_primary, retval=True)
        _OWN_LISTENERS.add(to_primary)
    wanted = p.pool_size + p.max_overflow

    def on_first_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        children = _pgpool_children(dbapi_conn)
        if children is not None and wanted > children:
            log_event(
                logger,
                logging.WARNING,
                "pgpool_too_small",
                "pool of %d connections through Pgpool-II with num_init_children=%d: "
                "Pgpool-II serves one client per child, the rest wait in its listen queue",
                wanted,
                children,
                connections=wanted,
                children=children,
            )

    event.listen(engine, "first_connect", on_first_connect)


def _pgpool_children(dbapi_conn: Any) -> int | None:
    """Pgpool-II's ``num_init_children`` (``SHOW pool_status``), None if it will not say."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SHOW pool_status")
        rows = cursor.fetchall()
    except Exception:  # not Pgpool-II, or an older one: no check
        return None
    finally:
        cursor.close()
        with suppress(Exception):
            dbapi_conn.rollback()
    for row in rows:
        if row[0] == "num_init_children":
            return int(row[1])
    return None


def connect(
    url: str | URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    timeout: float = DEFAULT_TIMEOUT,
    recycle: float | None = DEFAULT_RECYCLE,
    pre_ping: bool = True,
    lifetime_jitter: float = DEFAULT_LIFETIME_JITTER,
    pgbouncer: bool | None = None,
    direct_url: str | URL | None = None,
    pgpool: bool | None = None,
    load_balance: bool | None = None,
    echo: bool = False,
    connect_args: Mapping[str, Any] | None = None,
) -> Engine:
    """A SQLAlchemy engine over a pool sized and checked as these arguments say.

    ``pool_size`` connections are kept (0: no pool, a new connection per checkout,
    for comparisons and one-shot tools); ``max_overflow`` more may be opened under
    load and are closed when returned. A caller waits up to ``timeout`` seconds for a free
    connection, then gets ``PoolTimeout``. Connections live ``recycle`` seconds, less a
    random share up to ``lifetime_jitter``. ``pre_ping`` replaces connections the
    server closed before they are handed out. ``pgbouncer`` (or ``?pgbouncer=true``)
    makes the engine safe behind PgBouncer in transaction mode; ``direct_url`` (or
    ``?direct=HOST:PORT``) says where PostgreSQL itself is, for ``connect_direct()``.
    ``pgpool`` (or ``?pgpool=true``) makes reads through Pgpool-II see writes (no load
    balancing) unless ``load_balance`` (or ``?load_balance=true``) allows it.
    No connection is opened until the engine is first used.
    """
    p = plan(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        timeout=timeout,
        recycle=recycle,
        pre_ping=pre_ping,
        lifetime_jitter=lifetime_jitter,
        pgbouncer=pgbouncer,
        direct_url=direct_url,
        pgpool=pgpool,
        load_balance=load_balance,
    )
    cargs: dict[str, Any] = dict(connect_args or {})
    if p.pgbouncer and p.url.get_driver_name() == "psycopg":
        # A transaction pooler hands each transaction any server connection: a statement
        # prepared on one is unknown on the next.
        cargs.setdefault("prepare_threshold", None)
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": cargs}
    if p.memory_sqlite:
        pass  # SQLAlchemy's own pool for :memory: keeps the one database alive
    elif p.pool_size == 0:
        kwargs["poolclass"] = NullPool  # no pooling: a new connection per checkout
    else:
        kwargs.update(
            poolclass=_ObservedQueuePool,
            pool_size=p.pool_size,
            max_overflow=p.max_overflow,
            pool_timeout=p.timeout,
            # Lifetimes are ours (with jitter); SQLAlchemy's fixed recycle stays off.
            pool_recycle=-1,
            # A round-trip ping only where we have no cheaper check (MySQL, others).
            pool_pre_ping=p.pre_ping and p.family in {"mysql", "other"},
        )
        if p.family == "postgresql" and p.url.get_driver_name() != "psycopg":
            kwargs["pool_pre_ping"] = p.pre_ping
    try:
        engine = sqlalchemy.create_engine(p.url, **kwargs)
    except exc.NoSuchModuleError:
        raise ConfigurationError(f"no SQLAlchemy dialect/driver for {redact(p.url)}") from None
    except ImportError as err:
        driver = p.url.get_driver_name()
        extra = _EXTRAS.get(driver)
        hint = f"pip install 'cachewise[{extra}]'" if extra else f"install {err.name or driver}"
        raise ConfigurationError(
            f"the {driver} driver for {redact(p.url)} is not installed: {hint}"
        ) from None
    except (exc.ArgumentError, TypeError, ValueError) as err:
        message = scrub(str(err), secrets(p.url))
        raise ConfigurationError(f"cannot build an engine for {redact(p.url)}: {message}") from None

    _install_connect_translation(engine, p)
    if p.family == "sqlite":
        _install_sqlite_pragmas(engine, p)
    if isinstance(engine.pool, _ObservedQueuePool):
        _install_checkout_checks(engine, p)
        _listen_counts(engine, engine.pool._cw, count_checkouts=False)
        engine.pool._cw.label = redact(p.url)
        waits = engine.pool._cw.wait_histogram
        waits.name, waits.attributes = "pool_acquire_wait_seconds", {"pool": redact(p.url)}
    else:
        _recorder_of(engine)  # count from the start with what events show
    if p.pgpool:
        _install_pgpool(engine, p)
    _INFO[engine.dialect] = _EngineInfo(
        pgbouncer=p.pgbouncer,
        direct=p.direct or (None if p.pgbouncer else p.url),
        pgpool=p.pgpool,
        prefix=NO_LOAD_BALANCE if p.pgpool and not p.load_balance else "",
    )
    _BUILT.add(engine)
    return engine


# --------------------------------------------------------------------------- direct access


def is_pgpool(engine: Engine) -> bool:
    """True if ``engine`` was built by ``connect()`` in Pgpool-II mode."""
    info = _INFO.get(engine.dialect)
    return info.pgpool if info is not None else False


def is_pgbouncer(engine: Engine) -> bool:
    """True if ``engine`` was built by ``connect()`` in PgBouncer mode."""
    info = _INFO.get(engine.dialect)
    return info.pgbouncer if info is not None else False


def statement_listeners(engine: Engine) -> bool:
    """Whether anyone but ``connect()`` watches ``engine``'s statements as they are sent.

    Tracing, SQL logging (``echo``) and statement-counting tests hook the Engine's
    ``before_cursor_execute``/``after_cursor_execute`` events; code that could send SQL
    on a driver connection instead (where no event runs) must not, when this is True.
    """
    dispatch: Any = engine.dispatch
    if dispatch.after_cursor_execute or engine._should_log_info():
        return True
    return any(fn not in _OWN_LISTENERS for fn in dispatch.before_cursor_execute)


def statement_prefix(engine: Engine) -> str:
    """What ``engine`` puts before every statement it sends (through its Engine events).

    Pgpool-II mode without load balancing starts each statement with
    ``/*NO LOAD BALANCE*/``; code that sends SQL on a driver connection, where no
    Engine event runs, must add it itself. Empty for every other engine.
    """
    info = _INFO.get(engine.dialect)
    return info.prefix if info is not None else ""


def direct_url(target: Engine | str | URL) -> URL:
    """The URL of PostgreSQL itself, for session features a pooler cannot carry.

    LISTEN/NOTIFY receivers and session-level advisory locks need one server session for
    as long as they live; behind PgBouncer in transaction mode they must bypass it.
    ``target`` is an engine from ``connect()`` or a URL in ``connect()``'s syntax (the
    ``?pgbouncer=``/``?direct=`` options are read and removed). For an engine or URL
    not in PgBouncer mode this is its own URL (plain ``postgresql://`` becomes psycopg
    3). The URL keeps its password (the caller connects with it); its ``repr`` and
    ``str`` hide it. For a libpq/psycopg conninfo string use
    ``direct_url(x).set(drivername="postgresql").render_as_string(hide_password=False)``.
    """
    if isinstance(target, Engine):
        info = _INFO.get(target.dialect)
        if info is None:
            return target.url
        direct, shown = info.direct, target.url
    else:
        p = plan(target)
        direct, shown = p.direct or (None if p.pgbouncer else p.url), p.url
    if direct is None:
        raise ConfigurationError(
            f"{redact(shown)} goes through PgBouncer and no direct URL was given: "
            "pass direct_url= to connect() or add ?direct=HOST:PORT to the URL"
        )
    return direct


def connect_direct(target: Engine | str | URL, *, pool_size: int = 1, **options: Any) -> Engine:
    """An engine on ``direct_url(target)``: same database, never through PgBouncer."""
    return connect(direct_url(target), pool_size=pool_size, pgbouncer=False, **options)


# --------------------------------------------------------------------------- the fast lane


@contextmanager
def dbapi_connection(engine: Engine) -> Iterator[Any]:
    """A DBAPI connection from ``engine``'s pool for one transaction, as psycopg_pool gives.

    Commits on a clean exit, rolls back on an exception, and returns the connection to
    the pool either way. The pool (checkout checks, lifetimes, statistics) is the same as
    ``engine.connect()``'s; what is skipped is SQLAlchemy's Connection, execution context
    and Result layers, which cost more client CPU per short query than the pool does
    (docs/pooling.md has the measurements). SQL and parameters are the driver's own.
    """
    conn = engine.raw_connection()
    try:
        yield conn
        conn.commit()
    except BaseException:
        # The caller's error matters more than a failed rollback; the pool's own reset
        # on return discards a broken connection.
        with suppress(Exception):
            conn.rollback()
        raise
    finally:
        conn.close()
