"""The public API as users write it: mypy --strict checks this file, pytest runs it."""

from __future__ import annotations

from typing import Any

import pytest

import cachewise
from cachewise import (
    MISSING,
    Cache,
    CacheAside,
    MappingSource,
    MemoryStore,
    ReadThrough,
    Stats,
    WriteAround,
    WriteBack,
    WriteThrough,
    errors,
)
from cachewise.policies import ReadPolicy, WritePolicy


def test_compose_every_documented_pair() -> None:
    reads: list[ReadPolicy] = [CacheAside(), ReadThrough(ttl=30)]
    writes: list[WritePolicy | None] = [
        None,
        WriteThrough(),
        WriteAround(invalidate=False),
        WriteBack(flush_interval=0.5, max_batch=100, on_full="raise"),
    ]
    for read in reads:
        for write in writes:
            source = MappingSource({1: {"id": 1}})
            with Cache(MemoryStore(max_entries=10), source, read=read, write=write) as cache:
                row: dict[str, Any] | None = cache.read(1, loader=source.load)
                assert row == {"id": 1}
                if write is not None:
                    cache.write(2, {"id": 2}, ttl=5.0)
                    cache.write_many({3: {"id": 3}})
                    cache.delete(3)
                    written: int = cache.flush()
                    assert written >= 0
                found: dict[Any, Any] = cache.read_many([1, 2, 3])
                assert 1 in found
                stats: Stats = cache.stats
                assert stats.hits + stats.misses >= 1


def test_errors_are_one_tree() -> None:
    with pytest.raises(errors.CachewiseError) as info:
        MemoryStore(max_entries=0)
    assert isinstance(info.value, errors.ConfigurationError)
    assert isinstance(info.value, ValueError)


def test_missing_is_falsy_and_distinct_from_none() -> None:
    assert not MISSING
    assert MISSING is not None
    assert MemoryStore().get("absent") is MISSING


def test_all_names_are_exported() -> None:
    for name in cachewise.__all__:
        assert getattr(cachewise, name) is not None
    design = {
        "Cache",
        "MemoryStore",
        "RedisStore",
        "TieredStore",
        "Source",
        "MappingSource",
        "SQLSource",
        "MISSING",
        "CacheAside",
        "ReadThrough",
        "WriteThrough",
        "WriteBack",
        "WriteAround",
        "Stats",
        "Aggregate",
        "Every",
        "Cron",
        "OnChange",
        "connect",
        "pool_stats",
        "errors",
    }
    assert design <= set(cachewise.__all__)


def test_cached_keeps_the_signature() -> None:
    cache = Cache(MemoryStore())

    @cache.cached(ttl=10)
    def label(product: int, *, currency: str = "EUR") -> str:
        return f"{product} {currency}"

    text: str = label(3, currency="USD")  # mypy checks the wrapped signature (ParamSpec)
    dropped: bool = label.invalidate(3, currency="USD")
    assert (text, dropped) == ("3 USD", True)


@pytest.mark.anyio
async def test_async_cache_as_documented() -> None:
    from cachewise.aio import AsyncCache

    cache = AsyncCache(MemoryStore(ttl=60), MappingSource({1: {"id": 1}}), read=ReadThrough())
    row: dict[str, Any] | None = await cache.read(1)
    stats: Stats = cache.stats
    assert row == {"id": 1}
    assert stats.loads == 1
    await cache.close()

    memo = AsyncCache(MemoryStore())

    @memo.cached()
    async def double(n: int) -> int:
        return 2 * n

    result: int = await double(4)
    assert result == 8
    assert await double.invalidate(4)
