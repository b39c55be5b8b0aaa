"""Eviction policies: victim order on hand-made sequences, bookkeeping under random operations."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachewise.errors import ConfigurationError
from cachewise.stores.eviction import (
    ARC,
    DEFAULT_POLICY,
    LFU,
    LRU,
    POLICIES,
    S3FIFO,
    SIEVE,
    Adaptive,
    EvictionPolicy,
    FrequencySketch,
    WTinyLFU,
    make_policy,
)
from cachewise.stores.memory import MemoryStore


class Replay:
    """Drive a policy as MemoryStore does: insert, then evict while over capacity."""

    def __init__(self, policy: EvictionPolicy, capacity: int) -> None:
        self.policy = policy
        self.capacity = capacity
        self.resident: set[Hashable] = set()
        self.evicted: list[Hashable] = []
        self.misses = 0

    def request(self, key: Hashable) -> None:
        if key in self.resident:
            self.policy.on_hit(key)
            return
        self.misses += 1
        self.resident.add(key)
        self.policy.on_insert(key)
        while len(self.resident) > self.capacity:
            victim = self.policy.evict()
            assert victim in self.resident
            self.resident.remove(victim)
            self.evicted.append(victim)

    def run(self, keys: Sequence[Hashable]) -> Replay:
        for key in keys:
            self.request(key)
        return self


def test_lru_evicts_least_recently_used() -> None:
    lru = LRU()
    for key in "abc":
        lru.on_insert(key)
    lru.on_hit("a")
    assert lru.evict() == "b"
    assert lru.evict() == "c"
    assert lru.evict() == "a"


def test_lfu_evicts_fewest_hits_oldest_first_among_ties() -> None:
    lfu = LFU()
    for key in "abcd":
        lfu.on_insert(key)
    lfu.on_hit("a")
    lfu.on_hit("c")
    assert [lfu.evict(), lfu.evict()] == ["b", "d"]
    assert lfu.evict() == "a"  # a reached count 2 before c did


def test_lfu_does_not_evict_the_key_it_just_admitted() -> None:
    # libCacheSim and cachetools evict before inserting: the newcomer is no candidate.
    lfu = LFU()
    lfu.on_insert("old")
    lfu.on_hit("old")
    lfu.on_insert("new")
    assert lfu.evict() == "old"


def test_lfu_counts_every_hit_of_a_long_streak() -> None:
    # Longer than HIT_BUFFER: LFU hits are applied at once, under the store's lock.
    trace = ["a"] * 1500 + ["b"] * 1400 + ["c"]
    replay = Replay(LFU(2), 2).run(trace)
    assert replay.evicted == ["b"]
    assert not LFU().atomic_hits


def test_aging_lfu_forgets_old_fame_plain_lfu_does_not() -> None:
    trace = ["a"] * 50 + ["b"] * 30 + ["c"]
    plain = Replay(LFU(2), 2).run(trace)
    aged = Replay(LFU(2, aging=True), 2).run(trace)
    assert plain.evicted == ["b"]  # a's 50 old hits outweigh b's 30 recent ones
    assert aged.evicted == ["a"]  # halving every 20 accesses faded a's count


def test_sieve_keeps_visited_keys_and_moves_the_hand_on() -> None:
    sieve = SIEVE()
    for key in "abc":
        sieve.on_insert(key)
    sieve.on_hit("a")
    sieve.on_insert("d")
    assert sieve.evict() == "b"  # a was visited: its bit is cleared and it stays
    sieve.on_insert("e")
    assert sieve.evict() == "c"  # the hand continues from where it stopped
    sieve.on_insert("f")
    assert sieve.evict() == "d"  # a is behind the hand now; d is next and unvisited


def test_s3fifo_evicts_one_hit_wonders_from_the_small_queue_first() -> None:
    replay = Replay(S3FIFO(10), 10)
    replay.run(list(range(10)))
    for key in range(10):
        replay.request(key)  # every resident key hit once: all promoted on leaving small
    replay.run(list(range(100, 105)))
    assert replay.evicted[0] == 0  # first small eviction promotes hit keys, evicts main's oldest
    assert set(replay.evicted[1:]) <= set(range(100, 105))  # then newcomers without hits go


def test_s3fifo_ghost_hit_readmits_to_main() -> None:
    replay = Replay(S3FIFO(10), 10)
    replay.run(["x", *range(10)])
    assert replay.evicted == ["x"]  # no hit in the small queue: out, remembered by the ghost
    replay.run(["x", *range(100, 104)])
    # x came back through the ghost into main; the newcomers in small go before it.
    assert "x" in replay.resident
    assert set(replay.evicted[1:]) <= set(range(10)) | set(range(100, 104))


def test_arc_keeps_a_twice_seen_key_through_a_scan() -> None:
    scan = [f"x{i}" for i in range(20)]
    arc = Replay(ARC(3), 3).run(["a", "a", *scan])
    lru = Replay(LRU(), 3).run(["a", "a", *scan])
    assert "a" in arc.resident  # in T2: the one-time keys of T1 go first
    assert "a" not in lru.resident


def test_arc_ghost_hit_in_b1_makes_room_for_recency() -> None:
    arc = ARC(4)
    replay = Replay(arc, 4).run(["a", "a", "b", "b", "c", "d", "e"])
    assert replay.evicted == ["c"]  # T1 over its target (p = 0): its LRU goes to B1
    replay.run(["c"])  # a B1 ghost hit: T1 should have been larger
    assert arc._p >= 1.0


def test_sketch_counts_caps_at_15_and_halves_each_period() -> None:
    sketch = FrequencySketch(capacity=100, period=1000)
    for _ in range(3):
        sketch.add(7)
    for _ in range(40):
        sketch.add(8)
    assert sketch.estimate(7) == 3
    assert sketch.estimate(8) == 15
    assert sketch.estimate(9) == 0
    for i in range(1000 - 43):
        sketch.add(10_000 + i)  # the 1000th addition halves every counter
    assert sketch.estimate(7) == 1
    assert sketch.estimate(8) == 7


def test_wtinylfu_rejects_a_cold_candidate_and_admits_a_frequent_one() -> None:
    capacity = 100
    replay = Replay(WTinyLFU(capacity), capacity)
    warm = list(range(capacity))
    replay.run(warm * 3)
    assert replay.evicted == []
    replay.run(["cold1", "cold2"])
    assert replay.evicted[-1] == "cold1"  # freq 1 loses to a probation key with freq 3
    for _ in range(5):
        replay.run(["hot", "filler"])
    assert "hot" in replay.resident
    assert set(replay.evicted) - {"cold1", "cold2", "hot", "filler"}  # hot displaced a warm key


def test_wtinylfu_resists_a_loop_larger_than_the_cache() -> None:
    loop: list[Hashable] = list(range(12))
    lru = Replay(LRU(), 10).run(loop * 50)
    tiny = Replay(WTinyLFU(10), 10).run(loop * 50)
    assert lru.misses == 600  # LRU misses every request of a loop larger than the cache
    assert tiny.misses < 300


def test_adaptive_follows_lru_on_recency_and_wtinylfu_on_a_loop() -> None:
    # Each key is requested twice, five requests apart, never again: recency wins.
    recency: list[Hashable] = []
    for base in range(0, 3000, 5):
        batch = list(range(base, base + 5))
        recency += batch + batch
    policy = Adaptive(10)
    Replay(policy, 10).run(recency)
    assert policy.leader == "lru"
    loop_policy = Adaptive(10)
    loop = Replay(loop_policy, 10).run(list(range(12)) * 100)
    assert loop_policy.leader != "lru"  # LRU misses every request of this loop
    assert loop.misses < 600


def test_adaptive_contents_converge_to_the_leader() -> None:
    policy = Adaptive(10, candidates=("lru", "wtinylfu"))
    replay = Replay(policy, 10).run(list(range(12)) * 100)
    assert policy.leader == "wtinylfu"
    tiny = Replay(WTinyLFU(10), 10).run(list(range(12)) * 100)
    assert abs(replay.misses - tiny.misses) <= 40


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_on_remove_forgets_an_arbitrary_key(name: str) -> None:
    replay = Replay(make_policy(name, 5), 5)
    replay.run(["a", "b", "c", "d", "e", "a", "c"])
    replay.policy.on_remove("c")
    replay.resident.remove("c")
    replay.policy.on_remove("never-there")  # harmless
    assert len(replay.policy) == 4
    replay.run(["f", "g", "h", "i", "j", "k"])
    assert "c" not in replay.evicted
    assert len(replay.policy) == 5


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_clear_forgets_everything(name: str) -> None:
    replay = Replay(make_policy(name, 3), 3).run(list("abcdab"))
    replay.policy.clear()
    assert len(replay.policy) == 0
    fresh = Replay(replay.policy, 3).run(list("xyzw"))
    assert set(fresh.evicted) <= {"x", "y", "z", "w"}


operations = st.lists(
    st.tuples(st.sampled_from(["request", "remove"]), st.integers(0, 30)), max_size=300
)


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("given_capacity", [True, False])
@settings(max_examples=40, deadline=None)
@given(ops=operations, capacity=st.integers(1, 8))
def test_bookkeeping_matches_a_reference_set(
    name: str, given_capacity: bool, ops: list[tuple[str, int]], capacity: int
) -> None:
    """Victims are always resident, and len() tracks the resident set exactly."""
    replay = Replay(make_policy(name, capacity if given_capacity else None), capacity)
    for op, key in ops:
        if op == "request":
            replay.request(key)
        elif key in replay.resident:
            replay.resident.remove(key)
            replay.policy.on_remove(key)
        assert len(replay.policy) == len(replay.resident)


@pytest.mark.parametrize("name", sorted(POLICIES))
@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["set", "get", "delete"]), st.integers(0, 40))),
    bound=st.integers(1, 10),
)
def test_memory_store_never_exceeds_max_entries(
    name: str, ops: list[tuple[str, int]], bound: int
) -> None:
    store = MemoryStore(max_entries=bound, eviction=name)
    for op, key in ops:
        if op == "set":
            store.set(f"k{key}", key)
        elif op == "get":
            value = store.get(f"k{key}")
            assert value is not None
        else:
            store.delete(f"k{key}")
        assert len(store) <= bound


def test_make_policy_names_the_choices_for_an_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match="lru"):
        make_policy("mru")


def test_default_policy_is_registered_and_hits_are_lock_free() -> None:
    assert DEFAULT_POLICY in POLICIES
    assert make_policy(DEFAULT_POLICY, 10).atomic_hits
    assert MemoryStore(max_entries=3).eviction == DEFAULT_POLICY
