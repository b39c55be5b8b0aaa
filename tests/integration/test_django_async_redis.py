"""The Django backend's native async methods on redis:// (issue 14): AsyncRedisStore, no thread.

Each ``a*`` method awaits the very flow its sync twin runs, so sync and async callers
share every entry and ``aadd``/``atouch``/``aincr`` keep their atomicity; these tests
drive Django's async cache API on a real Redis and check it against the sync API.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from tests.django_app import settings as test_settings

test_settings.configure()

from django.core.cache.backends.base import BaseCache  # noqa: E402

from cachewise.contrib.django import CacheBackend  # noqa: E402

NATIVE = [
    "aadd",
    "aget",
    "aset",
    "adelete",
    "aget_many",
    "aset_many",
    "adelete_many",
    "ahas_key",
    "aincr",
    "atouch",
    "aclear",
]


@pytest.fixture
def cache(redis_url: str, unique_name: str) -> Iterator[CacheBackend]:
    found = CacheBackend(redis_url, {"OPTIONS": {"namespace": unique_name}})
    yield found
    found.clear()


def test_the_async_methods_are_native_not_djangos_thread_fallback(cache: CacheBackend) -> None:
    for name in NATIVE:
        method = getattr(cache, name)
        assert getattr(method, "__func__", None) is not getattr(BaseCache, name), name
        assert "native" in method.__qualname__, name
    seen: list[int] = []

    async def run() -> None:
        store = cache.store  # the sync store: every call of it from here would be a bug
        original = store.get_many

        def refuse(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - a failure path
            seen.append(threading.get_ident())
            return original(*args, **kwargs)

        store.get_many = refuse  # type: ignore[method-assign]
        try:
            await cache.aset_many({"a": 1, "b": 2})
            assert await cache.aget_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        finally:
            del store.get_many

    asyncio.run(run())
    assert seen == []


def test_sync_and_async_share_entries_and_meanings(cache: CacheBackend) -> None:
    async def run() -> None:
        await cache.aset("k", {"v": [1, 2]})
        assert cache.get("k") == {"v": [1, 2]}
        cache.set("s", "from sync")
        assert await cache.aget("s") == "from sync"
        assert await cache.aget("absent", "dflt") == "dflt"
        assert await cache.ahas_key("k") is True
        assert await cache.ahas_key("absent") is False
        # add: only when absent; timeout 0 stores nothing but says whether it was absent
        assert await cache.aadd("k", "other") is False
        assert await cache.aadd("new", "v") is True
        assert cache.get("new") == "v"
        assert await cache.aadd("zero", "v", timeout=0) is True
        assert cache.get("zero") is None
        # set with timeout 0 removes; None keeps for ever
        await cache.aset("k", 1, timeout=0)
        assert cache.get("k") is None
        await cache.aset("forever", 1, timeout=None)
        assert cache.store.ttl_left(cache.make_key("forever")) is None  # type: ignore[attr-defined]
        # touch
        assert await cache.atouch("forever", 100) is True
        left = cache.store.ttl_left(cache.make_key("forever"))  # type: ignore[attr-defined]
        assert left is not None
        assert 0 < left <= 100
        assert await cache.atouch("absent") is False
        assert await cache.atouch("forever", 0) is True
        assert cache.get("forever") is None
        # incr keeps the expiry; errors as the sync incr
        cache.set("n", 1, timeout=100)
        assert await cache.aincr("n", 5) == 6
        assert await cache.adecr("n", 2) == 4
        left = cache.store.ttl_left(cache.make_key("n"))  # type: ignore[attr-defined]
        assert left is not None
        assert 0 < left <= 100
        with pytest.raises(ValueError, match="not found"):
            await cache.aincr("absent")
        cache.set("text", "x")
        with pytest.raises(TypeError):
            await cache.aincr("text")
        # batches, versions, get_or_set (Django composes those of the native ones)
        assert await cache.aset_many({"a": 1, "b": 2}, version=2) == []
        assert cache.get_many(["a", "b"], version=2) == {"a": 1, "b": 2}
        assert await cache.aget_many(["a", "b", "c"], version=2) == {"a": 1, "b": 2}
        await cache.adelete_many(["a", "c"], version=2)
        assert cache.get_many(["a", "b"], version=2) == {"b": 2}
        assert await cache.adelete("b", version=2) is True
        assert await cache.adelete("b", version=2) is False
        assert await cache.aget_or_set("gos", lambda: 7) == 7
        assert await cache.aget_or_set("gos", 8) == 7
        assert await cache.aincr_version("gos") == 2
        assert cache.get("gos", version=2) == 7
        await cache.aclear()
        assert cache.get("n") is None

    asyncio.run(run())


def test_aclear_drops_only_this_namespace(redis_url: str, cache: CacheBackend) -> None:
    other = CacheBackend(redis_url, {"OPTIONS": {"namespace": cache.spec.namespace + "x"}})
    try:
        other.set("k", "kept")
        cache.set("k", "dropped")
        asyncio.run(cache.aclear())
        assert cache.get("k") is None
        assert other.get("k") == "kept"
    finally:
        other.clear()


def test_aincr_and_aadd_are_atomic_across_tasks_and_threads(cache: CacheBackend) -> None:
    cache.set("n", 0)

    def sync_bumps() -> None:
        for _ in range(50):
            cache.incr("n")

    async def run() -> list[bool]:
        await asyncio.gather(*(cache.aincr("n") for _ in range(100)))
        added: list[bool] = await asyncio.gather(*(cache.aadd("once", i) for i in range(20)))
        return added

    thread = threading.Thread(target=sync_bumps)
    thread.start()
    added = asyncio.run(run())
    thread.join()
    assert cache.get("n") == 150
    assert added.count(True) == 1


def test_each_event_loop_gets_its_own_store_closed_with_the_loop(cache: CacheBackend) -> None:
    async def roundtrip(value: int) -> Any:
        await cache.aset("k", value)
        return await cache.aget("k")

    # Each asyncio.run is a new loop: a store opened in the previous one is closed with
    # it (an unclosed redis.asyncio connection would warn, and warnings fail tests).
    for value in range(3):
        assert asyncio.run(roundtrip(value)) == value
    gc.collect()

    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(roundtrip(9))))
    thread.start()
    thread.join()
    assert results == [9]
    assert cache.get("k") == 9
