"""Every option that takes seconds refuses inf, NaN, negatives and absurd values up front.

One helper (``cachewise._types.check_seconds``) validates them all, so each refusal is a
ConfigurationError with the same wording, raised at construction before anything runs.
Values at the limit work end to end: no OverflowError in a flusher or a wait.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachewise import (
    Cache,
    CacheAside,
    Every,
    MappingSource,
    MemoryStore,
    OnChange,
    ReadThrough,
    RedisStore,
    TieredStore,
    WriteBack,
    WriteThrough,
    connect,
)
from cachewise._types import MAX_SECONDS, backoff
from cachewise.aggregates import Aggregate
from cachewise.aggregates.schedules import Backoff
from cachewise.errors import ConfigurationError
from cachewise.invalidation import PostgresBus, RedisBus
from cachewise.policies import Retry
from cachewise.writeback.journal import FileJournal

REDIS = "redis://127.0.0.1:6379/0"  # never contacted: validation comes first

OPTIONS: dict[str, Callable[[Any], object]] = {
    "MemoryStore(ttl)": lambda v: MemoryStore(ttl=v),
    "MemoryStore.set(ttl)": lambda v: MemoryStore().set(1, "x", ttl=v),
    "RedisStore(ttl)": lambda v: RedisStore(REDIS, ttl=v),
    "RedisStore(lease_ttl)": lambda v: RedisStore(REDIS, lease_ttl=v),
    "RedisStore(lease_wait)": lambda v: RedisStore(REDIS, lease_wait=v),
    "RedisStore(timeout)": lambda v: RedisStore(REDIS, timeout=v),
    "TieredStore(ready_timeout)": lambda v: TieredStore(
        MemoryStore(), RedisStore(REDIS), ready_timeout=v
    ),
    "RedisBus(ready_timeout)": lambda v: RedisBus(REDIS, ready_timeout=v),
    "PostgresBus(ready_timeout)": lambda v: PostgresBus(
        "postgresql://u@127.0.0.1/d", ready_timeout=v
    ),
    "WriteBack(flush_interval)": lambda v: WriteBack(flush_interval=v),
    "WriteBack(block_timeout)": lambda v: WriteBack(block_timeout=v),
    "WriteBack(flush_timeout)": lambda v: WriteBack(flush_timeout=v),
    "Retry(initial)": lambda v: Retry(initial=v),
    "Retry(maximum)": lambda v: Retry(maximum=v),
    "CacheAside(ttl)": lambda v: CacheAside(ttl=v),
    "ReadThrough(ttl)": lambda v: ReadThrough(ttl=v),
    "ReadThrough(refresh_ahead)": lambda v: ReadThrough(refresh_ahead=v),
    "Cache.write(ttl)": lambda v: Cache(MemoryStore()).write(1, "x", ttl=v),
    "Cache.write_many(ttl)": lambda v: Cache(MemoryStore()).write_many({1: "x"}, ttl=v),
    "connect(timeout)": lambda v: connect("sqlite://", timeout=v),
    "connect(recycle)": lambda v: connect("sqlite://", recycle=v),
    "Every(seconds)": Every,
    "OnChange(debounce)": lambda v: OnChange("t", debounce=v),
    "OnChange(max_delay)": lambda v: OnChange("t", debounce=0.1, max_delay=v),
    "OnChange(poll)": lambda v: OnChange("t", poll=v),
    "Aggregate(check_interval)": lambda v: Aggregate(
        "sqlite://", "agg", "SELECT 1 AS k", "k", check_interval=v
    ),
    "Backoff(initial)": lambda v: Backoff(initial=v),
    "FileJournal(sync_interval)": lambda v: FileJournal(
        "/nonexistent/never-created", sync_interval=v
    ),
}

BAD: dict[str, tuple[object, str]] = {
    "inf": (math.inf, "finite number of seconds"),
    "-inf": (-math.inf, "finite number of seconds"),
    "nan": (math.nan, "finite number of seconds"),
    "zero": (0, "> 0 seconds"),
    "negative": (-1.5, "> 0 seconds"),
    "1e300": (1e300, "more than a clock or Redis can hold"),
    "just past the limit": (MAX_SECONDS * 1.01, "more than a clock or Redis can hold"),
    "huge int": (10**400, "more than a clock or Redis can hold"),
    "bool": (True, "number of seconds"),
    "str": ("5", "number of seconds"),
}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
@pytest.mark.parametrize("option", list(OPTIONS), ids=list(OPTIONS))
def test_every_seconds_option_refuses_what_no_clock_can_hold(option: str, bad: str) -> None:
    value, wording = BAD[bad]
    with pytest.raises(ConfigurationError, match=re.escape(wording)):
        OPTIONS[option](value)


def test_a_refused_ttl_changes_nothing() -> None:
    source = MappingSource({1: "old"})
    store = MemoryStore()
    cache = Cache(store, source, write=WriteThrough())
    for bad in (math.inf, math.nan, 1e300, -1):
        with pytest.raises(ConfigurationError):
            cache.write(1, "new", ttl=bad)
        with pytest.raises(ConfigurationError):
            store.set(2, "new", ttl=bad)
    assert source.data == {1: "old"}
    assert len(store) == 0
    assert cache.stats.source_writes == 0


def test_write_back_at_the_longest_durations_flushes_and_closes(tmp_path: Path) -> None:
    source = MappingSource({})
    policy = WriteBack(
        flush_interval=MAX_SECONDS,
        block_timeout=MAX_SECONDS,
        flush_timeout=MAX_SECONDS,
        journal=str(tmp_path / "j"),
    )
    before = set(threading.enumerate())
    cache = Cache(MemoryStore(ttl=MAX_SECONDS), source, write=policy)
    started = [t for t in threading.enumerate() if t not in before]
    assert {t.name.rsplit("-", 1)[-1] for t in started} >= {"flusher"}
    cache.write(1, "tea")
    assert cache.flush() == 1
    assert all(t.is_alive() for t in started)  # no OverflowError killed them
    cache.write(2, "cake")
    cache.close()
    assert source.data == {1: "tea", 2: "cake"}


def test_retry_delays_stay_bounded_however_long_the_outage() -> None:
    retry = Retry(initial=0.1, maximum=30.0, multiplier=2.0, jitter=0.0)
    assert retry.delay(1) == pytest.approx(0.1)
    assert retry.delay(4) == pytest.approx(0.8)
    # 2.0 ** 1100 overflows a float: the flusher thread used to die here.
    assert retry.delay(1100) == retry.delay(10**6) == 30.0
    assert backoff(0.5, 60.0, 1.0, 10**9) == 0.5  # a factor of 1 never grows
    always_top = Backoff(initial=0.5, maximum=60.0, rng=lambda: 1.0)
    for _ in range(1100):
        delay = always_top.failed()
    assert delay == 60.0
