"""AsyncRedisStore: ``RedisStore`` on redis.asyncio, the same flows awaited.

Every operation of ``RedisStore`` is a flow (``stores/redis.py``): its key layout,
Lua scripts, codec, fail-open rule, lease waits and secret-free errors are written
once there. This class only swaps the client for ``redis.asyncio`` and drives each
flow with ``await``; a sync and an async process sharing one Redis see each other's
values, versions and leases because they are the same code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cachewise._flow import arun
from cachewise._types import Key
from cachewise.aio._driven import AsyncFlows
from cachewise.codecs import Codec
from cachewise.errors import ConfigurationError
from cachewise.stores._redis_claim import RedisClaim
from cachewise.stores.redis import RedisStore


async def aclose(connection: Any) -> None:
    """Close a redis.asyncio client or pub/sub (``aclose`` since redis-py 5.0.1)."""
    close = getattr(connection, "aclose", None) or connection.close
    await close()


class AsyncRedisStore(AsyncFlows, RedisStore):  # type: ignore[misc]
    """A store in Redis for AsyncCache: ``RedisStore``'s layout and codec, each call awaited.

    Arguments as ``RedisStore``'s; ``client`` is a ``redis.asyncio.Redis``.
    """

    _sleep = staticmethod(asyncio.sleep)  # type: ignore[assignment]
    _asynchronous = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        namespace: str = "cw",
        ttl: float | None = None,
        codec: Codec | None = None,
        *,
        fail_open: bool = False,
        client: aioredis.Redis | None = None,
        lease_ttl: float = 5.0,
        lease_wait: float | None = None,
        timeout: float = 5.0,
        write_hold: float = 30.0,
    ) -> None:
        self._settings: dict[str, Any] = {
            "url": url,
            "namespace": namespace,
            "ttl": ttl,
            "codec": codec,
            "fail_open": fail_open,
            "lease_ttl": lease_ttl,
            "lease_wait": lease_wait,
            "timeout": timeout,
            "write_hold": write_hold,
        }
        super().__init__(
            url,
            namespace,
            ttl,
            codec,
            fail_open=fail_open,
            client=client,  # type: ignore[arg-type]
            lease_ttl=lease_ttl,
            lease_wait=lease_wait,
            timeout=timeout,
            write_hold=write_hold,
        )
        self._owns_client = client is None

    def _connect(self, url: str, timeout: float) -> Any:
        try:
            return aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except (ValueError, RedisError):
            pass
        # Raised outside the handler: a URL parser's message may quote the password.
        raise ConfigurationError(f"cannot use Redis url {self._url}")

    def __repr__(self) -> str:
        return f"AsyncRedisStore({self._url!r}, namespace={self.namespace!r}, ttl={self.ttl})"

    def claim(self, what: str, *, solo: bool, ttl: float) -> RedisClaim:
        """``RedisStore.claim`` through a sync twin (the claim renews from its own thread)."""
        twin = self.sync_twin()
        try:
            claim = twin.claim(what, solo=solo, ttl=ttl)
        except BaseException:
            twin.close()
            raise
        claim.on_release(twin.close)
        return claim

    def sync_twin(self) -> RedisStore:
        """A sync ``RedisStore`` with the same settings (the shared write-back's thread uses it)."""
        return RedisStore(**self._settings)

    async def get(self, key: Key) -> Any:
        return await arun(self._get_flow(key))

    async def gets(self, key: Key) -> tuple[Any, Any]:  # type: ignore[override]
        """``RedisStore.gets``, awaited: the value (or MISSING) and a token for :meth:`cas`."""
        return await arun(self._gets_flow(key))

    async def cas(  # type: ignore[override]
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """``RedisStore.cas``, awaited: store if the key is as :meth:`gets` saw it."""
        return await arun(self._cas_flow(key, value, token, ttl, keep_ttl))

    async def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:  # type: ignore[override]
        """``RedisStore.add``, awaited: store only if the key holds no value."""
        return await arun(self._add_flow(key, value, ttl))

    async def ttl_left(self, key: Key) -> float | None:  # type: ignore[override]
        return await arun(self._ttl_left_flow(key))

    async def ping(self) -> None:  # type: ignore[override]
        await arun(self._ping_flow())

    async def close(self) -> None:  # type: ignore[override]
        """Close the connection pool this store opened (not a client passed in)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            await aclose(self.client)
