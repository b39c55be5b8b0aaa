"""The inlined hit path of Cache.read, in C (cachewise._speedups) and in pure Python.

Every test runs on both paths: ``CACHEWISE_PURE_PYTHON=1`` selects the fallback when
the Cache is built. The C path is skipped only when the extension is not built, and
never under CI=true (then it must be).
"""

from __future__ import annotations

import enum
import gc
import importlib
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from cachewise import Cache, MappingSource, MemoryStore
from cachewise._types import MAX_DEPTH
from cachewise.errors import InvalidKeyError
from cachewise.stores.base import HitPath
from tests.conftest import IN_CI

try:
    _speedups: Any = importlib.import_module("cachewise._speedups")
except ImportError:
    _speedups = None


class FakeClock:
    """A clock the test moves by hand; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.fail: BaseException | None = None
        self.on_call: Callable[[], None] | None = None

    def __call__(self) -> float:
        if self.fail is not None:
            raise self.fail
        if self.on_call is not None:
            self.on_call()
        return self.now


class TouchStore(MemoryStore):
    """A MemoryStore whose inlined hit calls the test's ``touch`` instead of the policy's."""

    def __init__(self, touch: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.touch = touch

    def hit_path(self) -> HitPath | None:
        path = super().hit_path()
        assert path is not None
        return path._replace(touch=self.touch)


class Payload:
    """A value that can be weakly referenced (to see whether it is still alive)."""

    def __init__(self, n: int) -> None:
        self.n = n


@pytest.fixture(params=["c", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which hit path the caches built in the test use."""
    if request.param == "c":
        if _speedups is None:
            if IN_CI:
                pytest.fail("CI=true: cachewise._speedups is not built", pytrace=False)
            pytest.skip("cachewise._speedups is not built (no compiler at install)")
        monkeypatch.delenv("CACHEWISE_PURE_PYTHON", raising=False)
    else:
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    return str(request.param)


def build(path: str, store: MemoryStore, source: MappingSource | None = None) -> Cache:
    """A Cache over ``store``, checked to read through the path under test."""
    cache = Cache(store, source)
    if path == "c":
        assert type(cache.read).__name__ == "HitReader"
    else:
        assert cache.read == cache._read_inline
    return cache


def data_of(store: object) -> dict[Any, tuple[Any, float | None]]:
    """The MemoryStore's own dict (what both hit paths read)."""
    assert isinstance(store, MemoryStore)
    data: dict[Any, tuple[Any, float | None]] = store._data
    return data


# -- the path is chosen as documented ------------------------------------------------


def test_env_var_selects_the_pure_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    cache = Cache(MemoryStore())
    assert cache.read == cache._read_inline
    assert cache._reader is None


def test_c_path_is_the_default_when_built(path: str) -> None:
    cache = build(path, MemoryStore())
    assert (cache._reader is not None) == (path == "c")


def test_a_lookup_that_is_not_a_plain_dict_get_stays_python(path: str) -> None:
    class OtherLookup(MemoryStore):
        def hit_path(self) -> HitPath | None:
            path = super().hit_path()
            assert path is not None
            data = self._data

            def lookup(key: Any) -> tuple[Any, float | None] | None:
                return data.get(key)  # a Python function: the C reader cannot serve it

            return path._replace(lookup=lookup)

    cache = Cache(OtherLookup())
    assert cache.read == cache._read_inline
    cache.store.set("k", 1)
    assert cache.read("k") == 1
    assert cache.stats.hits == 1


# -- hit, miss, expiry -----------------------------------------------------------------


def test_hit_returns_the_value_and_counts_it(path: str) -> None:
    cache = build(path, MemoryStore())
    cache.store.set("k", "v")
    assert cache.read("k") == "v"
    assert cache.read("k", "d") == "v"
    assert cache.read("k", default="d", loader=lambda _k: "loaded") == "v"
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.loads) == (3, 0, 0)


def test_hit_touches_the_eviction_policy(path: str) -> None:
    cache = build(path, MemoryStore(max_entries=2, eviction="lru"))
    cache.store.set("a", 1)
    cache.store.set("b", 2)
    assert cache.read("a") == 1  # "a" is now the most recent: "b" is the victim
    cache.store.set("c", 3)
    assert cache.read("b", "gone") == "gone"
    assert cache.read("a") == 1


def test_miss_returns_default_or_loads(path: str) -> None:
    cache = build(path, MemoryStore())
    assert cache.read("k") is None
    assert cache.read("k", "d") == "d"
    assert cache.read("k", default="d") == "d"
    assert cache.read("k", loader=lambda key: ("loaded", key)) == ("loaded", "k")
    assert cache.read("k") == ("loaded", "k")  # the load was cached
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.loads) == (1, 4, 1)


def test_read_through_miss_loads_from_the_source(path: str) -> None:
    cache = build(path, MemoryStore(), MappingSource({"k": "row"}))
    assert cache.read("k") == "row"
    assert cache.read("k") == "row"
    assert cache.read("absent", "d") == "d"
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.source_reads) == (1, 2, 2)


def test_expired_entry_is_a_miss_with_a_fake_clock(path: str) -> None:
    clock = FakeClock()
    cache = build(path, MemoryStore(ttl=10, clock=clock))
    cache.store.set("k", "v")
    clock.now += 9.5
    assert cache.read("k") == "v"
    clock.now += 0.5  # expires_at == now: expired (live means expires_at > now)
    assert cache.read("k", "d") == "d"
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.expirations) == (1, 1, 1)
    assert "k" not in data_of(cache.store)


def test_expired_entry_rewritten_is_served(path: str) -> None:
    clock = FakeClock()
    store = MemoryStore(ttl=10, clock=clock)
    cache = build(path, store)
    store.set("k", "old")
    clock.now += 20
    store.set("k", "new")
    assert cache.read("k") == "new"
    data_of(store)["k"] = ("older", clock.now - 1)  # expired in the dict
    assert cache.read("k", "d") == "d"
    assert cache.stats.expirations == 1


def test_expiry_against_the_real_monotonic_clock(path: str) -> None:
    store = MemoryStore()  # clock=time.monotonic: C reads CLOCK_MONOTONIC itself
    cache = build(path, store)
    if path == "c":
        assert cache.read.direct_clock is True  # type: ignore[attr-defined]
    data = data_of(store)
    data["live"] = ("v", time.monotonic() + 3600)
    data["dead"] = ("v", time.monotonic() - 0.001)
    assert cache.read("live") == "v"
    assert cache.read("dead", "d") == "d"
    assert (cache.stats.hits, cache.stats.misses, cache.stats.expirations) == (1, 1, 1)


def test_an_int_expiry_and_an_int_clock_compare(path: str) -> None:
    now = [100]
    store = MemoryStore(clock=lambda: now[0])
    cache = build(path, store)
    if path == "c":
        assert cache.read.direct_clock is False  # type: ignore[attr-defined]
    data_of(store)["k"] = ("v", 101)
    assert cache.read("k") == "v"
    now[0] = 101
    assert cache.read("k", "d") == "d"


# -- bad input and errors ------------------------------------------------------------


@pytest.mark.parametrize("key", [[1], {"a": 1}, ("ok", [2])])
def test_unhashable_key_is_invalid_key_error(path: str, key: Any) -> None:
    cache = build(path, MemoryStore())
    with pytest.raises(InvalidKeyError):
        cache.read(key)
    assert cache.stats.misses == 0


def test_unsupported_hashable_key_is_invalid_key_error(path: str) -> None:
    cache = build(path, MemoryStore())
    with pytest.raises(InvalidKeyError):
        cache.read(1.5)  # type: ignore[arg-type]


def test_a_key_of_another_type_is_refused_before_it_is_hashed(path: str) -> None:
    hashed: list[str] = []

    class BadHash:
        def __hash__(self) -> int:
            hashed.append("hash")
            raise ValueError("no hash today")

    cache = build(path, MemoryStore())
    with pytest.raises(InvalidKeyError):
        cache.read(BadHash())  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        cache.read(("ok", BadHash()))  # type: ignore[arg-type]
    assert hashed == []


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    """A str subclass: equal to (and hashed as) the plain str."""


@pytest.mark.parametrize(
    ("key", "cached_under"),
    [
        (1.0, 1),
        (True, 1),
        (Color.RED, 1),
        (Name("k"), "k"),
        ((1.0, "a"), (1, "a")),
        ((True, "a"), (1, "a")),
        (("a", (False,)), ("a", (0,))),
    ],
    ids=["float", "bool", "intenum", "str-subclass", "tuple-float", "tuple-bool", "nested-bool"],
)
def test_a_key_equal_to_a_cached_key_but_of_another_type_is_refused_on_a_hit(
    path: str, key: Any, cached_under: Any
) -> None:
    cache = build(path, MemoryStore())
    cache.store.set(cached_under, "the value of the plain key")
    with pytest.raises(InvalidKeyError):
        cache.read(key)
    assert cache.read(cached_under) == "the value of the plain key"
    assert (cache.stats.hits, cache.stats.misses) == (1, 0)


def test_a_nested_tuple_key_is_served_up_to_the_depth_limit_and_refused_past_it(
    path: str,
) -> None:
    cache = build(path, MemoryStore())
    key: Any = "leaf"
    for _ in range(MAX_DEPTH):
        key = (key,)
    cache.store.set(key, "deep")
    assert cache.read(key) == "deep"
    too_deep: Any = key
    for _ in range(5_000 - MAX_DEPTH):
        too_deep = (too_deep,)
    with pytest.raises(InvalidKeyError, match="deeper than"):
        cache.read(too_deep)
    assert (cache.stats.hits, cache.stats.misses) == (1, 0)


def test_bad_arguments_are_type_errors(path: str) -> None:
    cache = build(path, MemoryStore())
    cache.store.set("k", 1)
    with pytest.raises(TypeError):
        cache.read()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cache.read("k", None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cache.read("k", nope=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cache.read("k", None, default=None)  # type: ignore[misc]
    assert cache.read(key="k") == 1


def test_touch_key_error_is_swallowed_and_still_a_hit(path: str) -> None:
    def touch(key: Any) -> None:
        raise KeyError(key)  # evicted by another thread since the lookup

    cache = build(path, TouchStore(touch))
    cache.store.set("k", "v")
    assert cache.read("k") == "v"
    assert cache.stats.hits == 1


def test_touch_other_error_propagates(path: str) -> None:
    def touch(key: Any) -> None:
        raise RuntimeError("policy broke")

    cache = build(path, TouchStore(touch))
    cache.store.set("k", "v")
    with pytest.raises(RuntimeError, match="policy broke"):
        cache.read("k")
    assert cache.stats.hits == 0


def test_clock_error_propagates(path: str) -> None:
    clock = FakeClock()
    cache = build(path, MemoryStore(ttl=10, clock=clock))
    cache.store.set("k", "v")
    clock.fail = OSError("clock gone")
    with pytest.raises(OSError, match="clock gone"):
        cache.read("k")
    clock.fail = None
    assert cache.read("k") == "v"
    assert cache.stats.hits == 1


# -- counting and memory safety ------------------------------------------------------------


def test_hits_are_counted_exactly_under_8_threads(path: str) -> None:
    cache = build(path, MemoryStore(max_entries=1000, ttl=3600))
    keys = list(range(100))
    for key in keys:
        cache.store.set(key, key)
    rounds = 200
    start = threading.Barrier(8)
    wrong: list[int] = []

    def reader() -> None:
        start.wait()
        for _ in range(rounds):
            for key in keys:
                if cache.read(key) != key:
                    wrong.append(key)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert cache.stats.hits == 8 * rounds * len(keys)
    assert cache.stats.misses == 0


def test_touch_that_deletes_the_entry_still_returns_a_live_value(path: str) -> None:
    store: TouchStore

    def touch(key: Any) -> None:
        del data_of(store)[key]  # drops the dict's reference to the entry and the value
        gc.collect()

    store = TouchStore(touch)
    cache = build(path, store)
    store.set("k", Payload(42))
    alive = weakref.ref(data_of(store)["k"][0])
    value = cache.read("k")
    assert isinstance(value, Payload)
    assert value.n == 42
    assert alive() is value
    assert "k" not in data_of(store)
    assert cache.read("k", "gone") == "gone"
    del value
    assert alive() is None  # and no reference leaked


def test_clock_that_deletes_the_entry_still_returns_a_live_value(path: str) -> None:
    clock = FakeClock()
    store = MemoryStore(ttl=10, clock=clock)
    cache = build(path, store)
    store.set("k", Payload(7))
    alive = weakref.ref(data_of(store)["k"][0])

    def drop() -> None:
        del data_of(store)["k"]
        gc.collect()

    clock.on_call = drop
    value = cache.read("k")
    clock.on_call = None
    assert value.n == 7
    del value
    assert alive() is None


def test_hits_and_misses_leak_no_references(path: str) -> None:
    cache = build(path, MemoryStore(ttl=3600))
    value, key, default = Payload(1), ("key", 1), Payload(2)
    cache.store.set(key, value)
    entry = data_of(cache.store)[key]
    before = (sys.getrefcount(value), sys.getrefcount(entry), sys.getrefcount(default))
    for _ in range(1000):
        cache.read(key)
        cache.read(("absent", 1), default)
        cache.read(("absent", 2), default=default, loader=None)
    after = (sys.getrefcount(value), sys.getrefcount(entry), sys.getrefcount(default))
    assert after == before


def test_a_cache_and_its_reader_are_garbage_collected(path: str) -> None:
    cache = build(path, MemoryStore())  # cache -> reader -> cache._read_past_hit -> cache
    cache.store.set("k", Payload(1))
    gone = weakref.ref(cache)
    del cache
    gc.collect()
    assert gone() is None


# -- the C type on its own ------------------------------------------------------------------


@pytest.mark.skipif(_speedups is None and not IN_CI, reason="cachewise._speedups not built")
def test_hit_reader_checks_its_arguments() -> None:
    def slow(key: Any, default: Any, loader: Any) -> Any:
        return ("slow", key, default, loader)

    with pytest.raises(TypeError):
        _speedups.HitReader([], time.monotonic, print, slow)
    with pytest.raises(TypeError):
        _speedups.HitReader({}, None, print, slow)
    reader = _speedups.HitReader({"k": ("v", None), "odd": ("v",)}, time.monotonic, hash, slow)
    assert reader("k") == "v"
    assert reader("odd") == ("slow", "odd", None, None)  # not a (value, expiry) pair
    assert reader("x", 1, loader=len) == ("slow", "x", 1, len)
    assert reader.hits == 1
    with pytest.raises(AttributeError):
        reader.hits = 5
