"""``@cache.cached``: memoize a function through a cache-aside cache, sync or async.

The key of a call is ``(module.qualname, *args, *sorted kwargs items)`` unless the user
gives ``key=``; either way it must be a valid cache key (``InvalidKeyError`` otherwise,
before the function runs). A miss goes through the cache's single flight, so concurrent
callers of one key run the function once. What differs between the two wrappers is
only ``await``: the key, the checks and the invalidation are built here once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

from cachewise._types import Key, check_key, check_ttl
from cachewise.errors import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")

KeyMaker = Callable[..., Key]
"""``key=``: called with the function's arguments, returns the cache key."""


class _Absent:
    """A miss marker no function can return (so ``None`` can be a cached result)."""


ABSENT: Any = _Absent()


class _WithSource(Protocol):
    """A Cache or an AsyncCache, as far as memoizing needs to know."""

    @property
    def source(self) -> object: ...


def check_memoizable(cache: _WithSource, ttl: float | None, key: object) -> float | None:
    """Validate ``cached()``'s arguments; only a cache without a source memoizes."""
    if cache.source is not None:
        raise ConfigurationError(
            "cached() memoizes through a cache-aside cache: this cache has a source "
            f"({cache.source!r}), whose values would mix with the function's results"
        )
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a callable(*args, **kwargs), got {key!r}")
    return check_ttl(ttl)


def key_maker(fn: Callable[..., Any], key: KeyMaker | None) -> KeyMaker:
    """The function computing a call's cache key (checked: InvalidKeyError if unusable)."""
    if key is not None:

        def custom(*args: Any, **kwargs: Any) -> Key:
            return check_key(key(*args, **kwargs))

        return custom
    name = f"{fn.__module__}.{fn.__qualname__}"

    def default(*args: Any, **kwargs: Any) -> Key:
        parts: tuple[Any, ...] = (name, *args, *sorted(kwargs.items()))
        return check_key(parts)

    return default


class Memoized(Protocol[P, R]):
    """A function memoized by ``Cache.cached``: call it as before; ``invalidate`` drops a call."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the cached result of this call; return whether one was cached."""
        ...


class AsyncMemoized(Protocol[P, R]):
    """An async function memoized by ``AsyncCache.cached``; ``await fn.invalidate(...)``."""

    __wrapped__: Callable[P, Awaitable[R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the cached result of this call; return whether one was cached."""
        ...


class _Wrapper(Generic[P, R]):
    """What both wrappers share: the function, its key maker, the cache and the TTL."""

    __wrapped__: Callable[P, Any]

    def __init__(self, cache: Any, fn: Callable[P, Any], ttl: float | None, key: KeyMaker) -> None:
        self._cache = cache
        self._fn = fn
        self._ttl = ttl
        self._key = key
        functools.update_wrapper(cast("Callable[..., Any]", self), fn)

    def __repr__(self) -> str:
        return f"<cached {self._fn.__module__}.{self._fn.__qualname__} on {self._cache!r}>"


class SyncWrapper(_Wrapper[P, R]):
    """``Cache.cached``'s wrapper: a hit is one ``Cache.read``; a miss is one flight."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self._key(*args, **kwargs)
        value = self._cache.read(key, ABSENT)
        if value is ABSENT:
            fn = self._fn
            value = self._cache._load(key, lambda _key: fn(*args, **kwargs), ttl=self._ttl)
        return value  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        return bool(self._cache.invalidate(self._key(*args, **kwargs)))


class AsyncWrapper(_Wrapper[P, R]):
    """``AsyncCache.cached``'s wrapper: the same, awaited."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self._key(*args, **kwargs)
        value = await self._cache.read(key, ABSENT)
        if value is ABSENT:
            fn = self._fn
            value = await self._cache._load(key, lambda _key: fn(*args, **kwargs), ttl=self._ttl)
        return value  # type: ignore[no-any-return]

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        return bool(await self._cache.invalidate(self._key(*args, **kwargs)))
