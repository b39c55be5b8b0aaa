"""The cache manager: each strategy's behaviour on a MappingSource, stats, bad input."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cachewise import (
    MISSING,
    Cache,
    CacheAside,
    MappingSource,
    MemoryStore,
    ReadThrough,
    Retry,
    WriteAround,
    WriteBack,
    WriteThrough,
)
from cachewise.errors import (
    CacheFullError,
    ClosedError,
    ConfigurationError,
    FlushError,
    InvalidKeyError,
)
from tests.helpers import FlakySource, SourceDownError

SLOW = WriteBack(flush_interval=3600)  # nothing flushes unless the test says so


# -- construction -----------------------------------------------------------------


def test_defaults_follow_the_design() -> None:
    bare = Cache(MemoryStore())
    assert isinstance(bare.read_policy, CacheAside)
    assert bare.write_policy is None
    backed = Cache(MemoryStore(), MappingSource())
    assert isinstance(backed.read_policy, ReadThrough)
    assert isinstance(backed.write_policy, WriteThrough)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Cache({}),  # type: ignore[arg-type]
        lambda: Cache(MemoryStore(), source={}),  # type: ignore[arg-type]
        lambda: Cache(MemoryStore(), read=ReadThrough()),
        lambda: Cache(MemoryStore(), write=WriteThrough()),
        lambda: Cache(MemoryStore(), MappingSource(), read=WriteThrough()),  # type: ignore[arg-type]
        lambda: Cache(MemoryStore(), MappingSource(), write=ReadThrough()),  # type: ignore[arg-type]
    ],
)
def test_bad_composition_is_a_configuration_error(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]


class _Forwarding:
    """A wrapper that forwards every call to the source it wraps (an instrumented source)."""

    def __init__(self, inner: MappingSource) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)


def test_a_source_forwarding_through_getattr_is_a_source_on_every_python() -> None:
    # Python 3.12+ checks a Protocol's members statically; the wrapper must still count.
    wrapper = _Forwarding(MappingSource({1: "one"}))
    cache = Cache(MemoryStore(), wrapper, read=ReadThrough())
    assert cache.read(1) == "one"
    assert "load" in wrapper.calls
    with pytest.raises(ConfigurationError, match="Source protocol"):
        Cache(MemoryStore(), object(), read=ReadThrough())  # type: ignore[arg-type]


# -- cache-aside ----------------------------------------------------------------------


def test_cache_aside_touches_only_the_cache() -> None:
    cache = Cache(MemoryStore())
    assert cache.read("k", "dflt") == "dflt"
    cache.write("k", 1)
    assert cache.read("k") == 1
    assert cache.invalidate("k") is True
    assert cache.read("k") is None
    assert cache.stats.invalidations == 1


def test_cache_aside_loader_runs_once_then_hits() -> None:
    db = {"k": "v"}
    calls: list[object] = []

    def loader(key: object) -> object:
        calls.append(key)
        return db.get(key, MISSING)  # type: ignore[call-overload]

    cache = Cache(MemoryStore())
    assert cache.read("k", loader=loader) == "v"
    assert cache.read("k", loader=loader) == "v"
    assert cache.read("absent", "no", loader=loader) == "no"
    assert calls == ["k", "absent"]
    assert cache.read("absent", loader=loader) is None  # MISSING is not cached
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.loads) == (1, 3, 3)


# -- read-through -------------------------------------------------------------------------


def test_read_through_loads_a_miss_once() -> None:
    source = FlakySource({"k": 1})
    cache = Cache(MemoryStore(), source)
    assert [cache.read("k") for _ in range(5)] == [1] * 5
    assert source.calls == {"load": 1}
    s = cache.stats
    assert (s.hits, s.misses, s.loads, s.source_reads) == (4, 1, 1, 1)


def test_read_through_error_is_raised_and_nothing_cached() -> None:
    source = FlakySource({"k": 1})
    source.down = True
    cache = Cache(MemoryStore(), source)
    with pytest.raises(SourceDownError):
        cache.read("k")
    source.down = False
    assert cache.read("k") == 1


def test_read_many_loads_all_misses_in_one_batch() -> None:
    source = FlakySource({i: i * 10 for i in range(10)})
    cache = Cache(MemoryStore(), source)
    cache.read(0)
    found = cache.read_many(range(12))
    assert found == {i: i * 10 for i in range(10)}
    assert source.calls == {"load": 1, "load_many": 1}
    assert cache.stats.source_reads == 1 + 11
    assert cache.read_many(range(10)) == found
    assert source.calls == {"load": 1, "load_many": 1}


def test_missing_keys_are_not_cached_so_a_later_insert_is_seen() -> None:
    source = FlakySource()
    cache = Cache(MemoryStore(), source)
    assert cache.read("k") is None
    source.data["k"] = "now"
    assert cache.read("k") == "now"


# -- write-through ------------------------------------------------------------------------


def test_write_through_saves_then_caches() -> None:
    source = FlakySource()
    cache = Cache(MemoryStore(), source, write=WriteThrough())
    cache.write("k", 1)
    assert source.data == {"k": 1}
    assert cache.read("k") == 1
    assert source.calls == {"save": 1}
    cache.write_many({"a": 1, "b": 2})
    assert source.calls["save_many"] == 1
    assert cache.stats.source_writes == 3


def test_write_through_source_failure_leaves_the_cache_unchanged() -> None:
    source = FlakySource({"k": "old"})
    cache = Cache(MemoryStore(), source)
    assert cache.read("k") == "old"
    source.down = True
    with pytest.raises(SourceDownError):
        cache.write("k", "new")
    assert cache.read("k") == "old"
    assert source.data == {"k": "old"}


def test_delete_through_removes_from_both() -> None:
    source = FlakySource({"k": 1})
    cache = Cache(MemoryStore(), source)
    cache.read("k")
    cache.delete("k")
    assert source.data == {}
    assert cache.read("k") is None


# -- write-around ---------------------------------------------------------------------------


def test_write_around_invalidates_by_default() -> None:
    source = FlakySource({"k": "old"})
    cache = Cache(MemoryStore(), source, write=WriteAround())
    cache.read("k")
    cache.write("k", "new")
    assert cache.store.get("k") is MISSING
    assert cache.read("k") == "new"


def test_write_around_textbook_form_serves_stale_until_ttl() -> None:
    source = FlakySource({"k": "old"})
    cache = Cache(MemoryStore(), source, write=WriteAround(invalidate=False))
    cache.read("k")
    cache.write("k", "new")
    assert source.data["k"] == "new"
    assert cache.read("k") == "old"  # stale: the documented cost of the textbook form


def test_write_around_does_not_fill_the_cache() -> None:
    source = FlakySource()
    cache = Cache(MemoryStore(), source, write=WriteAround())
    cache.write_many({i: i for i in range(100)})
    assert len(cache.store) == 0  # type: ignore[arg-type]


# -- write-back ------------------------------------------------------------------------------


def test_write_back_coalesces_and_flushes_the_last_value() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=SLOW) as cache:
        for i in range(5):
            cache.write("k1", i)
        cache.write("k2", "x")
        assert source.data == {}
        assert cache.read("k1") == 4
        s = cache.stats
        assert (s.dirty, s.coalesced, s.source_writes) == (2, 4, 0)
        assert cache.flush() == 2
        assert source.data == {"k1": 4, "k2": "x"}
        s = cache.stats
        assert (s.dirty, s.flushes, s.source_writes) == (0, 1, 2)
        assert source.calls == {"save_many": 1}


def test_write_back_delete_is_a_flushed_tombstone() -> None:
    source = FlakySource({"k": 1})
    with Cache(MemoryStore(), source, write=SLOW) as cache:
        cache.read("k")
        cache.delete("k")
        assert cache.read("k") is None  # read-your-writes, even though the source has it
        assert source.data == {"k": 1}
        cache.flush()
        assert source.data == {}


def test_read_your_writes_after_the_store_evicted_a_dirty_key() -> None:
    source = FlakySource()
    source.down = True  # the pressure flush fails: the key must stay readable and dirty
    cache = Cache(MemoryStore(max_entries=2, eviction="lru"), source, write=SLOW)
    for key in "abc":
        cache.write(key, key.upper())
    assert len(cache.store) == 2  # type: ignore[arg-type]
    assert [cache.read(k) for k in "abc"] == ["A", "B", "C"]
    assert cache.stats.dirty == 3
    source.down = False
    cache.close()
    assert source.data == {"a": "A", "b": "B", "c": "C"}


def test_eviction_pressure_flushes_so_max_entries_bounds_memory() -> None:
    source = FlakySource()
    with Cache(MemoryStore(max_entries=10, eviction="lru"), source, write=SLOW) as cache:
        for i in range(50):
            cache.write(i, i)
        assert len(cache.store) <= 10  # type: ignore[arg-type]
        assert cache.stats.dirty <= 10
        assert {k: source.data[k] for k in range(40)} == {i: i for i in range(40)}
    assert source.data == {i: i for i in range(50)}


def test_failed_flush_keeps_entries_dirty_and_raises_promptly() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=SLOW) as cache:
        cache.write("k", 1)
        source.down = True
        started = time.monotonic()
        with pytest.raises(FlushError) as info:
            cache.flush()
        assert time.monotonic() - started < 5
        assert isinstance(info.value.__cause__, SourceDownError)
        assert cache.stats.dirty == 1
        assert cache.stats.flush_failures == 1
        source.down = False
        assert cache.flush() == 1
    assert source.data == {"k": 1}


def test_background_flusher_retries_until_the_source_returns() -> None:
    source = FlakySource()
    policy = WriteBack(flush_interval=0.02, retry=Retry(initial=0.02, maximum=0.05))
    with Cache(MemoryStore(), source, write=policy) as cache:
        source.down = True
        cache.write("k", 1)
        _wait_for(lambda: cache.stats.flush_failures >= 2)
        source.down = False
        _wait_for(lambda: cache.stats.dirty == 0)
        assert source.data == {"k": 1}


def test_flush_interval_flushes_without_being_asked() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=WriteBack(flush_interval=0.05)) as cache:
        cache.write("k", 1)
        assert source.data == {}
        _wait_for(lambda: source.data == {"k": 1})
        assert cache.stats.flushes == 1


def test_max_batch_splits_flushes_into_batches() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600, max_batch=10)) as c:
        c.write_many({i: i for i in range(9)})
        c.write_many({i: i for i in range(9, 25)})
        c.flush()
        assert c.stats.flushes == 3
        assert source.data == {i: i for i in range(25)}


def test_reaching_max_batch_wakes_the_flusher() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=WriteBack(flush_interval=3600, max_batch=5)) as c:
        c.write_many({i: i for i in range(5)})
        _wait_for(lambda: len(source.data) == 5)


def test_backpressure_raise_refuses_a_new_key_but_not_a_dirty_one() -> None:
    source = FlakySource()
    source.down = True
    policy = WriteBack(flush_interval=3600, max_dirty=3, on_full="raise")
    cache = Cache(MemoryStore(), source, write=policy)
    cache.write_many({"a": 1, "b": 2, "c": 3})
    with pytest.raises(CacheFullError):
        cache.write("d", 4)
    cache.write("a", 10)  # coalesces into an existing dirty key: accepted
    assert cache.dirty_keys() == ["a", "b", "c"]
    assert cache.store.get("d") is MISSING
    source.down = False
    cache.close()
    assert source.data == {"a": 10, "b": 2, "c": 3}


def test_backpressure_block_waits_for_room_then_proceeds() -> None:
    source = FlakySource()
    source.down = True
    policy = WriteBack(flush_interval=3600, max_dirty=2, block_timeout=5, retry=Retry(0.01, 0.02))
    with Cache(MemoryStore(), source, write=policy) as cache:
        cache.write_many({"a": 1, "b": 2})
        threading.Timer(0.2, lambda: setattr(source, "down", False)).start()
        cache.write("c", 3)  # blocks until the flusher drains a and b
        assert source.data == {"a": 1, "b": 2}
    assert source.data == {"a": 1, "b": 2, "c": 3}


def test_backpressure_block_times_out_with_cache_full() -> None:
    source = FlakySource()
    source.down = True
    policy = WriteBack(flush_interval=0.01, max_dirty=1, block_timeout=0.2)
    cache = Cache(MemoryStore(), source, write=policy)
    cache.write("a", 1)
    with pytest.raises(CacheFullError):
        cache.write("b", 2)
    source.down = False
    cache.close()
    assert source.data == {"a": 1}


def test_invalidate_never_drops_a_dirty_entry() -> None:
    source = FlakySource()
    with Cache(MemoryStore(), source, write=SLOW) as cache:
        cache.write("k", 1)
        assert cache.invalidate("k") is False
        assert cache.invalidate_many(["k"]) == 0
        assert cache.read("k") == 1
        cache.flush()
        assert cache.invalidate("k") is True


def test_close_flushes_and_stops() -> None:
    source = FlakySource()
    cache = Cache(MemoryStore(), source, write=SLOW)
    cache.write("k", 1)
    cache.close()
    assert source.data == {"k": 1}
    with pytest.raises(ClosedError):
        cache.write("k", 2)


# -- invalidation, tags, the race -----------------------------------------------------------


def test_invalidate_tag_drops_every_tagged_key() -> None:
    cache = Cache(MemoryStore())
    cache.write("a", 1, tags=["t"])
    cache.write("b", 2, tags=["t", "u"])
    cache.write("c", 3, tags=["u"])
    assert cache.invalidate_tag("t") == 2
    assert cache.read_many(["a", "b", "c"]) == {"c": 3}
    with pytest.raises(ConfigurationError):
        cache.write("d", 4, tags="t")


def test_slow_read_never_caches_a_value_older_than_a_finished_write() -> None:
    source = FlakySource({"k": "old"})
    source.gate = threading.Event()
    cache = Cache(MemoryStore(), source)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(cache.read("k")))
    reader.start()
    _wait_for(lambda: source.calls.get("load") == 1)  # the reader has loaded "old"
    cache.write("k", "new")  # write-through finishes while the read is in flight
    source.gate.set()
    reader.join()
    assert result == ["old"]  # the read overlapped the write: either answer is fine
    assert cache.read("k") == "new"  # but the old value was never cached


@pytest.mark.parametrize("write", [WriteAround(), WriteThrough()], ids=["around", "through"])
def test_a_load_that_starts_during_a_write_never_caches_the_old_value(
    write: WriteAround | WriteThrough,
) -> None:
    source = FlakySource({"k": "old"})
    source.save_gate = threading.Event()
    cache = Cache(MemoryStore(), source, write=write)
    writer = threading.Thread(target=cache.write, args=("k", "new"))
    writer.start()
    _wait_for(lambda: source.calls.get("save") == 1)  # the write is in flight, not applied
    reader = threading.Thread(target=cache.read, args=("k",))
    reader.start()
    _wait_for(lambda: source.calls.get("load") == 1)  # the read loaded "old" meanwhile
    source.save_gate.set()
    writer.join()
    reader.join()
    assert cache.store.get("k") in (MISSING, "new")
    assert cache.read("k") == "new"


def test_write_back_read_racing_a_write_never_caches_the_old_value() -> None:
    source = FlakySource({"k": "old"})
    source.gate = threading.Event()
    cache = Cache(MemoryStore(), source, write=SLOW)
    reader = threading.Thread(target=cache.read, args=("k",))
    reader.start()
    _wait_for(lambda: source.calls.get("load") == 1)  # clean when it looked: loads "old"
    cache.write("k", "new")  # dirty now, cached now
    source.gate.set()
    reader.join()
    assert cache.read("k") == "new"
    cache.close()
    assert source.data == {"k": "new"}


def test_invalidate_during_a_load_keeps_the_loaded_value_out() -> None:
    source = FlakySource({"k": "old"})
    source.gate = threading.Event()
    cache = Cache(MemoryStore(), source, read=ReadThrough(), write=WriteAround())
    reader = threading.Thread(target=cache.read, args=("k",))
    reader.start()
    _wait_for(lambda: source.calls.get("load") == 1)
    source.data["k"] = "new"  # another service changed the row, then told us
    cache.invalidate("k")
    source.gate.set()
    reader.join()
    assert cache.read("k") == "new"


# -- keys and stats ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1.5, None, True, ["list"], {"d": 1}, (1, 2.0)])
def test_unsupported_keys_raise_before_any_change(key: object) -> None:
    source = FlakySource()
    cache = Cache(MemoryStore(), source)
    with pytest.raises(InvalidKeyError):
        cache.write(key, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        cache.read(key)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        cache.invalidate(key)  # type: ignore[arg-type]
    if isinstance(key, (float, type(None), bool, tuple)):
        with pytest.raises(InvalidKeyError):
            cache.write_many({"ok": 2, key: 1})  # type: ignore[dict-item]
    assert source.calls == {}
    assert source.data == {}


def test_hit_ratio() -> None:
    cache = Cache(MemoryStore(), MappingSource({"k": 1}))
    for _ in range(4):
        cache.read("k")
    assert cache.stats.hit_ratio == 0.75
    assert cache.stats.as_dict()["hit_ratio"] == 0.75


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
