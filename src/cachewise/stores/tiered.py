"""TieredStore: an in-process L1 (MemoryStore) in front of a shared L2 (RedisStore).

Reads try L1, then L2 (filling L1). Writes and deletes go to L2 first, then L1, and
are published on an invalidation bus so every other process drops its L1 copy; a
store ignores its own messages (it already changed its L1).

Two races are closed here. (1) A fill must not resurrect a value that an
invalidation removed while the fill was reading L2: every invalidation and every
local write bumps a generation under a lock, and a fill stores into L1 only if the
generation is unchanged since before it read L2. (2) When the bus is not live
(connection lost, invalidations possibly missed) L1 is cleared and bypassed: reads go
to L2 until the bus has resubscribed, when L1 is cleared again and used again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cachewise._flow import Flow, run
from cachewise._types import MISSING, Key, check_seconds
from cachewise.errors import ConfigurationError
from cachewise.invalidation import Invalidation, InvalidationBus, RedisBus, new_origin
from cachewise.stats import Histogram
from cachewise.stores.base import Claim, HitPath, LoadTicket, PreparedWrite
from cachewise.stores.memory import MemoryStore
from cachewise.stores.redis import RedisStore

if TYPE_CHECKING:
    from redis.cluster import RedisCluster


def _always_missing(_key: Key) -> Any:
    return MISSING


@dataclass(frozen=True)
class _TieredToken:
    inner: LoadTicket
    generation: int


@dataclass(frozen=True)
class _TieredWrite:
    inner: PreparedWrite
    ttl: float | None


class TieredStore:
    """L1 memory in front of L2 Redis, kept coherent across processes by a bus.

    ``bus`` defaults to a :class:`RedisBus` on L2's own Redis (channel
    ``<namespace>:invalidations``), which the store closes with itself; a bus passed in
    is the caller's to close. The constructor returns once the bus is live.
    """

    def __init__(
        self,
        l1: MemoryStore,
        l2: RedisStore,
        bus: InvalidationBus | None = None,
        *,
        ready_timeout: float = 5.0,
    ) -> None:
        check_seconds(ready_timeout, "ready_timeout")
        if not isinstance(l1, MemoryStore):
            raise ConfigurationError(f"l1 must be a MemoryStore, got {type(l1).__name__}")
        if not isinstance(l2, RedisStore):
            raise ConfigurationError(f"l2 must be a RedisStore, got {type(l2).__name__}")
        self.l1 = l1
        self.l2 = l2
        self.origin = new_origin()
        self._lock = threading.Lock()
        self._generation = 0
        self._owns_bus = bus is None
        if bus is None:
            bus = self._default_bus(l2, ready_timeout)
        self.bus: InvalidationBus = bus
        self._closed = False
        self._set_serving(bus.live)
        self.get = self._hot_get()  # type: ignore[method-assign,assignment]
        bus.subscribe(self._on_invalidation)
        self._set_serving(bus.live)  # a message may have flipped it while we subscribed
        self.invalidations_received = 0
        self.invalidation_lag = Histogram(name="invalidation_lag_seconds")
        """Seconds from another process's publish to this L1's drop (``Cache.histograms``)."""
        """Keys (or "everything" messages) dropped from L1 because another process said so."""

    def _default_bus(self, l2: RedisStore, ready_timeout: float) -> InvalidationBus:
        """Redis pub/sub on L2's own Redis, channel ``<namespace>:invalidations``.

        On a Redis Cluster: sharded pub/sub (``SSUBSCRIBE``) on the channel
        ``<namespace>:{~invalidations}``, which follows its slot through failovers and
        resharding (``_cluster_bus``).
        """
        if l2.cluster:
            from cachewise._cluster_bus import ShardedRedisBus  # noqa: PLC0415 - cluster only

            return ShardedRedisBus(
                cast("RedisCluster", l2.client),
                f"{l2.namespace}:{{~invalidations}}",
                ready_timeout=ready_timeout,
            )
        return RedisBus(
            channel=f"{l2.namespace}:invalidations", client=l2.client, ready_timeout=ready_timeout
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.l1!r}, {self.l2!r}, bus={self.bus!r})"

    # -- the bus ---------------------------------------------------------------------------

    def _on_invalidation(self, message: Invalidation) -> None:
        if message.origin == self.origin:
            return
        with self._lock:
            self._generation += 1
            if message.keys is None:
                self.l1.clear()
                self._set_serving(message.live)
            else:
                self.l1.delete_many(message.keys)
            self.invalidations_received += 1 if message.keys is None else len(message.keys)
        if message.sent is not None:  # publish there to the L1 drop here (wall clocks)
            self.invalidation_lag.observe(max(0.0, time.time() - message.sent))

    def _hot_get(self) -> Callable[[Key], Any]:
        # Calls L1 directly: while the bus is not live L1 is empty and nothing fills
        # it (every L1 write checks _serving under the lock), so no flag is needed here.
        l1_get, get_l2, missing = self.l1.get, self._get_l2, MISSING

        def get(key: Key) -> Any:
            value = l1_get(key)
            if value is not missing:
                return value
            return get_l2(key)

        return get

    def _set_serving(self, serving: bool) -> None:
        self._serving = serving
        self._l1_get = self.l1.get if serving else _always_missing

    def _fill(self, generation: int, items: Mapping[Key, Any]) -> None:
        """Copy L2 values into L1 unless something was invalidated since ``generation``."""
        with self._lock:
            if self._generation == generation and self._serving:
                self.l1.set_many(items)

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: Key) -> Any:
        """Return ``key`` from L1, else from L2 (filling L1), else ``MISSING``.

        The instance's ``get`` is a closure over L1 made in ``__init__`` (one frame less
        on the hot path); this method is its behaviour and its fallback.
        """
        value = self._l1_get(key)
        if value is not MISSING:
            return value
        return self._get_l2(key)

    def _get_l2(self, key: Key) -> Any:
        return run(self._get_l2_flow(key))

    def _get_l2_flow(self, key: Key) -> Flow[Any]:
        generation = self._generation
        value = yield self.l2.get, (key,)
        if value is not MISSING:
            self._fill(generation, {key: value})
        return value

    def hit_path(self) -> HitPath | None:
        """L1's lock-free hit, for a Cache to inline (see ``MemoryStore.hit_path``).

        Safe to hand out once: while the bus is not live L1 is empty and nothing fills
        it, so an inlined lookup finds nothing and falls back to :meth:`get`.
        """
        return self.l1.hit_path()

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        return run(self._get_many_flow(keys))

    def _get_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, Any]]:
        wanted = list(dict.fromkeys(keys))
        found = self.l1.get_many(wanted) if self._serving else {}
        missing = [k for k in wanted if k not in found]
        if missing:
            generation = self._generation
            more = yield self.l2.get_many, (missing,)
            if more:
                self._fill(generation, more)
                found.update(more)
        return {k: found[k] for k in wanted if k in found}

    # -- writes ----------------------------------------------------------------------------

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        self.set_many({key: value}, ttl)

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        run(self._set_many_flow(items, ttl))

    def _set_many_flow(self, items: Mapping[Key, Any], ttl: float | None) -> Flow[None]:
        if not items:
            return
        yield self.l2.set_many, (items, ttl)
        with self._lock:
            self._generation += 1
            if self._serving:
                self.l1.set_many(items, ttl)
        yield self.bus.publish, (list(items), self.origin)

    def delete(self, key: Key) -> bool:
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[Key]) -> int:
        return run(self._delete_many_flow(keys))

    def _delete_many_flow(self, keys: Iterable[Key]) -> Flow[int]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return 0
        present = yield self.l2.delete_many, (wanted,)
        with self._lock:
            self._generation += 1
            self.l1.delete_many(wanted)
        yield self.bus.publish, (wanted, self.origin)
        return int(present)

    def clear(self) -> None:
        run(self._clear_flow())

    def _clear_flow(self) -> Flow[None]:
        yield self.l2.clear, ()
        with self._lock:
            self._generation += 1
            self.l1.clear()
        yield self.bus.publish, (None, self.origin)

    # -- compare-and-set: L2's, then L1 dropped everywhere ---------------------------------

    def gets(self, key: Key) -> tuple[Any, Any]:
        """L2's value and token (L2 is where every process's changes meet)."""
        return self.l2.gets(key)

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """L2's compare-and-set; when it stores, every process's L1 copy is dropped."""
        stored = self.l2.cas(key, value, token, ttl, keep_ttl=keep_ttl)
        if stored:
            self._changed_in_l2([key])
        return stored

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """L2's add-if-absent; when it stores, every process's L1 copy is dropped."""
        stored = self.l2.add(key, value, ttl)
        if stored:
            self._changed_in_l2([key])
        return stored

    def _changed_in_l2(self, keys: list[Key]) -> None:
        with self._lock:
            self._generation += 1
            self.l1.delete_many(keys)
        self.bus.publish(keys, origin=self.origin)

    # -- the load guard: L2's, plus an L1 fill ---------------------------------------------

    def begin_load(self, key: Key) -> LoadTicket:
        return run(self._begin_load_flow(key))

    def _begin_load_flow(self, key: Key) -> Flow[LoadTicket]:
        generation = self._generation
        inner: LoadTicket = yield self.l2.begin_load, (key,)
        if inner.value is not MISSING:
            self._fill(generation, {key: inner.value})
            return inner
        return LoadTicket(token=_TieredToken(inner, generation))

    def end_load(self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None) -> bool:
        return run(self._end_load_flow(key, ticket, value, ttl))

    def _end_load_flow(
        self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None
    ) -> Flow[bool]:
        token = ticket.token
        if not isinstance(token, _TieredToken):
            raise ConfigurationError(f"not a TieredStore load ticket: {ticket!r}")
        stored: bool = yield self.l2.end_load, (key, token.inner, value, ttl)
        if stored:
            with self._lock:
                if self._generation == token.generation and self._serving:
                    self.l1.set(key, value, ttl)
        return stored

    def begin_load_many(self, keys: Iterable[Key]) -> dict[Key, LoadTicket]:
        """Batch form of :meth:`begin_load` (L2's versions; present values fill L1)."""
        return run(self._begin_load_many_flow(keys))

    def _begin_load_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, LoadTicket]]:
        generation = self._generation
        inner = yield self.l2.begin_load_many, (keys,)
        present = {k: t.value for k, t in inner.items() if t.value is not MISSING}
        if present:
            self._fill(generation, present)
        return {
            key: ticket
            if ticket.value is not MISSING
            else LoadTicket(token=_TieredToken(ticket, generation))
            for key, ticket in inner.items()
        }

    def end_load_many(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> list[Key]:
        """Batch form of :meth:`end_load`; the values L2 stored also go into L1."""
        return run(self._end_load_many_flow(tickets, values, ttl))

    def _end_load_many_flow(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> Flow[list[Key]]:
        inner: dict[Key, LoadTicket] = {}
        generation = self._generation
        for key in values:
            token = tickets[key].token
            if isinstance(token, _TieredToken):
                inner[key] = token.inner
                generation = min(generation, token.generation)
            else:
                inner[key] = tickets[key]
        stored: list[Key] = yield self.l2.end_load_many, (inner, values, ttl)
        if stored:
            with self._lock:
                if self._generation == generation and self._serving:
                    self.l1.set_many({k: values[k] for k in stored}, ttl)
        return stored

    # -- the write guard: L2's, with L1 and the other processes' L1 kept in step ------------

    def prepare_write(self, values: Mapping[Key, Any], ttl: float | None) -> PreparedWrite:
        """L2's checks and encoding (no I/O); see ``RedisStore.prepare_write``."""
        return PreparedWrite(values, _TieredWrite(self.l2.prepare_write(values, ttl), ttl))

    def begin_write(self, prepared: PreparedWrite) -> PreparedWrite:
        """Drop and hold the keys in L2, drop them from every process's L1."""
        return run(self._begin_write_flow(prepared))

    def _begin_write_flow(self, prepared: PreparedWrite) -> Flow[PreparedWrite]:
        write = _tiered_write(prepared)
        held = yield self.l2.begin_write, (write.inner,)
        keys = list(prepared.values)
        with self._lock:
            self._generation += 1
            self.l1.delete_many(keys)
        yield self.bus.publish, (keys, self.origin)
        return PreparedWrite(prepared.values, _TieredWrite(held, write.ttl))

    def end_write(self, held: PreparedWrite, saved: bool) -> list[Key]:
        """Store (or keep dropped) in L2, then L1; tell the other processes."""
        return run(self._end_write_flow(held, saved))

    def _end_write_flow(self, held: PreparedWrite, saved: bool) -> Flow[list[Key]]:
        write = _tiered_write(held)
        stored: list[Key] = yield self.l2.end_write, (write.inner, saved)
        keys = list(held.values)
        with self._lock:
            self._generation += 1
            self.l1.delete_many(keys)
            if stored and self._serving:
                self.l1.set_many({k: held.values[k] for k in stored}, write.ttl)
        yield self.bus.publish, (keys, self.origin)
        return stored

    def store_prepared(self, prepared: PreparedWrite) -> None:
        """Store the prepared values in L2 and L1, as :meth:`set_many` does."""
        run(self._store_prepared_flow(prepared))

    def _store_prepared_flow(self, prepared: PreparedWrite) -> Flow[None]:
        write = _tiered_write(prepared)
        yield self.l2.store_prepared, (write.inner,)
        values = {k: v for k, v in prepared.values.items() if v is not MISSING}
        with self._lock:
            self._generation += 1
            if self._serving:
                self.l1.set_many(values, write.ttl)
        yield self.bus.publish, (list(prepared.values), self.origin)

    def claim(self, what: str, *, solo: bool, ttl: float) -> Claim:
        """L2's claim (the namespace is L2's)."""
        return self.l2.claim(what, solo=solo, ttl=ttl)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the bus (if this store made it), then L2 and L1."""
        if self._closed:
            return
        self._closed = True
        if self._owns_bus:
            self.bus.close()
        self.l2.close()
        self.l1.close()


def _tiered_write(prepared: PreparedWrite) -> _TieredWrite:
    write = prepared.token
    if not isinstance(write, _TieredWrite):
        raise ConfigurationError(f"not a TieredStore prepared write: {prepared!r}")
    return write
