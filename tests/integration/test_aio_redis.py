"""cachewise.aio on the real Redis: one layout with the sync store, invalidations both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cachewise import (
    MISSING,
    Cache,
    MappingSource,
    MemoryStore,
    ReadThrough,
    RedisStore,
    TieredStore,
    WriteBack,
)
from cachewise.aio import AsyncCache, AsyncRedisBus, AsyncRedisStore, AsyncTieredStore
from cachewise.errors import InvalidKeyError, StoreError
from cachewise.invalidation import Invalidation, RedisBus

pytestmark = [
    pytest.mark.anyio,
    # The sync caches here stand in for other processes; in one test they share the loop.
    pytest.mark.filterwarnings("ignore::cachewise.errors.BlockingCallWarning"),
]


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
async def astore(redis_url: str, unique_name: str) -> AsyncIterator[AsyncRedisStore]:
    store = AsyncRedisStore(redis_url, namespace=unique_name, ttl=60)
    yield store
    if not store._closed:
        await store.clear()
        await store.close()


async def test_sync_and_async_stores_share_values_and_versions(
    astore: AsyncRedisStore, redis_url: str, unique_name: str
) -> None:
    sync = RedisStore(redis_url, namespace=unique_name)
    try:
        key = ("a:b", "c", 1, b"\x00")
        await astore.set(key, {"price": 3, "tags": ["x"]})
        assert sync.get(key) == {"price": 3, "tags": ["x"]}
        sync.set_many({1: "one", "1": "string one"})
        assert await astore.get_many([1, "1", 2]) == {1: "one", "1": "string one"}
        assert astore.wire_key(key) == sync.wire_key(key)
        ticket = await astore.begin_load("slow")
        sync.set("slow", "written meanwhile")  # bumps the version: the load must not store
        assert await astore.end_load("slow", ticket, "stale", None) is False
        assert sync.get("slow") == "written meanwhile"
        assert await astore.delete_many([1, "1", 3]) == 2
        assert (await astore.ttl_left(key) or 0) > 0
    finally:
        sync.close()


async def test_read_through_across_a_sync_and_an_async_process_loads_once(
    astore: AsyncRedisStore, redis_url: str, unique_name: str
) -> None:
    source = MappingSource({"k": "v"})
    loads = {"n": 0}

    async def load(key: Any) -> Any:
        loads["n"] += 1
        await asyncio.sleep(0.05)
        return source.load(key)

    cache = AsyncCache(astore)
    results = await asyncio.gather(*(cache.read("k", loader=load) for _ in range(100)))
    assert results == ["v"] * 100
    assert loads["n"] == 1
    sync = Cache(RedisStore(redis_url, namespace=unique_name), MappingSource({}))
    assert sync.read("k") == "v"  # filled by the async process, hit here
    assert sync.stats.loads == 0
    sync.close()


async def test_store_errors_never_name_the_password(unique_name: str) -> None:
    store = AsyncRedisStore("redis://:s3cret-pw@127.0.0.1:1/0", namespace=unique_name, timeout=0.5)
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(StoreError) as caught:
        await store.get("k")
    error: BaseException | None = caught.value
    while error is not None:
        assert "s3cret-pw" not in f"{error} {error.args!r}"
        error = error.__cause__ or error.__context__
    await store.close()


async def test_bad_key_raises_before_redis_is_touched(astore: AsyncRedisStore) -> None:
    cache = AsyncCache(astore)
    with pytest.raises(InvalidKeyError):
        await cache.write(1.5, "x")  # type: ignore[arg-type]


async def test_tiered_sync_and_async_processes_invalidate_each_other(
    redis_url: str, unique_name: str
) -> None:
    l2 = AsyncRedisStore(redis_url, namespace=unique_name)
    atiered = AsyncTieredStore(MemoryStore(), l2)
    source = MappingSource({"k": "v1"})
    cache = AsyncCache(atiered, source, read=ReadThrough())
    assert await atiered.wait_live(5)
    assert await cache.read("k") == "v1"
    assert atiered.l1.get("k") == "v1"
    sync = TieredStore(MemoryStore(), RedisStore(redis_url, namespace=unique_name))
    try:
        assert sync.get("k") == "v1"
        sync.set("k", "v2")  # the async process drops its L1 copy
        await until(lambda: "k" not in atiered.l1._data)
        assert await cache.read("k") == "v2"
        await cache.write("k", "v3")  # and the sync process drops its copy
        await until(lambda: "k" not in sync.l1._data)
        assert sync.get("k") == "v3"
        assert source.data["k"] == "v3"
    finally:
        sync.clear()
        sync.close()
        await cache.close()


async def test_async_redis_bus_talks_to_the_sync_bus(redis_url: str, unique_name: str) -> None:
    channel = f"{unique_name}:bus"
    seen_async: list[Invalidation] = []
    seen_sync: list[Invalidation] = []
    abus = AsyncRedisBus(redis_url, channel)
    abus.subscribe(seen_async.append)
    assert await abus.wait_live(5)
    bus = RedisBus(redis_url, channel)
    bus.subscribe(seen_sync.append)
    try:
        bus.publish([1, ("a", b"b")], origin="sync")
        await until(lambda: any(m.origin == "sync" for m in seen_async))
        await abus.publish(["x"], origin="async")
        await until(lambda: any(m.origin == "async" for m in seen_sync))
        message = next(m for m in seen_async if m.origin == "sync")
        assert message.keys == (1, ("a", b"b"))
    finally:
        bus.close()
        await abus.close()


async def test_shared_write_back_between_an_async_and_a_sync_process(
    redis_url: str, unique_name: str
) -> None:
    source = MappingSource()
    policy = WriteBack(journal="redis", flush_interval=3600)
    cache = AsyncCache(AsyncRedisStore(redis_url, namespace=unique_name), source, write=policy)
    other = Cache(RedisStore(redis_url, namespace=unique_name), source, write=policy)
    try:
        await cache.write("a", {"n": 1})
        await cache.write("a", {"n": 2})
        await cache.delete("b")
        assert cache.stats.dirty == 2
        assert other.dirty_keys() == ["a", "b"]  # one dirty set in Redis
        assert other.read("a") == {"n": 2}
        assert other.flush() == 2  # the sync process flushes what the async one wrote
        assert source.data == {"a": {"n": 2}}
        other.write("c", 3)
        assert await cache.read("c") == 3
        assert await cache.flush() == 1
        assert source.data["c"] == 3
    finally:
        other.store.clear()
        other.close()
        await cache.close()


async def test_async_compare_and_set_is_the_sync_one(
    astore: AsyncRedisStore, redis_url: str, unique_name: str
) -> None:
    sync = RedisStore(redis_url, namespace=unique_name)
    try:
        assert await astore.add("k", 1) is True
        assert await astore.add("k", 2) is False
        assert sync.add("k", 3) is False
        value, token = await astore.gets("k")
        assert value == 1
        sync.set("k", 5)  # a write in between: the token is stale
        assert await astore.cas("k", 6, token) is False
        value, token = await astore.gets("k")
        assert await astore.cas("k", 7, token, keep_ttl=True) is True
        assert sync.get("k") == 7
        assert await astore.gets("absent") == (MISSING, (b"", False))
        _, sync_token = sync.gets("k")
        assert await astore.cas("k", 8, sync_token) is True  # tokens cross drivers
        assert sync.get("k") == 8
    finally:
        sync.close()
