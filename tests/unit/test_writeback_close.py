"""Closing (issue 11 item 3, issue 12): a write racing ``close()`` is flushed or refused with
ClosedError, never acknowledged and lost; every call after ``close()`` is refused. And the
flusher's life through an outage: backoff that writes cannot cut short."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cachewise import Cache, MappingSource, MemoryStore, Retry, WriteBack
from cachewise.errors import ClosedError

THREADS = 8
ROUNDS = 40


def _race_round(seed: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]], list[Any]]:
    """8 writers write unique keys until refused while the main thread closes the cache."""
    source = MappingSource()
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600, max_batch=10**6))
    acked: list[list[tuple[int, int]]] = [[] for _ in range(THREADS)]
    refused: list[list[tuple[int, int]]] = [[] for _ in range(THREADS)]
    other: list[Any] = []
    started = threading.Barrier(THREADS + 1)

    def writer(thread: int) -> None:
        started.wait()
        for i in range(10**6):
            key = (thread, i)
            try:
                cache.write(key, i)
            except ClosedError:
                refused[thread].append(key)
                return
            except Exception as exc:  # anything else is a bug the test reports
                other.append(exc)
                return
            acked[thread].append(key)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for worker in workers:
        worker.start()
    started.wait()
    threading.Event().wait(random.Random(seed).uniform(0.001, 0.02))
    cache.close()
    for worker in workers:
        worker.join(30)
    in_source = set(source.data)
    lost = {k for ks in acked for k in ks} - in_source
    refused_but_written = {k for ks in refused for k in ks} & in_source
    return lost, refused_but_written, other


def test_every_write_racing_close_is_flushed_or_refused() -> None:
    acked_total = 0
    for seed in range(ROUNDS):
        lost, refused_but_written, other = _race_round(seed)
        assert not other, f"round {seed}: a writer got {other[0]!r}, not ClosedError"
        assert not lost, f"round {seed}: acknowledged but never in the source: {sorted(lost)[:5]}"
        assert not refused_but_written, f"round {seed}: refused yet written"
        acked_total += 1
    assert acked_total == ROUNDS


def _closed_cache(**kwargs: Any) -> Cache:
    cache = Cache(MemoryStore(), MappingSource({1: "one"}), **kwargs)
    cache.write(2, "two")
    assert cache.read(1) == "one"  # the hit path is warm
    cache.close()
    return cache


CALLS: dict[str, Callable[[Cache], object]] = {
    "read": lambda c: c.read(1),
    "read miss": lambda c: c.read(99),
    "read with loader": lambda c: c.read(99, loader=lambda k: k),
    "read_many": lambda c: c.read_many([1, 2]),
    "write": lambda c: c.write(3, "three"),
    "write_many": lambda c: c.write_many({3: "three"}),
    "delete": lambda c: c.delete(1),
    "invalidate": lambda c: c.invalidate(1),
    "invalidate_many": lambda c: c.invalidate_many([1]),
    "invalidate_tag": lambda c: c.invalidate_tag("t"),
    "flush": lambda c: c.flush(),
    "dirty_keys": lambda c: c.dirty_keys(),
    "rejected": lambda c: c.rejected(),
    "retry_rejected": lambda c: c.retry_rejected(),
    "discard_rejected": lambda c: c.discard_rejected(),
}


@pytest.mark.parametrize("pure", [False, True], ids=["c-hit-path", "pure-python"])
@pytest.mark.parametrize("write", ["write-back", "write-through"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_call_after_close_raises_closed_error(
    call: str, write: str, pure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pure:
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    policy = WriteBack(flush_interval=3600) if write == "write-back" else None
    cache = _closed_cache(**({"write": policy} if policy else {}))
    with pytest.raises(ClosedError, match="closed"):
        CALLS[call](cache)


def test_a_second_close_is_a_no_op_and_stats_stay_readable() -> None:
    source = MappingSource()
    cache = Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600))
    cache.write(1, "one")
    cache.close()
    cache.close()
    with cache:
        pass  # __exit__ closes again: still nothing
    assert source.data == {1: "one"}
    assert cache.stats.source_writes == 1


# -- found by the lag benchmark: an outage under steady writes ----------------------------


def test_a_backlog_wake_does_not_cut_the_backoff_short() -> None:
    """During an outage every write past ``max_batch`` wakes the flusher; the retries
    must still back off (they hammered the database and, after 1,024 consecutive
    failures, the backoff's power overflowed and killed the flusher thread)."""
    from tests.helpers import FlakySource

    source = FlakySource()
    source.down = True
    policy = WriteBack(flush_interval=0.01, max_batch=1, retry=Retry(initial=30.0, maximum=30.0))
    cache = Cache(MemoryStore(), source, write=policy)
    try:
        cache.write(0, "first")  # wakes the flusher: one failed attempt, then 30 s of backoff
        deadline = threading.Event()
        for _ in range(500):
            if cache.stats.flush_failures:
                break
            deadline.wait(0.02)
        assert cache.stats.flush_failures == 1
        for key in range(1, 200):
            cache.write(key, "during the outage")  # each one wakes the flusher
        threading.Event().wait(0.3)
        assert source.calls.get("save_many") == 1  # still backing off
        source.down = False
    finally:
        cache.close()
    assert len(source.data) == 200


def test_the_backoff_of_a_long_outage_stays_at_its_maximum() -> None:
    retry = Retry(initial=0.1, maximum=30.0, multiplier=10.0, jitter=0.0)
    assert retry.delay(1) == pytest.approx(0.1)
    assert retry.delay(3) == pytest.approx(10.0)
    assert retry.delay(10**6) == 30.0  # no OverflowError after a million attempts
