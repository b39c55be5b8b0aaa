"""AsyncCache: the cache manager for asyncio, driving the same flows as ``Cache``.

What is shared is everything a strategy decides (``_logic.CacheLogic``: every read
and write policy, the cache-aside race, dirty reads, stats); what is here is what an
event loop does differently from threads:

- Single flight across tasks. The first task to miss a key loads it; the others wait
  on an ``asyncio.Event``. A waiter that is cancelled stops waiting and nothing else.
  A leader that is cancelled cannot finish its load (its await was aborted), so it
  hands the load over: the waiters wake, one of them leads a new load, the rest wait
  for it. Nobody is left hanging and no error is invented.
- Per-key ordering with ``asyncio.Lock`` stripes; their acquisition is cancel-safe.
- The hit path never awaits I/O: a ``MemoryStore`` (or an ``AsyncTieredStore``'s L1)
  is read by the same C hit reader the sync cache uses.
- Refresh-ahead and the write-back flusher are tasks, ended by ``close()``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from cachewise import _tracing
from cachewise._cached import (
    AsyncMemoized,
    AsyncWrapper,
    KeyMaker,
    check_memoizable,
    key_maker,
)
from cachewise._flow import Call, arun
from cachewise._logic import STRIPES, CacheLogic, Load, compose
from cachewise._types import MISSING, Key, implements
from cachewise.errors import ConfigurationError
from cachewise.policies import ReadPolicy, ReadThrough, WriteBack, WritePolicy
from cachewise.sources.base import Source
from cachewise.sources.mapping import MappingSource
from cachewise.stores.base import Inlinable, Store
from cachewise.stores.memory import MemoryStore
from cachewise.writeback.dirty import Rejected

if TYPE_CHECKING:
    from cachewise.aio.writeback import AsyncFlusher, AsyncSharedFlusher

logger = logging.getLogger("cachewise")

P = ParamSpec("P")
R = TypeVar("R")
AsyncLoader = Callable[[Key], Any]
"""A loader for ``read(key, loader=...)``: an async function, or a plain one."""


class _HandedOver(Exception):  # noqa: N818 - a signal between tasks, never raised to users
    """The leader of a load was cancelled: a waiter leads a new load."""


_HANDED_OVER = _HandedOver()


class _Load:
    """One in-flight load of a key, awaited by the tasks that missed it meanwhile."""

    __slots__ = ("_done", "error", "superseded", "value")

    def __init__(self) -> None:
        self._done = asyncio.Event()
        self.value: Any = MISSING
        self.error: BaseException | None = None
        self.superseded = False

    def publish(self) -> None:
        """Wake the waiters (the outcome is in ``value`` / ``error``)."""
        self._done.set()

    async def wait(self) -> None:
        """Until the leader publishes; a cancelled waiter only stops waiting."""
        await self._done.wait()


def _is_async(part: object, method: str) -> bool:
    return inspect.iscoroutinefunction(getattr(part, method, None))


def _check_parts(store: object, source: object) -> None:
    """An AsyncCache runs on async parts, or on in-memory ones that never block."""
    if not implements(store, Store):
        raise ConfigurationError(f"store must implement the Store protocol, got {store!r}")
    if not (isinstance(store, MemoryStore) or _is_async(store, "get")):
        raise ConfigurationError(
            f"AsyncCache needs a MemoryStore or an async store (AsyncRedisStore, "
            f"AsyncTieredStore), got {type(store).__name__}: its calls would block the loop"
        )
    if source is None:
        return
    if not implements(source, Source):
        raise ConfigurationError(f"source must implement the Source protocol: {source!r}")
    if not (isinstance(source, MappingSource) or _is_async(source, "load")):
        raise ConfigurationError(
            f"AsyncCache needs an async source (AsyncSQLSource) or a MappingSource, got "
            f"{type(source).__name__}: its calls would block the loop"
        )


def _missing(_key: Key, _default: Any, _loader: Any) -> Any:
    return MISSING


class AsyncCache(CacheLogic):
    """The cache manager for asyncio: ``Cache``'s policies and methods, each a coroutine.

    ``store`` is a ``MemoryStore`` (used as is: no I/O), an ``AsyncRedisStore`` or an
    ``AsyncTieredStore``; ``source`` an ``AsyncSQLSource``, a ``MappingSource`` or any
    object with the ``Source`` methods as coroutines. Policies are ``Cache``'s.
    """

    def __init__(
        self,
        store: Any,
        source: Any = None,
        read: ReadPolicy | None = None,
        write: WritePolicy | None = None,
        *,
        journal: Any = None,
        name: str = "cachewise",
    ) -> None:
        _check_parts(store, source)
        read, write = compose(store, source, read, write, ttl_aware=hasattr(store, "ttl_left"))
        self._init_logic(store, source, read, write, name)
        self._stripes = [asyncio.Lock() for _ in range(STRIPES)]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._count_hit = self._hits.add
        self._peek = self._choose_peek()
        self._flusher: AsyncFlusher | AsyncSharedFlusher | None = None
        self._write_back = write if isinstance(write, WriteBack) else None
        self._journal = journal
        if self._write_back is not None:
            self._start_write_back(self._write_back, journal)

    def _choose_peek(self) -> Callable[[Key], Any]:
        """The hit without I/O: the C hit reader or the store's own ``get``, else none."""
        self._reader = None
        if isinstance(self.read_policy, ReadThrough) and self.read_policy.refreshes:
            return lambda _key: MISSING  # every hit checks the TTL left: the slow path
        store = self.store
        hit_path = store.hit_path() if isinstance(store, Inlinable) else None
        if hit_path is not None:
            cache_module = importlib.import_module("cachewise.cache")
            reader = cache_module._c_reader(hit_path, _missing)
            if reader is not None:
                self._reader = reader
                return reader  # type: ignore[no-any-return]
        if isinstance(store, MemoryStore):
            get, count, missing = store.get, self._count_hit, MISSING

            def peek(key: Key) -> Any:
                kind = type(key)
                if kind is not str and kind is not int and kind is not bytes:
                    return missing  # the slow path checks it: 1.0 would find key 1
                value = get(key)
                if value is not missing:
                    count()
                return value

            return peek
        return lambda _key: MISSING

    def _start_write_back(self, policy: WriteBack, journal: Any) -> None:
        self._claim = self._claim_write_back(policy)
        try:
            module = importlib.import_module("cachewise.aio.writeback")
            self._flusher = module.open_flusher(
                policy, self.source, self.store, journal, self.name, on_rejected=self._drop_refused
            )
        except BaseException:
            if self._claim is not None:
                self._claim.release()
            raise
        if hasattr(self.store, "add_eviction_listener") and not self._flusher.stores_values:
            self.store.add_eviction_listener(self._on_evicted)

    def __repr__(self) -> str:
        write = type(self.write_policy).__name__ if self.write_policy else "none"
        return (
            f"AsyncCache({self.store!r}, source={self.source!r}, "
            f"read={type(self.read_policy).__name__}, write={write})"
        )

    # -- driver hooks ---------------------------------------------------------------

    def _lock(self, indexes: list[int]) -> Call:
        return self._acquire, (indexes,)

    async def _acquire(self, indexes: list[int]) -> None:
        taken: list[int] = []
        try:
            for i in indexes:
                await self._stripes[i].acquire()
                taken.append(i)
        except BaseException:  # cancelled while waiting: give back what we took
            self._unlock(taken)
            raise

    def _reader_hits(self) -> int:
        return self._reader.hits if self._reader is not None else 0

    # -- reads ------------------------------------------------------------------------

    async def read(
        self, key: Key, default: Any = None, *, loader: AsyncLoader | None = None
    ) -> Any:
        """Return the value of ``key`` by the read policy, or ``default`` if absent.

        ``loader`` (cache-aside) may be an async or a plain function of the key.
        """
        value = self._peek(key)
        if value is MISSING:
            return await self._read_slow(key, default, loader)
        return value

    async def _read_slow(self, key: Key, default: Any, loader: AsyncLoader | None) -> Any:
        self._check_key(key)
        value = self.store.get(key)  # an expired entry is dropped (and counted) here
        if inspect.isawaitable(value):
            value = await value
        if value is not MISSING:
            self._count_hit()
            if self._should_check_ttl():
                await self._maybe_refresh(key, loader)
            return value
        self._misses.add()
        loader = self._miss_loader(loader)
        if loader is None and self._flusher is None:
            return default
        value = await self._load(key, loader)
        return default if value is MISSING else value

    def _should_check_ttl(self) -> bool:
        policy = self.read_policy
        return isinstance(policy, ReadThrough) and policy.refreshes

    async def _maybe_refresh(self, key: Key, loader: AsyncLoader | None) -> None:
        left = self.store.ttl_left(key)
        if inspect.isawaitable(left):
            left = await left
        if left is None or not self._should_refresh(left):
            return
        if key in self._inflight or self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._refresh(key, loader or self._source_load), name=f"{self.name}-refresh"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, key: Key, loader: AsyncLoader) -> None:
        span = None if _tracing.tracer is None else _tracing.start("cachewise.refresh", self._span)
        try:
            await self._load(key, loader)
        except Exception as exc:
            _tracing.end(span, exc)
            self._refresh_failed(key, exc)
        else:
            _tracing.end(span)

    async def _load(self, key: Key, loader: AsyncLoader | None, *, ttl: float | None = None) -> Any:
        while True:
            with self._inflight_lock:
                load = self._inflight.get(key)
                leader = load is None
                if load is None:
                    load = self._inflight[key] = _Load()
            if leader:
                return await self._lead(key, loader, load, self._read_ttl if ttl is None else ttl)
            assert isinstance(load, _Load)
            await load.wait()
            if load.error is _HANDED_OVER:
                continue  # the leader was cancelled: lead (or wait for) a new load
            if load.error is not None:
                raise load.error
            return load.value

    async def _lead(
        self, key: Key, loader: AsyncLoader | None, load: Load, ttl: float | None
    ) -> Any:
        try:
            load.value = await arun(self._fetch_flow(key, loader, load, ttl))
        except asyncio.CancelledError:
            load.error = _HANDED_OVER
            raise
        except BaseException as exc:
            load.error = exc
            raise
        finally:
            with self._inflight_lock:
                if self._inflight.get(key) is load:  # not already retired by a write
                    del self._inflight[key]
            load.publish()
        return load.value

    async def read_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the keys found; misses are loaded from the source in one batch."""
        wanted = list(dict.fromkeys(self._check_key(k) for k in keys))
        found = self.store.get_many(wanted)
        if inspect.isawaitable(found):
            found = await found
        todo = self._batch_misses(wanted, found)
        if todo is None:
            return dict(found)
        found.update(await self._load_many(*todo))
        return {k: found[k] for k in wanted if k in found}

    async def _load_many(self, keys: list[Key], from_source: bool) -> dict[Key, Any]:
        mine, theirs = self._register_loads(keys, _Load)
        result: dict[Key, Any] = {}
        if mine:
            try:
                result = await arun(self._lead_loads_flow(mine, from_source))
            except asyncio.CancelledError:
                for load in mine.values():
                    load.error = _HANDED_OVER
                raise
        for key, load in theirs.items():
            assert isinstance(load, _Load)
            await load.wait()
            if load.error is _HANDED_OVER:
                value = await self._load(key, self._miss_loader(None))
            elif load.error is not None:
                raise load.error
            else:
                value = load.value
            if value is not MISSING:
                result[key] = value
        return result

    def cached(
        self, ttl: float | None = None, key: KeyMaker | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], AsyncMemoized[P, R]]:
        """Memoize an async function through this (cache-aside) cache, with single flight.

        As ``Cache.cached``; ``await fn.invalidate(*args, **kwargs)`` drops one call.
        """
        ttl = check_memoizable(self, ttl, key)

        def decorate(fn: Callable[P, Awaitable[R]]) -> AsyncMemoized[P, R]:
            if not inspect.iscoroutinefunction(fn):
                raise ConfigurationError(
                    f"{fn.__qualname__} is not async: memoize it with cachewise.Cache"
                )
            return AsyncWrapper[P, R](self, fn, ttl, key_maker(fn, key))

        return decorate

    # -- writes and invalidation -----------------------------------------------------------

    async def write(
        self, key: Key, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Write ``value`` by the write policy (cache-aside: into the cache only)."""
        await arun(self._write_flow(key, value, ttl, tags))

    async def write_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Write every item by the write policy, batched (one source call per batch)."""
        await arun(self._write_many_flow(items, ttl))

    async def delete(self, key: Key) -> None:
        """Delete ``key`` by the write policy (write-back: a tombstone that is flushed)."""
        await arun(self._delete_flow(key))

    async def invalidate(self, key: Key) -> bool:
        """Drop ``key`` from the cache only (never the source, never a dirty entry)."""
        return await arun(self._invalidate_flow(key))

    async def invalidate_many(self, keys: Iterable[Key]) -> int:
        """Drop every key from the cache (not dirty ones); return how many were cached."""
        return await arun(self._invalidate_many_flow(keys))

    async def invalidate_tag(self, tag: str) -> int:
        """Drop every key written with ``tags=[tag]``; return how many were cached."""
        return await self.invalidate_many(self._tag_keys(tag))

    # -- write-back and lifecycle ------------------------------------------------------------

    async def flush(self) -> int:
        """Write every dirty entry to the source now; return how many keys were written.

        If the source fails the entries stay dirty (the flusher task retries with
        backoff) and FlushError is raised promptly. Without write-back: returns 0.
        """
        self._check_open()
        if self._flusher is None:
            return 0
        return await self._flusher.flush()

    async def dirty_keys(self) -> list[Key]:
        """Keys holding writes not yet in the source, oldest first."""
        self._check_open()
        if self._flusher is None:
            return []
        keys = self._flusher.dirty_keys()
        return await keys if inspect.isawaitable(keys) else keys

    async def rejected(self) -> dict[Key, Rejected]:
        """Write-back's parked keys: refused values and the source's reasons (``Cache``'s)."""
        self._check_open()
        if self._flusher is None:
            return {}
        parked = self._flusher.rejected()
        return await parked if inspect.isawaitable(parked) else parked

    async def retry_rejected(self, keys: Iterable[Key] | None = None) -> int:
        """Write parked keys again, as new writes; return how many (``Cache``'s)."""
        wanted = list(await self.rejected()) if keys is None else list(keys)
        if self._flusher is None:
            return 0
        return await arun(self._retry_rejected_flow(wanted))

    async def discard_rejected(self, keys: Iterable[Key] | None = None) -> int:
        """Forget parked keys; return how many were parked (``Cache``'s)."""
        self._check_open()
        if self._flusher is None:
            return 0
        return int(await self._flusher.discard(None if keys is None else list(keys)))

    async def close(self) -> None:
        """Flush, stop background tasks and release the store's and source's connections."""
        if self._closed:
            return
        self._closed = True
        everything = list(range(len(self._stripes)))
        await self._acquire(everything)  # writes holding a stripe finish; later ones see closed
        self._unlock(everything)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self._flusher is not None:
                await self._flusher.close()
        finally:
            if self._claim is not None:  # after the final flush: the namespace is free
                self._claim.release()
            for part in (self.store, self.source):
                close = getattr(part, "close", None)
                if callable(close):
                    done = close()
                    if inspect.isawaitable(done):
                        await done

    async def __aenter__(self) -> AsyncCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
