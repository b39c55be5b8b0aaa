"""Eviction policies as pure objects: they only order keys (no clock, no I/O, no values).

A ``MemoryStore`` tells its policy when a key is inserted, hit or removed, and asks it
for a victim when it is over capacity. The policy never sees values or time, so the
same object runs at full speed in trace replay (``bench/hitratio.py``) and is tested
alone. Policies are not thread-safe; the store serialises calls, except ``on_hit``
when the policy says ``atomic_hits`` (a single C-level call under the GIL).

Hit path. LRU's hit is ``OrderedDict.move_to_end`` and SIEVE's is ``set.add``: one C
call each. The other policies need several steps per hit (a counter, a queue move),
so, like Caffeine's read buffer, their ``on_hit`` is ``deque.append`` on a bounded
buffer and the recorded hits are replayed, in order, at the start of the next
insert/remove/evict (which the store runs under its lock). Between two such calls the
policy would not have evicted anything, so replaying later gives the same decisions;
only when more than ``HIT_BUFFER`` hits arrive between two misses are the oldest hits
dropped (Caffeine's buffers are lossy the same way).

Insert-then-evict. The store inserts the new key and then asks for a victim; classic
policies evict before inserting. Policies that would otherwise pick the key they just
admitted (LFU, SIEVE, S3-FIFO) pass over it, so they decide as the published
algorithms do; W-TinyLFU may return it on purpose (admission rejected).

References: SIEVE (Zhang et al., NSDI '24); S3-FIFO (Yang et al., SOSP '23);
W-TinyLFU and its hill-climbing window (Einziger, Friedman, Manes, "TinyLFU", ACM ToS
2017; "Adaptive Software Cache Management", Middleware '18; Caffeine).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from cachewise._accel import speedups
from cachewise.errors import ConfigurationError

HIT_BUFFER = 1024
"""Hits a buffered policy remembers between two locked calls (older ones are dropped)."""


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


class PolicyFactory(Protocol):
    """Builds a policy for a store of ``capacity`` entries (``None``: learn it)."""

    def __call__(self, capacity: int | None = None) -> EvictionPolicy: ...


class LRU:
    """Least recently used: evict the key whose last access is oldest."""

    atomic_hits = True

    def __init__(self, capacity: int | None = None) -> None:
        del capacity  # LRU needs no sizing
        self._order: OrderedDict[Hashable, None] = OrderedDict()
        self.on_hit: Callable[[Hashable], None] = self._order.move_to_end

    def on_insert(self, key: Hashable) -> None:
        self._order[key] = None

    def on_remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def evict(self) -> Hashable:
        return self._order.popitem(last=False)[0]

    def survivors(self) -> list[Hashable]:
        """The resident keys, the next victim first (see :class:`SampledAdaptive`)."""
        return list(self._order)

    def clear(self) -> None:
        self._order.clear()

    def __len__(self) -> int:
        return len(self._order)


class _Buffered:
    """Base for policies whose hit is several steps: hits go to a bounded deque first."""

    atomic_hits = True

    def __init__(self) -> None:
        self._hits: deque[Hashable] = deque(maxlen=HIT_BUFFER)
        self.on_hit: Callable[[Hashable], None] = self._hits.append

    def _drain(self) -> None:
        hits = self._hits
        touch = self._touch
        while hits:
            touch(hits.popleft())

    def _touch(self, key: Hashable) -> None:
        """Apply one buffered hit; ``key`` may have left the cache since."""
        raise NotImplementedError


class LFU(_Buffered):
    """Least frequently used: evict the key with the fewest hits, oldest first among ties.

    Plain LFU (``aging=False``) keeps counts forever, as libCacheSim's and cachetools'
    LFU do: a once-hot key squats after the hot set moves. With ``aging=True`` every
    count is halved each ``10 * capacity`` accesses (TinyLFU's reset), so old fame fades
    within a few periods and a new hot set can overtake it.
    """

    atomic_hits = False

    def __init__(self, capacity: int | None = None, *, aging: bool = False) -> None:
        super().__init__()
        # Exact counts: a lossy buffer drops hits on long hit streaks, and plain LFU
        # must match libCacheSim's; the store takes its lock on an LFU hit instead.
        self.on_hit = self._touch
        self._capacity = capacity
        self._aging = aging
        self._accesses = 0
        self._count: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, None]] = {}
        self._min = 0
        self._newest: Hashable = _NONE

    def _link(self, key: Hashable, count: int) -> None:
        self._count[key] = count
        bucket = self._buckets.get(count)
        if bucket is None:
            bucket = self._buckets[count] = OrderedDict()
        bucket[key] = None

    def _unlink(self, key: Hashable, count: int) -> None:
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]

    def _touch(self, key: Hashable) -> None:
        count = self._count.get(key)
        if count is None:
            return
        self._unlink(key, count)
        self._link(key, count + 1)
        if self._min == count and count not in self._buckets:
            self._min = count + 1
        if self._aging:
            self._tick()

    def _tick(self) -> None:
        self._accesses += 1
        if self._capacity is not None and self._accesses >= 10 * self._capacity:
            self._halve()

    def _halve(self) -> None:
        # Walk buckets from the least count up so merged ties stay least-first.
        old = self._buckets
        self._buckets = {}
        self._accesses = 0
        for count in sorted(old):
            for key in old[count]:
                self._link(key, max(1, count // 2))
        self._min = min(self._buckets, default=0)

    def on_insert(self, key: Hashable) -> None:
        self._drain()
        self._link(key, 1)
        self._min = 1
        self._newest = key
        if self._aging:
            self._tick()

    def on_remove(self, key: Hashable) -> None:
        self._drain()
        count = self._count.pop(key, None)
        if count is None:
            return
        self._unlink(key, count)
        if self._min == count and count not in self._buckets:
            self._min = min(self._buckets, default=0)

    def evict(self) -> Hashable:
        self._drain()
        if self._capacity is None:
            self._capacity = max(1, len(self._count) - 1)
        if self._min not in self._buckets:
            self._min = min(self._buckets)
        count = self._min
        bucket = self._buckets[count]
        key = next(iter(bucket))
        if key == self._newest and len(bucket) == 1 and len(self._buckets) > 1:
            # The key just admitted is not a candidate yet (evict-before-insert).
            count = min(c for c in self._buckets if c != self._min)
            key = next(iter(self._buckets[count]))
        self._newest = _NONE
        del self._count[key]
        self._unlink(key, count)
        if self._min == count and count not in self._buckets:
            self._min = min(self._buckets, default=0)
        return key

    def clear(self) -> None:
        self._hits.clear()
        self._count.clear()
        self._buckets.clear()
        self._min = 0
        self._accesses = 0
        self._newest = _NONE

    def __len__(self) -> int:
        return len(self._count)


def _aging_lfu(capacity: int | None = None) -> LFU:
    return LFU(capacity, aging=True)


class _Gone:
    """Marks a slot whose key left the cache (keys may be any hashable, even None)."""

    __slots__ = ()


_GONE = _Gone()
_NONE = _Gone()  # "no key" for optional key slots


class SIEVE:
    """SIEVE: a FIFO queue and a hand; a hit only sets a visited bit (``set.add``).

    The hand walks from the oldest key towards the newest: a visited key loses its bit
    and stays where it is, the first unvisited key is evicted. The queue is a list
    with tombstones so removing a key from the middle is O(1); it is compacted when
    half of it is dead.
    """

    atomic_hits = True

    def __init__(self, capacity: int | None = None) -> None:
        del capacity
        self._order: list[Hashable] = []
        self._pos: dict[Hashable, int] = {}
        self._visited: set[Hashable] = set()
        self.on_hit: Callable[[Hashable], None] = self._visited.add
        self._hand = 0
        self._dead = 0
        self._newest: Hashable = _NONE

    def on_insert(self, key: Hashable) -> None:
        self._visited.discard(key)  # a racing hit may have marked a departed key
        self._pos[key] = len(self._order)
        self._order.append(key)
        self._newest = key

    def on_remove(self, key: Hashable) -> None:
        index = self._pos.pop(key, None)
        if index is None:
            return
        self._order[index] = _GONE
        self._visited.discard(key)
        self._dead += 1
        if self._dead > len(self._pos):
            self._compact()

    def _compact(self) -> None:
        live = [k for k in self._order[: self._hand] if k is not _GONE]
        hand = len(live)
        live.extend(k for k in self._order[self._hand :] if k is not _GONE)
        self._order = live
        self._pos = {k: i for i, k in enumerate(live)}
        self._visited.intersection_update(self._pos)
        self._hand = hand
        self._dead = 0

    def evict(self) -> Hashable:
        order = self._order
        visited = self._visited
        newest = self._newest
        self._newest = _NONE
        hand = self._hand
        while True:
            if hand >= len(order):
                hand = 0
            key = order[hand]
            hand += 1
            if key is _GONE:
                continue
            if key in visited:
                visited.discard(key)
                continue
            if key == newest and len(self._pos) > 1:
                continue  # just admitted: not a candidate yet (evict-before-insert)
            break
        order[hand - 1] = _GONE
        del self._pos[key]
        self._hand = hand
        self._dead += 1
        if self._dead > len(self._pos):
            self._compact()
        return key

    def clear(self) -> None:
        self._order.clear()
        self._pos.clear()
        self._visited.clear()
        self._hand = 0
        self._dead = 0
        self._newest = _NONE

    def __len__(self) -> int:
        return len(self._pos)


class S3FIFO(_Buffered):
    """S3-FIFO: a small FIFO (10%) filters one-hit wonders from a main FIFO (90%).

    New keys enter the small queue, or the main queue if the ghost queue (recently
    evicted keys, no values) remembers them. Leaving the small queue, a key hit at
    least ``promote_at`` times moves to main, others go to the ghost. The main queue is
    a 2-bit CLOCK: a key with hits left is reinserted with one fewer.
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        small_ratio: float = 0.1,
        ghost_ratio: float = 0.9,
        promote_at: int = 1,
    ) -> None:
        super().__init__()
        self._small_ratio = small_ratio
        self._ghost_ratio = ghost_ratio
        self._promote_at = promote_at
        self._small: OrderedDict[Hashable, None] = OrderedDict()
        self._main: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._freq: dict[Hashable, int] = {}
        self._newest: Hashable = _NONE
        self._small_max = 0
        self._ghost_max = 0
        if capacity is not None:
            self._size(capacity)

    def _size(self, capacity: int) -> None:
        self._small_max = max(1, int(capacity * self._small_ratio))
        self._ghost_max = max(1, int(capacity * self._ghost_ratio))

    def _touch(self, key: Hashable) -> None:
        freq = self._freq.get(key)
        if freq is not None and freq < 3:
            self._freq[key] = freq + 1

    def on_insert(self, key: Hashable) -> None:
        self._drain()
        if key in self._ghost:
            del self._ghost[key]
            self._main[key] = None
        else:
            self._small[key] = None
        self._freq[key] = 0
        self._newest = key

    def on_remove(self, key: Hashable) -> None:
        self._drain()
        if self._freq.pop(key, None) is None:
            return
        if self._small.pop(key, _NONE) is _NONE:
            del self._main[key]

    def evict(self) -> Hashable:
        self._drain()
        if not self._small_max:
            self._size(max(1, len(self._freq) - 1))
        small, main, freq = self._small, self._main, self._freq
        newest = self._newest if self._newest in small else _NONE
        self._newest = _NONE
        while True:
            in_small = len(small) - (newest is not _NONE)
            if in_small > 0 and (in_small >= self._small_max or not main):
                key = small.popitem(last=False)[0]
                if key == newest:  # not a candidate yet: back to the tail
                    small[key] = None
                    continue
                if freq[key] >= self._promote_at:
                    freq[key] = 0
                    main[key] = None
                    continue
                del freq[key]
                self._ghost[key] = None
                if len(self._ghost) > self._ghost_max:
                    self._ghost.popitem(last=False)
                return key
            if not main:  # only the new key is resident
                key = small.popitem(last=False)[0]
                del freq[key]
                return key
            key = main.popitem(last=False)[0]
            left = freq[key]
            if left:
                freq[key] = left - 1
                main[key] = None
                continue
            del freq[key]
            return key

    def survivors(self) -> list[Hashable]:
        """The resident keys, the small queue's first, each queue oldest first."""
        self._drain()
        return [*self._small, *self._main]

    def clear(self) -> None:
        self._hits.clear()
        self._small.clear()
        self._main.clear()
        self._ghost.clear()
        self._freq.clear()
        self._newest = _NONE

    def __len__(self) -> int:
        return len(self._freq)


class ARC(_Buffered):
    """ARC (Megiddo & Modha, FAST '03): recency and frequency lists balanced by ghosts.

    T1 holds keys seen once recently, T2 keys seen at least twice; B1 and B2 remember
    (keys only) what each list evicted lately. A miss on a B1 ghost means T1 was too
    small, so its target ``p`` grows; a miss on a B2 ghost shrinks it. The victim is
    T1's least recent key while T1 exceeds its target, else T2's.
    """

    def __init__(self, capacity: int | None = None) -> None:
        super().__init__()
        self._t1: OrderedDict[Hashable, None] = OrderedDict()
        self._t2: OrderedDict[Hashable, None] = OrderedDict()
        self._b1: OrderedDict[Hashable, None] = OrderedDict()
        self._b2: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity or 0
        self._p = 0.0
        self._newest: Hashable = _NONE
        self._from_b2 = False

    def _touch(self, key: Hashable) -> None:
        if key in self._t1:
            del self._t1[key]
            self._t2[key] = None
        elif key in self._t2:
            self._t2.move_to_end(key)

    def on_insert(self, key: Hashable) -> None:
        self._drain()
        b1, b2 = self._b1, self._b2
        self._from_b2 = False
        if key in b1:
            self._p = min(float(self._capacity), self._p + max(1.0, len(b2) / len(b1)))
            del b1[key]
            self._t2[key] = None
        elif key in b2:
            self._p = max(0.0, self._p - max(1.0, len(b1) / len(b2)))
            del b2[key]
            self._t2[key] = None
            self._from_b2 = True
        else:
            self._t1[key] = None
        self._newest = key

    def on_remove(self, key: Hashable) -> None:
        self._drain()
        if self._t1.pop(key, _NONE) is _NONE:
            self._t2.pop(key, None)

    def evict(self) -> Hashable:
        self._drain()
        t1, t2, b1, b2 = self._t1, self._t2, self._b1, self._b2
        if not self._capacity:
            self._capacity = max(1, len(t1) + len(t2) - 1)
        c = self._capacity
        newest, self._newest = self._newest, _NONE
        new_in_t1 = newest in t1 and next(reversed(t1)) == newest
        old_t1 = len(t1) - new_in_t1  # sizes as ARC sees them, before the insert
        if new_in_t1 and old_t1 + len(b1) >= c:
            if old_t1 < c and b1:
                b1.popitem(last=False)
            elif old_t1 > 0:  # T1 alone fills the cache: drop its LRU, no ghost
                return t1.popitem(last=False)[0]
        if old_t1 > 0 and (old_t1 > self._p or (self._from_b2 and old_t1 == int(self._p))):
            victim = t1.popitem(last=False)[0]
            b1[victim] = None
        elif t2 and (len(t2) > 1 or next(iter(t2)) != newest):
            victim = t2.popitem(last=False)[0]
            b2[victim] = None
        else:
            victim = t1.popitem(last=False)[0] if t1 else t2.popitem(last=False)[0]
        while len(b1) + len(b2) > c:
            (b2 if len(b2) > len(b1) or not b1 else b1).popitem(last=False)
        return victim

    def survivors(self) -> list[Hashable]:
        """The resident keys, T1's (seen once) first, each list least recent first."""
        self._drain()
        return [*self._t1, *self._t2]

    def clear(self) -> None:
        self._hits.clear()
        for part in (self._t1, self._t2, self._b1, self._b2):
            part.clear()
        self._p = 0.0
        self._newest = _NONE

    def __len__(self) -> int:
        return len(self._t1) + len(self._t2)


_HALVE = bytes(i >> 1 for i in range(256))
_MASK64 = (1 << 64) - 1


class FrequencySketch:
    """Approximate access counts in a fixed table: a 4-row count-min sketch.

    Each key maps to one byte counter per row (double hashing of ``hash(key)``); its
    estimate is the least of them and an access raises only the counters at that
    least value (conservative update), capped at 15 as Caffeine's 4-bit counters.
    Every ``period`` additions all counters are halved, so old fame fades. The table
    has 8 counters per row for each cache entry: 32 bytes per entry, whatever the
    traffic, where an exact dict would hold every key seen in the period.
    """

    def __init__(self, capacity: int, period: int) -> None:
        self._width = 1 << max(4, (8 * capacity - 1).bit_length())
        self._mask = self._width - 1
        self._table = bytearray(4 * self._width)
        self._period = period
        self._additions = 0

    def _slots(self, key: Hashable) -> tuple[int, int, int, int]:
        spread = (hash(key) * 0x9E3779B97F4A7C15) & _MASK64
        first, step = spread & 0xFFFFFFFF, (spread >> 32) | 1
        mask, width = self._mask, self._width
        return (
            first & mask,
            width + ((first + step) & mask),
            2 * width + ((first + 2 * step) & mask),
            3 * width + ((first + 3 * step) & mask),
        )

    def estimate(self, key: Hashable) -> int:
        """The (over-)estimated number of recent accesses to ``key``."""
        table = self._table
        a, b, c, d = self._slots(key)
        return min(table[a], table[b], table[c], table[d])

    def add(self, key: Hashable) -> None:
        """Record one access to ``key``."""
        table = self._table
        slots = self._slots(key)
        least = min(table[i] for i in slots)
        if least < 15:
            for i in slots:
                if table[i] == least:
                    table[i] = least + 1
        self._additions += 1
        if self._additions >= self._period:
            self._additions = 0
            self._table = bytearray(self._table.translate(_HALVE))


class WTinyLFU(_Buffered):
    """W-TinyLFU (Caffeine's layout with a fixed window, exact aged counters).

    A window LRU (``window`` of the capacity, 1% by default) takes new keys; a
    segmented LRU (probation, protected = 80%) holds the rest. A key leaving the
    window enters the main space only if it was accessed more often than the
    probation victim by more than one access (the request that brought it in is
    no evidence of popularity; Caffeine admits on any excess), so scans, loops and
    one-hit wonders do not flush the frequent keys. Frequencies come from a
    :class:`FrequencySketch` halved every ``period * capacity`` accesses (20 here,
    10 in Caffeine: the longer memory keeps a loop a little larger than the cache
    from churning the main space; measured in ``bench/hitratio.py``).
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        window: float = 0.01,
        period: int = 20,
        margin: int = 1,
    ) -> None:
        super().__init__()
        self._window_ratio = window
        self._period_factor = period
        self._margin = margin
        self._window: OrderedDict[Hashable, None] = OrderedDict()
        self._probation: OrderedDict[Hashable, None] = OrderedDict()
        self._protected: OrderedDict[Hashable, None] = OrderedDict()
        self._sketch: FrequencySketch | None = None
        self._capacity = 0
        self._window_max = 1.0
        if capacity is not None:
            self._size(capacity)

    def _size(self, capacity: int) -> None:
        self._capacity = capacity
        self._window_max = float(max(1.0, capacity * self._window_ratio))
        self._sketch = FrequencySketch(capacity, self._period_factor * capacity)

    def _protected_max(self) -> int:
        return int(0.8 * (self._capacity - int(self._window_max)))

    def _touch(self, key: Hashable) -> None:
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._protected:
            self._protected.move_to_end(key)
        elif key in self._probation:
            del self._probation[key]
            self._protected[key] = None
            if len(self._protected) > self._protected_max():
                demoted = self._protected.popitem(last=False)[0]
                self._probation[demoted] = None
        else:
            return
        if self._sketch is not None:
            self._sketch.add(key)

    def on_insert(self, key: Hashable) -> None:
        self._drain()
        self._window[key] = None
        if self._sketch is not None:
            self._sketch.add(key)

    def on_remove(self, key: Hashable) -> None:
        self._drain()
        if self._window.pop(key, _NONE) is _NONE and self._probation.pop(key, _NONE) is _NONE:
            self._protected.pop(key, None)

    def _main_victim(self) -> OrderedDict[Hashable, None]:
        return self._probation if self._probation else self._protected

    def evict(self) -> Hashable:
        self._drain()
        if not self._capacity:
            self._size(max(1, len(self) - 1))
        window, probation = self._window, self._probation
        window_max = int(self._window_max)
        main_max = self._capacity - window_max
        # Window overflow moves into free main space without a contest.
        while len(window) > window_max and len(probation) + len(self._protected) < main_max:
            probation[window.popitem(last=False)[0]] = None
        if len(window) > window_max or not (probation or self._protected):
            candidate = window.popitem(last=False)[0]
            main = self._main_victim()
            if not main:
                return candidate
            victim = next(iter(main))
            estimate = self._sketch.estimate  # type: ignore[union-attr]
            if estimate(candidate) > estimate(victim) + self._margin:
                del main[victim]
                probation[candidate] = None
                return victim
            return candidate
        return self._main_victim().popitem(last=False)[0]

    def survivors(self) -> list[Hashable]:
        """The resident keys: probation, window, then protected, each oldest first."""
        self._drain()
        return [*self._probation, *self._window, *self._protected]

    def clear(self) -> None:
        self._hits.clear()
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        if self._sketch is not None:
            self._sketch = FrequencySketch(self._capacity, self._period_factor * self._capacity)

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)


class _Shadow:
    """A key-only simulation of one policy at the real capacity, scored by its misses."""

    def __init__(self, policy: EvictionPolicy, capacity: int | None) -> None:
        self.policy = policy
        self.capacity = capacity
        self.resident: set[Hashable] = set()
        self.evicted: deque[Hashable] = deque(maxlen=capacity)
        self.misses = 0.0

    def access(self, key: Hashable) -> None:
        if key in self.resident:
            self.policy.on_hit(key)
            return
        self.misses += 1
        self.resident.add(key)
        self.policy.on_insert(key)
        if self.capacity is not None and len(self.resident) > self.capacity:
            victim = self.policy.evict()
            self.resident.remove(victim)
            self.evicted.append(victim)

    def size(self, capacity: int) -> None:
        self.capacity = capacity
        self.evicted = deque(maxlen=capacity)
        while len(self.resident) > capacity:
            self.resident.remove(self.policy.evict())

    def remove(self, key: Hashable) -> None:
        if key in self.resident:
            self.resident.remove(key)
            self.policy.on_remove(key)


class Adaptive(_Buffered):
    """Follow whichever of several policies has missed least lately (set dueling).

    Each candidate policy runs as a shadow: a key-only simulation at the same
    capacity, fed every request. Every ``capacity`` requests the shadow with the
    fewest misses becomes the leader if it beats the current one by the factor
    ``switch_at``; then it keeps the lead for at least ``tenure`` elections. Miss
    counts are halved every ``horizon * capacity`` requests, so the score follows the
    recent workload. The real cache evicts what the leader evicted (keys it holds
    that the leader does not), so with one leader its decisions are the leader's
    exactly, and after a switch its contents converge to the new leader's. No single
    policy wins every trace (LRU on recency-heavy ones, W-TinyLFU on frequency-heavy
    ones and loops, S3-FIFO on web-like ones, ARC on a moving hot set); the duel
    gets near the best of them,
    at the cost of a key-only copy of the cache per candidate. The defaults were
    measured with ``bench/hitratio.py`` (longer tenure or horizon helped some traces
    and hurt others; see docs/eviction.md).
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        candidates: tuple[str, ...] = ("wtinylfu", "lru", "s3fifo", "arc"),
        switch_at: float = 0.99,
        tenure: int = 0,
        horizon: int = 10,
    ) -> None:
        super().__init__()
        self._horizon = horizon
        self._switch_at = switch_at
        self._min_tenure = tenure
        self._tenure = 0
        self._names = candidates
        self._shadows = [_Shadow(make_policy(n, capacity), capacity) for n in candidates]
        self._capacity = capacity
        self._order: OrderedDict[Hashable, None] = OrderedDict()
        self._leader = 0
        self._requests = 0

    @property
    def leader(self) -> str:
        """The name of the policy the cache follows now."""
        return self._names[self._leader]

    def _request(self, key: Hashable) -> None:
        for shadow in self._shadows:
            shadow.access(key)
        self._requests += 1
        # Elect every `capacity` requests; halve the scores every `horizon` elections.
        if self._capacity is not None and self._requests % self._capacity == 0:
            self._elect()
            if self._requests >= self._horizon * self._capacity:
                self._requests = 0
                for shadow in self._shadows:
                    shadow.misses /= 2

    def _elect(self) -> None:
        if self._tenure > 0:
            self._tenure -= 1
            return
        shadows = self._shadows
        best = min(range(len(shadows)), key=lambda i: shadows[i].misses)
        # Switch only for a clear win, and then stay a while: each switch costs a
        # turnover of the cache while its contents move to the new leader's.
        if shadows[best].misses < self._switch_at * shadows[self._leader].misses:
            self._leader = best
            self._tenure = self._min_tenure

    def _touch(self, key: Hashable) -> None:
        if key in self._order:
            self._order.move_to_end(key)
        self._request(key)

    def on_insert(self, key: Hashable) -> None:
        self._drain()
        self._order[key] = None
        self._request(key)

    def on_remove(self, key: Hashable) -> None:
        self._drain()
        if self._order.pop(key, _NONE) is not _NONE:
            for shadow in self._shadows:
                shadow.remove(key)

    def evict(self) -> Hashable:
        self._drain()
        order = self._order
        if self._capacity is None:
            self._capacity = max(1, len(order) - 1)
            for shadow in self._shadows:
                shadow.size(self._capacity)
        leader = self._shadows[self._leader]
        held = leader.resident
        pending = leader.evicted
        while pending:
            key = pending.popleft()
            if key in order and key not in held:
                del order[key]
                return key
        # After a change of leader: the least recent key the leader does not hold.
        for _ in range(len(order)):
            key = next(iter(order))
            if key not in held:
                del order[key]
                return key
            order.move_to_end(key)
        return order.popitem(last=False)[0]

    def clear(self) -> None:
        self._hits.clear()
        self._order.clear()
        self._shadows = [
            _Shadow(make_policy(n, self._capacity), self._capacity) for n in self._names
        ]
        self._requests = 0

    def __len__(self) -> int:
        return len(self._order)


MINI_ENTRIES = 1024
"""Smallest miniature cache of :class:`SampledAdaptive` (measured: 512 misjudged arc-P3)."""

DUEL_HIT_BUFFER = 16_384
"""Hits the default's duel buffers between two inserts (a large cache sees long runs of
hits; measured: 1,024 dropped enough of them to cost arc-P3 at 10% 1.4 pp)."""

MIN_SHIFT = 3
"""The default samples only caches it can sample at 1/8 or less (``8 * MINI_ENTRIES``
entries and up). Below, sampling saves less than 8x the shadow work while a change of
leader costs as much, so the full duel (exact, no rebuild) is the better trade."""

_GOLDEN = 0x9E3779B97F4A7C15


def sample_shift(capacity: int, mini: int = MINI_ENTRIES) -> int:
    """How many top hash bits must be zero for a key to be sampled (rate ``2**-shift``).

    The largest shift that leaves a miniature cache of at least ``mini`` entries.
    """
    shift = 0
    while (capacity >> (shift + 1)) >= mini and shift < 16:
        shift += 1
    return shift


def sampled(key: Hashable, shift: int) -> bool:
    """Whether ``key`` is in the spatial sample of rate ``2**-shift`` (SHARDS-style).

    The same keys are always sampled, so a miniature cache sees every request for
    them: the sample is of keys, not of requests.
    """
    return shift == 0 or ((hash(key) * _GOLDEN) & _MASK64) >> (64 - shift) == 0


class _Mini(_Shadow):
    """A miniature cache of one candidate (``_speedups.Mini`` in C)."""

    def __init__(self, policy: EvictionPolicy, capacity: int) -> None:
        super().__init__(policy, capacity)
        self.evicted = deque(maxlen=0)  # nobody follows a miniature's evictions


class _DuelCore:
    """The per-request part of :class:`SampledAdaptive` (``_speedups.DuelCore`` in C).

    Calling it is a hit: the key enters a bounded buffer (as ``_Buffered`` policies'
    hits do), replayed at the next insert, remove or evict (which the store runs under
    its lock) into the real policy and, for a key in the sample, the miniatures. Every
    ``period`` sampled requests it calls ``elect()``.
    """

    def __init__(
        self,
        real: EvictionPolicy,
        minis: list[Any],
        period: int,
        drop: int,
        elect: Callable[[], None],
    ) -> None:
        self._hits: deque[Hashable] = deque(maxlen=DUEL_HIT_BUFFER)
        self._minis = minis
        self._period = period
        self._drop = drop
        self._elect = elect
        self._requests = 0
        self.real = real

    @property
    def real(self) -> EvictionPolicy:
        """The policy the cache runs now."""
        return self._real

    @real.setter
    def real(self, policy: EvictionPolicy) -> None:
        self._real = policy
        self._real_hit = policy.on_hit

    def _sampled(self, key: Hashable) -> bool:
        return not ((hash(key) * _GOLDEN) & _MASK64) >> self._drop

    def __call__(self, key: Hashable) -> None:
        self._hits.append(key)

    def _sample(self, key: Hashable) -> None:
        for mini in self._minis:
            mini.access(key)
        self._requests += 1
        if self._requests >= self._period:
            self._requests = 0
            self._elect()

    def _drain(self) -> None:
        """Replay the buffered hits in order: the real policy's, then the sample's."""
        hits = self._hits
        while hits:
            key = hits.popleft()
            try:  # noqa: SIM105 - the common case costs nothing
                self._real_hit(key)
            except KeyError:  # evicted since a racing lock-free hit
                pass
            if self._sampled(key):
                self._sample(key)

    def insert(self, key: Hashable) -> None:
        self._drain()
        self._real.on_insert(key)
        if self._sampled(key):
            self._sample(key)

    def remove(self, key: Hashable) -> None:
        self._drain()
        self._real.on_remove(key)
        if self._sampled(key):
            for mini in self._minis:
                mini.remove(key)

    def evict(self) -> Hashable:
        self._drain()
        return self._real.evict()

    def clear(self) -> None:
        self._hits.clear()
        self._requests = 0

    def __len__(self) -> int:
        return len(self._real)


class SampledAdaptive:
    """Set dueling on miniature simulations; the cache runs the winner (the default).

    Each candidate policy runs as a miniature cache (Waldspurger et al., "Cache
    Modeling and Optimization using Miniature Simulations", USENIX ATC '17): a
    key-only simulation at ``capacity / 2**shift`` entries fed only the requests for
    a hashed ``2**-shift`` sample of the keys, so it predicts that policy's miss
    ratio at the full size for a small fraction of the work. The store's real
    policy is one full-size instance of the candidate whose miniature missed least
    lately; every ``capacity`` requests (as counted in the sample) the leader changes
    if another beats it by the factor ``switch_at``, and the new leader's instance
    is built from the resident keys (in the old one's order, each with one hit). Miss
    counts are halved every ``horizon`` elections.

    A hit is one C call that only buffers the key (``deque.append``, or
    ``_speedups.DuelCore`` with the accelerator); the real policy and the miniatures
    replay the buffered hits at the next insert, as the other buffered policies do.
    """

    atomic_hits = True

    def __init__(
        self,
        capacity: int,
        *,
        candidates: tuple[str, ...] = ("wtinylfu", "lru", "s3fifo", "arc"),
        switch_at: float = 0.99,
        horizon: int = 10,
        mini: int = MINI_ENTRIES,
    ) -> None:
        self._names = candidates
        self._switch_at = switch_at
        self._horizon = horizon
        self._capacity = capacity
        self._shift = sample_shift(capacity, mini)
        self._mini_capacity = max(1, capacity >> self._shift)
        self._leader = 0
        self._elections = 0
        self._module = speedups()
        self._minis: list[Any] = []
        self._fill_minis()
        core_type: Any = _DuelCore if self._module is None else self._module.DuelCore
        self._core = core_type(
            make_policy(candidates[0], capacity),
            self._minis,
            self._mini_capacity,
            64 - self._shift,
            self._elect,
        )
        # The hit is one C call either way: the C core, or the Python core's deque.append.
        self.on_hit: Callable[[Hashable], None] = (
            self._core._hits.append if isinstance(self._core, _DuelCore) else self._core
        )
        self.on_insert: Callable[[Hashable], None] = self._core.insert
        self.on_remove: Callable[[Hashable], None] = self._core.remove
        self.evict: Callable[[], Hashable] = self._core.evict

    def _fill_minis(self) -> None:
        """One miniature per candidate, in place (the core holds this list)."""
        size = self._mini_capacity
        mini_type: Any = _Mini if self._module is None else self._module.Mini
        self._minis[:] = [mini_type(make_policy(n, size), size) for n in self._names]

    @property
    def leader(self) -> str:
        """The name of the policy the cache runs now."""
        return self._names[self._leader]

    @property
    def shift(self) -> int:
        """The sampling rate is ``2 ** -shift`` of the keys."""
        return self._shift

    def _elect(self) -> None:
        minis = self._minis
        best = min(range(len(minis)), key=lambda i: minis[i].misses)
        lead = minis[self._leader].misses
        if best != self._leader and minis[best].misses < self._switch_at * lead:
            self._switch(best)
        self._elections += 1
        if self._elections >= self._horizon:
            self._elections = 0
            for mini in minis:
                mini.misses /= 2

    def _switch(self, leader: int) -> None:
        """Run ``leader``'s policy from now on, built from the resident keys.

        Keys go in the old policy's order, its next victim first (``survivors()``), each
        with one hit: a cached key has earned a place past the new policy's probation
        (measured on bench/misspath.py's stream: inserting them as new keys, in the
        order they came, cost the duel 0.4 pp in every phase after the switch).
        """
        self._leader = leader
        real = make_policy(self._names[leader], self._capacity)
        for key in self._core.real.survivors():
            real.on_insert(key)
            real.on_hit(key)
        self._core.real = real

    def clear(self) -> None:
        self._core.clear()
        self._leader = 0
        self._elections = 0
        self._core.real = make_policy(self._names[0], self._capacity)
        self._fill_minis()

    def __len__(self) -> int:
        return len(self._core)


def _accelerated(python: Callable[[int | None], EvictionPolicy], name: str) -> PolicyFactory:
    """A factory of the C twin ``_speedups.<name>`` (the same decisions) when it is built."""

    def build(capacity: int | None = None) -> EvictionPolicy:
        module = speedups()
        if module is None:
            return python(capacity)
        policy: EvictionPolicy = getattr(module, name)(capacity)
        return policy

    build.__doc__ = f"{name} in C when cachewise._speedups is built, else in Python."
    return build


def _adaptive(capacity: int | None = None) -> EvictionPolicy:
    """The default: miniature-simulation dueling when the cache is large enough to sample.

    Below ``8 * MINI_ENTRIES`` entries (see ``MIN_SHIFT``) the full duel
    (:class:`Adaptive`), whose cache follows its leader's evictions exactly and loses
    nothing at a change of leader.
    """
    if capacity is not None and sample_shift(capacity) >= MIN_SHIFT:
        return SampledAdaptive(capacity)
    return Adaptive(capacity)


POLICIES: dict[str, PolicyFactory] = {
    "lru": _accelerated(LRU, "LRU"),
    "lfu": LFU,
    "lfu-aging": _aging_lfu,
    "sieve": _accelerated(SIEVE, "SIEVE"),
    "s3fifo": _accelerated(S3FIFO, "S3FIFO"),
    "arc": _accelerated(ARC, "ARC"),
    "wtinylfu": _accelerated(WTinyLFU, "WTinyLFU"),
    "adaptive": _adaptive,
    "adaptive-full": Adaptive,
}
"""Eviction policies by the name ``MemoryStore(eviction=...)`` takes."""

DEFAULT_POLICY = "adaptive"
"""The policy ``MemoryStore`` uses unless told otherwise (chosen by bench/hitratio.py)."""


def make_policy(name: str, capacity: int | None = None) -> EvictionPolicy:
    """Return a new policy by name, or raise ConfigurationError naming the choices.

    ``capacity`` is the store's bound; policies that size queues from it learn it at
    their first eviction when it is not given.
    """
    factory = POLICIES.get(name) if isinstance(name, str) else None
    if factory is None:
        choices = ", ".join(sorted(POLICIES))
        raise ConfigurationError(f"unknown eviction policy {name!r}; choose one of {choices}")
    return factory(capacity)
