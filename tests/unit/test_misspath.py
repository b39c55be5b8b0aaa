"""The miss path of Cache.read, in C (cachewise._speedups.MissPath) and in pure Python.

Every test runs on both paths (``CACHEWISE_PURE_PYTHON=1`` when the store and cache are
built selects the fallback). The C path is skipped only when the extension is not
built, and never under CI=true.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

import pytest

from cachewise import MISSING, Cache, MappingSource, MemoryStore, ReadThrough, WriteBack
from tests.conftest import IN_CI
from tests.unit.test_speedups import FakeClock, path

__all__ = ["path"]  # the C / pure-Python fixture of test_speedups, requested by name

try:
    _speedups: Any = importlib.import_module("cachewise._speedups")
except ImportError:
    _speedups = None

DEADLINE = 30.0  # generous: a condition, not a timing


def build(path: str, store: MemoryStore, source: Any = None, **kwargs: Any) -> Cache:
    """A Cache checked to miss through the path under test."""
    cache = Cache(store, source, **kwargs)
    assert (cache._miss_path is not None) == (path == "c")
    return cache


class Counting:
    """A loader that counts its calls and returns ``("row", key)``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, key: Any) -> Any:
        self.calls += 1
        return ("row", key)


# -- which path serves ----------------------------------------------------------------


def test_write_back_and_jitter_keep_the_python_miss_path(path: str, tmp_path: Any) -> None:
    del tmp_path
    with Cache(MemoryStore(), MappingSource({}), write=WriteBack()) as cache:
        assert cache._miss_path is None
    assert Cache(MemoryStore(ttl=10, ttl_jitter=0.1))._miss_path is None


def test_wtinylfu_runs_in_c_when_built(path: str) -> None:
    store = MemoryStore(eviction="wtinylfu")
    kind = type(store._policy)
    assert (kind.__module__ == "cachewise._speedups") == (path == "c")


# -- a miss, counted and stored -------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", 7, b"k", ("k", 1)])
def test_loader_miss_is_loaded_once_stored_and_counted(path: str, key: Any) -> None:
    cache = build(path, MemoryStore())
    load = Counting()
    assert cache.read(key, loader=load) == ("row", key)
    assert cache.read(key, loader=load) == ("row", key)
    assert load.calls == 1
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.loads, stats.source_reads) == (1, 1, 1, 1)


def test_miss_without_loader_returns_the_default_and_counts(path: str) -> None:
    cache = build(path, MemoryStore())
    assert cache.read("k") is None
    assert cache.read("k", "d") == "d"
    assert (cache.stats.misses, cache.stats.loads) == (2, 0)


def test_read_through_miss_loads_from_the_source(path: str) -> None:
    cache = build(path, MemoryStore(), MappingSource({1: "one"}), read=ReadThrough())
    assert cache.read(1) == "one"
    assert cache.read(2, "none") == "none"
    assert cache.read(2, "none") == "none"  # absent in the source: nothing cached
    assert cache.read(1) == "one"
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.loads, stats.source_reads) == (1, 3, 3, 3)


def test_loader_returning_missing_caches_nothing(path: str) -> None:
    cache = build(path, MemoryStore())
    assert cache.read("k", "d", loader=lambda _k: MISSING) == "d"
    assert len(cache.store) == 0  # type: ignore[arg-type]


def test_loader_error_propagates_and_the_next_read_retries(path: str) -> None:
    cache = build(path, MemoryStore())

    def broken(key: Any) -> Any:
        raise LookupError(f"no {key}")

    with pytest.raises(LookupError, match="no k"):
        cache.read("k", loader=broken)
    assert cache._inflight == {}
    assert cache.read("k", loader=lambda _k: "v") == "v"
    assert cache.read("k") == "v"


def test_ttl_of_the_store_and_of_the_read_policy(path: str) -> None:
    clock = FakeClock()
    cache = build(path, MemoryStore(ttl=10, clock=clock))
    cache.read("k", loader=lambda _k: "v")
    assert cache.store._data["k"] == ("v", clock.now + 10)  # type: ignore[attr-defined]
    clock.now += 10
    assert cache.read("k", "gone") == "gone"
    source = MappingSource({"k": "row"})
    through = build(path, MemoryStore(ttl=10, clock=clock), source, read=ReadThrough(ttl=3))
    through.read("k")
    assert through.store._data["k"] == ("row", clock.now + 3)  # type: ignore[attr-defined]


def test_a_full_store_evicts_and_counts_it(path: str) -> None:
    evicted: list[Any] = []
    store = MemoryStore(max_entries=3, eviction="lru")
    store.add_eviction_listener(evicted.extend)
    cache = build(path, store)
    for key in range(5):
        cache.read(key, loader=str)
    assert evicted == [0, 1]
    assert cache.stats.evictions == 2
    assert sorted(store._data) == [2, 3, 4]


def test_misses_leak_no_references(path: str) -> None:
    cache = build(path, MemoryStore(max_entries=10))
    default, value = object(), object()
    before = (sys.getrefcount(default), sys.getrefcount(value))
    for i in range(500):
        cache.read(("absent", i), default)  # a tuple: the slow path
        cache.read(f"absent{i}", default)
        cache.read(i, loader=lambda _k: value)
    cache.store.clear()
    assert (sys.getrefcount(default), sys.getrefcount(value)) == before


# -- single flight and the cache-aside race ---------------------------------------------------


def test_concurrent_misses_load_once(path: str) -> None:
    cache = build(path, MemoryStore())
    entered, release = threading.Event(), threading.Event()
    calls: list[Any] = []

    def slow(key: Any) -> Any:
        calls.append(key)
        entered.set()
        assert release.wait(DEADLINE)
        return "v"

    results: list[Any] = []
    leader = threading.Thread(target=lambda: results.append(cache.read("k", loader=slow)))
    leader.start()
    assert entered.wait(DEADLINE)
    waiters = [
        threading.Thread(target=lambda: results.append(cache.read("k", loader=slow)))
        for _ in range(7)
    ]
    for thread in waiters:
        thread.start()
    release.set()
    for thread in [leader, *waiters]:
        thread.join(DEADLINE)
    assert results == ["v"] * 8
    assert calls == ["k"]
    stats = cache.stats  # a waiter that started late may find the value already cached
    assert (stats.hits + stats.misses, stats.loads, stats.source_reads) == (8, 1, 1)


def test_waiters_see_the_leaders_error(path: str) -> None:
    cache = build(path, MemoryStore())
    entered, release = threading.Event(), threading.Event()

    def failing(key: Any) -> Any:
        entered.set()
        assert release.wait(DEADLINE)
        raise LookupError("source down")

    errors: list[BaseException] = []

    def reader() -> None:
        try:
            cache.read("k", loader=failing)
        except LookupError as exc:
            errors.append(exc)

    leader = threading.Thread(target=reader)
    leader.start()
    assert entered.wait(DEADLINE)
    waiter = threading.Thread(target=reader)
    waiter.start()
    release.set()  # the waiter waits on the leader, or (if late) loads and fails itself
    for thread in (leader, waiter):
        thread.join(DEADLINE)
    assert len(errors) == 2
    assert all(str(e) == "source down" for e in errors)
    assert cache._inflight == {}


@pytest.mark.parametrize("overtake", ["write", "invalidate", "delete"])
def test_a_write_during_the_load_keeps_the_old_value_out(path: str, overtake: str) -> None:
    cache = build(path, MemoryStore())

    def load(key: Any) -> Any:
        # Another writer finishes while this load is in flight (the cache-aside race).
        worker = {
            "write": lambda: cache.write(key, "new"),
            "invalidate": lambda: cache.invalidate(key),
            "delete": lambda: cache.delete(key),
        }[overtake]
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(DEADLINE)
        return "old"

    assert cache.read("k", loader=load) == "old"  # the reader gets what it loaded
    expected = "new" if overtake == "write" else "gone"
    assert cache.read("k", "gone") == expected  # but the cache never holds "old"


# -- the C types on their own ----------------------------------------------------------------


@pytest.mark.skipif(_speedups is None and not IN_CI, reason="cachewise._speedups not built")
def test_flight_publishes_a_value_or_an_error() -> None:
    flight = _speedups.Flight(MISSING)
    assert flight.value is MISSING
    assert flight.superseded is False
    flight.value = 5
    flight.publish()
    assert flight.wait() == 5
    with pytest.raises(RuntimeError):
        flight.publish()
    failed = _speedups.Flight(MISSING)
    failed.error = KeyError("x")
    failed.publish()
    with pytest.raises(KeyError):
        failed.wait()


@pytest.mark.skipif(_speedups is None and not IN_CI, reason="cachewise._speedups not built")
def test_c_types_check_their_arguments() -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError):
        _speedups.Inserter([], lock, hash, hash, list, 3, [])
    with pytest.raises(ValueError, match="max_entries"):
        _speedups.Inserter({}, lock, hash, hash, list, 0, [])
    inserter = _speedups.Inserter({}, lock, hash, hash, list, 3, [])
    with pytest.raises(TypeError):
        _speedups.MissPath({}, inserter, {}, [], None, time_now, None, print, MISSING)
    with pytest.raises(TypeError):
        _speedups.MissPath({}, inserter, {}, [lock], None, time_now, 5, print, MISSING)
    miss = _speedups.MissPath({}, inserter, {}, [lock], None, time_now, None, print, MISSING)
    with pytest.raises(TypeError):
        miss("k")
    with pytest.raises(ValueError, match="capacity"):
        _speedups.WTinyLFU(0)
    assert _speedups.WTinyLFU(4).estimate("never") == 0


def time_now() -> float:
    return 0.0
