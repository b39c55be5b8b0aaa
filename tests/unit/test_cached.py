"""``@cache.cached`` on the sync Cache: memoization, keys, single flight, invalidate, TTL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cachewise import Cache, MappingSource, MemoryStore
from cachewise.errors import ConfigurationError, InvalidKeyError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memoizes_per_arguments() -> None:
    cache = Cache(MemoryStore())
    calls: list[tuple[int, int]] = []

    @cache.cached()
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(1, b=2) == 3  # a different call shape is a different key
    assert add(2, 2) == 4
    assert calls == [(1, 2), (1, 2), (2, 2)]
    assert cache.stats.hits == 1
    assert cache.stats.loads == 3


def test_default_key_is_qualname_args_and_sorted_kwargs() -> None:
    cache = Cache(MemoryStore())

    @cache.cached()
    def f(a: int, **kw: int) -> int:
        return a

    f(7, y=2, x=1)
    key = (f"{__name__}.test_default_key_is_qualname_args_and_sorted_kwargs.<locals>.f", 7)
    assert cache.read((*key, ("x", 1), ("y", 2))) == 7


def test_none_is_a_cached_result() -> None:
    cache = Cache(MemoryStore())
    calls = []

    @cache.cached()
    def nothing(k: str) -> None:
        calls.append(k)

    assert nothing("a") is None
    assert nothing("a") is None
    assert calls == ["a"]


def test_invalidate_drops_one_call() -> None:
    cache = Cache(MemoryStore())
    calls: list[int] = []

    @cache.cached()
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    square(2)
    square(3)
    assert square.invalidate(2) is True
    assert square.invalidate(2) is False
    square(2)
    square(3)
    assert calls == [2, 3, 2]


def test_custom_key() -> None:
    cache = Cache(MemoryStore())

    @cache.cached(key=lambda user, *, verbose=False: ("user", user["id"]))
    def profile(user: dict[str, int], *, verbose: bool = False) -> int:
        return user["id"] * 10

    assert profile({"id": 4}) == 40
    assert cache.read(("user", 4)) == 40
    assert profile.invalidate({"id": 4}, verbose=True) is True


def test_unusable_argument_raises_before_the_function_runs() -> None:
    cache = Cache(MemoryStore())
    calls = []

    @cache.cached()
    def f(x: object) -> object:
        calls.append(x)
        return x

    with pytest.raises(InvalidKeyError):
        f(1.5)
    with pytest.raises(InvalidKeyError):
        f([1])
    assert calls == []


def test_bad_custom_key_is_invalid_key_error() -> None:
    cache = Cache(MemoryStore())

    @cache.cached(key=lambda x: None)  # type: ignore[arg-type,return-value]
    def f(x: int) -> int:
        return x

    with pytest.raises(InvalidKeyError):
        f(1)


def test_refused_on_a_cache_with_a_source() -> None:
    cache = Cache(MemoryStore(), MappingSource({}))
    with pytest.raises(ConfigurationError, match="source"):
        cache.cached()


@pytest.mark.parametrize("kwargs", [{"ttl": 0}, {"ttl": "1"}, {"key": "not callable"}])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Cache(MemoryStore()).cached(**kwargs)  # type: ignore[arg-type]


def test_async_function_refused_on_sync_cache() -> None:
    cache = Cache(MemoryStore())

    async def fetch(n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match="AsyncCache"):
        cache.cached()(fetch)


def test_ttl_per_decorator() -> None:
    clock = Clock()
    cache = Cache(MemoryStore(clock=clock))
    calls: list[int] = []

    @cache.cached(ttl=10)
    def f(n: int) -> int:
        calls.append(n)
        return n

    f(1)
    clock.now += 9
    f(1)
    clock.now += 2
    f(1)
    assert calls == [1, 1]


def test_errors_are_not_cached() -> None:
    cache = Cache(MemoryStore())
    attempts = []

    @cache.cached()
    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("first call fails")
        return n

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) == 1
    assert flaky(1) == 1
    assert attempts == [1, 1]


def test_single_flight_across_threads() -> None:
    cache = Cache(MemoryStore())
    gate = threading.Event()
    calls = []

    @cache.cached()
    def slow(n: int) -> int:
        calls.append(n)
        gate.wait(10)
        return n * 2

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(slow, 5) for _ in range(8)]
        # every thread is either the loader or waiting on it before the gate opens
        while len(calls) < 1:
            threading.Event().wait(0.01)
        gate.set()
        assert [f.result(10) for f in futures] == [10] * 8
    assert calls == [5]


def test_wrapper_keeps_the_function_identity() -> None:
    cache = Cache(MemoryStore())

    def documented(n: int) -> int:
        """Doubles."""
        return 2 * n

    wrapped = cache.cached()(documented)
    assert wrapped.__wrapped__ is documented
    assert wrapped.__name__ == "documented"  # type: ignore[attr-defined]
    assert wrapped.__doc__ == "Doubles."
