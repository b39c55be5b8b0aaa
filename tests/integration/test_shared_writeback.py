"""The shared write-back (``WriteBack(journal="redis")``) against the local Redis.

Layout and atomicity of a write, read-your-writes across caches, coalescing counts,
tombstones, a write landing during a flush, claims, orphaned index entries,
backpressure, a flusher that outlived its claim, and a PostgreSQL outage that keeps
keys dirty until the background flusher drains them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from cachewise import (
    MISSING,
    Cache,
    MappingSource,
    MemoryStore,
    RedisStore,
    SQLSource,
    WriteBack,
    connect,
)
from cachewise._types import Key
from cachewise.codecs import encode_key
from cachewise.errors import (
    CacheFullError,
    ConfigurationError,
    FlushError,
    InvalidValueError,
    RejectedError,
)
from cachewise.policies import Retry
from cachewise.writeback import shared

QUIET = {"flush_interval": 3600.0, "max_batch": 1000}
"""No background flush unless a test asks: flushes happen when the test calls them."""


class CountingSource(MappingSource):
    """A dict as the source that also records each batch it is given."""

    def __init__(self, data: dict[Key, Any]) -> None:
        super().__init__(data)
        self.batches: list[dict[Key, Any]] = []
        self.removed: list[list[Key]] = []

    def save_many(self, items: Mapping[Key, Any]) -> None:
        self.batches.append(dict(items))
        super().save_many(items)

    def remove_many(self, keys: Any) -> None:
        keys = list(keys)
        self.removed.append(keys)
        super().remove_many(keys)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace(unique_name: str, raw: redis.Redis) -> Iterator[str]:
    yield unique_name
    for key in raw.scan_iter(match=f"{unique_name}:*", count=1000):
        raw.delete(key)


@pytest.fixture
def no_fault_hook() -> Iterator[None]:
    yield
    shared.fault_hook = None


def _cache(redis_url: str, namespace: str, source: Any, **policy: Any) -> Cache:
    options = {**QUIET, **policy}
    store = RedisStore(redis_url, namespace=namespace, ttl=300)
    return Cache(store, source, write=WriteBack(journal="redis", **options))


def _wire(namespace: str, key: Key, suffix: str) -> str:
    return f"{namespace}:{{{encode_key(key)}}}:{suffix}"


def _index(namespace: str) -> tuple[str, str]:
    return f"{namespace}:{{~dirty}}:z", f"{namespace}:{{~dirty}}:h"


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- construction -------------------------------------------------------------------------


def test_journal_redis_needs_a_redis_store() -> None:
    with pytest.raises(ConfigurationError, match="RedisStore"):
        Cache(MemoryStore(), MappingSource({}), write=WriteBack(journal="redis"))


def test_journal_redis_takes_no_journal_object(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from cachewise.writeback.journal import FileJournal

    store = RedisStore(redis_url, namespace=namespace)
    journal = FileJournal(tmp_path / "j")
    try:
        with pytest.raises(ConfigurationError, match="journal"):
            Cache(store, MappingSource({}), write=WriteBack(journal="redis"), journal=journal)
    finally:
        journal.close()
        store.close()


# -- a write and its flush ------------------------------------------------------------------


def test_a_write_is_value_version_mark_and_index_with_no_ttl_until_flushed(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    source: dict[Key, Any] = {}
    with _cache(redis_url, namespace, MappingSource(source)) as cache:
        cache.write("k", {"a": 1})
        cache.write("k", {"a": 2})
        v, n, d = (_wire(namespace, "k", s) for s in "vnd")
        z, h = _index(namespace)
        assert raw.pttl(v) == -1  # dirty: no TTL
        assert raw.pttl(n) == -1
        mark = raw.hgetall(d)
        assert mark[b"s"] == raw.get(n)  # the sequence is the key's version
        assert mark[b"t"] == b"0"
        assert mark[b"k"] == raw.hget(h, encode_key("k"))  # the index token of the write
        assert raw.zrange(z, 0, -1) == [encode_key("k").encode()]
        assert cache.read("k") == {"a": 2}
        assert cache.stats.dirty == 1
        assert source == {}

        assert cache.flush() == 1
        assert source == {"k": {"a": 2}}
        assert not raw.exists(d)
        assert raw.zcard(z) == 0
        assert raw.hlen(h) == 0
        assert 0 < raw.pttl(v) <= 300_000  # flushed: the store's TTL applies
        assert raw.pttl(n) > 0
        assert cache.read("k") == {"a": 2}
        assert cache.stats.dirty == 0


def test_sequences_grow_per_key_across_caches(redis_url: str, namespace: str) -> None:
    source = MappingSource({})
    with _cache(redis_url, namespace, source) as a, _cache(redis_url, namespace, source) as b:
        seqs = []
        for i in range(6):
            (a if i % 2 else b).write(7, i)
            entry = a._flusher.dirty_entry(7)  # type: ignore[union-attr]
            assert entry is not None
            assert entry.value == i
            seqs.append(entry.seq)
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 6


def test_read_your_writes_across_two_caches_and_either_flushes(
    redis_url: str, namespace: str, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO items VALUES (3, 'old')"))
    try:
        a = _cache(redis_url, namespace, SQLSource(sqlite_url, table="items"))
        b = _cache(redis_url, namespace, SQLSource(sqlite_url, table="items"))
        with a, b:
            a.write(1, {"id": 1, "name": "one"})
            a.write(2, {"id": 2, "name": "two"})
            a.delete(3)
            assert b.read(1) == {"id": 1, "name": "one"}
            assert b.read_many([1, 2, 3]) == {
                1: {"id": 1, "name": "one"},
                2: {"id": 2, "name": "two"},
            }
            assert b.read(3) is None  # the tombstone, not the source's row
            assert b.stats.dirty == 3
            assert sorted(b.dirty_keys()) == [1, 2, 3]
            assert b.flush() == 3
            assert a.stats.dirty == 0
            assert a.stats.flushes == 0
            assert b.stats.source_writes == 3
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, name FROM items ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "one"), (2, "two")]
    finally:
        engine.dispose()


def test_coalescing_many_writes_become_one_source_write_of_the_last(
    redis_url: str, namespace: str
) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        for i in range(50):
            cache.write("hot", i)
        for i in range(10):
            cache.write("warm", i)
        cache.write_many({"hot": 50, "cold": 0})
        stats = cache.stats
        assert stats.coalesced == 49 + 9 + 1  # hot, warm, then hot once more
        assert stats.dirty == 3
        assert cache.flush() == 3
        assert source.batches == [{"hot": 50, "warm": 9, "cold": 0}]
        stats = cache.stats
        assert stats.source_writes == 3
        assert stats.flushes == 1


def test_a_write_during_the_flush_keeps_the_key_dirty(
    redis_url: str, namespace: str, no_fault_hook: None
) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write("k", "first")

        def write_meanwhile(point: str, keys: list[Key]) -> None:
            if point == "claimed" and cache.read("k") == "first":
                cache.write("k", "second")

        shared.fault_hook = write_meanwhile
        assert cache.flush() == 1
        assert source.batches == [{"k": "first"}]
        assert cache._flusher.is_dirty("k")  # type: ignore[union-attr]
        assert cache.read("k") == "second"
        assert cache.flush() == 1
        assert source.batches[-1] == {"k": "second"}
        assert cache.stats.dirty == 0


def test_a_delete_is_a_tombstone_flushed_as_a_remove(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write(5, "five")
        cache.flush()
        cache.delete(5)
        assert raw.hget(_wire(namespace, 5, "d"), "t") == b"1"
        assert not raw.exists(_wire(namespace, 5, "v"))
        assert cache.read(5) is None
        assert source.load(5) == "five"  # not removed until flushed
        assert cache.flush() == 1
        assert source.removed == [[5]]
        assert source.load(5) is MISSING
        assert cache.read(5) is None
        assert cache.stats.dirty == 0


def test_values_round_trip_exactly_through_the_dirty_set(redis_url: str, namespace: str) -> None:
    row = {
        "price": Decimal("12.3400"),
        "at": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        "day": dt.date(2024, 5, 6),
        "id": uuid.UUID(int=42),
        "blob": b"\x00\xff",
        "none": None,
    }
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write(("t", 1), row)
        cache.flush()
    assert source.batches == [{("t", 1): row}]


# -- several flushers ---------------------------------------------------------------------


def test_a_key_claimed_by_another_flusher_is_left_to_it(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write_many({1: "a", 2: "b"})
        raw.set(_wire(namespace, 1, "c"), b"someone-else", px=60_000)
        assert cache.flush() == 1
        assert source.batches == [{2: "b"}]
        assert cache.dirty_keys() == [1]
        raw.delete(_wire(namespace, 1, "c"))  # the other flusher's claim is gone
        assert cache.flush() == 1
        assert source.batches[-1] == {1: "a"}


def test_a_flusher_that_outlived_its_claim_marks_the_newer_value_again(
    redis_url: str, namespace: str, raw: redis.Redis, no_fault_hook: None
) -> None:
    source = CountingSource({})
    slow = _cache(redis_url, namespace, source)
    fast = _cache(redis_url, namespace, source)
    with slow, fast:
        slow.write("k", "old")
        done: list[bool] = []

        def overtaken(point: str, keys: list[Key]) -> None:
            if point != "claimed" or done:
                return
            done.append(True)
            # While the slow flusher is between claim and source write, its claim
            # expires and another process writes and flushes a newer value.
            raw.delete(_wire(namespace, "k", "c"))
            fast.write("k", "new")
            assert fast.flush() == 1

        shared.fault_hook = overtaken
        assert slow.flush() == 1
        assert source.batches == [{"k": "new"}, {"k": "old"}]  # the old value landed last
        assert slow.stats.dirty == 1  # ... so the key was marked dirty again
        assert slow.flush() == 1
        assert source.batches[-1] == {"k": "new"}
        assert source.load("k") == "new"


def test_index_entries_without_a_mark_are_dropped_after_the_grace(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    z, h = _index(namespace)
    now = int(time.time() * 1000)
    # A writer that died between its two steps, long ago, and one that is between them now.
    raw.zadd(z, {encode_key("dead"): now - 120_000, encode_key("busy"): now})
    raw.hset(
        h, mapping={encode_key("dead"): f"{now - 120_000}:aa", encode_key("busy"): f"{now}:bb"}
    )
    source = CountingSource({})
    with _cache(redis_url, namespace, source, flush_timeout=30.0) as cache:
        assert cache.stats.dirty == 2
        assert cache.flush() == 0
        assert cache.dirty_keys() == ["busy"]  # young: its writer may still mark it
        assert source.batches == []


def test_an_index_entry_rewritten_by_a_writer_between_its_steps_survives_the_flush(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    z, h = _index(namespace)
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write("k", 1)
        # Another writer has done step one (index, new token) but not yet step two.
        raw.hset(h, encode_key("k"), f"{int(time.time() * 1000)}:cc")
        assert cache.flush() == 1
        assert not cache._flusher.is_dirty("k")  # type: ignore[union-attr]
        assert raw.zrange(z, 0, -1) == [encode_key("k").encode()]  # kept for that writer


# -- backpressure and failures --------------------------------------------------------------


def test_max_dirty_raises_before_any_change(
    redis_url: str, namespace: str, raw: redis.Redis
) -> None:
    with _cache(redis_url, namespace, CountingSource({}), max_dirty=3, on_full="raise") as cache:
        cache.write_many({1: "a", 2: "b", 3: "c"})
        cache.write(1, "again")  # not a new dirty key: room enough
        with pytest.raises(CacheFullError):
            cache.write(4, "d")
        with pytest.raises(CacheFullError):
            cache.write_many({5: "e", 6: "f", 7: "g", 8: "h"})
        assert not raw.exists(_wire(namespace, 4, "d"))
        assert not raw.exists(_wire(namespace, 4, "v"))
        assert not {4, 5, 6, 7, 8} & set(cache.dirty_keys())  # (the raise woke the flusher)


def test_max_dirty_blocks_until_the_flusher_makes_room(redis_url: str, namespace: str) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source, max_dirty=2, block_timeout=20.0) as cache:
        cache.write_many({1: "a", 2: "b"})
        cache.write(3, "c")  # wakes the background flusher and waits for room
        assert source.batches[0] == {1: "a", 2: "b"}
        assert cache.stats.flushes >= 1
        assert cache.read(3) == "c"
        cache.flush()
        assert source.load(3) == "c"


def test_a_source_outage_keeps_keys_dirty_then_the_flusher_drains_them(
    redis_url: str, namespace: str, postgres_url: str, unique_name: str
) -> None:
    engine = connect(postgres_url)
    table = unique_name
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, v INTEGER)'))
    try:
        policy = {"flush_interval": 0.05, "retry": Retry(initial=0.05, maximum=0.2)}
        with _cache(redis_url, namespace, SQLSource(postgres_url, table=table), **policy) as cache:
            with engine.begin() as conn:  # the outage: the table is gone
                conn.execute(sa.text(f'ALTER TABLE "{table}" RENAME TO "{table}_away"'))
            cache.write_many({i: {"id": i, "v": i * 10} for i in range(5)})
            with pytest.raises(FlushError):
                cache.flush()
            assert cache.stats.dirty == 5
            assert cache.stats.flush_failures >= 1
            assert cache.read(3) == {"id": 3, "v": 30}
            with engine.begin() as conn:  # the source is back
                conn.execute(sa.text(f'ALTER TABLE "{table}_away" RENAME TO "{table}"'))
            _wait(lambda: cache.stats.dirty == 0)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT id, v FROM "{table}" ORDER BY id')).all()
        assert [tuple(r) for r in rows] == [(i, i * 10) for i in range(5)]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}_away"'))
        engine.dispose()


def test_flush_of_named_keys_writes_only_those(redis_url: str, namespace: str) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        cache.write_many({i: i for i in range(6)})
        runtime = cache._flusher
        assert runtime is not None
        assert runtime.flush([0, 2, 4, 99]) == 3  # 99 is not dirty: nothing to write
        assert source.batches == [{0: 0, 2: 2, 4: 4}]
        assert sorted(cache.dirty_keys()) == [1, 3, 5]


@pytest.mark.parametrize("cluster_slots", [False, True])
def test_batches_larger_than_one_script_call(
    redis_url: str, namespace: str, cluster_slots: bool
) -> None:
    """Marks, claims and settles go in chunks (per hash slot, as under Redis Cluster)."""
    from redis.crc import key_slot

    source = CountingSource({})
    with _cache(redis_url, namespace, source, max_batch=5000) as cache:
        runtime = cache._flusher
        assert isinstance(runtime, shared.SharedFlusher)
        slots: set[int] = set()
        if cluster_slots:  # group as a RedisCluster client would, and record the slots seen

            def slot(key: bytes) -> int:
                slots.add(key_slot(key))
                return key_slot(key)

            runtime._slot = slot
        items: dict[Key, Any] = {i: i for i in range(700)}
        cache.write_many(items)
        evens: dict[Key, Any] = {i: -i for i in range(0, 700, 2)}
        cache.write_many(evens)
        assert cache.stats.coalesced == 350
        assert cache.flush() == 700
        assert source.batches == [{i: (-i if i % 2 == 0 else i) for i in range(700)}]
        assert cache.stats.dirty == 0
        if cluster_slots:
            assert len(slots) > 100  # 700 keys spread over many slots, each its own call


# -- issue 19: the age of the oldest write not yet in the source, and the lag -------------


def _after(moment: float) -> None:
    """Wait until the wall clock is past ``moment`` (so two writes get distinct ms stamps)."""
    while time.time() <= moment:
        time.sleep(0.005)


def test_a_key_written_during_its_flush_counts_from_that_write(
    redis_url: str, namespace: str, raw: redis.Redis, no_fault_hook: None
) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        first = time.time()
        cache.write("hot", 1)
        _after(first + 0.2)
        during: list[float] = []

        def write_meanwhile(point: str, keys: list[Key]) -> None:
            if point == "claimed" and not during:
                during.append(time.time())
                cache.write("hot", 2)

        shared.fault_hook = write_meanwhile
        assert cache.flush() == 1
        shared.fault_hook = None
        since_ms = int(raw.hget(_wire(namespace, "hot", "d"), "f") or 0)
        score = raw.zscore(_index(namespace)[0], encode_key("hot"))
        assert since_ms == score  # the index entry moved with it
        assert since_ms >= int(during[0] * 1000) - 1  # the write during the flush, not the first
        age = cache.stats.oldest_dirty_age
        assert age < time.time() - first - 0.1  # younger than the first write by far
        assert cache.flush() == 1
        assert cache.stats.oldest_dirty_age == 0.0


def test_shared_lag_counts_each_flushed_keys_oldest_write(redis_url: str, namespace: str) -> None:
    source = CountingSource({})
    with _cache(redis_url, namespace, source) as cache:
        written = time.time()
        cache.write_many({1: "a", 2: "b", 3: "c"})
        _after(written + 0.1)
        cache.flush()
        flushed = time.time()
        stats = cache.stats
        assert 0.1 <= stats.lag_p50 <= stats.lag_p99 <= stats.lag_max <= flushed - written + 0.01


# -- issue 11 item 2: rows the source refuses, in the shared write-back -------------------


@pytest.fixture
def checked_table(sqlite_url: str) -> str:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0))"
        )
    engine.dispose()
    return sqlite_url


def _qty(url: str) -> dict[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {int(r[0]): int(r[1]) for r in conn.exec_driver_sql("SELECT id, qty FROM items")}
    engine.dispose()
    return found


def test_shared_refuses_at_write_what_the_table_cannot_take(
    redis_url: str, namespace: str, checked_table: str, raw: redis.Redis
) -> None:
    with _cache(redis_url, namespace, SQLSource(checked_table, table="items")) as cache:
        with pytest.raises(InvalidValueError, match="no column 'colour'"):
            cache.write(1, {"id": 1, "qty": 1, "colour": "red"})
        assert cache.dirty_keys() == []
        # Nothing written to Redis (the namespace's epoch and write-back claim aside).
        assert not [k for k in raw.scan_iter(match=f"{namespace}:*") if b":{~" not in k]


def test_shared_isolates_refused_rows_parks_them_and_flushes_the_rest(
    redis_url: str, namespace: str, checked_table: str, raw: redis.Redis
) -> None:
    source = SQLSource(checked_table, table="items")
    with _cache(redis_url, namespace, source) as cache:
        cache.write_many({k: {"id": k, "qty": -1 if k in (2, 5) else k} for k in range(1, 8)})
        with pytest.raises(FlushError, match="refused the writes of 2 keys") as info:
            cache.flush()
        assert set(info.value.rejected) == {2, 5}
        assert set(_qty(checked_table)) == {1, 3, 4, 6, 7}
        assert cache.dirty_keys() == []  # out of the dirty index: they block nothing
        assert not raw.exists(_wire(namespace, 2, "v"))  # the refused value is not served
        assert cache.read(2) is None
        # Another process (here: another cache on the namespace) sees them too.
        other = _cache(redis_url, namespace, SQLSource(checked_table, table="items"))
        try:
            parked = other.rejected()
            assert {k: p.value for k, p in parked.items()} == {
                2: {"id": 2, "qty": -1},
                5: {"id": 5, "qty": -1},
            }
            assert all("CHECK constraint failed" in p.error for p in parked.values())
            assert other.stats.rejected == 2
        finally:
            other.close()
        cache.write(2, {"id": 2, "qty": 2})  # a new write replaces the parked one
        assert set(cache.rejected()) == {5}
        assert cache.flush() == 1
        assert cache.discard_rejected() == 1
        assert cache.rejected() == {}
        assert cache.stats.rejected == 0
    assert _qty(checked_table) == {1: 1, 2: 2, 3: 3, 4: 4, 6: 6, 7: 7}


def test_shared_retry_writes_the_parked_value_again(
    redis_url: str, namespace: str, checked_table: str
) -> None:
    class Strict(SQLSource):
        refuse = True

        def save_many(self, items: Mapping[Key, Any]) -> None:
            if self.refuse and 9 in items:
                raise RejectedError("key 9 is refused today")
            super().save_many(items)

    source = Strict(checked_table, table="items")
    with _cache(redis_url, namespace, source) as cache:
        cache.write(9, {"id": 9, "qty": 9})
        with pytest.raises(FlushError, match="refused today"):
            cache.flush()
        source.refuse = False  # the cause is fixed
        assert cache.retry_rejected() == 1
        assert cache.rejected() == {}
        assert cache.flush() == 1
    assert _qty(checked_table) == {9: 9}
