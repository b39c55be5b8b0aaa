"""Async invalidation buses: Redis pub/sub and PostgreSQL LISTEN/NOTIFY, listened to by a task.

The wire format, the subscriber list and the rules are ``invalidation.py``'s (a lost
connection tells subscribers ``live=False``; a confirmed resubscription tells them
``live=True``), so sync and async processes on one channel invalidate each other.
The listener task starts on first use (``start()``, ``publish`` or ``wait_live``):
a bus may be built before the event loop runs, and until it is live a
``TieredStore`` serves from L2 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cachewise._redact import redact
from cachewise._types import Key
from cachewise.errors import ClosedError, ConfigurationError, StoreError
from cachewise.invalidation import (
    BusOutage,
    Invalidation,
    Subscriber,
    _pg_payloads,
    _Subscribers,
    encode_message,
    pg_bus_target,
)


async def _aclose(connection: Any) -> None:
    """Close a redis.asyncio client or pub/sub (``aclose`` since redis-py 5.0.1)."""
    from cachewise.aio.redis import aclose  # noqa: PLC0415 - redis is an optional extra

    await aclose(connection)


class _AsyncListenerBus:
    """The reconnecting listener task both async buses share."""

    _kind = "bus"

    def __init__(self) -> None:
        self._subscribers = _Subscribers()
        self._live = asyncio.Event()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0
        """How many times the listener lost its connection and subscribed again."""
        self._outage = BusOutage()

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.add(callback)

    def start(self) -> None:
        """Start the listener task (on the running loop) unless it runs."""
        if self._stopped:
            raise ClosedError(f"{self!r} is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"cachewise-{self._kind}"
            )

    async def wait_live(self, timeout: float) -> bool:
        """Start listening if needed; wait until subscribed (True) or ``timeout`` (False)."""
        self.start()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._live.wait(), timeout)
        return self.live

    def _went_down(self) -> None:
        if self._stopped:
            return
        self._live.clear()
        self._subscribers.deliver(Invalidation(keys=None, origin="", live=False))

    def _came_up(self) -> None:
        self._subscribers.deliver(Invalidation(keys=None, origin="", live=True))
        self._live.set()
        self._outage.live(self)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen_once()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect, never die silently
                self._outage.lost(self, exc)
            if self._stopped:
                break
            self.reconnects += 1
            self._went_down()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _listen_once(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._live.clear()


class AsyncRedisBus(_AsyncListenerBus):
    """Redis pub/sub on ``channel`` for asyncio (redis.asyncio), the wire format of ``RedisBus``."""

    _kind = "redis-bus"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        channel: str = "cachewise:invalidations",
        *,
        client: Any = None,
    ) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - redis is an optional extra

        if not isinstance(channel, str) or not channel or "\n" in channel:
            raise ConfigurationError(f"channel must be a non-empty line of text, got {channel!r}")
        self.channel = channel
        self._url = redact(url) if client is None else "<shared client>"
        self._owns_client = client is None
        self._client = client if client is not None else aioredis.Redis.from_url(url)
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        super().__init__()

    def __repr__(self) -> str:
        return f"AsyncRedisBus({self._url!r}, channel={self.channel!r})"

    async def _listen_once(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while not self._stopped:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    await pubsub.ping()  # a half-open connection fails here, not silently
                    continue
                kind = message["type"]
                if kind == "subscribe":
                    self._came_up()
                elif kind == "message":
                    data = message["data"]
                    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
                    self._subscribers.deliver_wire(text)
        finally:
            await _aclose(pubsub)

    async def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        self.start()
        text = encode_message(keys, origin, time.time())
        try:
            await self._client.publish(self.channel, text.encode("utf-8"))
        except self._errors as exc:
            failure = exc
        else:
            return
        error = StoreError(f"{self!r} could not publish: {type(failure).__name__}")
        error.__cause__ = failure
        raise error

    async def close(self) -> None:
        if self._stopped:
            return
        await self._stop()
        if self._owns_client:
            await _aclose(self._client)


class AsyncPostgresBus(_AsyncListenerBus):
    """PostgreSQL LISTEN/NOTIFY for asyncio (psycopg's AsyncConnection), on a direct connection.

    As ``PostgresBus``: LISTEN holds session state, so it connects to PostgreSQL itself
    (``cachewise.pool.direct_url``), never through PgBouncer in transaction mode.
    """

    _kind = "postgres-bus"

    def __init__(self, url: Any, channel: str = "cachewise_invalidations") -> None:
        self.channel, self._conninfo, self._url, self._psycopg = pg_bus_target(url, channel)
        self._publisher: Any = None
        self._publish_lock = asyncio.Lock()
        super().__init__()

    def __repr__(self) -> str:
        return f"AsyncPostgresBus({self._url!r}, channel={self.channel!r})"

    async def _connect(self) -> Any:
        try:
            return await self._psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        except self._psycopg.Error as exc:
            failure = exc
        # Raised outside the handler: libpq messages can quote the connection string.
        raise StoreError(f"{self!r} cannot connect: {type(failure).__name__}")

    async def _listen_once(self) -> None:
        sql = self._psycopg.sql
        conn = await self._connect()
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._came_up()  # LISTEN returned: the server now queues our notifications
            async for text in self._notifications(conn):
                self._subscribers.deliver_wire(text)
        finally:
            await conn.close()

    async def _notifications(self, conn: Any) -> AsyncIterator[str]:
        while not self._stopped:
            async for notify in conn.notifies(timeout=1.0):
                yield notify.payload

    async def publish(self, keys: Sequence[Key] | None, origin: str = "") -> None:
        self.start()
        payloads = list(_pg_payloads(keys, origin))
        async with self._publish_lock:
            try:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = await self._connect()
                async with self._publisher.transaction():
                    for payload in payloads:
                        await self._publisher.execute(
                            "SELECT pg_notify(%s, %s)", (self.channel, payload)
                        )
            except self._psycopg.Error as exc:
                failure: BaseException = exc
                if self._publisher is not None:
                    await self._publisher.close()
                    self._publisher = None
            else:
                return
        raise StoreError(f"{self!r} could not publish: {type(failure).__name__}")

    async def close(self) -> None:
        if self._stopped:
            return
        await self._stop()
        async with self._publish_lock:
            if self._publisher is not None:
                await self._publisher.close()
                self._publisher = None
