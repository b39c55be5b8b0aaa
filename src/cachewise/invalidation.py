"""Invalidation buses: carry "these keys changed" between the caches of many processes.

A bus publishes batches of keys and delivers each batch to every subscriber as an
:class:`Invalidation`. Three buses: :class:`LocalBus` (in-process), :class:`RedisBus`
(Redis pub/sub) and :class:`PostgresBus` (PostgreSQL LISTEN/NOTIFY, which also carries
invalidations that :func:`install_notify_trigger` makes the database itself publish
when rows change behind the cache's back).

Pub/sub is fire-and-forget: a message published while a subscriber is disconnected is
lost for it. So a bus that loses its connection tells every subscriber
``Invalidation(keys=None, live=False)`` ("drop everything, and do not trust your local
copies"), reconnects, resubscribes, and once the new subscription is confirmed sends
``Invalidation(keys=None, live=True)`` ("drop everything again, then serve"). A
subscriber that follows these two rules never serves a value whose invalidation it
missed.

Wire format (UTF-8 text): the publisher's origin on the first line, then one
:func:`~cachewise.codecs.encode_key` per line, or the single line ``*`` for "every
key". Encoded keys never contain a newline. The first line may end with a tab and the
publish time (Unix seconds), from which receivers measure the invalidation lag; a
message without it (older publishers, the database trigger) is read as before.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from sqlalchemy import inspect, text

from cachewise._events import event
from cachewise._redact import redact
from cachewise._types import Key, check_seconds
from cachewise.codecs import decode_key, encode_key
from cachewise.errors import ClosedError, ConfigurationError, InvalidKeyError, StoreError
from cachewise.pool import connect, direct_url

if TYPE_CHECKING:
    import redis
    from sqlalchemy.engine import URL, Engine

logger = logging.getLogger("cachewise.invalidation")

__all__ = [
    "Invalidation",
    "InvalidationBus",
    "LocalBus",
    "PostgresBus",
    "RedisBus",
    "install_notify_trigger",
    "remove_notify_trigger",
]

_EVERYTHING: Final = "*"
_PING_AFTER: Final = 5.0  # seconds of silence before the Redis listener checks its peer


class _Heartbeat:
    """When a silent pub/sub connection gets a PING, and when silence means it is dead.

    A silent peer may be a half-open TCP connection: ping it, and give up on it
    (reconnect, clearing L1s) if even the ping goes unanswered.
    """

    __slots__ = ("_last_heard", "_pinged", "_pubsub", "_what")

    def __init__(self, pubsub: Any, what: str) -> None:
        self._pubsub = pubsub
        self._what = what
        self._last_heard = time.monotonic()
        self._pinged = False

    def beat(self, message: Any) -> bool:
        """Note ``message`` (None: nothing came); True if there is one to handle."""
        now = time.monotonic()
        if message is not None:
            self._last_heard, self._pinged = now, False
            return True
        if now - self._last_heard > _PING_AFTER and not self._pinged:
            self._pubsub.ping()
            self._pinged = True
        elif now - self._last_heard > 2 * _PING_AFTER:
            raise TimeoutError(f"no reply to PING on the {self._what} connection")
        return False


def _wire_text(data: Any) -> str:
    """A pub/sub message's payload as text (redis-py gives bytes unless decoding)."""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


_PG_NOTIFY_LIMIT: Final = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
_PG_IDENT: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Invalidation:
    """One message on a bus: which keys changed, who said so, and whether the bus is live.

    ``keys=None`` means every key. ``live=False`` means the bus lost its connection:
    invalidations may be missed until a later message with ``live=True`` arrives.
    """

    keys: tuple[Key, ...] | None
    origin: str = ""
    live: bool = True
    sent: float | None = field(default=None, compare=False)
    """When it was published (``time.time()``), if the publisher said."""


Subscriber = Callable[[Invalidation], None]


@runtime_checkable
class InvalidationBus(Protocol):
    """Carries invalidations between caches; see the module docstring for the rules."""

    @property
    def live(self) -> bool:
        """Whether the bus is subscribed now (False: invalidations may be being missed)."""
        ...

    def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        """Tell every subscriber that ``keys`` (None: every key) changed."""
        ...

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback`` with every :class:`Invalidation` from now on."""
        ...

    def close(self) -> None:
        """Stop listening and release connections; idempotent."""
        ...


def encode_message(keys: Sequence[Key] | None, origin: str, sent: float | None = None) -> str:
    """The wire text of an invalidation (see the module docstring), stamped ``sent``."""
    if "\n" in origin or "\t" in origin:
        raise ConfigurationError("an origin cannot contain a newline or a tab")
    head = origin if sent is None else f"{origin}\t{sent:.6f}"
    if keys is None:
        return f"{head}\n{_EVERYTHING}"
    return "\n".join([head, *map(encode_key, keys)])


def decode_message(text: str) -> Invalidation:
    """The invalidation a wire text carries (InvalidKeyError if it is malformed)."""
    head, _, body = text.partition("\n")
    origin, _, stamp = head.partition("\t")
    try:
        sent = float(stamp) if stamp else None
    except ValueError:  # not our stamp: the whole line is the origin
        origin, sent = head, None
    if body == _EVERYTHING:
        return Invalidation(keys=None, origin=origin, sent=sent)
    keys = tuple(decode_key(line) for line in body.split("\n")) if body else ()
    return Invalidation(keys=keys, origin=origin, sent=sent)


class _Subscribers:
    """A thread-safe subscriber list that delivers, logs and survives callback errors."""

    def __init__(self) -> None:
        self._callbacks: list[Subscriber] = []
        self._lock = threading.Lock()

    def add(self, callback: Subscriber) -> None:
        if not callable(callback):
            raise ConfigurationError(f"subscriber must be callable, got {callback!r}")
        with self._lock:
            self._callbacks.append(callback)

    def deliver(self, message: Invalidation) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(message)
            except Exception as exc:  # one broken subscriber must not starve the others
                event(
                    logger,
                    logging.ERROR,
                    "subscriber_failed",
                    "invalidation subscriber %r failed",
                    callback,
                    exc_info=True,
                    error=type(exc).__name__,
                )

    def deliver_wire(self, text: str) -> None:
        try:
            message = decode_message(text)
        except InvalidKeyError:
            # A message we cannot read may have named any key: drop everything.
            event(
                logger,
                logging.WARNING,
                "unreadable_message",
                "unreadable invalidation message: dropping every key",
            )
            message = Invalidation(keys=None, origin="?")
        self.deliver(message)


class LocalBus:
    """An in-process bus: publish delivers synchronously to every subscriber."""

    def __init__(self) -> None:
        self._subscribers = _Subscribers()
        self._closed = False

    def __repr__(self) -> str:
        return "LocalBus()"

    @property
    def live(self) -> bool:
        return not self._closed

    def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        if self._closed:
            raise ClosedError("LocalBus is closed")
        self._subscribers.deliver(
            Invalidation(
                keys=None if keys is None else tuple(keys), origin=origin, sent=time.time()
            )
        )

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.add(callback)

    def close(self) -> None:
        self._closed = True


class BusOutage:
    """A bus's connection story, logged once: down (WARNING), retries (DEBUG), live (INFO).

    Shared by the thread-driven and the task-driven listener buses.
    """

    def __init__(self) -> None:
        self._since: float | None = None
        self._error = ""

    def lost(self, bus: object, exc: BaseException) -> None:
        """The listener failed: the first failure of an outage at WARNING, then DEBUG."""
        self._error = type(exc).__name__
        first = self._since is None
        if first:
            self._since = time.monotonic()
        event(
            logger,
            logging.WARNING if first else logging.DEBUG,
            "bus_down" if first else "bus_reconnect_failed",
            "%r lost its connection (%s); L1 bypassed until it subscribes again",
            bus,
            self._error,
            bus=repr(bus),
            error=self._error,
        )

    def live(self, bus: object) -> None:
        """Subscribed: after an outage, one line saying how long it lasted."""
        if self._since is None:
            return
        seconds = time.monotonic() - self._since
        event(
            logger,
            logging.INFO,
            "bus_live",
            "%r subscribed again after %.1fs (last error %s); L1 copies dropped",
            bus,
            seconds,
            self._error,
            bus=repr(bus),
            seconds=round(seconds, 3),
            error=self._error,
        )
        self._since = None


class _ListenerBus:
    """The reconnecting listener thread shared by the Redis and PostgreSQL buses."""

    _kind = "bus"

    def __init__(self, ready_timeout: float) -> None:
        self._subscribers = _Subscribers()
        self._stop = threading.Event()
        self._live = threading.Event()
        self._ready_timeout = ready_timeout
        self.reconnects = 0
        """How many times the listener lost its connection and subscribed again."""
        self._outage = BusOutage()
        self._thread = threading.Thread(
            target=self._run, name=f"cachewise-{self._kind}", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()
        if not self._live.wait(self._ready_timeout):
            self.close()
            raise StoreError(f"{self!r} could not subscribe within {self._ready_timeout}s")

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def wait_live(self, timeout: float) -> bool:
        """Block until the bus is subscribed (True) or ``timeout`` passes (False)."""
        return self._live.wait(timeout)

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.add(callback)

    def _went_down(self) -> None:
        if self._stop.is_set():
            return
        self._live.clear()
        self._subscribers.deliver(Invalidation(keys=None, origin="", live=False))

    def _came_up(self) -> None:
        # Drop everything *after* the subscription is confirmed: anything published
        # before this point may have been missed, anything after will be delivered.
        self._subscribers.deliver(Invalidation(keys=None, origin="", live=True))
        self._live.set()
        self._outage.live(self)

    def _lost(self, exc: Exception) -> None:
        self._outage.lost(self, exc)

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self._listen_once()
                delay = 0.05
            except Exception as exc:  # any failure: reconnect, never die silently
                self._lost(exc)
            if self._stop.is_set():
                break
            self.reconnects += 1
            self._went_down()
            self._stop.wait(delay)
            delay = min(delay * 2, 1.0)

    def _listen_once(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        self._join()

    def _join(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self._live.clear()


class RedisBus(_ListenerBus):
    """Redis pub/sub on ``channel``, listened to on a connection of its own.

    The constructor returns once the subscription is confirmed (StoreError after
    ``ready_timeout`` seconds). With ``client`` the bus shares that client's pool
    (and credentials) and does not close it.
    """

    _kind = "redis-bus"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        channel: str = "cachewise:invalidations",
        *,
        client: redis.Redis | None = None,
        ready_timeout: float = 5.0,
    ) -> None:
        import redis as redis_module  # noqa: PLC0415 - redis is an optional extra

        check_seconds(ready_timeout, "ready_timeout")
        if not isinstance(channel, str) or not channel or "\n" in channel:
            raise ConfigurationError(f"channel must be a non-empty line of text, got {channel!r}")
        if client is None:
            from cachewise.stores.redis import check_redis_url  # noqa: PLC0415 - optional extra

            check_redis_url(url)
        self.channel = channel
        self._url = redact(url) if client is None else "<shared client>"
        self._owns_client = client is None
        if client is None:
            client = redis_module.Redis.from_url(
                url, socket_connect_timeout=5.0, health_check_interval=10
            )
        self._client: redis.Redis = client
        self._errors: tuple[type[BaseException], ...] = (redis_module.RedisError, OSError)
        self._pubsub: Any = None
        super().__init__(ready_timeout)
        self._start()

    def __repr__(self) -> str:
        return f"RedisBus({self._url!r}, channel={self.channel!r})"

    def _on_reconnect(self, _connection: Any) -> None:
        # redis-py may reconnect and resubscribe inside get_message without raising:
        # we still missed what was published meanwhile.
        self.reconnects += 1
        self._went_down()

    def _listen_once(self) -> None:
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        try:
            pubsub.subscribe(self.channel)
            connection = _pubsub_connection(pubsub)
            if connection is not None:
                connection.register_connect_callback(self._on_reconnect)
            heartbeat = _Heartbeat(pubsub, "pub/sub")
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if not heartbeat.beat(message):
                    continue
                kind = message["type"]
                if kind == "subscribe":
                    self._came_up()
                elif kind == "message":
                    self._subscribers.deliver_wire(_wire_text(message["data"]))
        finally:
            self._pubsub = None
            connection = _pubsub_connection(pubsub)
            if connection is not None:
                # The connection goes back to the pool: its later reconnects are not ours.
                connection.deregister_connect_callback(self._on_reconnect)
            pubsub.close()

    def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        if self._stop.is_set():
            raise ClosedError(f"{self!r} is closed")
        text = encode_message(keys, origin, time.time())
        try:
            self._client.publish(self.channel, text.encode("utf-8"))
        except self._errors as exc:
            failure = exc
        else:
            return
        error = StoreError(f"{self!r} could not publish: {type(failure).__name__}")
        error.__cause__ = failure
        raise error

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._join()
        if self._owns_client:
            self._client.close()
            self._client.connection_pool.disconnect()


class _CallbackConnection(Protocol):
    """The part of a redis-py connection the bus uses (redis-py leaves it untyped)."""

    def register_connect_callback(self, callback: Callable[[Any], None]) -> None: ...

    def deregister_connect_callback(self, callback: Callable[[Any], None]) -> None: ...


def _pubsub_connection(pubsub: redis.client.PubSub) -> _CallbackConnection | None:
    """The connection a subscribed PubSub holds, or None before its first subscribe.

    redis-py assigns ``PubSub.connection = None`` in ``__init__`` without an annotation,
    so type checkers infer ``None`` for it; this is the one place that reads it.
    """
    connection: _CallbackConnection | None = getattr(pubsub, "connection", None)
    return connection


def pg_bus_target(url: str | Engine, channel: str) -> tuple[str, str, str, Any]:
    """A PostgreSQL bus's checked channel, libpq conninfo, shown URL and psycopg module."""
    import psycopg  # noqa: PLC0415 - psycopg is an optional extra

    if not isinstance(channel, str) or not _PG_IDENT.fullmatch(channel):
        raise ConfigurationError(
            f"channel must be a lower-case SQL identifier (a-z, 0-9, _), got {channel!r}"
        )
    direct = _pg_direct(url)
    return channel, _pg_conninfo(direct), redact(direct), psycopg


def _pg_direct(target: str | Engine) -> URL:
    """PostgreSQL's own URL for ``target`` (a URL in ``connect()``'s syntax, or an Engine).

    LISTEN needs one server session for as long as it lives: behind PgBouncer in
    transaction mode that is the ``direct`` address, never the pooler's.
    """
    url = direct_url(target)
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(f"a PostgreSQL URL is needed, got {url.get_backend_name()!r}")
    return url


def _pg_conninfo(url: URL) -> str:
    """A libpq URL from a SQLAlchemy URL (driver suffix removed, password kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBus(_ListenerBus):
    """PostgreSQL LISTEN/NOTIFY on ``channel``, over a direct connection of its own.

    LISTEN holds session state, so it cannot go through PgBouncer in transaction mode:
    the bus connects to ``cachewise.pool.direct_url(url)``, PostgreSQL itself (a
    PgBouncer URL must say ``?direct=HOST:PORT``, or be an engine from ``connect()``
    with ``direct_url=``). Notifications are transactional: a NOTIFY (or a trigger's)
    is delivered when its transaction commits.
    """

    _kind = "postgres-bus"

    def __init__(
        self,
        url: str | Engine,
        channel: str = "cachewise_invalidations",
        *,
        ready_timeout: float = 5.0,
    ) -> None:
        check_seconds(ready_timeout, "ready_timeout")
        self.channel, self._conninfo, self._url, self._psycopg = pg_bus_target(url, channel)
        self._listener: Any = None
        self._publisher: Any = None
        self._publish_lock = threading.Lock()
        super().__init__(ready_timeout)
        self._start()

    def __repr__(self) -> str:
        return f"PostgresBus({self._url!r}, channel={self.channel!r})"

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        except self._psycopg.Error as exc:
            failure = exc
        # Raised outside the handler: libpq messages can quote the connection string.
        raise StoreError(f"{self!r} cannot connect: {type(failure).__name__}")

    def _listen_once(self) -> None:
        sql = self._psycopg.sql
        conn = self._connect()
        self._listener = conn
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._came_up()  # LISTEN returned: the server now queues our notifications
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=0.2):
                    self._subscribers.deliver_wire(notify.payload)
        finally:
            self._listener = None
            conn.close()

    def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        if self._stop.is_set():
            raise ClosedError(f"{self!r} is closed")
        payloads = list(_pg_payloads(keys, origin))
        with self._publish_lock:
            try:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = self._connect()
                with self._publisher.transaction():
                    for payload in payloads:
                        self._publisher.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except self._psycopg.Error as exc:
                failure: BaseException = exc
                if self._publisher is not None:
                    self._publisher.close()
                    self._publisher = None
            else:
                return
        raise StoreError(f"{self!r} could not publish: {type(failure).__name__}")

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._join()
        with self._publish_lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None


def _pg_payloads(keys: Sequence[Key] | None, origin: str) -> Iterable[str]:
    """Split a message into payloads under PostgreSQL's NOTIFY size limit, each stamped."""
    sent = time.time()
    if keys is None:
        yield encode_message(None, origin, sent)
        return
    head = len(encode_message((), origin, sent).encode()) + 1
    batch: list[Key] = []
    size = head
    for key in keys:
        line = len(encode_key(key).encode()) + 1
        if line + head > _PG_NOTIFY_LIMIT:
            # A key too long for one NOTIFY: invalidate everything rather than nothing.
            yield encode_message(None, origin, sent)
            return
        if batch and size + line > _PG_NOTIFY_LIMIT:
            yield encode_message(batch, origin, sent)
            batch, size = [], head
        batch.append(key)
        size += line
    if batch:
        yield encode_message(batch, origin, sent)


# -- the trigger that makes the database publish ------------------------------------------

_ESCAPE_TEXT: Final = """
CREATE OR REPLACE FUNCTION cachewise_key_text(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  out text := '';
  c text;
  cp int;
BEGIN
  FOR i IN 1 .. coalesce(length(t), 0) LOOP
    c := substr(t, i, 1);
    cp := ascii(c);
    IF cp BETWEEN 33 AND 126 AND c NOT IN ('%', '(', ')', ',', '{', '}') THEN
      out := out || c;
    ELSIF cp < 256 THEN
      out := out || '%' || lpad(upper(to_hex(cp)), 2, '0');
    ELSIF cp < 65536 THEN
      out := out || '%u' || lpad(upper(to_hex(cp)), 4, '0');
    ELSE
      out := out || '%U' || lpad(upper(to_hex(cp)), 6, '0');
    END IF;
  END LOOP;
  RETURN out;
END
$fn$
"""

_ESCAPE_BYTES: Final = """
CREATE OR REPLACE FUNCTION cachewise_key_bytes(b bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  out text := '';
  v int;
BEGIN
  FOR i IN 0 .. coalesce(length(b), 0) - 1 LOOP
    v := get_byte(b, i);
    IF v BETWEEN 33 AND 126 AND v NOT IN (37, 40, 41, 44, 123, 125) THEN
      out := out || chr(v);
    ELSE
      out := out || '%' || lpad(upper(to_hex(v)), 2, '0');
    END IF;
  END LOOP;
  RETURN out;
END
$fn$
"""

_INTEGER_TYPES: Final = ("SMALLINT", "INTEGER", "BIGINT")


def _key_expr(row: str, column: str, type_name: str, quote: Callable[[str], str]) -> str:
    """SQL computing encode_key() of one key column of ``row`` (OLD or NEW)."""
    ref = f"{row}.{quote(column)}"
    if type_name in _INTEGER_TYPES:
        return f"'i' || ({ref})::text"
    if type_name == "BYTEA":
        return f"'b' || cachewise_key_bytes({ref})"
    return f"'s' || cachewise_key_text(({ref})::text)"


def _trigger_names(table: str) -> tuple[str, str]:
    if not _PG_IDENT.fullmatch(table) or len(table) > 40:
        raise ConfigurationError(f"table must be a lower-case SQL identifier, got {table!r}")
    return f"cachewise_notify_{table}", f"cachewise_notify_{table}_trg"


def _engine(engine_or_url: str | Engine) -> Engine:
    """The caller's engine, or a one-shot unpooled one from ``connect()`` for a URL.

    ``connect()`` understands the ``?pgbouncer=``/``?direct=`` options; DDL in one
    transaction is fine through PgBouncer, so no direct connection is needed here.
    """
    return connect(engine_or_url, pool_size=0) if isinstance(engine_or_url, str) else engine_or_url


def install_notify_trigger(
    engine_or_url: str | Engine,
    table: str,
    key: str | Sequence[str] = "id",
    channel: str = "cachewise_invalidations",
) -> None:
    """Make ``table`` publish an invalidation on ``channel`` for every changed row.

    Installs (idempotently) a trigger, AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW,
    whose message names the row's cache key exactly as :func:`encode_key` would: an
    integer column as an int key, bytea as bytes, anything else as its text; a tuple
    of columns as a tuple key. So writes that bypass cachewise (raw SQL, another
    service) invalidate too. Columns are checked against the reflected table.
    """
    if not isinstance(channel, str) or not _PG_IDENT.fullmatch(channel):
        raise ConfigurationError(f"channel must be a lower-case SQL identifier, got {channel!r}")
    function, trigger = _trigger_names(table)
    columns = [key] if isinstance(key, str) else list(key)
    if not columns:
        raise ConfigurationError("key must name at least one column")
    engine = _engine(engine_or_url)
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigurationError("install_notify_trigger needs PostgreSQL")
        types = {c["name"]: str(c["type"]).upper() for c in inspect(engine).get_columns(table)}
        for column in columns:
            if column not in types:
                raise ConfigurationError(f"table {table!r} has no column {column!r}")
        quote = engine.dialect.identifier_preparer.quote

        def key_of(row: str) -> str:
            parts = [_key_expr(row, c, types[c].split("(")[0], quote) for c in columns]
            if isinstance(key, str):
                return parts[0]
            return "'t(' || " + " || ',' || ".join(parts) + " || ')'"

        body = f"""
CREATE OR REPLACE FUNCTION {quote(function)}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('{channel}', 'db' || chr(10) || {key_of("OLD")});
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('{channel}', 'db' || chr(10) || {key_of("NEW")});
  END IF;
  RETURN NULL;
END
$fn$
"""
        with engine.begin() as conn:
            conn.execute(text(_ESCAPE_TEXT))
            conn.execute(text(_ESCAPE_BYTES))
            conn.execute(text(body))
            conn.execute(text(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {quote(table)}"))
            conn.execute(
                text(
                    f"CREATE TRIGGER {quote(trigger)} AFTER INSERT OR UPDATE OR DELETE "
                    f"ON {quote(table)} FOR EACH ROW EXECUTE FUNCTION {quote(function)}()"
                )
            )
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def remove_notify_trigger(engine_or_url: str | Engine, table: str) -> None:
    """Drop the trigger and function :func:`install_notify_trigger` made for ``table``."""
    function, trigger = _trigger_names(table)
    engine = _engine(engine_or_url)
    try:
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {quote(table)}"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {quote(function)}()"))
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def new_origin() -> str:
    """A random id for a publisher, so it can recognise (and ignore) its own messages."""
    return uuid.uuid4().hex
