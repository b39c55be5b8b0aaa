"""The store conformance suite: every store (memory, Redis, tiered, yours) passes it.

Add a factory to ``STORE_FACTORIES``: a function of the pytest ``request`` returning a
``StoreUnderTest``: the store plus ``advance(seconds)``, which moves the store's clock
(a fake clock for MemoryStore, a real sleep for servers that keep their own time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from cachewise import MISSING, MemoryStore
from cachewise.stores.base import CompareAndSet, Store


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoreUnderTest:
    store: Store
    advance: Callable[[float], None]
    ttl_unit: float = 1.0
    """The smallest TTL the store honours well (Redis: milliseconds, but keep it sane)."""


def memory_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    clock = FakeClock()
    return StoreUnderTest(MemoryStore(max_entries=1000, clock=clock), clock.advance)


def memory_store_lfu(request: pytest.FixtureRequest) -> StoreUnderTest:
    clock = FakeClock()
    store = MemoryStore(max_entries=1000, eviction="lfu", clock=clock)
    return StoreUnderTest(store, clock.advance)


def memory_store_copying(request: pytest.FixtureRequest) -> StoreUnderTest:
    clock = FakeClock()
    return StoreUnderTest(MemoryStore(max_entries=1000, clock=clock, copy=True), clock.advance)


def _redis_namespace(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A Redis URL and a fresh namespace whose keys are all deleted after the test."""
    import redis

    url: str = request.getfixturevalue("redis_url")
    namespace: str = request.getfixturevalue("unique_name")

    def purge() -> None:
        client = redis.Redis.from_url(url)
        for wire in client.scan_iter(match=namespace + ":*", count=1000):
            client.unlink(wire)
        client.close()

    request.addfinalizer(purge)
    return url, namespace


def redis_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    from cachewise import RedisStore

    url, namespace = _redis_namespace(request)
    return StoreUnderTest(RedisStore(url, namespace=namespace), time.sleep, ttl_unit=0.2)


def tiered_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    from cachewise import RedisStore, TieredStore

    url, namespace = _redis_namespace(request)
    store = TieredStore(MemoryStore(max_entries=1000), RedisStore(url, namespace=namespace))
    return StoreUnderTest(store, time.sleep, ttl_unit=0.2)


def cluster_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    from cachewise import RedisStore

    url: str = request.getfixturevalue("redis_cluster_url")
    namespace: str = request.getfixturevalue("unique_name")
    return StoreUnderTest(RedisStore(url, namespace=namespace, cluster=True), time.sleep, 0.2)


def cluster_tiered_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    from cachewise import RedisStore, TieredStore

    url: str = request.getfixturevalue("redis_cluster_url")
    l2 = RedisStore(url, namespace=request.getfixturevalue("unique_name"), cluster=True)
    return StoreUnderTest(TieredStore(MemoryStore(max_entries=1000), l2), time.sleep, 0.2)


def memcached_store(request: pytest.FixtureRequest) -> StoreUnderTest:
    from cachewise import MemcachedStore

    url: str = request.getfixturevalue("memcached_url")
    store = MemcachedStore(url, namespace=request.getfixturevalue("unique_name"))
    return StoreUnderTest(store, time.sleep, ttl_unit=0.2)


STORE_FACTORIES: list[Callable[[pytest.FixtureRequest], StoreUnderTest]] = [
    memory_store,
    memory_store_lfu,
    memory_store_copying,
    redis_store,
    tiered_store,
    memcached_store,
    cluster_store,
    cluster_tiered_store,
]


_SERVER_MARKS = {
    "redis_store": pytest.mark.redis,
    "tiered_store": pytest.mark.redis,
    "memcached_store": pytest.mark.memcached,
    "cluster_store": pytest.mark.cluster,
    "cluster_tiered_store": pytest.mark.cluster,
}
"""Marks for the factories that need a server: ``-m memcached`` selects them, and under
CI=true their skips count as failures (tests/conftest.py)."""


@pytest.fixture(
    params=[
        pytest.param(f, id=f.__name__, marks=_SERVER_MARKS.get(f.__name__, ()))
        for f in STORE_FACTORIES
    ]
)
def sut(request: pytest.FixtureRequest) -> Iterator[StoreUnderTest]:
    under_test = request.param(request)
    yield under_test
    under_test.store.clear()
    under_test.store.close()


ROW: dict[str, Any] = {
    "id": 7,
    "name": "tea – 茶",
    "price": Decimal("3.10"),
    "ok": True,
    "none": None,
    "day": date(2026, 11, 21),
    "at": datetime(2026, 11, 21, 12, 30, tzinfo=timezone.utc),
    "raw": b"\x00\xff",
    "tags": ["a", "b"],
}


class TestStoreContract:
    def test_absent_key_is_missing(self, sut: StoreUnderTest) -> None:
        assert sut.store.get("absent") is MISSING

    def test_set_then_get_round_trips_a_row(self, sut: StoreUnderTest) -> None:
        sut.store.set(("product", 7), ROW)
        assert sut.store.get(("product", 7)) == ROW

    def test_none_is_a_value_not_a_miss(self, sut: StoreUnderTest) -> None:
        sut.store.set("n", None)
        assert sut.store.get("n") is None

    def test_keys_of_different_types_do_not_collide(self, sut: StoreUnderTest) -> None:
        sut.store.set(1, "int")
        sut.store.set("1", "str")
        sut.store.set(b"1", "bytes")
        sut.store.set((1,), "tuple")
        sut.store.set(("a:b", "c"), "left")
        sut.store.set(("a", "b:c"), "right")
        assert [sut.store.get(k) for k in (1, "1", b"1", (1,))] == ["int", "str", "bytes", "tuple"]
        assert sut.store.get(("a:b", "c")) == "left"
        assert sut.store.get(("a", "b:c")) == "right"

    def test_overwrite_replaces(self, sut: StoreUnderTest) -> None:
        sut.store.set("k", 1)
        sut.store.set("k", 2)
        assert sut.store.get("k") == 2

    def test_get_many_returns_only_found(self, sut: StoreUnderTest) -> None:
        sut.store.set_many({"a": 1, "b": 2})
        assert sut.store.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}

    def test_delete_reports_presence(self, sut: StoreUnderTest) -> None:
        sut.store.set("k", 1)
        assert sut.store.delete("k") is True
        assert sut.store.delete("k") is False
        assert sut.store.get("k") is MISSING

    def test_delete_many_counts_present(self, sut: StoreUnderTest) -> None:
        sut.store.set_many({"a": 1, "b": 2})
        assert sut.store.delete_many(["a", "b", "c"]) == 2
        assert sut.store.get_many(["a", "b"]) == {}

    def test_per_write_ttl_expires(self, sut: StoreUnderTest) -> None:
        sut.store.set("short", 1, ttl=sut.ttl_unit)
        sut.store.set("long", 2, ttl=100 * sut.ttl_unit)
        sut.store.set("forever", 3)
        sut.advance(sut.ttl_unit * 1.5)
        assert sut.store.get("short") is MISSING
        assert sut.store.get("long") == 2
        assert sut.store.get("forever") == 3

    def test_set_many_ttl_expires(self, sut: StoreUnderTest) -> None:
        sut.store.set_many({"a": 1, "b": 2}, ttl=sut.ttl_unit)
        sut.advance(sut.ttl_unit * 1.5)
        assert sut.store.get_many(["a", "b"]) == {}

    def test_clear_drops_everything(self, sut: StoreUnderTest) -> None:
        sut.store.set_many({"a": 1, "b": 2})
        sut.store.clear()
        assert sut.store.get_many(["a", "b"]) == {}

    def test_concurrent_writers_leave_one_of_their_values(self, sut: StoreUnderTest) -> None:
        def writer(n: int) -> None:
            for i in range(200):
                sut.store.set(("k", i % 10), n)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        values = sut.store.get_many([("k", i) for i in range(10)])
        assert len(values) == 10
        assert set(values.values()) <= {0, 1, 2, 3}


class TestCompareAndSet:
    """Every store with ``gets``/``cas``/``add`` (all four kinds here) behaves alike."""

    @pytest.fixture
    def cas_store(self, sut: StoreUnderTest) -> CompareAndSet:
        assert isinstance(sut.store, CompareAndSet)
        return sut.store

    def test_cas_stores_when_unchanged(self, cas_store: CompareAndSet) -> None:
        cas_store.set("k", 1)
        value, token = cas_store.gets("k")
        assert value == 1
        assert cas_store.cas("k", 2, token) is True
        assert cas_store.get("k") == 2

    def test_cas_refuses_after_a_write(self, cas_store: CompareAndSet) -> None:
        cas_store.set("k", 1)
        _, token = cas_store.gets("k")
        cas_store.set("k", 5)
        assert cas_store.cas("k", 2, token) is False
        assert cas_store.get("k") == 5

    def test_cas_refuses_after_a_delete(self, cas_store: CompareAndSet) -> None:
        cas_store.set("k", 1)
        _, token = cas_store.gets("k")
        cas_store.delete("k")
        assert cas_store.cas("k", 2, token) is False
        assert cas_store.get("k") is MISSING

    def test_cas_of_an_absent_key_stores_only_while_absent(self, cas_store: CompareAndSet) -> None:
        value, token = cas_store.gets("new")
        assert value is MISSING
        cas_store.set("new", "theirs")
        assert cas_store.cas("new", "mine", token) is False
        assert cas_store.get("new") == "theirs"
        _, token = cas_store.gets("other")
        assert cas_store.cas("other", "mine", token) is True
        assert cas_store.get("other") == "mine"

    def test_add_only_if_absent(self, cas_store: CompareAndSet) -> None:
        assert cas_store.add("a", 1) is True
        assert cas_store.add("a", 2) is False
        assert cas_store.get("a") == 1

    def test_cas_keep_ttl_keeps_the_expiry(self, sut: StoreUnderTest) -> None:
        store = sut.store
        assert isinstance(store, CompareAndSet)
        store.set("short", 1, ttl=sut.ttl_unit)
        _, token = store.gets("short")
        assert store.cas("short", 2, token, keep_ttl=True) is True
        sut.advance(sut.ttl_unit * 1.5)
        assert store.get("short") is MISSING

    def test_cas_with_ttl_replaces_the_expiry(self, sut: StoreUnderTest) -> None:
        store = sut.store
        assert isinstance(store, CompareAndSet)
        store.set("k", 1, ttl=sut.ttl_unit)
        _, token = store.gets("k")
        assert store.cas("k", 1, token, ttl=100 * sut.ttl_unit) is True
        sut.advance(sut.ttl_unit * 1.5)
        assert store.get("k") == 1

    def test_concurrent_increments_are_not_lost(self, cas_store: CompareAndSet) -> None:
        cas_store.set("n", 0)

        def bump() -> None:
            for _ in range(25):
                while True:
                    value, token = cas_store.gets("n")
                    if cas_store.cas("n", value + 1, token, keep_ttl=True):
                        break

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert cas_store.get("n") == 100

    def test_gets_and_cas_copy_in_a_copying_store(self, cas_store: CompareAndSet) -> None:
        cas_store.set("k", {"items": [1]})
        value, token = cas_store.gets("k")
        if getattr(cas_store, "copies", True) is False:  # MemoryStore(copy=False): references
            assert value is cas_store.get("k")
            return
        value["items"].append(2)  # a copy: the cached value is unchanged
        assert cas_store.get("k") == {"items": [1]}
        new = {"items": [1, 3]}
        assert cas_store.cas("k", new, token) is True
        new["items"].append(4)
        assert cas_store.get("k") == {"items": [1, 3]}
