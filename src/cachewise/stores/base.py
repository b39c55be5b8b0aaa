"""The Store contract: where cached values live (memory, Redis, both).

A store only gets, sets and deletes; read and write policies, single flight and
dirty tracking live in the ``Cache`` above it, so every store behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from cachewise._types import MISSING, Key

EvictionListener = Callable[[list[Key]], None]
_Entry = tuple[Any, "float | None"]
"""Called with the keys a store evicted, after the store's lock is released."""


@runtime_checkable
class Store(Protocol):
    """Where cached values live. Absent or expired keys read as ``MISSING``."""

    def get(self, key: Key) -> Any:
        """Return the value for ``key``, or ``MISSING`` when absent or expired."""
        ...

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the keys found, with their values; absent keys are left out."""
        ...

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        """Store ``value``; ``ttl`` (seconds) overrides the store's default."""
        ...

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Store every item; ``ttl`` as for :meth:`set`."""
        ...

    def delete(self, key: Key) -> bool:
        """Drop ``key``; return whether it was present."""
        ...

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Drop every key; return how many were present."""
        ...

    def clear(self) -> None:
        """Drop every entry this store owns (a RedisStore: its namespace only)."""
        ...

    def close(self) -> None:
        """Release connections and background work; idempotent."""
        ...


@runtime_checkable
class EvictionAware(Protocol):
    """A store that evicts and expires by itself and says so (e.g. MemoryStore)."""

    @property
    def evictions(self) -> int:
        """How many entries the store evicted to stay within its bound."""
        ...

    @property
    def expirations(self) -> int:
        """How many entries the store dropped because their TTL ran out."""
        ...

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Call ``listener`` with the evicted keys after each eviction."""
        ...


@runtime_checkable
class TTLAware(Protocol):
    """A store that can tell how long an entry has left (for refresh-ahead)."""

    def ttl_left(self, key: Key) -> float | None:
        """Seconds until ``key`` expires; None if it has no TTL or is absent."""
        ...


@dataclass(frozen=True)
class LoadTicket:
    """What a guarded store hands a loader: a token, or the value another process loaded."""

    token: Any
    """Opaque to the cache: a version and/or lease token the store checks in ``end_load``."""
    value: Any = MISSING
    """Not MISSING when, while waiting for another process's lease, the key was filled."""


@runtime_checkable
class LoadGuarded(Protocol):
    """A store that closes the cache-aside race and stampedes across processes.

    Read-through and ``read(key, loader=...)`` call ``begin_load`` before asking the
    source and ``end_load`` after. ``end_load`` stores the value only if nothing wrote,
    deleted or invalidated the key since ``begin_load`` (so a slow reader never caches
    an old value), releases any lease, and returns whether it stored.
    """

    def begin_load(self, key: Key) -> LoadTicket:
        """Take a load ticket for ``key`` (may wait briefly for another loader's lease)."""
        ...

    def end_load(self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None) -> bool:
        """Store ``value`` if ``key`` is unchanged since the ticket; release it.

        ``value`` is ``MISSING`` when the load failed or found nothing: release only.
        """
        ...


@runtime_checkable
class BatchLoadGuarded(Protocol):
    """A LoadGuarded store that also guards batch loads (``read_many``) by versions."""

    def begin_load_many(self, keys: Iterable[Key]) -> dict[Key, LoadTicket]:
        """Tickets for ``keys``; a ticket carries the value of a key already present."""
        ...

    def end_load_many(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> list[Key]:
        """Store each value whose key is unchanged since its ticket; return those stored."""
        ...


@dataclass(frozen=True)
class PreparedWrite:
    """A write a ``WriteGuarded`` store has checked and encoded, not yet sent."""

    values: Mapping[Key, Any]
    """Key -> the value to cache after the source write; ``MISSING``: drop only."""
    token: Any
    """Opaque to the cache: the store's encoded form (and, after begin_write, its hold)."""


@runtime_checkable
class WriteGuarded(Protocol):
    """A store that outlives this process (Redis): a crash mid-write must leave a miss.

    For a write that goes to the source (write-through, write-around, their deletes)
    the cache calls ``prepare_write`` (every check, no I/O), then ``begin_write``
    (drop the cached copies, hold the keys so no load caches them), then the source,
    then ``end_write`` (store the new values, or keep them dropped if the source
    failed or another write of the key overlapped). A process killed anywhere in
    between leaves the keys dropped, never the old value; a hold expires by itself.
    """

    def prepare_write(self, values: Mapping[Key, Any], ttl: float | None) -> PreparedWrite:
        """Check and encode ``values`` (``MISSING``: drop only); raise before any I/O."""
        ...

    def begin_write(self, prepared: PreparedWrite) -> PreparedWrite:
        """Drop the cached copies and hold the keys; return what ``end_write`` takes."""
        ...

    def end_write(self, held: PreparedWrite, saved: bool) -> list[Key]:
        """Store the values if ``saved`` (else keep them dropped), release the holds.

        Returns the keys whose values were stored.
        """
        ...

    def store_prepared(self, prepared: PreparedWrite) -> None:
        """Store the prepared values as ``set_many`` would (write-back: no hold)."""
        ...


class Claim(Protocol):
    """A claim a ``Claimable`` store handed out, renewed in the background until released."""

    @property
    def lost(self) -> bool:
        """True once another holder took over (this one lapsed)."""
        ...

    def release(self) -> None:
        """Stop renewing and drop the claim; idempotent."""
        ...


@runtime_checkable
class Claimable(Protocol):
    """A store shared by processes that can arbitrate who does what in it (Redis).

    A solo claim on ``what`` excludes every other claim on it; shared claims exclude
    only a solo one. ``claim`` raises ConfigurationError naming the holder in the way.
    """

    def claim(self, what: str, *, solo: bool, ttl: float) -> Claim:
        """Take a claim on ``what`` in this store's namespace, renewed until released."""
        ...


@runtime_checkable
class CompareAndSet(Store, Protocol):
    """A store that changes a key only if nobody changed it since it was read.

    What counters, ``touch`` and "add if absent" need across threads and processes
    (the Django backend's ``incr``, ``touch`` and ``add``). A token stands for the
    state ``gets`` saw, absence included: ``cas`` with the token of an absent key
    stores only if the key is still absent.
    """

    def gets(self, key: Key) -> tuple[Any, Any]:
        """The value (or ``MISSING``) and a token for :meth:`cas`."""
        ...

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """Store ``value`` if ``key`` is as ``token`` saw it; return whether it stored.

        ``keep_ttl=True`` keeps the entry's expiry instead of applying ``ttl``.
        """
        ...

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no live value; return whether it stored."""
        ...


class HitPath(NamedTuple):
    """A store's lock-free hit, for a Cache to inline into ``read`` (one frame per hit).

    The cache calls ``lookup(key)`` -> ``(value, expires_at)`` or None, checks
    ``expires_at`` against ``clock()``, calls ``touch(key)`` and returns the value;
    anything else (absent, expired) goes through the store's ``get``.
    """

    lookup: Callable[[Key], _Entry | None]
    clock: Callable[[], float]
    touch: Callable[[Any], None]


class FillPath(NamedTuple):
    """A store's insert, for a Cache to store what it loaded without a Python frame.

    ``insert(key, (value, expires_at))`` does what ``set`` does; ``expires_at`` is
    ``clock() + ttl`` (``ttl`` None: no expiry), with the cache's read TTL when it has one.
    """

    data: dict[Any, _Entry]
    insert: Callable[[Any, _Entry], None]
    clock: Callable[[], float]
    ttl: float | None


@runtime_checkable
class Inlinable(Protocol):
    """A store whose hits a Cache may inline (MemoryStore, TieredStore's L1)."""

    def hit_path(self) -> HitPath | None:
        """The pieces of a lock-free hit, or None if hits must take a lock."""
        ...
