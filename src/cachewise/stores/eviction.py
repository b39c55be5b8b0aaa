"""Eviction policies as pure objects: they only order keys (no clock, no I/O, no values).

A ``MemoryStore`` tells its policy when a key is inserted, hit or removed, and asks it
for a victim when it is over capacity. The policy never sees values or time, so the
same object runs at full speed in trace replay (``bench/hitratio.py``) and is tested
alone. Policies are not thread-safe; the store serialises calls, except ``on_hit``
when the policy says ``atomic_hits`` (a single C-level call under the GIL).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from cachewise.errors import ConfigurationError


class EvictionPolicy(Protocol):
    """The contract between a bounded store and the policy that picks its victims."""

    atomic_hits: bool
    """True when ``on_hit`` is one C-level call, safe without the store's lock."""

    on_hit: Callable[[Hashable], None]
    """Record an access to a resident key (an attribute so it may be a C method)."""

    def on_insert(self, key: Hashable) -> None:
        """Record a new resident key."""
        ...

    def on_remove(self, key: Hashable) -> None:
        """Forget a resident key removed by delete or expiry (not by :meth:`evict`)."""
        ...

    def evict(self) -> Hashable:
        """Choose a resident key to evict, forget it, and return it."""
        ...

    def clear(self) -> None:
        """Forget every key."""
        ...

    def __len__(self) -> int: ...


class LRU:
    """Least recently used: evict the key whose last access is oldest."""

    atomic_hits = True

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()
        self.on_hit: Callable[[Hashable], None] = self._order.move_to_end

    def on_insert(self, key: Hashable) -> None:
        self._order[key] = None

    def on_remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def evict(self) -> Hashable:
        return self._order.popitem(last=False)[0]

    def clear(self) -> None:
        self._order.clear()

    def __len__(self) -> int:
        return len(self._order)


class LFU:
    """Least frequently used: evict the key with the fewest hits, oldest first among ties.

    Counts start at 1 on insert. Without aging a once-hot key can squat forever;
    ``max_count`` bounds the counter so a shifted hot set can overtake it.
    """

    atomic_hits = False

    def __init__(self, max_count: int | None = None) -> None:
        self._max_count = max_count
        self._count: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, None]] = {}
        self._min = 0
        self.on_hit: Callable[[Hashable], None] = self._hit

    def _hit(self, key: Hashable) -> None:
        count = self._count[key]
        if self._max_count is not None and count >= self._max_count:
            self._buckets[count].move_to_end(key)
            return
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]
            if self._min == count:
                self._min = count + 1
        self._count[key] = count + 1
        self._buckets.setdefault(count + 1, OrderedDict())[key] = None

    def on_insert(self, key: Hashable) -> None:
        self._count[key] = 1
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min = 1

    def on_remove(self, key: Hashable) -> None:
        count = self._count.pop(key, None)
        if count is None:
            return
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]
            if self._min == count:
                self._min = min(self._buckets, default=0)

    def evict(self) -> Hashable:
        if self._min not in self._buckets:
            self._min = min(self._buckets)
        bucket = self._buckets[self._min]
        key, _ = bucket.popitem(last=False)
        del self._count[key]
        if not bucket:
            del self._buckets[self._min]
            self._min = min(self._buckets, default=0)
        return key

    def clear(self) -> None:
        self._count.clear()
        self._buckets.clear()
        self._min = 0

    def __len__(self) -> int:
        return len(self._count)


POLICIES: dict[str, Callable[[], EvictionPolicy]] = {"lru": LRU, "lfu": LFU}
"""Eviction policies by the name ``MemoryStore(eviction=...)`` takes."""

DEFAULT_POLICY = "lru"
"""The policy ``MemoryStore`` uses unless told otherwise (chosen by bench/hitratio.py)."""


def make_policy(name: str) -> EvictionPolicy:
    """Return a new policy by name, or raise ConfigurationError naming the choices."""
    factory = POLICIES.get(name) if isinstance(name, str) else None
    if factory is None:
        choices = ", ".join(sorted(POLICIES))
        raise ConfigurationError(f"unknown eviction policy {name!r}; choose one of {choices}")
    return factory()
