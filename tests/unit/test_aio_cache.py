"""AsyncCache without servers: same semantics as Cache, single flight across tasks, write-back."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachewise import (
    Cache,
    CacheAside,
    MappingSource,
    MemoryStore,
    ReadThrough,
    RedisStore,
    SQLSource,
    WriteAround,
    WriteBack,
    WriteThrough,
)
from cachewise.aio import AsyncCache
from cachewise.errors import (
    CacheFullError,
    ClosedError,
    ConfigurationError,
    FlushError,
    InvalidKeyError,
)
from cachewise.writeback import journal as journal_mod
from tests.helpers import FlakySource

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for ``condition`` with a generous deadline (never an assertion on time)."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


# -- the same strategies: one scripted workload, both drivers, equal outcomes ---------

POLICIES: list[Any] = [
    None,
    WriteThrough(),
    WriteAround(),
    WriteAround(invalidate=False),
    WriteBack(flush_interval=3600),
]


def _script() -> list[tuple[str, tuple[Any, ...]]]:
    return [
        ("read", (1,)),
        ("read", (1,)),
        ("write", (2, {"v": 2})),
        ("read", (2,)),
        ("write", (2, {"v": 3})),
        ("read_many", ([1, 2, 3, 4],)),
        ("write_many", ({5: {"v": 5}, 6: {"v": 6}},)),
        ("delete", (1,)),
        ("read", (1,)),
        ("invalidate", (5,)),
        ("invalidate_many", ([6, 7],)),
        ("read", (6,)),
        ("flush", ()),
        ("read", (2,)),
    ]


@pytest.mark.parametrize("write", POLICIES, ids=repr)
async def test_every_write_policy_matches_the_sync_cache(write: Any) -> None:
    data = {1: {"v": 1}, 3: {"v": 30}, 6: {"v": 60}}
    sync_source, async_source = MappingSource(dict(data)), MappingSource(dict(data))
    read = ReadThrough() if write is not None else CacheAside()
    sync = Cache(MemoryStore(), sync_source if write else None, read=read, write=write)
    aio = AsyncCache(MemoryStore(), async_source if write else None, read=read, write=write)
    for op, args in _script():
        if op == "flush" or write is not None or op not in {"read_many"}:
            expected = getattr(sync, op)(*args)
            got = await getattr(aio, op)(*args)
            assert got == expected, (op, args)

    def untimed(stats: Any) -> Any:  # the lag is measured by each cache's own clock
        return dataclasses.replace(stats, lag_p50=0.0, lag_p99=0.0, lag_max=0.0)

    assert untimed(aio.stats) == untimed(sync.stats)
    assert async_source.data == sync_source.data
    assert aio.store._data == sync.store._data  # type: ignore[attr-defined]
    sync.close()
    await aio.close()


async def test_cache_aside_loader_may_be_async_or_plain() -> None:
    cache = AsyncCache(MemoryStore())

    async def slow(key: Any) -> str:
        await asyncio.sleep(0)
        return f"async {key}"

    assert await cache.read("a", loader=slow) == "async a"
    assert await cache.read("b", loader=lambda key: f"plain {key!s}") == "plain b"
    assert await cache.read("a") == "async a"
    assert cache.stats.loads == 2
    assert cache.stats.hits == 1


# -- single flight across tasks ---------------------------------------------------------


class GatedSource(MappingSource):
    """An async source whose loads wait on a gate, counting them."""

    def __init__(self, data: dict[Any, Any]) -> None:
        super().__init__(data)
        self.gate = asyncio.Event()
        self.loads = 0
        self.started = asyncio.Event()

    async def load(self, key: Any) -> Any:
        self.loads += 1
        self.started.set()
        await self.gate.wait()
        return super().load(key)

    async def load_many(self, keys: Any) -> dict[Any, Any]:  # type: ignore[override]
        return super().load_many(keys)

    async def save(self, key: Any, value: Any) -> None:  # type: ignore[override]
        super().save(key, value)

    async def save_many(self, items: Any) -> None:  # type: ignore[override]
        super().save_many(items)

    async def remove(self, key: Any) -> None:  # type: ignore[override]
        super().remove(key)

    async def remove_many(self, keys: Any) -> None:  # type: ignore[override]
        super().remove_many(keys)


async def test_a_thousand_tasks_missing_one_key_load_it_once() -> None:
    source = GatedSource({"hot": 42})
    cache = AsyncCache(MemoryStore(), source)
    tasks = [asyncio.create_task(cache.read("hot")) for _ in range(1000)]
    await source.started.wait()
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*tasks) == [42] * 1000
    assert source.loads == 1
    assert cache.stats.loads == 1
    assert cache.stats.misses == 1000


async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    source = GatedSource({"k": "v"})
    cache = AsyncCache(MemoryStore(), source)
    leader = asyncio.create_task(cache.read("k"))
    await source.started.wait()
    waiters = [asyncio.create_task(cache.read("k")) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    source.gate.set()
    assert await leader == "v"
    assert await waiters[1] == "v"
    assert await waiters[2] == "v"
    assert waiters[0].cancelled()
    assert source.loads == 1


async def test_a_cancelled_leader_hands_the_load_over() -> None:
    source = GatedSource({"k": "v"})
    cache = AsyncCache(MemoryStore(), source)
    leader = asyncio.create_task(cache.read("k"))
    await source.started.wait()
    waiters = [asyncio.create_task(cache.read("k")) for _ in range(5)]
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await until(lambda: source.loads == 2)  # one waiter leads a new load
    source.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert results == ["v"] * 5
    assert source.loads == 2
    assert "k" not in cache._inflight


async def test_a_failed_load_fails_every_waiter_and_is_not_cached() -> None:
    calls = []

    async def broken(key: Any) -> Any:
        calls.append(key)
        await asyncio.sleep(0.01)
        raise RuntimeError("database said no")

    cache = AsyncCache(MemoryStore())
    results = await asyncio.gather(
        *(cache.read("k", loader=broken) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == ["k"]
    assert await cache.read("k", loader=lambda key: "ok") == "ok"


async def test_the_cache_aside_race_is_closed() -> None:
    """A slow load of the old row never overwrites a write that finished meanwhile."""
    source = GatedSource({"k": "old"})
    cache = AsyncCache(MemoryStore(), source)
    reader = asyncio.create_task(cache.read("k"))
    await source.started.wait()
    await cache.write("k", "new")  # write-through: source and cache are "new"
    source.data["k"] = "old"  # what the slow read saw before the write (its snapshot)
    source.gate.set()
    await reader
    assert await cache.read("k") == "new"


async def test_read_many_joins_loads_in_flight() -> None:
    source = GatedSource({1: "a", 2: "b"})
    cache = AsyncCache(MemoryStore(), source)
    single = asyncio.create_task(cache.read(1))
    await source.started.wait()
    batch = asyncio.create_task(cache.read_many([1, 2]))
    await asyncio.sleep(0.01)
    source.gate.set()
    assert await single == "a"
    assert await batch == {1: "a", 2: "b"}
    assert source.loads == 1  # key 2 came from the batch load, key 1 from the single one


# -- refresh-ahead ---------------------------------------------------------------------


async def test_refresh_ahead_reloads_a_hot_key_in_the_background() -> None:
    clock = Clock()
    source = MappingSource({"k": 1})
    cache = AsyncCache(MemoryStore(ttl=60, clock=clock), source, read=ReadThrough(refresh_ahead=10))
    assert await cache.read("k") == 1
    source.data["k"] = 2
    clock.now += 45  # 15 s left: no refresh yet
    assert await cache.read("k") == 1
    assert cache.stats.loads == 1
    clock.now += 10  # 5 s left: a hit that reloads in the background
    assert await cache.read("k") == 1
    await until(lambda: cache.stats.loads == 2)
    await until(lambda: cache.store.get("k") == 2)
    assert await cache.read("k") == 2
    await cache.close()


# -- write-back ------------------------------------------------------------------------


async def test_write_back_coalesces_and_flushes_in_one_batch() -> None:
    source = FlakySource()
    cache = AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    for n in range(5):
        await cache.write("k", n)
    await cache.write("j", "x")
    assert await cache.read("k") == 4
    assert cache.stats.dirty == 2
    assert cache.stats.coalesced == 4
    assert source.data == {}
    assert await cache.flush() == 2
    assert source.data == {"k": 4, "j": "x"}
    assert source.calls == {"save_many": 1}
    assert cache.stats.flushes == 1
    await cache.close()


async def test_the_flusher_task_flushes_by_itself() -> None:
    source = MappingSource()
    cache = AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=0.01))
    await cache.write("k", "v")
    await until(lambda: source.data.get("k") == "v")
    await cache.close()


async def test_dirty_reads_survive_eviction_and_deletes_are_tombstones() -> None:
    source = MappingSource({"gone": 1})
    cache = AsyncCache(MemoryStore(max_entries=2), source, write=WriteBack(flush_interval=3600))
    await cache.delete("gone")
    assert await cache.read("gone") is None
    assert source.data == {"gone": 1}
    await cache.write("a", 1)
    await cache.write("b", 2)
    await cache.write("c", 3)  # evicts a dirty key: flushed to make room
    await until(lambda: "a" in source.data or "b" in source.data)
    assert await cache.read("a") == 1
    await cache.close()
    assert source.data == {"a": 1, "b": 2, "c": 3}


async def test_a_failed_flush_keeps_entries_dirty_and_raises_promptly() -> None:
    source = FlakySource()
    cache = AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    await cache.write("k", "v")
    source.down = True
    with pytest.raises(FlushError):
        await cache.flush()
    assert cache.stats.dirty == 1
    assert cache.stats.flush_failures == 1
    source.down = False
    assert await cache.flush() == 1
    assert source.data == {"k": "v"}
    await cache.close()


async def test_backpressure_raise_and_block() -> None:
    source = FlakySource()
    raising = AsyncCache(
        MemoryStore(), source, write=WriteBack(flush_interval=3600, max_dirty=2, on_full="raise")
    )
    await raising.write(1, 1)
    await raising.write(2, 2)
    with pytest.raises(CacheFullError):
        await raising.write(3, 3)
    await raising.write(2, 22)  # an already dirty key always fits
    await raising.close()

    blocking = AsyncCache(
        MemoryStore(),
        MappingSource(),
        write=WriteBack(flush_interval=3600, max_dirty=1, block_timeout=10),
    )
    await blocking.write(1, 1)
    await blocking.write(2, 2)  # waits for the flusher task to make room
    assert blocking.stats.dirty <= 1
    await blocking.close()


async def test_close_flushes_and_then_refuses_writes() -> None:
    source = MappingSource()
    async with AsyncCache(MemoryStore(), source, write=WriteBack(flush_interval=3600)) as cache:
        await cache.write("k", "v")
    assert source.data == {"k": "v"}
    with pytest.raises(ClosedError):
        await cache.write("k", "w")


async def test_journal_fsync_runs_off_the_event_loop(tmp_path: Path) -> None:
    """With fsync='always', every append and fsync happens in a worker thread."""
    loop_thread = threading.get_ident()
    threads: list[tuple[str, int]] = []

    def record(point: str) -> None:
        threads.append((point, threading.get_ident()))

    journal_mod.fault_hook = record
    try:
        cache = AsyncCache(
            MemoryStore(),
            MappingSource(),
            write=WriteBack(flush_interval=3600, journal=tmp_path / "j", fsync="always"),
        )
        await asyncio.gather(*(cache.write(n, {"n": n}) for n in range(1000)))
        await cache.close()
    finally:
        journal_mod.fault_hook = None
    synced = [ident for point, ident in threads if point == "append.synced"]
    assert synced, "the journal synced"
    assert loop_thread not in {ident for _, ident in threads}


@pytest.mark.filterwarnings("ignore::cachewise.errors.BlockingCallWarning")  # the sync "process"
async def test_an_async_journal_is_replayed_by_a_sync_cache(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    source: dict[Any, Any] = {}
    down = FlakySource(source)
    down.down = True
    cache = AsyncCache(
        MemoryStore(), down, write=WriteBack(flush_interval=3600, journal=journal, fsync="always")
    )
    await cache.write("a", {"x": 1})
    await cache.write("b", {"x": 2})
    await cache.delete("a")
    with pytest.raises(FlushError):
        await cache.close()  # the source is down: the writes stay in the journal
    sync = Cache(MemoryStore(), MappingSource(source), write=WriteBack(journal=journal))
    assert sync.stats.dirty == 2
    assert sync.flush() == 2
    assert source == {"b": {"x": 2}}
    sync.close()


@pytest.mark.filterwarnings("ignore::cachewise.errors.BlockingCallWarning")  # the sync "process"
async def test_a_sync_journal_is_replayed_by_an_async_cache(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    down = FlakySource()
    down.down = True
    sync = Cache(MemoryStore(), down, write=WriteBack(flush_interval=3600, journal=journal))
    sync.write("k", [1, "two"])
    with pytest.raises(FlushError):
        sync.close()
    source = MappingSource()
    cache = AsyncCache(MemoryStore(), source, write=WriteBack(journal=journal))
    assert await cache.read("k") == [1, "two"]  # read-your-writes from the replayed journal
    assert await cache.flush() == 1
    assert source.data == {"k": [1, "two"]}
    await cache.close()


# -- bad input and configuration --------------------------------------------------------


async def test_bad_keys_raise_before_any_change() -> None:
    source = FlakySource()
    cache = AsyncCache(MemoryStore(), source)
    for bad in (1.5, None, [1], True):
        with pytest.raises(InvalidKeyError):
            await cache.read(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError):
            await cache.write(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await cache.write_many({1: 1, 2.5: 2})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError):
        await cache.write(1, 1, ttl=-1)
    assert source.calls == {}
    assert cache.stats.misses == 0


def test_blocking_parts_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT)"))
    engine.dispose()
    with SQLSource(sqlite_url) as source, pytest.raises(ConfigurationError, match="AsyncSQLSource"):
        AsyncCache(MemoryStore(), source)
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="AsyncRedisStore"):
        AsyncCache(store)
    store.close()
    with pytest.raises(ConfigurationError, match="ReadThrough needs a source"):
        AsyncCache(MemoryStore(), read=ReadThrough())


# -- @cached on AsyncCache --------------------------------------------------------------


async def test_cached_async_function_single_flight_and_invalidate() -> None:
    cache = AsyncCache(MemoryStore())
    calls: list[int] = []
    gate = asyncio.Event()

    @cache.cached(ttl=60)
    async def price(product: int, *, currency: str = "EUR") -> str:
        calls.append(product)
        await gate.wait()
        return f"{product} {currency}"

    tasks = [asyncio.create_task(price(7)) for _ in range(50)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*tasks) == ["7 EUR"] * 50
    assert await price(7, currency="USD") == "7 USD"
    assert calls == [7, 7]
    assert await price.invalidate(7) is True
    assert await price(7) == "7 EUR"
    assert calls == [7, 7, 7]


async def test_cached_refuses_sync_functions_and_caches_with_sources() -> None:
    cache = AsyncCache(MemoryStore())

    def plain(n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match="not async"):
        cache.cached()(plain)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="source"):
        AsyncCache(MemoryStore(), MappingSource()).cached()
