"""The cache manager: one store, an optional source, a read policy and a write policy.

Concurrency design. Reads of a cached key take no lock: one store lookup and one
atomic counter. A miss is loaded once per key however many threads miss at once
(single flight: the first thread loads, the others wait for its result or error).
Writes of one key are ordered by a per-key stripe lock, so the cache and the source
see a key's writes in the same order. Every write, delete and invalidation marks a
load of that key in flight as superseded and retires it: the loader stores its result
only if it was not superseded, so a slow read can never cache a value older than a
write that finished while it loaded (the cache-aside race), and a read that starts
after the write returned starts a load of its own rather than joining the old one.
Stores that implement ``LoadGuarded`` (Redis) extend that guarantee, and single
flight, across processes.

Keys are checked before any I/O (by the source when it knows its key types): a refused
key is refused on every path, the C hit path included.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from sqlalchemy.engine import Engine

from cachewise import _tracing
from cachewise import stats as stats_module
from cachewise._accel import speedups
from cachewise._cached import KeyMaker, Memoized, SyncWrapper, check_memoizable, key_maker
from cachewise._flow import Call, run
from cachewise._logic import STRIPES, CacheLogic, Loader, compose
from cachewise._types import MISSING, Key, check_key, implements
from cachewise.errors import BlockingCallWarning, ClosedError, ConfigurationError
from cachewise.policies import ReadPolicy, ReadThrough, WriteBack, WritePolicy
from cachewise.pool import PoolStats, pool_stats
from cachewise.sources.base import Source
from cachewise.sources.mapping import MappingSource
from cachewise.stores.base import (
    EvictionAware,
    HitPath,
    Inlinable,
    Store,
    TTLAware,
)
from cachewise.stores.memory import MemoryStore
from cachewise.writeback.dirty import Rejected
from cachewise.writeback.flusher import Flusher, Journal

if TYPE_CHECKING:
    from cachewise._speedups import HitReader, MissPath
    from cachewise.writeback.shared import SharedFlusher

logger = logging.getLogger("cachewise")

P = ParamSpec("P")
R = TypeVar("R")


class _Load:
    """One in-flight load of a key: its waiters, its outcome, whether a write overtook it.

    The leader holds ``_busy`` from creation until the outcome is published; waiters
    block on it. A bare lock costs a tenth of an Event, and most loads have no waiter.
    """

    __slots__ = ("_busy", "error", "superseded", "value")

    def __init__(self) -> None:
        self._busy = threading.Lock()
        self._busy.acquire()
        self.value: Any = MISSING
        self.error: BaseException | None = None
        self.superseded = False

    def publish(self) -> None:
        """Release the waiters (the outcome is in ``value`` / ``error``)."""
        self._busy.release()

    def wait(self) -> Any:
        """Block until the leader publishes; return its value or raise its error."""
        with self._busy:
            pass
        if self.error is not None:
            raise self.error
        return self.value


class _BatchLoad(_Load):
    """One key's load in a ``read_many`` batch: the batch's one lock, released once.

    A batch's keys are published together anyway (after its one ``load_many``), so
    they share the lock their waiters block on: no lock per key to make and release.
    """

    __slots__ = ()

    def __init__(self, busy: threading.Lock) -> None:
        self._busy = busy
        self.value = MISSING
        self.error = None
        self.superseded = False

    def publish(self) -> None:
        """Nothing per key: ``Cache._load_many`` releases the batch's lock once."""


class Cache(CacheLogic):
    """The cache manager: composes a store, a source, a read policy and a write policy.

    With no source the strategy is cache-aside: ``read``/``write`` touch the cache only,
    the application reads and writes the database and calls ``invalidate``. With a
    source, ``read`` defaults to ``ReadThrough()`` and ``write`` to ``WriteThrough()``.
    """

    store: Store
    source: Source | None

    def __init__(
        self,
        store: Store,
        source: Source | None = None,
        read: ReadPolicy | None = None,
        write: WritePolicy | None = None,
        *,
        journal: Journal | None = None,
        name: str = "cachewise",
    ) -> None:
        read, write = _compose(store, source, read, write)
        self._init_logic(store, source, read, write, name)
        self._store_get = store.get
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self._count_hit = self._hits.add
        self._refresher: ThreadPoolExecutor | None = None
        self._blocks = _blocks_on_io(store, source, write)
        self._warned = False
        self._choose_read_path()
        self._flusher: Flusher | SharedFlusher | None = None
        if isinstance(write, WriteBack):
            self._start_write_back(write, journal)

    def _lock(self, indexes: list[int]) -> Call:
        return self._acquire, (indexes,)

    def _warn_in_loop(self, method: str) -> None:
        """Warn once if a call that waits on I/O runs on an event loop's thread."""
        if self._warned:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._warned = True
        warnings.warn(
            f"{self.name}: Cache.{method}() waits on I/O and blocks the running event loop; "
            f"use cachewise.aio.AsyncCache (await cache.{method}(...))",
            BlockingCallWarning,
            stacklevel=3,
        )

    def _acquire(self, indexes: list[int]) -> None:
        for i in indexes:
            self._stripes[i].acquire()

    def _choose_read_path(self) -> None:
        """Bind ``read`` to the fastest path the store and read policy allow."""
        store, read = self.store, self.read_policy
        self._reader: HitReader | None = None
        self._miss_path: MissPath | None = None
        if isinstance(read, ReadThrough) and read.refreshes:
            assert implements(store, TTLAware)
            self._ttl_left = store.ttl_left
            self.read = self._read_refreshing  # type: ignore[method-assign]
            return
        hit_path = store.hit_path() if isinstance(store, Inlinable) else None
        if hit_path is not None:
            self._lookup, self._now, self._touch = hit_path
            self.read = self._read_inline  # type: ignore[method-assign]
            self._reader = _c_reader(hit_path, self._c_miss_path(hit_path) or self._read_past_hit)
            if self._reader is not None:
                self.read = self._reader  # type: ignore[method-assign]

    def _c_miss_path(self, hit_path: HitPath) -> MissPath | None:
        """The miss path in C, for a MemoryStore without write-back (else None).

        It serves an absent str/int/bytes key; expired entries, other keys and waits for
        another thread's load go through :meth:`_read_past_hit` as before.
        """
        store = self.store
        fill = store.fill_path() if isinstance(store, MemoryStore) else None
        module = speedups()
        if (
            fill is None
            or module is None
            or isinstance(self.write_policy, WriteBack)
            or self._guard is not None
            or self._blocks
            or hit_path.lookup != fill.data.get
        ):
            return None
        ttl = self._read_ttl if self._read_ttl is not None else fill.ttl
        path: MissPath = module.MissPath(
            fill.data,
            fill.insert,
            self._inflight,
            self._stripes,
            self._miss_loader(None),
            fill.clock,
            None if ttl is None else float(ttl),
            self._read_past_hit,
            MISSING,
        )
        self._miss_path = path
        if stats_module.sink is not None or _tracing.tracer is not None:
            self._observe_loads()  # exporters or spans already on
        return path

    def _observe_loads(self) -> None:
        """Exported to metrics: from now on every load is timed (and traced, with spans).

        The C miss path stays unobserved until then: timing a miss costs a Python frame
        (about as much again as the C miss itself), so only exported caches pay it. It
        then loads through :meth:`_timed` and hands per-call loaders to the Python path;
        the hit path is unchanged.
        """
        path = self._miss_path
        if path is None or path.observed:
            return
        if path.source_load is not None:
            path.source_load = self._timed(path.source_load)
        path.observed = True

    def _start_write_back(self, policy: WriteBack, journal: Journal | None) -> None:
        self._claim = self._claim_write_back(policy)
        try:
            self._open_write_back(policy, journal)
        except BaseException:
            if self._claim is not None:
                self._claim.release()
            raise

    def _open_write_back(self, policy: WriteBack, journal: Journal | None) -> None:
        assert self.source is not None
        if policy.journal == "redis":
            if journal is not None:
                raise ConfigurationError(
                    "journal='redis' keeps the dirty set in Redis: no journal="
                )
            self._flusher = _open_shared(policy, self.source, self.store, self.name)
            return
        if journal is None and policy.journal is not None:
            journal = _open_journal(policy, self.store)
        self._flusher = Flusher(
            policy, self.source, journal=journal, name=self.name, on_rejected=self._drop_refused
        )
        if isinstance(self.store, EvictionAware):
            self.store.add_eviction_listener(self._on_evicted)

    def __repr__(self) -> str:
        write = type(self.write_policy).__name__ if self.write_policy else "none"
        return (
            f"Cache({self.store!r}, source={self.source!r}, "
            f"read={type(self.read_policy).__name__}, write={write})"
        )

    # -- reads -------------------------------------------------------------------

    def read(self, key: Key, default: Any = None, *, loader: Loader | None = None) -> Any:
        """Return the value of ``key`` by the read policy, or ``default`` if absent.

        Read-through loads a miss from the source; cache-aside calls ``loader(key)`` on a
        miss if given (the loader returns ``MISSING`` for "absent": nothing is cached).
        """
        if self._blocks:
            self._warn_in_loop("read")
        self._check_key(key)  # 1.0 and True would find key 1 in a dict-backed store
        value = self._store_get(key)
        if value is not MISSING:
            self._count_hit()
            return value
        return self._read_miss(key, default, loader)

    def _read_inline(self, key: Key, default: Any = None, *, loader: Loader | None = None) -> Any:
        """``read`` with a MemoryStore's lock-free hit inlined: one frame on a hit.

        ``cachewise._speedups.HitReader`` is this method's hit in C; both hand everything
        but a live hit to :meth:`_read_past_hit`.
        """
        kind = type(key)
        if kind is not str and kind is not int and kind is not bytes:
            # A tuple is checked part by part; anything else is refused here: 1.0, True
            # or an IntEnum would otherwise find the entry of key 1.
            self._check_key(key)
        entry = self._lookup(key)
        if entry is not None:
            expires_at = entry[1]
            if expires_at is None or expires_at > self._now():
                try:  # noqa: SIM105 - free on the hit path, suppress() is not
                    self._touch(key)
                except KeyError:  # evicted by another thread since the lookup
                    pass
                self._count_hit()
                return entry[0]
        return self._read_past_hit(key, default, loader)

    def _read_past_hit(self, key: Key, default: Any, loader: Loader | None) -> Any:
        """The inlined read past its hit: an absent, expired or refused key.

        The store's own ``get`` runs here: it drops and counts an expired entry, finds
        an entry written since the lookup, and, for a TieredStore, reads L2 when L1 has
        nothing (a value another process wrote is a hit, with or without a source).
        """
        self._check_key(key)
        value = self._store_get(key)
        if value is not MISSING:
            self._count_hit()
            return value
        return self._read_miss(key, default, loader)

    def _read_refreshing(
        self, key: Key, default: Any = None, *, loader: Loader | None = None
    ) -> Any:
        """``read`` for ReadThrough with refresh-ahead or early recomputation."""
        self._check_key(key)
        value = self._store_get(key)
        if value is MISSING:
            return self._read_miss(key, default, loader)
        self._count_hit()
        left = self._ttl_left(key)
        if left is not None and self._should_refresh(left):
            self._refresh_in_background(key, loader or self._source_load)
        return value

    def _refresh_in_background(self, key: Key, loader: Loader) -> None:
        if key in self._inflight or self._closed:
            return
        if self._refresher is None:
            with self._inflight_lock:
                if self._refresher is None:
                    self._refresher = ThreadPoolExecutor(2, f"{self.name}-refresh")
        self._refresher.submit(self._refresh, key, loader)

    def _refresh(self, key: Key, loader: Loader) -> None:
        span = None if _tracing.tracer is None else _tracing.start("cachewise.refresh", self._span)
        try:
            self._load(key, loader)
        except Exception as exc:
            _tracing.end(span, exc)
            self._refresh_failed(key, exc)
        else:
            _tracing.end(span)

    def _read_miss(self, key: Key, default: Any, loader: Loader | None) -> Any:
        # The key was checked by every caller before its first store lookup.
        if self._blocks:
            self._warn_in_loop("read")
        self._misses.add()
        loader = self._miss_loader(loader)
        if loader is None and self._flusher is None:
            return default
        value = self._load(key, loader)
        return default if value is MISSING else value

    def _load(self, key: Key, loader: Loader | None, *, ttl: float | None = None) -> Any:
        # setdefault registers atomically (keys hash and compare in C), so the C miss
        # path (cachewise._speedups.MissPath) and this one share one in-flight dict.
        mine = _Load()
        load = self._inflight.setdefault(key, mine)
        if load is not mine:
            return cast(_Load, load).wait()
        try:
            load.value = run(
                self._fetch_flow(key, loader, load, self._read_ttl if ttl is None else ttl)
            )
        except BaseException as exc:
            load.error = exc
            raise
        finally:
            with self._inflight_lock:
                if self._inflight.get(key) is load:  # not already retired by a write
                    del self._inflight[key]
            load.publish()
        return load.value

    def read_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the keys found; misses are loaded from the source in one batch."""
        if self._blocks:
            self._warn_in_loop("read_many")
        wanted = list(dict.fromkeys(self._check_key(k) for k in keys))
        self._check_open()
        found = self.store.get_many(wanted)
        todo = self._batch_misses(wanted, found)
        if todo is None:
            return found
        found.update(self._load_many(*todo))
        return {k: found[k] for k in wanted if k in found}

    def _load_many(self, keys: list[Key], from_source: bool) -> dict[Key, Any]:
        busy = threading.Lock()
        busy.acquire()
        try:
            mine, theirs = self._register_loads(keys, functools.partial(_BatchLoad, busy))
            result = run(self._lead_loads_flow(mine, from_source)) if mine else {}
        finally:
            busy.release()  # publishes every key this call led, value or error
        for key, load in theirs.items():
            value = cast(_Load, load).wait()
            if value is not MISSING:
                result[key] = value
        return result

    def cached(
        self, ttl: float | None = None, key: KeyMaker | None = None
    ) -> Callable[[Callable[P, R]], Memoized[P, R]]:
        """Memoize a function through this (cache-aside) cache, with single flight.

        The key of a call is ``(module.qualname, *args, *sorted kwargs items)``, or
        ``key(*args, **kwargs)``; ``fn.invalidate(*args, **kwargs)`` drops one call's
        result. On a cache with a source: ConfigurationError.
        """
        ttl = check_memoizable(self, ttl, key)

        def decorate(fn: Callable[P, R]) -> Memoized[P, R]:
            if inspect.iscoroutinefunction(fn):
                raise ConfigurationError(
                    f"{fn.__qualname__} is async: memoize it with cachewise.aio.AsyncCache"
                )
            return SyncWrapper[P, R](self, fn, ttl, key_maker(fn, key))

        return decorate

    # -- writes ------------------------------------------------------------------

    def write(
        self, key: Key, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Write ``value`` by the write policy (cache-aside: into the cache only)."""
        if self._blocks:
            self._warn_in_loop("write")
        run(self._write_flow(key, value, ttl, tags))

    def write_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Write every item by the write policy, batched (one source call per batch)."""
        if self._blocks:
            self._warn_in_loop("write_many")
        run(self._write_many_flow(items, ttl))

    def delete(self, key: Key) -> None:
        """Delete ``key`` by the write policy (write-back: a tombstone that is flushed)."""
        if self._blocks:
            self._warn_in_loop("delete")
        run(self._delete_flow(key))

    # -- invalidation ----------------------------------------------------------------

    def invalidate(self, key: Key) -> bool:
        """Drop ``key`` from the cache only (never the source, never a dirty entry).

        Returns whether a cached entry was dropped.
        """
        if self._blocks:
            self._warn_in_loop("invalidate")
        return run(self._invalidate_flow(key))

    def invalidate_many(self, keys: Iterable[Key]) -> int:
        """Drop every key from the cache (not dirty ones); return how many were cached."""
        if self._blocks:
            self._warn_in_loop("invalidate_many")
        return run(self._invalidate_many_flow(keys))

    def invalidate_tag(self, tag: str) -> int:
        """Drop every key written with ``tags=[tag]``; return how many were cached."""
        return self.invalidate_many(self._tag_keys(tag))

    # -- write-back ----------------------------------------------------------------

    def flush(self) -> int:
        """Write every dirty entry to the source now; return how many keys were written.

        If the source fails the entries stay dirty (the background flusher retries with
        backoff) and FlushError is raised promptly. Without write-back: returns 0.
        """
        self._check_open()
        if self._flusher is None:
            return 0
        if self._blocks:
            self._warn_in_loop("flush")
        return self._flusher.flush()

    def dirty_keys(self) -> list[Key]:
        """Keys holding writes not yet in the source, oldest first."""
        self._check_open()
        return [] if self._flusher is None else self._flusher.dirty_keys()

    def rejected(self) -> dict[Key, Rejected]:
        """Write-back's parked keys: each one's refused value and the source's reason.

        A parked key is out of the dirty set (it blocks nothing), kept in the journal
        and not served from the cache. Write it again, :meth:`retry_rejected` it or
        :meth:`discard_rejected` it.
        """
        self._check_open()
        return {} if self._flusher is None else self._flusher.rejected()

    def retry_rejected(self, keys: Iterable[Key] | None = None) -> int:
        """Write parked keys (all, or those of ``keys``) again, as new writes; return how many.

        For after the cause is fixed (a constraint relaxed, a missing parent row added):
        each becomes dirty again and goes out with the next flush, which parks it again
        if the source still refuses it.
        """
        self._check_open()
        if self._flusher is None:
            return 0
        wanted = list(self._flusher.rejected()) if keys is None else list(keys)
        return run(self._retry_rejected_flow(wanted))

    def discard_rejected(self, keys: Iterable[Key] | None = None) -> int:
        """Forget parked keys (all, or those of ``keys``); return how many were parked.

        The source keeps the value it has; with a journal the discard is durable when
        this returns.
        """
        self._check_open()
        if self._flusher is None:
            return 0
        return self._flusher.discard(None if keys is None else [check_key(k) for k in keys])

    def _reader_hits(self) -> int:
        return self._reader.hits if self._reader is not None else 0

    def _miss_path_counts(self) -> tuple[int, int]:
        path = self._miss_path
        return (path.misses, path.loads) if path is not None else (0, 0)

    def _pool_stats(self) -> PoolStats | None:
        engine = getattr(self.source, "engine", None)
        return pool_stats(engine) if isinstance(engine, Engine) else None

    def close(self) -> None:
        """Flush, stop background work and release the store's and source's connections.

        Every write either returned before the final flush (and is in it) or raises
        ClosedError; every later call raises ClosedError (``stats`` stays readable). A
        second ``close()`` does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self.read = self._read_closed  # type: ignore[method-assign]
        for stripe in self._stripes:  # writes inside a stripe finish; later ones see closed
            with stripe:
                pass
        if self._refresher is not None:
            self._refresher.shutdown(wait=True)
        try:
            if self._flusher is not None:
                self._flusher.close()
        finally:
            if self._claim is not None:  # after the final flush: the namespace is free
                self._claim.release()
            for part in (self.store, self.source):
                close = getattr(part, "close", None)
                if callable(close):
                    close()

    def _read_closed(self, key: Key, default: Any = None, *, loader: Loader | None = None) -> Any:
        """``read`` once the cache is closed."""
        raise ClosedError(f"{self.name} cache is closed")

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _blocks_on_io(store: Store, source: Source | None, write: WritePolicy | None) -> bool:
    """Whether this cache's misses or writes wait on a network, a database or a disk."""
    if not isinstance(store, MemoryStore) or not isinstance(source, (type(None), MappingSource)):
        return True
    return isinstance(write, WriteBack) and write.journal is not None


def _compose(
    store: Store, source: Source | None, read: ReadPolicy | None, write: WritePolicy | None
) -> tuple[ReadPolicy, WritePolicy | None]:
    """Validate a store/source/policy combination and fill in the defaults."""
    if not implements(store, Store):
        raise ConfigurationError(f"store must implement the Store protocol, got {store!r}")
    if source is not None and not implements(source, Source):
        raise ConfigurationError(f"source must implement the Source protocol: {source!r}")
    return compose(store, source, read, write, ttl_aware=implements(store, TTLAware))


def _c_reader(
    hit_path: HitPath, slow: Callable[[Key, Any, Loader | None], Any]
) -> HitReader | None:
    """The hit path in C (``cachewise._speedups``), unless not built or turned off.

    ``CACHEWISE_PURE_PYTHON=1`` keeps the pure-Python path. The C reader reads the dict
    itself, so it serves only a hit path whose lookup is a plain dict's ``get``.
    """
    if os.environ.get("CACHEWISE_PURE_PYTHON") == "1":
        return None
    data = getattr(hit_path.lookup, "__self__", None)
    if type(data) is not dict or hit_path.lookup != data.get:
        return None
    try:
        module = importlib.import_module("cachewise._speedups")
    except ImportError:  # installed without a compiler: pure Python serves
        return None
    reader: HitReader = module.HitReader(data, hit_path.clock, hit_path.touch, slow)
    return reader


def _open_shared(policy: WriteBack, source: Source, store: Store, name: str) -> SharedFlusher:
    """The shared write-back runtime (imported only when asked for: it needs redis-py)."""
    try:
        module = importlib.import_module("cachewise.writeback.shared")
    except ImportError as exc:
        raise ConfigurationError(
            "journal='redis' needs redis-py: pip install 'cachewise[redis]'"
        ) from exc
    runtime: SharedFlusher = module.SharedFlusher(policy, source, store, name=name)
    return runtime


def _open_journal(policy: WriteBack, store: Store) -> Journal:
    """Open the journal a WriteBack policy names (a local file, or 'redis')."""
    module = importlib.import_module("cachewise.writeback.journal")
    opener: Callable[[WriteBack, Store], Journal] = module.open_journal
    return opener(policy, store)
