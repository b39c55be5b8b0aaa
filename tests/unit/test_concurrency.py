"""Many threads at once: single flight on a missing key, no write lost under a flusher."""

from __future__ import annotations

import random
import threading

import pytest

from cachewise import Cache, MemoryStore, ReadThrough, WriteBack
from tests.helpers import FlakySource, SourceDownError

THREADS = 32


def test_threads_missing_one_key_load_it_once() -> None:
    source = FlakySource({"hot": "value"})
    source.gate = threading.Event()
    cache = Cache(MemoryStore(), source, read=ReadThrough())
    barrier = threading.Barrier(THREADS + 1)
    results: list[object] = []
    lock = threading.Lock()

    def reader() -> None:
        barrier.wait()
        value = cache.read("hot")
        with lock:
            results.append(value)

    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    while source.calls.get("load", 0) == 0:
        threading.Event().wait(0.001)
    threading.Event().wait(0.05)  # let every reader reach the miss while the load is slow
    source.gate.set()
    for t in threads:
        t.join()
    assert results == ["value"] * THREADS
    assert source.calls == {"load": 1}
    assert cache.stats.loads == 1


def test_a_load_error_reaches_every_waiter_and_nothing_is_cached() -> None:
    source = FlakySource({"hot": "value"})
    source.gate = threading.Event()
    cache = Cache(MemoryStore(), source)
    outcomes: list[str] = []
    lock = threading.Lock()

    def reader() -> None:
        try:
            cache.read("hot")
            outcome = "value"
        except SourceDownError:
            outcome = "error"
        with lock:
            outcomes.append(outcome)

    source.down = True
    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for t in threads:
        t.start()
    threading.Event().wait(0.1)
    source.gate.set()
    for t in threads:
        t.join()
    assert set(outcomes) == {"error"}
    assert len(outcomes) == THREADS
    source.down = False
    assert cache.read("hot") == "value"


@pytest.mark.parametrize("max_entries", [10_000, 16])
def test_concurrent_writers_and_a_flusher_lose_nothing(max_entries: int) -> None:
    source = FlakySource()
    policy = WriteBack(flush_interval=0.005, max_batch=50)
    cache = Cache(MemoryStore(max_entries=max_entries), source, write=policy)
    last: dict[tuple[int, int], int] = {}
    writes = [0] * 8

    def writer(n: int) -> None:
        rng = random.Random(n)
        for i in range(2000):
            key = (n, rng.randrange(40))  # each thread owns its keys: its last write is known
            if rng.random() < 0.1:
                cache.write_many({key: i, (n, 99): i})
                last[(n, 99)] = i
                writes[n] += 2
            else:
                cache.write(key, i)
                writes[n] += 1
            last[key] = i

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.close()
    assert source.data == last
    stats = cache.stats
    assert stats.dirty == 0
    # every accepted write was either flushed or absorbed by a later write to its key
    assert stats.source_writes + stats.coalesced >= sum(writes)
    assert stats.coalesced > 0
