"""MemoryStore beyond the shared contract: bounds, eviction, TTL bookkeeping, bad input."""

from __future__ import annotations

import threading

import pytest

from cachewise import MISSING, MemoryStore
from cachewise.errors import ConfigurationError
from tests.unit.test_store_conformance import FakeClock


def test_never_holds_more_than_max_entries() -> None:
    store = MemoryStore(max_entries=5)
    for i in range(100):
        store.set(i, i)
        assert len(store) <= 5
    assert store.evictions == 95


def test_lru_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=3, eviction="lru")
    store.set_many({"a": 1, "b": 2, "c": 3})
    store.get("a")
    store.set("d", 4)
    assert store.get("b") is MISSING
    assert store.get_many(["a", "c", "d"]) == {"a": 1, "c": 3, "d": 4}


def test_lfu_evicts_least_frequently_used() -> None:
    store = MemoryStore(max_entries=3, eviction="lfu")
    store.set_many({"a": 1, "b": 2, "c": 3})
    for _ in range(3):
        store.get("a")
        store.get("c")
    store.set("d", 4)
    assert store.get("b") is MISSING
    assert store.get_many(["a", "c", "d"]) == {"a": 1, "c": 3, "d": 4}


def test_eviction_listener_hears_victims_outside_the_lock() -> None:
    store = MemoryStore(max_entries=2, eviction="lru")
    heard: list[list[object]] = []

    def listener(keys: list[object]) -> None:
        store.get("probe")  # would deadlock if called under the store's lock
        heard.append(list(keys))

    store.add_eviction_listener(listener)  # type: ignore[arg-type]
    store.set_many({"a": 1, "b": 2, "c": 3})
    assert heard == [["a"]]


def test_default_ttl_and_override() -> None:
    clock = FakeClock()
    store = MemoryStore(ttl=10, clock=clock)
    store.set("default", 1)
    store.set("longer", 2, ttl=100)
    clock.advance(10)
    assert store.get("default") is MISSING
    assert store.get("longer") == 2
    assert store.expirations == 1


def test_expired_entries_are_never_returned_even_before_purge() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set_many({i: i for i in range(10)}, ttl=1)
    clock.advance(1)
    assert store.get_many(range(10)) == {}
    assert not any(k in store for k in range(10))


def test_purge_expired_sweeps() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set_many({i: i for i in range(10)}, ttl=1)
    store.set("keep", 1)
    clock.advance(2)
    assert store.purge_expired() == 10
    assert len(store) == 1


def test_ttl_jitter_shortens_within_bounds() -> None:
    clock = FakeClock()
    draws = iter([0.0, 0.5, 1.0])
    store = MemoryStore(clock=clock, ttl_jitter=0.2, rng=lambda: next(draws))
    for key in ("a", "b", "c"):
        store.set(key, 1, ttl=100)
    assert store.ttl_left("a") == pytest.approx(100)
    assert store.ttl_left("b") == pytest.approx(90)
    assert store.ttl_left("c") == pytest.approx(80)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_entries": 0},
        {"max_entries": -1},
        {"max_entries": 1.5},
        {"max_entries": True},
        {"eviction": "random-ish"},
        {"ttl": -1},
        {"ttl": 0},
        {"ttl": "10"},
        {"ttl_jitter": 1.0},
        {"ttl_jitter": -0.1},
    ],
)
def test_bad_arguments_raise_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryStore(**kwargs)  # type: ignore[arg-type]


def test_bad_per_write_ttl_changes_nothing() -> None:
    store = MemoryStore()
    store.set("k", 1)
    with pytest.raises(ConfigurationError):
        store.set("k", 2, ttl=-5)
    assert store.get("k") == 1


@pytest.mark.parametrize("policy", ["lru", "lfu", "auto"])
def test_threads_hammering_keep_the_bound_and_the_books(policy: str) -> None:
    store = MemoryStore(max_entries=50, eviction=policy)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(3000):
                key = (n * 7 + i) % 200
                if i % 3:
                    store.get(key)
                else:
                    store.set(key, i)
                if i % 97 == 0:
                    store.delete(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store) <= 50
    assert len(store._policy) == len(store)
