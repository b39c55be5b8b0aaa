"""The async driver keeps issue 11's guarantees: refused keys, bracketed writes, restarts.

``AsyncCache`` runs the same flows as ``Cache`` (``_logic.py``); these check the parts
each driver does itself (its hit peek, its awaited store flows, the awaited connect
hook of a redis.asyncio pool) against a real Redis.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from typing import Any

import pytest

from cachewise import MISSING, MappingSource, MemoryStore, RedisStore, WriteThrough
from cachewise._flow import arun
from cachewise._types import Key
from cachewise.aio import AsyncCache, AsyncRedisStore
from cachewise.errors import InvalidKeyError, StoreError
from tests.integration.test_aio_redis import astore  # noqa: F401 - the fixture
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio


class Level(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize("path", ["c", "python"])
async def test_a_key_equal_to_a_cached_key_but_of_another_type_is_refused(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "python":
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("CACHEWISE_PURE_PYTHON", raising=False)
    cache = AsyncCache(MemoryStore())
    await cache.write(1, "one")
    await cache.write((1, "a"), "tuple")
    for key in (1.0, True, Level.ONE, (1.0, "a"), (True, "a")):
        with pytest.raises(InvalidKeyError):
            await cache.read(key)  # type: ignore[arg-type]
    assert await cache.read(1) == "one"
    assert await cache.read((1, "a")) == "tuple"
    await cache.close()


class GatedSource(MappingSource):
    """An async-looking source whose save waits for ``go`` (a write held mid-flight)."""

    def __init__(self) -> None:
        super().__init__({})
        self.saving = asyncio.Event()
        self.go = asyncio.Event()

    async def load(self, key: Key) -> Any:
        return super().load(key)

    async def save(self, key: Key, value: Any) -> None:  # type: ignore[override]
        self.saving.set()
        await self.go.wait()
        super().save(key, value)


async def test_async_write_through_is_bracketed_and_shares_the_stamp_with_sync_stores(
    astore: AsyncRedisStore,  # noqa: F811 - the fixture
    redis_url: str,
    unique_name: str,
) -> None:
    source = GatedSource()
    cache = AsyncCache(astore, source, write=WriteThrough())
    other = RedisStore(redis_url, namespace=unique_name)  # another (sync) process
    try:
        other.set("k", {"v": 1})
        assert await astore.get("k") == {"v": 1}
        writing = asyncio.get_running_loop().create_task(cache.write("k", {"v": 2}))
        await asyncio.wait_for(source.saving.wait(), 10)
        # Held: the old copy is gone, and a load that begins now may not store.
        assert other.get("k") is MISSING
        ticket = other.begin_load("k")
        assert other.end_load("k", ticket, {"v": 1}, None) is False
        source.go.set()
        await asyncio.wait_for(writing, 10)
        assert other.get("k") == {"v": 2}  # stored after the source, readable by sync
        assert other.stamp() == await _stamp(astore)
    finally:
        other.close()
        await cache.close()


async def _stamp(store: AsyncRedisStore) -> bytes:
    return await arun(store._stamp_flow())


async def test_an_async_store_starts_cold_after_redis_restarts_from_an_older_snapshot() -> None:
    server = RedisServer()
    server.start()
    store = AsyncRedisStore(server.url, namespace="shop")
    try:
        await store.set("k", "old")
        client: Any = store.client  # a redis.asyncio client
        await client.save()
        await store.set("k", "new")
        server.kill()
        server.start()  # loads the snapshot: k=old is back
        for _ in range(300):  # the first call may see the broken connection
            try:
                value = await store.get("k")
                break
            except StoreError:  # while redis-py reconnects
                await asyncio.sleep(0.05)
        assert value is MISSING  # cold, never the snapshot's value
        assert store.restarts == 1
    finally:
        await store.close()
        server.close()


async def test_an_async_write_back_takes_the_namespace_claim_as_a_sync_one_does(
    redis_url: str, unique_name: str
) -> None:
    """AsyncCache with an in-process WriteBack over Redis refuses a second process's too."""
    from cachewise import Cache, WriteBack

    cache = AsyncCache(
        AsyncRedisStore(redis_url, namespace=unique_name),
        MappingSource({}),
        write=WriteBack(flush_interval=3600),
    )
    code = (
        "import sys\n"
        "from cachewise import Cache, MappingSource, RedisStore, WriteBack\n"
        "Cache(RedisStore(sys.argv[1], namespace=sys.argv[2]), MappingSource(),\n"
        "      write=WriteBack(flush_interval=3600))\n"
    )
    try:
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, redis_url, unique_name,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(other.communicate(), 60)
        assert other.returncode != 0
        assert b"ConfigurationError" in err
        assert b"journal='redis'" in err
        await cache.write("k", {"v": 1})
    finally:
        await cache.close()
    again = Cache(  # closed: released, so the namespace is free again
        RedisStore(redis_url, namespace=unique_name),
        MappingSource({}),
        write=WriteBack(flush_interval=3600),
    )
    again.close()
