"""What the read and write policies do, written once for ``Cache`` and ``AsyncCache``.

Every multi-step operation (a miss's load, a batch load, a write by each write policy,
a delete, an invalidation) is a flow (``_flow.py``): it yields the store, source,
guard and write-back calls it makes and the driver runs them, in place (``Cache``) or
awaited (``AsyncCache``). The drivers keep only what differs between threads and an
event loop: how a per-key lock is taken (:meth:`CacheLogic._lock`), how single flight
waits, and the background work. State that is never held across I/O (in-flight
marks, tags, counters) is guarded by plain ``threading`` locks in both: on the event
loop they are uncontended and never block.

Ordering and races (see ``cache.py``'s header): writes of one key hold that key's
stripe lock, so the cache and the source see them in one order; every write, delete
and invalidation marks an in-flight load of the key superseded and retires it from
single flight, and a load stores its result only if it was not superseded (the
cache-aside race), or, on stores that guard loads (Redis), only if the key's version
is unchanged (across processes too). A write that goes to the source over a store
that outlives the process (``WriteGuarded``: Redis) is bracketed: checked first, the
cached copy dropped and held before the source write, stored after, so a crash at
any point leaves a miss there, never the old value.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from cachewise import _tracing
from cachewise._events import event
from cachewise._flow import Call, Flow
from cachewise._types import MISSING, Key, check_key, check_ttl, implements
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
from cachewise.sources.base import KeyChecked, ValidatingSource
from cachewise.stats import LIVE, Counter, Histogram, HistogramSnapshot, Stats
from cachewise.stores.base import (
    BatchLoadGuarded,
    Claim,
    Claimable,
    EvictionAware,
    LoadGuarded,
    LoadTicket,
    PreparedWrite,
    WriteGuarded,
)
from cachewise.writeback.dirty import TOMBSTONE

if TYPE_CHECKING:
    from cachewise.stats import PoolStats

logger = logging.getLogger("cachewise")

Loader = Callable[[Key], Any]
STRIPES = 64
CLAIM_TTL = 10.0
"""Seconds a dead process's write-back claim on a Redis namespace outlives it (another
host must wait this long; on the same host a successor takes it over at once)."""


class Load(Protocol):
    """One in-flight load of a key, as each driver keeps it (thread lock or future)."""

    value: Any
    error: BaseException | None
    superseded: bool

    def publish(self) -> None:
        """Release the waiters (the outcome is in ``value`` / ``error``)."""
        ...


class CacheLogic:
    """The strategies' logic shared by ``Cache`` and ``AsyncCache`` (a mixin).

    A driver calls :meth:`_init_logic` from its constructor and implements
    :meth:`_lock` (a call that takes the stripe locks of some keys) and the single
    flight (``_load``). ``store``/``source`` calls are yielded, never made here.
    """

    store: Any
    source: Any
    read_policy: ReadPolicy
    write_policy: WritePolicy | None
    name: str
    _flusher: Any
    _stripes: list[Any]
    _inflight: dict[Key, Load]

    def _init_logic(
        self,
        store: Any,
        source: Any,
        read: ReadPolicy,
        write: WritePolicy | None,
        name: str,
    ) -> None:
        self.store = store
        self.source = source
        self.read_policy = read
        self.write_policy = write
        self.name = name
        self._read_ttl = read.ttl
        # Keys are checked before any I/O: by the source when it knows its key types.
        self._check_key: Callable[[Key], Key] = (
            source.check_key if implements(source, KeyChecked) else check_key
        )
        self._write_guard: WriteGuarded | None = store if isinstance(store, WriteGuarded) else None
        # A dirty value may be cached in a store that outlives the process only if a
        # journal makes it durable: else a crash would leave it there, never flushed.
        self._cache_dirty = self._write_guard is None or (
            isinstance(write, WriteBack) and write.journal is not None
        )
        self._claim: Claim | None = None
        self._validate = source.validate if implements(source, ValidatingSource) else None
        self._guard: LoadGuarded | None = store if isinstance(store, LoadGuarded) else None
        self._batch_guard = store if isinstance(store, BatchLoadGuarded) else None
        self._inflight = {}
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
        self._load_seconds = 0.0
        self._load_latency = Histogram(name="load_seconds", attributes={"cache": name})
        lag = getattr(store, "invalidation_lag", None)
        if isinstance(lag, Histogram):  # the store's lag is reported under this cache's name
            lag.attributes = {"cache": name}
        self._flusher = None
        self._evicted_dirty: list[Key] = []
        LIVE.add(self)

    # -- driver hooks ----------------------------------------------------------------

    def _lock(self, indexes: list[int]) -> Call:
        """The call that takes the stripe locks ``indexes`` (sorted: no deadlock)."""
        raise NotImplementedError

    def _unlock(self, indexes: list[int]) -> None:
        for i in reversed(indexes):
            self._stripes[i].release()

    @staticmethod
    def _indexes(keys: Iterable[Key]) -> list[int]:
        return sorted({hash(k) % STRIPES for k in keys})

    # -- reads -------------------------------------------------------------------------

    def _miss_loader(self, loader: Loader | None) -> Loader | None:
        """What loads a miss: the caller's loader, else the source under read-through."""
        if loader is None and self.source is not None and isinstance(self.read_policy, ReadThrough):
            return self.source.load  # type: ignore[no-any-return]
        return loader

    def _should_refresh(self, left: float) -> bool:
        """Whether a hit with ``left`` seconds of TTL reloads in the background."""
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

    def _read_dirty_flow(self, key: Key) -> Flow[tuple[bool, Any]]:
        """Read-your-writes: serve (and re-cache) a dirty value the store no longer has."""
        indexes = self._indexes((key,))
        yield self._lock(indexes)
        try:
            entry = yield self._flusher.dirty_entry, (key,)
            if entry is None:
                return False, MISSING
            if entry.value is TOMBSTONE:
                return True, MISSING
            if self._cache_dirty:
                yield self.store.set, (key, entry.value)
            return True, entry.value
        finally:
            self._unlock(indexes)

    def _fetch_flow(
        self, key: Key, loader: Loader | None, load: Load, ttl: float | None
    ) -> Flow[Any]:
        """A single-flight leader's load: dirty set, guard, loader, store unless superseded."""
        # Registered before looking: a write that finishes from here on supersedes us, and
        # one that finished before is visible below (dirty set) or in the source.
        if self._flusher is not None:
            dirty, value = yield from self._read_dirty_flow(key)
            if dirty:
                return value
        if loader is None:
            return MISSING
        guard = self._guard
        ticket: LoadTicket | None = None
        if guard is not None:
            ticket = yield guard.begin_load, (key,)
            assert ticket is not None
            if ticket.value is not MISSING:
                return ticket.value
        self._loads.add()
        self._source_reads.add()
        span = None if _tracing.tracer is None else _tracing.start("cachewise.load", self._span)
        started = time.monotonic()
        try:
            value = yield loader, (key,)
            took = time.monotonic() - started
            self._load_latency.observe(took)
            self._load_seconds += 0.2 * (took - self._load_seconds)  # XFetch's delta, smoothed
        except BaseException as exc:
            _tracing.end(span, exc)
            if guard is not None and ticket is not None:
                yield guard.end_load, (key, ticket, MISSING, ttl)
            raise
        _tracing.end(span)
        indexes = self._indexes((key,))
        yield self._lock(indexes)
        try:
            keep = value is not MISSING and not load.superseded
            if guard is not None and ticket is not None:
                yield guard.end_load, (key, ticket, value if keep else MISSING, ttl)
            elif keep:
                yield self.store.set, (key, value, ttl)
        finally:
            self._unlock(indexes)
        return value

    def _batch_misses(
        self, wanted: list[Key], found: dict[Key, Any]
    ) -> tuple[list[Key], bool] | None:
        """Count a batch read's hits and misses; what to load, and whether from the source."""
        self._hits.add_many(len(found))
        missing = [k for k in wanted if k not in found]
        self._misses.add_many(len(missing))
        from_source = self.source is not None and isinstance(self.read_policy, ReadThrough)
        if not missing or not (from_source or self._flusher is not None):
            return None
        return missing, from_source

    def _register_loads(
        self, keys: list[Key], new_load: Callable[[], Load]
    ) -> tuple[dict[Key, Load], dict[Key, Load]]:
        """Lead the loads of the keys nobody loads yet; join the others' (single flight)."""
        mine: dict[Key, Load] = {}
        theirs: dict[Key, Load] = {}
        for key in keys:
            # One atomic setdefault per key (keys hash and compare in C), as the sync
            # driver's C miss path (cachewise._speedups.MissPath) registers its loads.
            new = new_load()
            load = self._inflight.setdefault(key, new)
            if load is new:
                mine[key] = new
            else:
                theirs[key] = load
        return mine, theirs

    def _lead_loads_flow(self, mine: dict[Key, Load], from_source: bool) -> Flow[dict[Key, Any]]:
        """Load the keys this caller leads in one ``load_many``; publish to waiters.

        Dirty keys are answered from the dirty set, checked after registering.
        """
        loaded: dict[Key, Any] = {}
        try:
            todo = list(mine)
            if self._flusher is not None:
                todo = yield from self._answer_dirty_flow(mine, loaded)
            if from_source and todo:
                found = yield from self._fetch_many_flow(mine, todo)
                loaded.update(found)
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

    def _fetch_many_flow(self, mine: dict[Key, Load], todo: list[Key]) -> Flow[dict[Key, Any]]:
        """One ``load_many`` for ``todo``; store what no write overtook.

        Across processes too, when the store guards batch loads with versions.
        """
        guard = self._batch_guard
        tickets: dict[Key, LoadTicket] = {}
        if guard is not None:
            tickets = yield guard.begin_load_many, (todo,)
        found = {k: t.value for k, t in tickets.items() if t.value is not MISSING}
        todo = [k for k in todo if k not in found]
        fetched: dict[Key, Any] = {}
        if todo:
            self._loads.add_many(len(todo))
            self._source_reads.add_many(len(todo))
            span = None
            if _tracing.tracer is not None:
                span = _tracing.start("cachewise.load_many", {**self._span, "keys": len(todo)})
            started = time.monotonic()
            try:
                fetched = yield self.source.load_many, (todo,)
            except BaseException as exc:
                _tracing.end(span, exc)
                raise
            _tracing.end(span)
            self._load_latency.observe(time.monotonic() - started)
        found.update(fetched)
        asked = set(todo)  # a set: a list here made a 1,000-key batch a million compares
        for key, load in mine.items():
            if key in tickets or key in asked:
                load.value = found.get(key, MISSING)
        indexes = self._indexes(fetched)
        yield self._lock(indexes)
        try:
            fresh = {k: v for k, v in fetched.items() if not mine[k].superseded}
            if guard is not None:
                yield guard.end_load_many, (tickets, fresh, self._read_ttl)
            elif fresh:
                yield self.store.set_many, (fresh, self._read_ttl)
        finally:
            self._unlock(indexes)
        return found

    def _answer_dirty_flow(self, mine: dict[Key, Load], found: dict[Key, Any]) -> Flow[list[Key]]:
        """Answer the dirty keys among ``mine`` into ``found``; return the clean ones."""
        clean = []
        for key, load in mine.items():
            dirty, value = yield from self._read_dirty_flow(key)
            if not dirty:
                clean.append(key)
                continue
            load.value = value
            if value is not MISSING:
                found[key] = value
        return clean

    # -- writes --------------------------------------------------------------------------

    def _write_flow(
        self, key: Key, value: Any, ttl: float | None, tags: Iterable[str]
    ) -> Flow[None]:
        """Write ``value`` by the write policy under the key's lock; superseding loads."""
        self._check_key(key)
        ttl = check_ttl(ttl)
        tag_list = check_tags(tags)
        self._check_open()
        if value is MISSING or value is TOMBSTONE:
            raise ConfigurationError("MISSING/TOMBSTONE are sentinels, not values")
        indexes = self._indexes((key,))
        yield self._lock(indexes)
        try:
            self._check_open()  # under the lock: close() waits for writes inside one
            yield from self._write_locked_flow({key: value}, ttl)
        finally:
            self._supersede(key)
            self._unlock(indexes)
        if tag_list:
            self._tag(key, tag_list)
        yield from self._relieve_pressure_flow()

    def _write_locked_flow(self, items: dict[Key, Any], ttl: float | None) -> Flow[None]:
        """``write``'s one item by the write policy (the key's lock is held)."""
        ((key, value),) = items.items()
        policy = self.write_policy
        if policy is None:
            yield self.store.set, (key, value, ttl)
        elif isinstance(policy, WriteBack):
            yield from self._write_back_flow(items, ttl)
        else:
            save = (self.source.save, (key, value))
            yield from self._through_source_flow(items, ttl, save, policy)

    def _write_back_flow(self, items: dict[Key, Any], ttl: float | None) -> Flow[None]:
        """Write-back (a ``TOMBSTONE`` value: a delete): dirty now, the source later."""
        flusher = self._flusher
        self._check_claim()
        guard = self._write_guard if not flusher.stores_values else None
        if guard is None:
            accepted = yield flusher.accept, (items,)
            if flusher.stores_values or not accepted:
                return
            values = {k: items[k] for k in accepted}
            drops = [k for k, v in values.items() if v is TOMBSTONE]
            if drops:
                yield self.store.delete_many, (drops,)
            keeps = {k: v for k, v in values.items() if v is not TOMBSTONE}
            if len(keeps) == 1:
                ((key, value),) = keeps.items()
                yield self.store.set, (key, value, ttl)
            elif keeps:
                yield self.store.set_many, (keeps, ttl)
            return
        # A store that outlives the process (Redis) is bracketed as write-through is:
        # checked and encoded first, the old copy dropped and held before the write is
        # acknowledged (Redis down: refused, nothing changed), the new value stored
        # after. Only a journal makes a dirty value durable, so without one the copy
        # stays dropped: a crash must not leave Redis serving a write the source will
        # never get. Reads of a dirty key are answered from the dirty set meanwhile.
        values = {k: MISSING if v is TOMBSTONE else v for k, v in items.items()}
        self._validate_all(values)
        held = yield from self._hold_flow(guard, guard.prepare_write(values, ttl), items)
        try:
            accepted = yield flusher.accept, (items,)
        except BaseException:
            yield from self._release_quietly_flow(guard, held, items)
            raise
        try:
            yield guard.end_write, (held, self._cache_dirty and len(accepted) == len(items))
        except Exception:  # accepted and durable: the dirty set serves it, the hold expires
            logger.warning(
                "write-back accepted %s but could not cache it; reads use the dirty set",
                shown(items),
                exc_info=True,
            )

    def _through_source_flow(
        self,
        items: dict[Key, Any],
        ttl: float | None,
        save: Call,
        policy: WriteThrough | WriteAround,
    ) -> Flow[None]:
        """Write-through, write-around and their deletes (a ``MISSING`` value: deleted).

        The source first, then the cached copies: write-through caches the values,
        write-around drops them (the textbook ``invalidate=False`` leaves them alone).
        A store that outlives this process (``WriteGuarded``: Redis) is bracketed:
        every check runs before any I/O, the cached copies are dropped and held before
        the source write and stored after, so a crash at any point leaves a miss there,
        never the old value.
        """
        if isinstance(policy, WriteAround) and not policy.invalidate:
            yield save
            self._source_writes.add_many(len(items))
            return
        keep = isinstance(policy, WriteThrough) and all(v is not MISSING for v in items.values())
        guard = self._write_guard
        if guard is None:
            yield save
            self._source_writes.add_many(len(items))
            if keep:
                yield from self._store_after_source_flow(items, ttl)
            else:
                yield from self._drop_after_source_flow(list(items))
            return
        self._validate_all(items)
        prepared = guard.prepare_write(items if keep else dict.fromkeys(items, MISSING), ttl)
        held = yield from self._hold_flow(guard, prepared, items)
        try:
            yield save
        except BaseException:
            yield from self._release_quietly_flow(guard, held, items)
            raise
        self._source_writes.add_many(len(items))
        try:
            yield guard.end_write, (held, True)
        except Exception as exc:
            what = "cache" if keep else "drop the cached copy of"
            raise StoreError(f"saved to the source but could not {what} {shown(items)}") from exc

    def _validate_all(self, items: dict[Key, Any]) -> None:
        """What the source would refuse, refused before the store's hold (no I/O)."""
        validate = self._validate
        if validate is not None:
            for key, value in items.items():
                validate(key, value)

    def _hold_flow(self, guard: Any, prepared: PreparedWrite, keys: Any) -> Flow[PreparedWrite]:
        """``begin_write``; if the store cannot, say that nothing was written."""
        try:
            held: PreparedWrite = yield guard.begin_write, (prepared,)
        except StoreError as exc:
            raise StoreError(
                f"{self.name}: could not drop and hold the cached copy of {shown(keys)} "
                f"before writing, so nothing was written ({exc})"
            ) from exc
        return held

    def _release_quietly_flow(self, guard: Any, held: PreparedWrite, keys: Any) -> Flow[None]:
        try:
            yield guard.end_write, (held, False)
        except Exception:  # the error being raised is the one to report; holds expire
            logger.warning("could not release the write hold of %s", shown(keys))

    def _store_after_source_flow(self, items: dict[Key, Any], ttl: float | None) -> Flow[None]:
        try:
            if len(items) == 1:
                ((key, value),) = items.items()
                yield self.store.set, (key, value, ttl)
            else:
                yield self.store.set_many, (items, ttl)
        except Exception as exc:
            yield from self._drop_after_source_flow(list(items))
            raise StoreError(f"saved to the source but could not cache {shown(items)}") from exc

    def _drop_after_source_flow(self, keys: list[Key]) -> Flow[None]:
        try:
            if len(keys) == 1:
                yield self.store.delete, (keys[0],)
            else:
                yield self.store.delete_many, (keys,)
        except Exception as exc:
            raise StoreError(
                f"saved to the source but could not drop the cached copy of {shown(keys)}"
            ) from exc

    def _write_many_flow(self, items: Any, ttl: float | None) -> Flow[None]:
        """Write every item by the write policy, batched (one source call per batch)."""
        items = {self._check_key(k): v for k, v in items.items()}
        ttl = check_ttl(ttl)
        self._check_open()
        if not items:
            return
        for value in items.values():
            if value is MISSING or value is TOMBSTONE:
                raise ConfigurationError("MISSING/TOMBSTONE are sentinels, not values")
        indexes = self._indexes(items)
        yield self._lock(indexes)
        try:
            self._check_open()
            yield from self._write_many_locked_flow(items, ttl)
        finally:
            for key in items:
                self._supersede(key)
            self._unlock(indexes)
        yield from self._relieve_pressure_flow()

    def _write_many_locked_flow(self, items: dict[Key, Any], ttl: float | None) -> Flow[None]:
        policy = self.write_policy
        if policy is None:
            yield self.store.set_many, (items, ttl)
        elif isinstance(policy, WriteBack):
            yield from self._write_back_flow(items, ttl)
        else:
            yield from self._through_source_flow(
                items, ttl, (self.source.save_many, (items,)), policy
            )

    def _delete_flow(self, key: Key) -> Flow[None]:
        """Delete ``key`` by the write policy (write-back: a tombstone that is flushed)."""
        self._check_key(key)
        self._check_open()
        indexes = self._indexes((key,))
        yield self._lock(indexes)
        try:
            self._check_open()
            policy = self.write_policy
            if policy is None:
                yield self.store.delete, (key,)
            elif isinstance(policy, WriteBack):
                yield from self._write_back_flow({key: TOMBSTONE}, None)
            else:
                yield from self._through_source_flow(
                    {key: MISSING}, None, (self.source.remove, (key,)), policy
                )
        finally:
            self._supersede(key)
            self._unlock(indexes)

    def _claim_write_back(self, policy: WriteBack) -> Claim | None:
        """One in-process write-back per Redis namespace, or only shared ones (issue 11).

        Two processes that each flush their own dirty set to one namespace flush in no
        order with each other: the source can end with one write and Redis another.
        """
        if not isinstance(self.store, Claimable):
            return None
        solo = policy.journal != "redis"
        try:
            return self.store.claim("writeback", solo=solo, ttl=CLAIM_TTL)
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

    # -- invalidation ----------------------------------------------------------------------

    def _invalidate_flow(self, key: Key) -> Flow[bool]:
        """Drop ``key`` from the cache only (never the source, never a dirty entry)."""
        self._check_key(key)
        self._check_open()
        indexes = self._indexes((key,))
        yield self._lock(indexes)
        try:
            if self._flusher is not None:
                dirty = yield self._flusher.is_dirty, (key,)
                if dirty:
                    return False
            self._invalidations.add()
            dropped = yield self.store.delete, (key,)
            return bool(dropped)
        finally:
            self._supersede(key)
            self._unlock(indexes)

    def _invalidate_many_flow(self, keys: Iterable[Key]) -> Flow[int]:
        """Drop every key from the cache (not dirty ones); return how many were cached."""
        wanted = [self._check_key(k) for k in keys]
        self._check_open()
        if not wanted:
            return 0
        indexes = self._indexes(wanted)
        yield self._lock(indexes)
        try:
            clean = wanted
            if self._flusher is not None:
                clean = []
                for key in wanted:
                    dirty = yield self._flusher.is_dirty, (key,)
                    if not dirty:
                        clean.append(key)
            self._invalidations.add_many(len(clean))
            dropped = yield self.store.delete_many, (clean,)
            return int(dropped)
        finally:
            for key in wanted:
                self._supersede(key)
            self._unlock(indexes)

    def _tag_keys(self, tag: str) -> set[Key]:
        """Take the keys written with ``tags=[tag]`` (for ``invalidate_tag``)."""
        check_tags([tag])
        self._check_open()
        with self._tags_lock:
            return self._tags.pop(tag, set())

    def _tag(self, key: Key, tags: list[str]) -> None:
        with self._tags_lock:
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)

    # -- write-back ------------------------------------------------------------------------

    def _on_evicted(self, keys: list[Key]) -> None:
        flusher = self._flusher
        if flusher is not None:
            dirty = [k for k in keys if flusher.is_dirty(k)]
            if dirty:
                self._evicted_dirty.extend(dirty)

    def _retry_rejected_flow(self, keys: list[Key]) -> Flow[int]:
        """Write each parked key's refused value again, as a new write, under its lock."""
        retried = 0
        for key in keys:
            self._check_key(key)
            indexes = self._indexes((key,))
            yield self._lock(indexes)
            try:
                self._check_open()
                entry = yield self._flusher.rejected_entry, (key,)
                if entry is None:
                    continue  # not parked (or written again meanwhile)
                yield from self._write_back_flow({key: entry.value}, None)
                retried += 1
            finally:
                self._supersede(key)
                self._unlock(indexes)
        return retried

    def _drop_refused(self, keys: list[Key]) -> Any:
        """Keys a flush parked: stop serving the refused values (the source has its own).

        No key lock is needed: a key written again since is dirty, and a read of a dirty
        key is served (and cached again) from the dirty set.
        """
        return self.store.delete_many(keys)

    def _relieve_pressure_flow(self) -> Flow[None]:
        """Flush dirty keys the store just evicted, so ``max_entries`` bounds memory."""
        if not self._evicted_dirty or self._flusher is None:
            return
        keys, self._evicted_dirty = self._evicted_dirty, []
        try:
            yield functools.partial(self._flusher.flush, keys, wait=False), ()
        except Exception as exc:  # the background flusher retries, and logs the outage
            event(
                logger,
                logging.DEBUG,
                "pressure_flush_failed",
                "cache %s: flush on eviction pressure failed (%s); the flusher retries",
                self.name,
                type(exc).__name__,
                cache=self.name,
                keys=len(keys),
                error=type(exc).__name__,
            )

    # -- bookkeeping -----------------------------------------------------------------------

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

    def _reader_hits(self) -> int:
        """Hits counted outside ``_hits`` (the sync driver's C reader)."""
        return 0

    def _miss_path_counts(self) -> tuple[int, int]:
        """Misses and loads counted outside the counters (the sync driver's C miss path)."""
        return 0, 0

    def _pool_stats(self) -> PoolStats | None:
        return None

    def _timed(self, load: Loader) -> Loader:
        """``load`` timed into the load histogram, in a span when spans are on."""
        latency, clock = self._load_latency, time.monotonic

        def timed(key: Key) -> Any:
            span = None if _tracing.tracer is None else _tracing.start("cachewise.load", self._span)
            started = clock()
            try:
                value = load(key)
            except BaseException as exc:
                _tracing.end(span, exc)
                raise
            _tracing.end(span)
            latency.observe(clock() - started)
            return value

        return timed

    @property
    def _span(self) -> dict[str, Any]:
        """The attributes of this cache's spans."""
        return {"cache": self.name}

    def _refresh_failed(self, key: Key, exc: BaseException) -> None:
        """A background refresh failed: the entry expires as usual (both drivers)."""
        event(
            logger,
            logging.WARNING,
            "refresh_failed",
            "cache %s: background refresh of %r failed (%s); the entry expires as usual",
            self.name,
            key,
            type(exc).__name__,
            cache=self.name,
            error=type(exc).__name__,
        )

    def histograms(self) -> dict[str, HistogramSnapshot]:
        """Distributions recorded off the hit path, for metrics: seconds and keys.

        ``load_seconds`` (each load or batch load from the source), and with write-back
        ``flush_seconds`` and ``flush_keys`` (each flush batch); with a ``TieredStore``,
        ``invalidation_lag_seconds`` (publish in one process to the L1 drop in this one).
        """
        out = {"load_seconds": self._load_latency.snapshot()}
        flusher = self._flusher
        times = getattr(flusher, "batch_times", None)
        if times is not None:
            out["flush_seconds"] = times.seconds.snapshot()
            out["flush_keys"] = times.keys.snapshot()
        lag = getattr(self.store, "invalidation_lag", None)
        if isinstance(lag, Histogram):
            out["invalidation_lag_seconds"] = lag.snapshot()
        return out

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        store = self.store
        evictions = store.evictions if isinstance(store, EvictionAware) else 0
        expirations = store.expirations if isinstance(store, EvictionAware) else 0
        flusher = self._flusher
        writes = self._source_writes.value + (flusher.source_writes.value if flusher else 0)
        c_misses, c_loads = self._miss_path_counts()
        lag = flusher.lag() if flusher else None
        return Stats(
            hits=self._hits.value + self._reader_hits(),
            misses=self._misses.value + c_misses,
            loads=self._loads.value + c_loads,
            source_reads=self._source_reads.value + c_loads,
            source_writes=writes,
            evictions=evictions,
            expirations=expirations,
            invalidations=self._invalidations.value,
            dirty=flusher.dirty_count if flusher else 0,
            flushes=flusher.flushes.value if flusher else 0,
            flush_failures=flusher.flush_failures.value if flusher else 0,
            coalesced=flusher.coalesced if flusher else 0,
            oldest_dirty_age=flusher.oldest_dirty_age() if flusher else 0.0,
            rejected=flusher.rejected_count if flusher else 0,
            lag_p50=lag.p50 if lag else 0.0,
            lag_p99=lag.p99 if lag else 0.0,
            lag_max=lag.max if lag else 0.0,
            pool=self._pool_stats(),
        )


def compose(
    store: Any,
    source: Any,
    read: ReadPolicy | None,
    write: WritePolicy | None,
    *,
    ttl_aware: bool,
) -> tuple[ReadPolicy, WritePolicy | None]:
    """Validate a policy combination and fill in the defaults (both drivers' rules).

    The store and source have been checked by the driver (sync or async parts).
    """
    if read is None:
        read = ReadThrough() if source is not None else CacheAside()
    if not isinstance(read, (CacheAside, ReadThrough)):
        raise ConfigurationError(f"read must be CacheAside() or ReadThrough(), got {read!r}")
    if source is None and isinstance(read, ReadThrough):
        raise ConfigurationError("ReadThrough needs a source to read through to")
    if isinstance(read, ReadThrough) and read.refreshes and not ttl_aware:
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


def shown(keys: Iterable[Key], limit: int = 3) -> str:
    """Keys for a message: the first few, and how many more."""
    listed = list(keys)
    text = ", ".join(repr(k) for k in listed[:limit])
    return text if len(listed) <= limit else f"{text} and {len(listed) - limit} more"


def check_tags(tags: Iterable[str]) -> list[str]:
    """The tags of a write as a list; ConfigurationError for a bare string or an empty tag."""
    if isinstance(tags, str):
        raise ConfigurationError("tags must be a list of strings, not one string")
    out = list(tags)
    for tag in out:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"a tag must be a non-empty string, got {tag!r}")
    return out
