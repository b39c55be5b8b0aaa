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

import importlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from cachewise._types import MISSING, Key, check_key, check_ttl
from cachewise.errors import ClosedError, ConfigurationError, StoreError
from cachewise.policies import (
    CacheAside,
    ReadPolicy,
    ReadThrough,
    WriteAround,
    WriteBack,
    WritePolicy,
    WriteThrough,
)
from cachewise.pool import PoolStats, pool_stats
from cachewise.sources.base import KeyChecked, Source
from cachewise.stats import Counter, Stats
from cachewise.stores.base import (
    BatchLoadGuarded,
    Claim,
    Claimable,
    EvictionAware,
    HitPath,
    Inlinable,
    LoadGuarded,
    LoadTicket,
    PreparedWrite,
    Store,
    TTLAware,
    WriteGuarded,
)
from cachewise.writeback.dirty import TOMBSTONE
from cachewise.writeback.flusher import Flusher, Journal

if TYPE_CHECKING:
    from cachewise._speedups import HitReader
    from cachewise.writeback.shared import SharedFlusher

logger = logging.getLogger("cachewise")

Loader = Callable[[Key], Any]
_STRIPES = 64
_CLAIM_TTL = 10.0
"""Seconds a dead process's write-back claim on a Redis namespace outlives it (another
host must wait this long; on the same host a successor takes it over at once)."""


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


class Cache:
    """The cache manager: composes a store, a source, a read policy and a write policy.

    With no source the strategy is cache-aside: ``read``/``write`` touch the cache only,
    the application reads and writes the database and calls ``invalidate``. With a
    source, ``read`` defaults to ``ReadThrough()`` and ``write`` to ``WriteThrough()``.
    """

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
        self.store = store
        self.source = source
        self.read_policy: ReadPolicy = read
        self.write_policy: WritePolicy | None = write
        self.name = name
        self._read_ttl = read.ttl
        self._store_get = store.get
        # Keys are checked before any I/O: by the source when it knows its key types.
        self._check_key: Callable[[Key], Key] = (
            source.check_key if isinstance(source, KeyChecked) else check_key
        )
        self._guard: LoadGuarded | None = store if isinstance(store, LoadGuarded) else None
        self._batch_guard = store if isinstance(store, BatchLoadGuarded) else None
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._inflight: dict[Key, _Load] = {}
        self._inflight_lock = threading.Lock()
        self._tags: dict[str, set[Key]] = {}
        self._tags_lock = threading.Lock()
        self._closed = False
        self._hits = Counter()
        self._misses = Counter()
        self._loads = Counter()
        self._source_reads = Counter()
        self._source_writes = Counter()
        self._invalidations = Counter()
        self._count_hit = self._hits.add
        self._refresher: ThreadPoolExecutor | None = None
        self._load_seconds = 0.0
        self._choose_read_path()
        self._write_guard: WriteGuarded | None = store if isinstance(store, WriteGuarded) else None
        self._flusher: Flusher | SharedFlusher | None = None
        self._claim: Claim | None = None
        # A dirty value may be cached in a store that outlives the process only if a
        # journal makes it durable: else a crash would leave it there, never flushed.
        self._cache_dirty = self._write_guard is None or (
            isinstance(write, WriteBack) and write.journal is not None
        )
        self._evicted_dirty: list[Key] = []
        if isinstance(write, WriteBack):
            self._start_write_back(write, journal)

    def _choose_read_path(self) -> None:
        """Bind ``read`` to the fastest path the store and read policy allow."""
        store, read = self.store, self.read_policy
        self._reader: HitReader | None = None
        if isinstance(read, ReadThrough) and read.refreshes:
            assert isinstance(store, TTLAware)
            self._ttl_left = store.ttl_left
            self.read = self._read_refreshing  # type: ignore[method-assign]
            return
        hit_path = store.hit_path() if isinstance(store, Inlinable) else None
        if hit_path is not None:
            self._lookup, self._now, self._touch = hit_path
            self.read = self._read_inline  # type: ignore[method-assign]
            self._reader = _c_reader(hit_path, self._read_past_hit)
            if self._reader is not None:
                self.read = self._reader  # type: ignore[method-assign]

    def _start_write_back(self, policy: WriteBack, journal: Journal | None) -> None:
        self._claim = self._claim_write_back(policy)
        try:
            self._open_write_back(policy, journal)
        except BaseException:
            if self._claim is not None:
                self._claim.release()
            raise

    def _claim_write_back(self, policy: WriteBack) -> Claim | None:
        """One in-process write-back per Redis namespace, or only shared ones (issue 11).

        Two processes that each flush their own dirty set to one namespace flush in no
        order with each other: the source can end with one write and Redis another.
        """
        if not isinstance(self.store, Claimable):
            return None
        solo = policy.journal != "redis"
        try:
            return self.store.claim("writeback", solo=solo, ttl=_CLAIM_TTL)
        except ConfigurationError as exc:
            mine = "an in-process WriteBack" if solo else "WriteBack(journal='redis')"
            raise ConfigurationError(
                f"{self.name}: {mine} cannot share this Redis namespace with the "
                f"write-back running there ({exc}). In-process write-backs flush in no "
                "order with each other, leaving the source and the cache with different "
                "values: use WriteBack(journal='redis') (the shared write-back) in every "
                "process, or give each its own namespace."
            ) from None

    def _check_claim(self) -> None:
        if self._claim is not None and self._claim.lost:
            raise StoreError(
                f"{self.name}: another process took over this Redis namespace's write-back "
                "(this one's claim lapsed); writes are refused"
            )

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
        self._flusher = Flusher(policy, self.source, journal=journal, name=self.name)
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

    def _should_refresh(self, left: float) -> bool:
        policy = self.read_policy
        assert isinstance(policy, ReadThrough)
        if policy.refresh_ahead is not None and left < policy.refresh_ahead:
            return True
        if policy.early_recompute is not None and self._load_seconds > 0:
            # XFetch: reload when now - delta * beta * ln(U) >= expiry, i.e. left < that
            draw = 1.0 - random.random()  # in (0, 1]
            return left < -self._load_seconds * policy.early_recompute * math.log(draw)
        return False

    def _source_load(self, key: Key) -> Any:
        assert self.source is not None
        return self.source.load(key)

    def _refresh_in_background(self, key: Key, loader: Loader) -> None:
        if key in self._inflight or self._closed:
            return
        if self._refresher is None:
            with self._inflight_lock:
                if self._refresher is None:
                    self._refresher = ThreadPoolExecutor(2, f"{self.name}-refresh")
        self._refresher.submit(self._refresh, key, loader)

    def _refresh(self, key: Key, loader: Loader) -> None:
        try:
            self._load(key, loader)
        except Exception:
            logger.warning(
                "background refresh of %r failed; the entry expires as usual", key, exc_info=True
            )

    def _read_miss(self, key: Key, default: Any, loader: Loader | None) -> Any:
        # The key was checked by every caller before its first store lookup.
        self._misses.add()
        if loader is None and self.source is not None and isinstance(self.read_policy, ReadThrough):
            loader = self.source.load
        if loader is None and self._flusher is None:
            return default
        value = self._load(key, loader)
        return default if value is MISSING else value

    def _read_dirty(self, key: Key) -> tuple[bool, Any]:
        """Read-your-writes: serve (and re-cache) a dirty value the store no longer has."""
        assert self._flusher is not None
        with self._stripe(key):
            entry = self._flusher.dirty_entry(key)
            if entry is None:
                return False, MISSING
            if entry.value is TOMBSTONE:
                return True, MISSING
            if self._cache_dirty:
                self.store.set(key, entry.value)
            return True, entry.value

    def _load(self, key: Key, loader: Loader | None) -> Any:
        with self._inflight_lock:
            load = self._inflight.get(key)
            leader = load is None
            if load is None:
                load = self._inflight[key] = _Load()
        if not leader:
            return load.wait()
        try:
            load.value = self._fetch(key, loader, load)
        except BaseException as exc:
            load.error = exc
            raise
        finally:
            with self._inflight_lock:
                if self._inflight.get(key) is load:  # not already retired by a write
                    del self._inflight[key]
            load.publish()
        return load.value

    def _fetch(self, key: Key, loader: Loader | None, load: _Load) -> Any:
        # Registered before looking: a write that finishes from here on supersedes us, and
        # one that finished before is visible below (dirty set) or in the source.
        if self._flusher is not None:
            dirty, value = self._read_dirty(key)
            if dirty:
                return value
        if loader is None:
            return MISSING
        guard = self._guard
        ticket: LoadTicket | None = None
        if guard is not None:
            ticket = guard.begin_load(key)
            if ticket.value is not MISSING:
                return ticket.value
        self._loads.add()
        self._source_reads.add()
        started = time.monotonic()
        try:
            value = loader(key)
            # a smoothed load time: XFetch's delta
            self._load_seconds += 0.2 * (time.monotonic() - started - self._load_seconds)
        except BaseException:
            if guard is not None and ticket is not None:
                guard.end_load(key, ticket, MISSING, self._read_ttl)
            raise
        with self._stripe(key):
            keep = value is not MISSING and not load.superseded
            if guard is not None and ticket is not None:
                guard.end_load(key, ticket, value if keep else MISSING, self._read_ttl)
            elif keep:
                self.store.set(key, value, self._read_ttl)
        return value

    def read_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the keys found; misses are loaded from the source in one batch."""
        wanted = list(dict.fromkeys(self._check_key(k) for k in keys))
        found = self.store.get_many(wanted)
        self._hits.add_many(len(found))
        missing = [k for k in wanted if k not in found]
        self._misses.add_many(len(missing))
        from_source = self.source is not None and isinstance(self.read_policy, ReadThrough)
        if not missing or not (from_source or self._flusher is not None):
            return found
        found.update(self._load_many(missing, from_source))
        return {k: found[k] for k in wanted if k in found}

    def _load_many(self, keys: list[Key], from_source: bool) -> dict[Key, Any]:
        mine: dict[Key, _Load] = {}
        theirs: dict[Key, _Load] = {}
        with self._inflight_lock:
            for key in keys:
                load = self._inflight.get(key)
                if load is None:
                    mine[key] = self._inflight[key] = _Load()
                else:
                    theirs[key] = load
        result = self._lead_loads(mine, from_source) if mine else {}
        for key, load in theirs.items():
            value = load.wait()
            if value is not MISSING:
                result[key] = value
        return result

    def _lead_loads(self, mine: dict[Key, _Load], from_source: bool) -> dict[Key, Any]:
        """Load the keys this thread leads in one ``load_many``; publish to waiters.

        Dirty keys are answered from the dirty set, checked after registering (see _fetch).
        """
        loaded: dict[Key, Any] = {}
        try:
            todo = self._answer_dirty(mine, loaded) if self._flusher is not None else list(mine)
            if from_source and todo:
                loaded.update(self._fetch_many(mine, todo))
        except BaseException as exc:
            for load in mine.values():
                load.error = exc
            raise
        finally:
            with self._inflight_lock:
                for key, load in mine.items():
                    if self._inflight.get(key) is load:  # not already retired by a write
                        del self._inflight[key]
            for load in mine.values():
                load.publish()
        return loaded

    def _fetch_many(self, mine: dict[Key, _Load], todo: list[Key]) -> dict[Key, Any]:
        """One ``load_many`` for ``todo``; store what no write overtook.

        Across processes too, when the store guards batch loads with versions.
        """
        assert self.source is not None
        guard = self._batch_guard
        tickets = guard.begin_load_many(todo) if guard is not None else {}
        found = {k: t.value for k, t in tickets.items() if t.value is not MISSING}
        todo = [k for k in todo if k not in found]
        fetched: dict[Key, Any] = {}
        if todo:
            self._loads.add_many(len(todo))
            self._source_reads.add_many(len(todo))
            fetched = self.source.load_many(todo)
        found.update(fetched)
        for key, load in mine.items():
            if key in tickets or key in todo:
                load.value = found.get(key, MISSING)
        with self._stripes_for(fetched):
            fresh = {k: v for k, v in fetched.items() if not mine[k].superseded}
            if guard is not None:
                guard.end_load_many(tickets, fresh, self._read_ttl)
            elif fresh:
                self.store.set_many(fresh, self._read_ttl)
        return found

    def _answer_dirty(self, mine: dict[Key, _Load], found: dict[Key, Any]) -> list[Key]:
        """Answer the dirty keys among ``mine`` into ``found``; return the clean ones."""
        clean = []
        for key, load in mine.items():
            dirty, value = self._read_dirty(key)
            if not dirty:
                clean.append(key)
                continue
            load.value = value
            if value is not MISSING:
                found[key] = value
        return clean

    # -- writes ------------------------------------------------------------------

    def write(
        self, key: Key, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Write ``value`` by the write policy (cache-aside: into the cache only)."""
        self._check_key(key)
        ttl = check_ttl(ttl)
        tag_list = _check_tags(tags)
        self._check_open()
        if value is MISSING or value is TOMBSTONE:
            raise ConfigurationError("MISSING/TOMBSTONE are sentinels, not values")
        with self._stripe(key):
            try:
                self._write_locked(key, value, ttl)
            finally:
                self._supersede(key)
        if tag_list:
            self._tag(key, tag_list)
        self._relieve_pressure()

    def _write_locked(self, key: Key, value: Any, ttl: float | None) -> None:
        policy = self.write_policy
        if policy is None:
            self.store.set(key, value, ttl)
        elif isinstance(policy, WriteBack):
            self._write_back({key: value}, ttl)
        else:
            source = self.source
            assert source is not None
            self._through_source({key: value}, ttl, lambda: source.save(key, value), policy)

    def _write_back(self, items: dict[Key, Any], ttl: float | None) -> None:
        """Write-back (a ``TOMBSTONE`` value: a delete): dirty now, the source later."""
        flusher = self._flusher
        assert flusher is not None
        self._check_claim()
        guard = self._write_guard if not flusher.stores_values else None
        if guard is None:
            accepted = flusher.accept(items)
            if flusher.stores_values or not accepted:
                return
            values = {k: items[k] for k in accepted}
            drops = [k for k, v in values.items() if v is TOMBSTONE]
            if drops:
                self.store.delete_many(drops)
            keeps = {k: v for k, v in values.items() if v is not TOMBSTONE}
            if len(keeps) == 1:
                ((key, value),) = keeps.items()
                self.store.set(key, value, ttl)
            elif keeps:
                self.store.set_many(keeps, ttl)
            return
        # A store that outlives the process (Redis) is bracketed as write-through is:
        # checked and encoded first, the old copy dropped and held before the write is
        # acknowledged (Redis down: refused, nothing changed), the new value stored
        # after. Only a journal makes a dirty value durable, so without one the copy
        # stays dropped: a crash must not leave Redis serving a write the source will
        # never get. Reads of a dirty key are answered from the dirty set meanwhile.
        values = {k: MISSING if v is TOMBSTONE else v for k, v in items.items()}
        held = self._hold(guard, guard.prepare_write(values, ttl), items)
        try:
            accepted = flusher.accept(items)
        except BaseException:
            self._release_quietly(guard, held, items)
            raise
        try:
            guard.end_write(held, saved=self._cache_dirty and len(accepted) == len(items))
        except Exception:  # accepted and durable: the dirty set serves it, the hold expires
            logger.warning(
                "write-back accepted %s but could not cache it; reads use the dirty set",
                _shown(items),
                exc_info=True,
            )

    def _hold(self, guard: WriteGuarded, prepared: PreparedWrite, keys: Any) -> PreparedWrite:
        """``begin_write``; if the store cannot, say that nothing was written."""
        try:
            return guard.begin_write(prepared)
        except StoreError as exc:
            raise StoreError(
                f"{self.name}: could not drop and hold the cached copy of {_shown(keys)} "
                f"before writing, so nothing was written ({exc})"
            ) from exc

    def _release_quietly(self, guard: WriteGuarded, held: PreparedWrite, keys: Any) -> None:
        try:
            guard.end_write(held, saved=False)
        except Exception:  # the error being raised is the one to report; holds expire
            logger.warning("could not release the write hold of %s", _shown(keys))

    def _through_source(
        self,
        items: dict[Key, Any],
        ttl: float | None,
        save: Callable[[], None],
        policy: WriteThrough | WriteAround,
    ) -> None:
        """Write-through, write-around and their deletes (a ``MISSING`` value: deleted).

        The source first, then the cached copies: write-through caches the values,
        write-around drops them (the textbook ``invalidate=False`` leaves them alone).
        A store that outlives this process (``WriteGuarded``: Redis) is bracketed:
        every check runs before any I/O, the cached copies are dropped and held before
        the source write and stored after, so a crash at any point leaves a miss there,
        never the old value.
        """
        if isinstance(policy, WriteAround) and not policy.invalidate:
            save()
            self._source_writes.add_many(len(items))
            return
        keep = isinstance(policy, WriteThrough) and all(v is not MISSING for v in items.values())
        guard = self._write_guard
        if guard is None:
            save()
            self._source_writes.add_many(len(items))
            if keep:
                self._store_after_source(items, ttl)
            else:
                self._drop_after_source(list(items))
            return
        prepared = guard.prepare_write(items if keep else dict.fromkeys(items, MISSING), ttl)
        held = self._hold(guard, prepared, items)
        try:
            save()
        except BaseException:
            self._release_quietly(guard, held, items)
            raise
        self._source_writes.add_many(len(items))
        try:
            guard.end_write(held, saved=True)
        except Exception as exc:
            what = "cache" if keep else "drop the cached copy of"
            raise StoreError(f"saved to the source but could not {what} {_shown(items)}") from exc

    def _store_after_source(self, items: dict[Key, Any], ttl: float | None) -> None:
        try:
            if len(items) == 1:
                ((key, value),) = items.items()
                self.store.set(key, value, ttl)
            else:
                self.store.set_many(items, ttl)
        except Exception as exc:
            self._drop_after_source(list(items))
            raise StoreError(f"saved to the source but could not cache {_shown(items)}") from exc

    def _drop_after_source(self, keys: list[Key]) -> None:
        try:
            if len(keys) == 1:
                self.store.delete(keys[0])
            else:
                self.store.delete_many(keys)
        except Exception as exc:
            raise StoreError(
                f"saved to the source but could not drop the cached copy of {_shown(keys)}"
            ) from exc

    def write_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Write every item by the write policy, batched (one source call per batch)."""
        items = {self._check_key(k): v for k, v in items.items()}
        ttl = check_ttl(ttl)
        self._check_open()
        if not items:
            return
        for value in items.values():
            if value is MISSING or value is TOMBSTONE:
                raise ConfigurationError("MISSING/TOMBSTONE are sentinels, not values")
        with self._stripes_for(items):
            try:
                self._write_many_locked(items, ttl)
            finally:
                for key in items:
                    self._supersede(key)
        self._relieve_pressure()

    def _write_many_locked(self, items: dict[Key, Any], ttl: float | None) -> None:
        policy = self.write_policy
        if policy is None:
            self.store.set_many(items, ttl)
        elif isinstance(policy, WriteBack):
            self._write_back(items, ttl)
        else:
            source = self.source
            assert source is not None
            self._through_source(items, ttl, lambda: source.save_many(items), policy)

    def delete(self, key: Key) -> None:
        """Delete ``key`` by the write policy (write-back: a tombstone that is flushed)."""
        self._check_key(key)
        self._check_open()
        with self._stripe(key):
            try:
                self._delete_locked(key)
            finally:
                self._supersede(key)

    def _delete_locked(self, key: Key) -> None:
        policy = self.write_policy
        if policy is None:
            self.store.delete(key)
        elif isinstance(policy, WriteBack):
            self._write_back({key: TOMBSTONE}, None)
        else:
            source = self.source
            assert source is not None
            self._through_source({key: MISSING}, None, lambda: source.remove(key), policy)

    # -- invalidation ----------------------------------------------------------------

    def invalidate(self, key: Key) -> bool:
        """Drop ``key`` from the cache only (never the source, never a dirty entry).

        Returns whether a cached entry was dropped.
        """
        self._check_key(key)
        with self._stripe(key):
            try:
                if self._flusher is not None and self._flusher.is_dirty(key):
                    return False
                self._invalidations.add()
                return self.store.delete(key)
            finally:
                self._supersede(key)

    def invalidate_many(self, keys: Iterable[Key]) -> int:
        """Drop every key from the cache (not dirty ones); return how many were cached."""
        wanted = [self._check_key(k) for k in keys]
        if not wanted:
            return 0
        with self._stripes_for(wanted):
            try:
                flusher = self._flusher
                clean = [k for k in wanted if flusher is None or not flusher.is_dirty(k)]
                self._invalidations.add_many(len(clean))
                return self.store.delete_many(clean)
            finally:
                for key in wanted:
                    self._supersede(key)

    def invalidate_tag(self, tag: str) -> int:
        """Drop every key written with ``tags=[tag]``; return how many were cached."""
        _check_tags([tag])
        with self._tags_lock:
            keys = self._tags.pop(tag, set())
        return self.invalidate_many(keys)

    def _tag(self, key: Key, tags: list[str]) -> None:
        with self._tags_lock:
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)

    # -- write-back ----------------------------------------------------------------

    def flush(self) -> int:
        """Write every dirty entry to the source now; return how many keys were written.

        If the source fails the entries stay dirty (the background flusher retries with
        backoff) and FlushError is raised promptly. Without write-back: returns 0.
        """
        if self._flusher is None:
            return 0
        return self._flusher.flush()

    def dirty_keys(self) -> list[Key]:
        """Keys holding writes not yet in the source, oldest first."""
        return [] if self._flusher is None else self._flusher.dirty_keys()

    def _on_evicted(self, keys: list[Key]) -> None:
        flusher = self._flusher
        if flusher is not None:
            dirty = [k for k in keys if flusher.is_dirty(k)]
            if dirty:
                self._evicted_dirty.extend(dirty)

    def _relieve_pressure(self) -> None:
        """Flush dirty keys the store just evicted, so ``max_entries`` bounds memory."""
        if not self._evicted_dirty or self._flusher is None:
            return
        keys, self._evicted_dirty = self._evicted_dirty, []
        try:
            self._flusher.flush(keys, wait=False)
        except Exception:
            logger.warning(
                "flush on eviction pressure failed; the background flusher retries", exc_info=True
            )

    # -- bookkeeping ----------------------------------------------------------------

    def _stripe(self, key: Key) -> threading.Lock:
        return self._stripes[hash(key) % _STRIPES]

    def _stripes_for(self, keys: Iterable[Key]) -> _MultiLock:
        indexes = sorted({hash(k) % _STRIPES for k in keys})
        return _MultiLock([self._stripes[i] for i in indexes])

    def _supersede(self, key: Key) -> None:
        """Mark a load of ``key`` in flight as overtaken by a write, and retire it.

        Its leader will not cache its value, and a read that starts from now on (after
        the write returned) starts a load of its own instead of joining one that may
        have read the source before the write.
        """
        if key not in self._inflight:  # the common case: no lock
            return
        with self._inflight_lock:
            load = self._inflight.pop(key, None)
        if load is not None:
            load.superseded = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.name} cache is closed")

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        store = self.store
        evictions = store.evictions if isinstance(store, EvictionAware) else 0
        expirations = store.expirations if isinstance(store, EvictionAware) else 0
        flusher = self._flusher
        writes = self._source_writes.value + (flusher.source_writes.value if flusher else 0)
        return Stats(
            hits=self._hits.value + (self._reader.hits if self._reader is not None else 0),
            misses=self._misses.value,
            loads=self._loads.value,
            source_reads=self._source_reads.value,
            source_writes=writes,
            evictions=evictions,
            expirations=expirations,
            invalidations=self._invalidations.value,
            dirty=flusher.dirty_count if flusher else 0,
            flushes=flusher.flushes.value if flusher else 0,
            flush_failures=flusher.flush_failures.value if flusher else 0,
            coalesced=flusher.coalesced if flusher else 0,
            oldest_dirty_age=flusher.oldest_dirty_age() if flusher else 0.0,
            pool=self._pool_stats(),
        )

    def _pool_stats(self) -> PoolStats | None:
        engine = getattr(self.source, "engine", None)
        return pool_stats(engine) if isinstance(engine, Engine) else None

    def close(self) -> None:
        """Flush, stop background work and release the store's and source's connections."""
        if self._closed:
            return
        self._closed = True
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

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _MultiLock:
    """Hold several stripe locks at once, always taken in index order (no deadlock)."""

    __slots__ = ("_locks",)

    def __init__(self, locks: list[threading.Lock]) -> None:
        self._locks = locks

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


def _compose(
    store: Store, source: Source | None, read: ReadPolicy | None, write: WritePolicy | None
) -> tuple[ReadPolicy, WritePolicy | None]:
    """Validate a store/source/policy combination and fill in the defaults."""
    if not isinstance(store, Store):
        raise ConfigurationError(f"store must implement the Store protocol, got {store!r}")
    if source is not None and not isinstance(source, Source):
        raise ConfigurationError(f"source must implement the Source protocol: {source!r}")
    if read is None:
        read = ReadThrough() if source is not None else CacheAside()
    if not isinstance(read, (CacheAside, ReadThrough)):
        raise ConfigurationError(f"read must be CacheAside() or ReadThrough(), got {read!r}")
    if source is None and isinstance(read, ReadThrough):
        raise ConfigurationError("ReadThrough needs a source to read through to")
    if isinstance(read, ReadThrough) and read.refreshes and not isinstance(store, TTLAware):
        raise ConfigurationError("refresh_ahead/early_recompute need a store with ttl_left()")
    if write is None and source is not None:
        write = WriteThrough()
    if write is not None and not isinstance(write, (WriteThrough, WriteBack, WriteAround)):
        raise ConfigurationError(
            f"write must be WriteThrough(), WriteBack(...) or WriteAround(), got {write!r}"
        )
    if write is not None and source is None:
        raise ConfigurationError(f"{type(write).__name__} needs a source to write to")
    return read, write


def _shown(keys: Iterable[Key], limit: int = 3) -> str:
    """Keys for a message: the first few, and how many more."""
    listed = list(keys)
    shown = ", ".join(repr(k) for k in listed[:limit])
    return shown if len(listed) <= limit else f"{shown} and {len(listed) - limit} more"


def _check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise ConfigurationError("tags must be a list of strings, not one string")
    out = list(tags)
    for tag in out:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"a tag must be a non-empty string, got {tag!r}")
    return out


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
