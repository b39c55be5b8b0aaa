"""The default policy: dueling miniature simulations (SampledAdaptive)."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from cachewise.stores.eviction import (
    LRU,
    MINI_ENTRIES,
    Adaptive,
    SampledAdaptive,
    WTinyLFU,
    make_policy,
    sample_shift,
    sampled,
)
from tests.unit.test_eviction import Replay
from tests.unit.test_speedups import path

__all__ = ["path"]  # the C / pure-Python fixture of test_speedups, requested by name


@pytest.fixture(autouse=True)
def both_builds(path: str) -> str:
    """Every test here runs on the C build and on the pure-Python one."""
    return path


def test_pure_python_builds_the_python_wtinylfu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    assert type(make_policy("wtinylfu", 10)) is WTinyLFU


# -- sampling -----------------------------------------------------------------------------------


def test_sample_shift_keeps_a_miniature_of_at_least_mini_entries() -> None:
    assert sample_shift(2 * MINI_ENTRIES - 1) == 0
    assert sample_shift(2 * MINI_ENTRIES) == 1
    assert sample_shift(20_000) == 4  # 1,250 entries, 1/16 of the keys
    for capacity in (1_024, 5_000, 20_000, 76_254):
        assert capacity >> sample_shift(capacity) >= MINI_ENTRIES


def test_sampling_is_by_key_and_near_its_rate() -> None:
    keys = range(64_000)
    chosen = [k for k in keys if sampled(k, 5)]
    assert 64_000 / 32 * 0.8 < len(chosen) < 64_000 / 32 * 1.2
    assert chosen == [k for k in keys if sampled(k, 5)]  # the same keys every time
    assert all(sampled(k, 0) for k in range(100))


def test_the_default_samples_large_caches_and_duels_small_ones_in_full() -> None:
    assert isinstance(make_policy("adaptive", 20_000), SampledAdaptive)
    assert isinstance(make_policy("adaptive", 8 * MINI_ENTRIES), SampledAdaptive)
    assert isinstance(make_policy("adaptive", 8 * MINI_ENTRIES - 1), Adaptive)  # 1/4 at most
    assert isinstance(make_policy("adaptive", 100), Adaptive)
    assert isinstance(make_policy("adaptive-full", 20_000), Adaptive)
    assert make_policy("adaptive", 20_000).atomic_hits


# -- the duel ------------------------------------------------------------------------------------


def recency_trace(n: int) -> list[Hashable]:
    """Each key requested twice, a batch apart, then never again: only recency hits."""
    out: list[Hashable] = []
    for base in range(0, n, 500):
        batch = list(range(base, base + 500))
        out += batch + batch
    return out


def test_it_follows_lru_on_recency_and_misses_about_as_lru_does() -> None:
    capacity = 2048
    keys = recency_trace(200_000)
    policy = SampledAdaptive(capacity)
    assert policy.shift == 1  # half the keys sampled: 1,024-entry miniatures
    duel = Replay(policy, capacity).run(keys)
    lru = Replay(LRU(), capacity).run(keys)
    tiny = Replay(make_policy("wtinylfu", capacity), capacity).run(keys)
    assert policy.leader == "lru"
    assert tiny.misses > lru.misses * 1.5  # the first candidate is the wrong one here
    assert duel.misses < lru.misses * 1.05


def test_hits_bound_once_reach_the_leader_after_a_switch() -> None:
    # Stores bind on_hit once; after the leader changes, hits must reach the new policy.
    capacity = 2048
    policy = SampledAdaptive(capacity)
    on_hit = policy.on_hit
    resident: set[Hashable] = set()
    for key in recency_trace(100_000):
        if key in resident:
            on_hit(key)
            continue
        resident.add(key)
        policy.on_insert(key)
        if len(resident) > capacity:
            resident.remove(policy.evict())
    assert policy.leader == "lru"
    real = policy._core.real
    oldest = real.evict()
    real.on_insert(oldest)  # now the most recent
    hit = next(k for k in resident if k != oldest)
    on_hit(hit)  # through the on_hit bound at the start: buffered...
    policy.on_insert("fresh")  # ...and replayed here, into the leader of now
    order = [real.evict() for _ in range(len(real))]
    assert order[-2:] == [hit, "fresh"]  # the hit reached the new leader


def test_remove_and_clear_keep_the_bookkeeping_exact() -> None:
    policy = SampledAdaptive(1024)
    replay = Replay(policy, 1024).run(list(range(3000)))
    victim = next(iter(replay.resident))
    policy.on_remove(victim)
    replay.resident.remove(victim)
    assert len(policy) == len(replay.resident) == 1023
    policy.clear()
    assert len(policy) == 0
    fresh = Replay(policy, 1024).run(list(range(5000, 7000)))
    assert set(fresh.evicted) <= set(range(5000, 7000))
