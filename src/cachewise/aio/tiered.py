"""AsyncTieredStore: ``TieredStore`` with an AsyncRedisStore as L2 and an async bus.

Reads, writes, fills and the two races ``TieredStore`` closes are its flows, awaited
here. The bus is an ``AsyncRedisBus`` on L2's Redis, channel
``<namespace>:invalidations``: the sync ``TieredStore``'s channel and wire format, so
sync and async processes drop each other's L1 copies. Its listener starts on first
use; until it is subscribed, L1 is bypassed (the rule a lost bus already follows), so
a store built before the loop runs is correct from its first read.
"""

from __future__ import annotations

from typing import Any

from cachewise._flow import arun
from cachewise._types import MISSING, Key
from cachewise.aio._driven import AsyncFlows
from cachewise.aio.buses import AsyncRedisBus
from cachewise.aio.redis import AsyncRedisStore
from cachewise.errors import ConfigurationError
from cachewise.invalidation import InvalidationBus
from cachewise.stores.memory import MemoryStore
from cachewise.stores.redis import RedisStore
from cachewise.stores.tiered import TieredStore


class AsyncTieredStore(AsyncFlows, TieredStore):  # type: ignore[misc]
    """L1 ``MemoryStore`` in front of L2 ``AsyncRedisStore``, coherent across processes.

    ``bus`` defaults to an ``AsyncRedisBus`` on L2's own client (closed with the store).
    ``await store.wait_live(timeout)`` waits until the bus is subscribed.
    """

    def __init__(self, l1: MemoryStore, l2: AsyncRedisStore, bus: Any = None) -> None:
        if not isinstance(l2, AsyncRedisStore):
            raise ConfigurationError(f"l2 must be an AsyncRedisStore, got {type(l2).__name__}")
        super().__init__(l1, l2, bus)
        self.get = self._async_get  # type: ignore[method-assign]

    def _default_bus(self, l2: RedisStore, ready_timeout: float) -> InvalidationBus:
        bus: Any = AsyncRedisBus(channel=f"{l2.namespace}:invalidations", client=l2.client)
        return bus  # type: ignore[no-any-return]

    async def wait_live(self, timeout: float = 5.0) -> bool:
        """Start the bus if needed and wait until it is subscribed (L1 serves from then on)."""
        return bool(await self.bus.wait_live(timeout))  # type: ignore[attr-defined]

    async def _async_get(self, key: Key) -> Any:
        value = self._l1_get(key)
        if value is not MISSING:
            return value
        if not self._serving:
            self.bus.start()  # type: ignore[attr-defined]
        return await arun(self._get_l2_flow(key))

    async def ttl_left(self, key: Key) -> float | None:
        """Seconds until ``key`` expires in L2 (``None``: no expiry or absent)."""
        l2: Any = self.l2
        left: float | None = await l2.ttl_left(key)
        return left

    async def close(self) -> None:  # type: ignore[override]
        """Close the bus (if this store made it), then L2 and L1."""
        if self._closed:
            return
        self._closed = True
        bus: Any = self.bus
        l2: Any = self.l2
        if self._owns_bus:
            await bus.close()
        await l2.close()
        self.l1.close()
