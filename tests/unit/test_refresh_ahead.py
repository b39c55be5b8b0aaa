"""Hot keys reloaded before they expire: refresh-ahead and XFetch early recomputation."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from cachewise import MISSING, Cache, MemoryStore, ReadThrough
from cachewise.errors import ConfigurationError
from tests.helpers import FlakySource
from tests.unit.test_store_conformance import FakeClock


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_hit_near_expiry_reloads_in_the_background() -> None:
    clock = FakeClock()
    source = FlakySource({"hot": 1})
    read = ReadThrough(ttl=60, refresh_ahead=10)
    with Cache(MemoryStore(clock=clock), source, read=read) as cache:
        assert cache.read("hot") == 1
        clock.advance(45)  # 15 s left: outside the window
        assert cache.read("hot") == 1
        assert source.calls == {"load": 1}
        source.data["hot"] = 2
        clock.advance(6)  # 9 s left: inside the window
        assert cache.read("hot") == 1  # served at once, the reload runs behind
        _wait_for(lambda: cache.store.get("hot") == 2)
        assert source.calls == {"load": 2}
        clock.advance(30)  # the refreshed entry has a fresh TTL: still a hit
        assert cache.read("hot") == 2
        assert cache.stats.misses == 1


def test_early_recompute_reloads_only_close_to_expiry() -> None:
    clock = FakeClock()
    source = FlakySource({"hot": 1})
    read = ReadThrough(ttl=60, early_recompute=1.0)
    with Cache(MemoryStore(clock=clock), source, read=read) as cache:
        cache.read("hot")
        cache._load_seconds = 0.5  # XFetch's delta: loads take half a second
        for _ in range(200):  # 60 s left >> delta: reloading early is (almost) impossible
            cache.read("hot")
        assert source.calls == {"load": 1}
        clock.advance(59.99)  # 10 ms left << delta: a reload is (almost) certain
        for _ in range(20):
            cache.read("hot")
        _wait_for(lambda: source.calls.get("load", 0) >= 2)


class DictStore:
    """The smallest Store: a dict, no TTLs (so no ``ttl_left``)."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self.data.get(key, MISSING)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        return {k: self.data[k] for k in keys if k in self.data}

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        self.data[key] = value

    def set_many(self, items: Mapping[Any, Any], ttl: float | None = None) -> None:
        self.data.update(items)

    def delete(self, key: Any) -> bool:
        return self.data.pop(key, MISSING) is not MISSING

    def delete_many(self, keys: Iterable[Any]) -> int:
        return sum(self.delete(k) for k in keys)

    def clear(self) -> None:
        self.data.clear()

    def close(self) -> None:
        pass


def test_refresh_needs_a_store_that_knows_ttls() -> None:
    assert isinstance(Cache(DictStore(), FlakySource()).store, DictStore)
    with pytest.raises(ConfigurationError):
        Cache(DictStore(), FlakySource(), read=ReadThrough(refresh_ahead=1))
    with pytest.raises(ConfigurationError):
        ReadThrough(refresh_ahead=-1)


def test_an_unhashable_key_is_an_invalid_key_error() -> None:
    from cachewise.errors import InvalidKeyError

    cache = Cache(MemoryStore(), FlakySource(), read=ReadThrough(refresh_ahead=1))
    with pytest.raises(InvalidKeyError):
        cache.read(["not", "hashable"])  # type: ignore[arg-type]
    cache.close()
