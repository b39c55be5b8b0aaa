"""The eviction policies in C (cachewise._speedups) decide exactly as their Python twins.

Each pair is replayed side by side on random operations and on a skewed stream; the
victims must be the same, in the same order. (The Python classes buffer up to
HIT_BUFFER hits between two misses and the C ones apply hits at once: the same
decisions while fewer hits than that arrive between misses, as here.)
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachewise.stores.eviction import (
    ARC,
    DUEL_HIT_BUFFER,
    HIT_BUFFER,
    LRU,
    POLICIES,
    S3FIFO,
    SIEVE,
    EvictionPolicy,
    SampledAdaptive,
    WTinyLFU,
    _DuelCore,
    make_policy,
)
from tests.conftest import IN_CI
from tests.unit.test_eviction import Replay

try:
    _speedups: Any = importlib.import_module("cachewise._speedups")
except ImportError:
    _speedups = None

if _speedups is None and not IN_CI:
    pytest.skip("cachewise._speedups is not built", allow_module_level=True)

TWINS: dict[str, Callable[[int | None], EvictionPolicy]] = {
    "LRU": LRU,
    "SIEVE": SIEVE,
    "S3FIFO": S3FIFO,
    "ARC": ARC,
    "WTinyLFU": WTinyLFU,
}


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("given_capacity", [True, False])
@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["request"] * 3 + ["remove"]), st.integers(0, 40)),
        max_size=500,
    ),
    capacity=st.integers(1, 10),
)
def test_c_policy_evicts_exactly_as_python(
    name: str, given_capacity: bool, ops: list[tuple[str, int]], capacity: int
) -> None:
    size = capacity if given_capacity else None
    python = Replay(TWINS[name](size), capacity)
    c = Replay(getattr(_speedups, name)(size), capacity)
    for op, key in ops:
        for replay in (python, c):
            if op == "request":
                replay.request(key)
            elif key in replay.resident:
                replay.resident.remove(key)
                replay.policy.on_remove(key)
        assert c.evicted == python.evicted
        assert len(c.policy) == len(python.policy) == len(python.resident)
    if hasattr(python.policy, "survivors"):
        assert c.policy.survivors() == python.policy.survivors()  # type: ignore[attr-defined]
    assert HIT_BUFFER > 500  # no Python hit was dropped: the comparison is exact


@pytest.mark.parametrize("name", sorted(TWINS))
def test_c_policy_matches_on_a_skewed_stream_and_after_clear(name: str) -> None:
    rng = random.Random(3)
    keys: list[Hashable] = [int(rng.paretovariate(0.8)) % 5000 for _ in range(30_000)]
    python = Replay(TWINS[name](200), 200).run(keys)
    c = Replay(getattr(_speedups, name)(200), 200).run(keys)
    assert python.misses == c.misses
    assert python.evicted == c.evicted
    for replay in (python, c):
        replay.policy.clear()
        replay.resident.clear()
        replay.evicted.clear()
        replay.run(keys[:5000])
    assert python.evicted == c.evicted


@pytest.mark.parametrize("name", sorted(TWINS))
def test_c_policy_contract(name: str) -> None:
    policy = getattr(_speedups, name)(3)
    assert policy.atomic_hits is True
    with pytest.raises(KeyError):
        policy.evict()  # nothing to evict
    for key in "abc":
        policy.on_insert(key)
    policy.on_hit("a")
    policy.on_remove("b")
    policy.on_remove("never-there")
    assert len(policy) == 2
    policy.clear()
    assert len(policy) == 0
    if name not in {"LRU", "SIEVE"}:  # the two that need no size ignore it, as in Python
        with pytest.raises(ValueError, match="capacity"):
            getattr(_speedups, name)(0)


@pytest.mark.parametrize("name", ["lru", "sieve", "s3fifo", "arc", "wtinylfu"])
def test_the_registry_builds_c_unless_pure_python(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert type(make_policy(name, 10)).__module__ == "cachewise._speedups"
    monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    assert type(make_policy(name, 10)).__module__ == "cachewise.stores.eviction"
    assert name in POLICIES


def test_the_default_duel_decides_in_c_exactly_as_in_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stream whose best policy changes: recency first (LRU wins), then a loop a little
    # larger than the cache (W-TinyLFU wins), then Zipf; removals on the way.
    rng = random.Random(5)
    keys: list[Hashable] = []
    for base in range(0, 60_000, 400):
        batch = list(range(base, base + 400))
        keys += batch + batch
    keys += [100_000 + i % 1_200 for i in range(60_000)]
    keys += [200_000 + int(rng.paretovariate(0.9)) % 20_000 for _ in range(60_000)]
    runs = []
    for pure in ("0", "1"):
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", pure)
        policy = SampledAdaptive(1_024)
        replay = Replay(policy, 1_024)
        leaders = []
        for i, key in enumerate(keys):
            replay.request(key)
            if i % 5_000 == 0 and replay.resident:
                gone = min(replay.resident, key=hash)
                replay.resident.remove(gone)
                policy.on_remove(gone)
                leaders.append(policy.leader)
        runs.append((replay.evicted, leaders, type(policy._core).__module__))
    (c_evicted, c_leaders, c_core), (py_evicted, py_leaders, py_core) = runs
    assert (c_core, py_core) == ("cachewise._speedups", "cachewise.stores.eviction")
    assert len(set(c_leaders)) > 1  # the stream did make it switch
    assert c_leaders == py_leaders
    assert c_evicted == py_evicted


@pytest.mark.parametrize("pure", ["0", "1"])
def test_the_duel_core_drops_the_oldest_sampled_hits_past_the_buffer(
    pure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEWISE_PURE_PYTHON", pure)
    elections: list[int] = []
    seen: list[Any] = []

    class Recorder:
        misses = 0.0

        def access(self, key: Any) -> None:
            seen.append(key)

        def remove(self, key: Any) -> None:
            seen.append(("removed", key))

    core_type: Any = _speedups.DuelCore if pure == "0" else _DuelCore
    core = core_type(make_policy("lru", 4096), [Recorder()], 10**9, 64, lambda: elections.append(1))
    for key in range(DUEL_HIT_BUFFER + 10):
        core.insert(key)
    seen.clear()
    for key in range(DUEL_HIT_BUFFER + 10):
        core(key)  # hits: every key is sampled (drop 64)
    core.insert("new")
    assert seen == [*range(10, DUEL_HIT_BUFFER + 10), "new"]  # the 10 oldest hits were dropped
    core.remove("new")
    assert seen[-1] == ("removed", "new")
    assert len(core) == DUEL_HIT_BUFFER + 10
    assert core.real.survivors()[-1] == DUEL_HIT_BUFFER + 9  # the last hit: the most recent
    assert core.evict() == 0
    core.clear()  # the buffered hits only: the real policy is the caller's to replace
    core.insert("after")
    assert seen[-1] == "after"
    assert elections == []
