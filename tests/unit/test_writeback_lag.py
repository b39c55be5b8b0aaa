"""Write-back lag (issue 19) with an injected clock: ``oldest_dirty_age`` is the age of the
oldest write not yet in the source, and ``lag()`` the acknowledgement-to-commit time of
recent writes. No sleeps: the clock moves only when the test moves it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from cachewise import Cache, MappingSource, MemoryStore, WriteBack
from cachewise._types import Key
from cachewise.errors import FlushError
from cachewise.writeback.flusher import Flusher
from cachewise.writeback.lag import SAMPLE_EVERY, LagWindow

INTERVAL = 0.2
FLUSH = 0.05
"""Simulated: writes spread over one flush interval, then a flush that takes this long."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TimedSource(MappingSource):
    """A source whose save takes ``FLUSH`` seconds of the clock; ``during`` runs meanwhile."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.down = False
        self.during: Callable[[], object] | None = None

    def save_many(self, items: Mapping[Key, Any]) -> None:
        self.clock.advance(FLUSH / 2)
        if self.during is not None:
            self.during()  # a write landing while the batch is in flight
        self.clock.advance(FLUSH / 2)
        if self.down:
            raise ConnectionError("the database is down")
        super().save_many(items)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(clock: Clock) -> TimedSource:
    return TimedSource(clock)


@pytest.fixture
def flusher(clock: Clock, source: TimedSource) -> Iterator[Flusher]:
    runtime = Flusher(WriteBack(flush_interval=3600), source, clock=clock)
    yield runtime
    source.during = None
    runtime.close()


def test_a_hot_key_rewritten_between_every_flush_is_never_older_than_one_interval_and_flush(
    clock: Clock, source: TimedSource, flusher: Flusher
) -> None:
    writes = iter(range(10**6))
    source.during = lambda: flusher.accept({"hot": next(writes)})
    ages = []
    for _ in range(100):  # 100 cycles: 25 s of clock
        for _ in range(20):  # the hot key is rewritten all through the interval
            clock.advance(INTERVAL / 20)
            flusher.accept({"hot": next(writes)})
        flusher.flush()
        ages.append(flusher.oldest_dirty_age())
    assert flusher.is_dirty("hot")  # never clean: a write lands during every flush
    assert max(ages) <= INTERVAL + FLUSH + 1e-9  # not 25 s: it counts from the newest writes


def test_an_outage_makes_the_age_grow_and_one_flush_brings_it_back(
    clock: Clock, source: TimedSource, flusher: Flusher
) -> None:
    writes = iter(range(10**6))
    source.down = True
    for _ in range(50):  # a 10 s outage, the hot key written all the time
        clock.advance(INTERVAL)
        flusher.accept({"hot": next(writes)})
        with pytest.raises(FlushError):
            flusher.flush()
    assert flusher.oldest_dirty_age() == pytest.approx(50 * INTERVAL + 50 * FLUSH - INTERVAL)
    source.down = False
    source.during = lambda: flusher.accept({"hot": next(writes)})
    flusher.flush()  # one flush after recovery
    assert flusher.oldest_dirty_age() == pytest.approx(FLUSH / 2)  # the write during it
    lag = flusher.lag()
    assert lag.max == pytest.approx(50 * INTERVAL + 50 * FLUSH - INTERVAL + FLUSH)


def test_lag_follows_sampled_writes_to_the_commit_of_the_flush_that_wrote_them(
    clock: Clock, flusher: Flusher
) -> None:
    for i in range(1, 4 * SAMPLE_EVERY + 1):  # 64 writes, one every 10 ms, 8 keys
        clock.advance(0.01)
        flusher.accept({i % 8: i})
    clock.advance(0.5)
    flusher.flush()  # commits at t0 + 0.64 + 0.5 + FLUSH
    lag = flusher.lag()
    # The 4 followed writes (seq 16, 32, 48, 64) were acknowledged at t0 + 0.16 .. 0.64.
    expected = sorted(0.64 + 0.5 + FLUSH - 0.01 * seq for seq in (16, 32, 48, 64))
    assert lag.samples == 4
    assert lag.p50 == pytest.approx(expected[1])
    assert lag.p99 == pytest.approx(expected[-1])
    # The largest is exact even between samples: the oldest write of the batch (seq 1).
    assert lag.max == pytest.approx(0.64 + 0.5 + FLUSH - 0.01)


def test_a_superseded_write_counts_as_committed_with_the_write_that_replaced_it(
    clock: Clock, flusher: Flusher
) -> None:
    for i in range(1, SAMPLE_EVERY + 1):
        clock.advance(0.01)
        flusher.accept({"k": i})  # seq 16 is followed; coalesced with nothing after it
    clock.advance(0.01)
    flusher.accept({"k": "final"})  # seq 17 replaces it
    clock.advance(1.0)
    flusher.flush()
    assert flusher.lag().samples == 1
    assert flusher.lag().p50 == pytest.approx(1.0 + 0.01 + FLUSH)


def test_lag_samples_age_out_of_the_window(clock: Clock, flusher: Flusher) -> None:
    for i in range(1, SAMPLE_EVERY + 1):
        flusher.accept({i: i})
    flusher.flush()
    assert flusher.lag().samples == 1
    clock.advance(61.0)
    assert flusher.lag().samples == 0
    assert flusher.lag().max == 0.0


def test_lag_window_quantiles_are_nearest_rank() -> None:
    window = LagWindow(window=10.0)
    for i in range(1, 101):
        window.add(1.0, float(i))
    window.add_bound(1.0, 250.0)
    summary = window.summary(now=5.0)
    assert (summary.p50, summary.p99, summary.max, summary.samples) == (50.0, 99.0, 250.0, 100)
    assert window.summary(now=11.5).samples == 0


def test_cache_stats_report_the_lag() -> None:
    cache = Cache(MemoryStore(), MappingSource(), write=WriteBack(flush_interval=3600))
    try:
        for i in range(4 * SAMPLE_EVERY):
            cache.write(i, i)
        cache.flush()
        stats = cache.stats
        assert 0.0 < stats.lag_p50 <= stats.lag_p99 <= stats.lag_max
        assert stats.oldest_dirty_age == 0.0
        assert stats.as_dict()["lag_max"] == stats.lag_max
    finally:
        cache.close()
