"""MemoryStore: a bounded, thread-safe, in-process store with TTL and pluggable eviction.

Design: a dict maps each key to an immutable ``(value, expires_at)`` pair, and a pure
eviction policy (``stores/eviction.py``) orders the keys. Reads take no lock when the
policy's hit is a single C call (LRU's ``move_to_end``): under the GIL the dict lookup,
the clock and the hit are each atomic, and a racing eviction only makes the hit a
no-op. Inserts, deletes, expiry and eviction take one lock. Expiry is lazy: an expired
entry is dropped when read (and never returned), or evicted as any other entry;
``purge_expired()`` sweeps on demand. Time comes from an injected clock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from typing import Any

from cachewise._accel import speedups
from cachewise._types import MISSING, Clock, Key, check_positive, check_ttl
from cachewise.errors import ConfigurationError
from cachewise.stores.base import EvictionListener, FillPath, HitPath
from cachewise.stores.eviction import DEFAULT_POLICY, EvictionPolicy, make_policy

_Entry = tuple[Any, "float | None"]


class MemoryStore:
    """A bounded in-process store: ``max_entries`` entries at most, evicted by policy.

    Values are kept by reference, as a dict keeps them: mutating an object after
    ``set()`` or after ``get()`` changes the cached entry. ``copy=True`` stores a deep
    copy and returns one on every read (what a ``RedisStore`` does by encoding), at
    the cost of a copy per read and write.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        eviction: str = "auto",
        ttl: float | None = None,
        *,
        ttl_jitter: float = 0.0,
        clock: Clock = time.monotonic,
        rng: Callable[[], float] = random.random,
        copy: bool = False,
    ) -> None:
        check_positive(max_entries, "max_entries", integer=True)
        if not isinstance(copy, bool):
            raise ConfigurationError(f"copy must be True or False, got {copy!r}")
        self._ttl = check_ttl(ttl)
        if (
            isinstance(ttl_jitter, bool)
            or not isinstance(ttl_jitter, (int, float))
            or not (0.0 <= ttl_jitter < 1.0)
        ):
            raise ConfigurationError(f"ttl_jitter must be a fraction in [0, 1), got {ttl_jitter!r}")
        self._policy_name = DEFAULT_POLICY if eviction == "auto" else eviction
        self._policy: EvictionPolicy = make_policy(self._policy_name, max_entries)
        self._max = max_entries
        self._jitter = float(ttl_jitter)
        self._clock = clock
        self._rng = rng
        self._data: dict[Key, _Entry] = {}
        self._lock = threading.Lock()
        self._on_hit = self._policy.on_hit
        self._atomic_hits = self._policy.atomic_hits
        self._listeners: list[EvictionListener] = []
        self._evictions = 0
        self._expirations = 0
        self._inserter = _c_inserter(self)
        self.copies = copy
        """Whether values are copied in and out (``copy=True``)."""
        if copy:
            # Swapped in per instance: the default store's methods carry no copy branch.
            self.get = self._copying_get  # type: ignore[method-assign]
            self.set = self._copying_set  # type: ignore[method-assign]
            self.set_many = self._copying_set_many  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return (
            f"MemoryStore(max_entries={self._max}, eviction={self._policy_name!r}, "
            f"ttl={self._ttl}, entries={len(self._data)}{', copy=True' if self.copies else ''})"
        )

    @property
    def max_entries(self) -> int:
        """The bound on resident entries."""
        return self._max

    @property
    def eviction(self) -> str:
        """The name of the eviction policy in use."""
        return self._policy_name

    @property
    def evictions(self) -> int:
        """Entries evicted to stay within ``max_entries``."""
        inserted = self._inserter
        return self._evictions + (inserted.evictions if inserted is not None else 0)

    @property
    def expirations(self) -> int:
        """Entries dropped because their TTL ran out."""
        return self._expirations

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Call ``listener(keys)`` after each eviction, outside the store's lock."""
        self._listeners.append(listener)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not MISSING  # type: ignore[arg-type]

    # -- reads ---------------------------------------------------------------

    def hit_path(self) -> HitPath | None:
        """The pieces a Cache needs to inline this store's lock-free hit, if it has one.

        ``None`` when the policy's hit must take the lock (then use :meth:`get`). The
        cache reads ``lookup(key)`` -> ``(value, expires_at)`` or None, checks
        ``expires_at`` against ``clock()``, calls ``touch(key)`` and returns the value;
        anything else (absent, expired) goes through :meth:`get`.
        """
        if not self._atomic_hits or self.copies:
            return None  # a copying store's hit is a copy: always through get()
        return HitPath(self._data.get, self._clock, self._on_hit)

    def get(self, key: Key) -> Any:
        """Return the live value for ``key`` or ``MISSING``."""
        entry = self._data.get(key)
        if entry is None:
            return MISSING
        expires_at = entry[1]
        if expires_at is not None and expires_at <= self._clock():
            self._expire(key, entry)
            return MISSING
        if self._atomic_hits:
            try:  # noqa: SIM105 - try/except is free on the hit path, suppress() is not
                self._on_hit(key)
            except KeyError:  # evicted by another thread since the lookup
                pass
        else:
            with self._lock:
                if self._data.get(key) is entry:
                    self._on_hit(key)
        return entry[0]

    def _copying_get(self, key: Key) -> Any:
        value = MemoryStore.get(self, key)
        return value if value is MISSING else deepcopy(value)

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """Return the live values among ``keys``."""
        found: dict[Key, Any] = {}
        for key in keys:
            value = self.get(key)
            if value is not MISSING:
                found[key] = value
        return found

    def ttl_left(self, key: Key) -> float | None:
        """Seconds until ``key`` expires (``None``: no expiry or absent)."""
        entry = self._data.get(key)
        if entry is None or entry[1] is None:
            return None
        return max(0.0, entry[1] - self._clock())

    # -- writes --------------------------------------------------------------

    def _expires_at(self, ttl: float | None) -> float | None:
        ttl = self._ttl if ttl is None else check_ttl(ttl)
        if ttl is None:
            return None
        if self._jitter:
            ttl *= 1.0 - self._jitter * self._rng()
        return self._clock() + ttl

    def fill_path(self) -> FillPath | None:
        """The pieces a Cache needs to store a loaded value itself (its C miss path).

        ``None`` without the C accelerator, with TTL jitter (drawn per write here) or
        with ``copy=True`` (what is stored must be a copy).
        """
        if self._inserter is None or self._jitter or self.copies:
            return None
        return FillPath(self._data, self._inserter, self._clock, self._ttl)

    def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, evicting by policy when full."""
        entry = (value, self._expires_at(ttl))
        if self._inserter is not None:
            self._inserter(key, entry)  # the same steps as below, in C
            return
        with self._lock:
            evicted = self._put(key, entry)
        if evicted:
            self._notify(evicted)

    def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        """Store every item under one lock."""
        expires_at = self._expires_at(ttl)
        evicted: list[Key] = []
        with self._lock:
            for key, value in items.items():
                evicted.extend(self._put(key, (value, expires_at)))
        if evicted:
            self._notify(evicted)

    def _copying_set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        MemoryStore.set(self, key, deepcopy(value), ttl)

    def _copying_set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        MemoryStore.set_many(self, {k: deepcopy(v) for k, v in items.items()}, ttl)

    def _put(self, key: Key, entry: _Entry) -> list[Key]:
        data = self._data
        if key in data:
            data[key] = entry
            self._on_hit(key)
            return []
        data[key] = entry
        self._policy.on_insert(key)
        if len(data) <= self._max:
            return []
        evicted: list[Key] = []
        while len(data) > self._max:
            victim: Any = self._policy.evict()
            del data[victim]
            evicted.append(victim)
        self._evictions += len(evicted)
        return evicted

    def _notify(self, evicted: list[Key]) -> None:
        for listener in self._listeners:
            listener(evicted)

    def _expire(self, key: Key, entry: _Entry) -> None:
        with self._lock:
            if self._data.get(key) is entry:
                del self._data[key]
                self._policy.on_remove(key)
                self._expirations += 1

    def delete(self, key: Key) -> bool:
        """Drop ``key``; return whether a live entry was there."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return False
            self._policy.on_remove(key)
        return entry[1] is None or entry[1] > self._clock()

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Drop every key; return how many live entries were there."""
        return sum(self.delete(key) for key in keys)

    # -- compare-and-set (CompareAndSet) ------------------------------------------

    def gets(self, key: Key) -> tuple[Any, Any]:
        """The live value (or MISSING) and its entry as the token (None: absent)."""
        entry = self._data.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= self._clock()):
            return MISSING, None
        return (deepcopy(entry[0]) if self.copies else entry[0]), entry

    def cas(
        self, key: Key, value: Any, token: Any, ttl: float | None = None, *, keep_ttl: bool = False
    ) -> bool:
        """Store ``value`` if ``key`` still holds the entry ``token`` (None: still absent)."""
        if self.copies:
            value = deepcopy(value)
        expires_at = None if keep_ttl else self._expires_at(ttl)
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= self._clock():
                entry = None  # expired: as good as absent
            if entry is not token:
                return False
            if keep_ttl and entry is not None:
                expires_at = entry[1]
            evicted = self._put(key, (value, expires_at))
        if evicted:
            self._notify(evicted)
        return True

    def add(self, key: Key, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no live value."""
        return self.cas(key, value, None, ttl)

    def purge_expired(self) -> int:
        """Drop every expired entry now; return how many."""
        now = self._clock()
        with self._lock:
            dead = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
            for key in dead:
                del self._data[key]
                self._policy.on_remove(key)
            self._expirations += len(dead)
        return len(dead)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._policy.clear()

    def close(self) -> None:
        """Nothing to release; present for the Store contract."""


def _c_inserter(store: MemoryStore) -> Any:
    """The store's insert in C (``_speedups.Inserter``), or None for pure Python."""
    module = speedups()
    if module is None:
        return None
    policy = store._policy
    return module.Inserter(
        store._data,
        store._lock,
        policy.on_insert,
        store._on_hit,
        policy.evict,
        store._max,
        store._listeners,
    )
