"""TieredStore on real Redis: L1 coherence across stores and processes, bus drops, races."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import MISSING, Cache, MemoryStore, RedisStore, TieredStore
from cachewise._types import Key
from cachewise.errors import ConfigurationError
from cachewise.invalidation import Invalidation, LocalBus, RedisBus
from cachewise.stores.base import LoadGuarded
from tests.helpers import FlakySource
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def purge(client: redis.Redis, namespace: str) -> None:
    for wire in client.scan_iter(match=namespace + ":*", count=1000):
        client.unlink(wire)


@pytest.fixture
def raw(redis_url: str, unique_name: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    purge(client, unique_name)
    client.close()


@pytest.fixture
def make(redis_url: str, unique_name: str) -> Iterator[Callable[..., TieredStore]]:
    made: list[TieredStore] = []

    def factory(url: str = redis_url, **l2: Any) -> TieredStore:
        store = TieredStore(MemoryStore(), RedisStore(url, namespace=unique_name, **l2))
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


def warm(store: TieredStore, key: Key, value: Any) -> None:
    """Read ``key`` until it sits in L1 (a fill is skipped while invalidations arrive)."""
    assert eventually(lambda: store.get(key) == value and store.l1.get(key) == value)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_reads_fill_l1_and_writes_reach_both_levels(
    make: Callable[..., TieredStore], raw: redis.Redis
) -> None:
    a = make()
    a.set("k", {"v": 1})
    assert a.l1.get("k") == {"v": 1}
    assert a.l2.get("k") == {"v": 1}
    b = make()
    assert b.l1.get("k") is MISSING
    assert b.get("k") == {"v": 1}
    assert b.l1.get("k") == {"v": 1}  # filled from L2
    assert b.get_many(["k", "absent"]) == {"k": {"v": 1}}
    assert isinstance(a, LoadGuarded)


def test_a_write_in_one_store_drops_the_others_l1_copy(
    make: Callable[..., TieredStore],
) -> None:
    a, b, c = make(), make(), make()
    a.set("k", "old")
    assert eventually(lambda: b.invalidations_received == c.invalidations_received == 1)
    warm(b, "k", "old")
    warm(c, "k", "old")
    a.set("k", "new")
    assert eventually(lambda: b.l1.get("k") is MISSING and c.l1.get("k") is MISSING)
    assert b.get("k") == "new"
    assert c.get("k") == "new"
    a.delete("k")
    assert eventually(lambda: b.l1.get("k") is MISSING)
    assert b.get("k") is MISSING
    assert a.invalidations_received == 0  # its own messages are ignored


def test_clear_and_many_propagate(make: Callable[..., TieredStore]) -> None:
    a, b = make(), make()
    a.set_many({1: "a", 2: "b", 3: "c"})
    assert eventually(lambda: b.invalidations_received == 3)
    assert eventually(
        lambda: b.get_many([1, 2, 3]) == b.l1.get_many([1, 2, 3]) == {1: "a", 2: "b", 3: "c"}
    )
    a.delete_many([1, 2])
    assert eventually(lambda: b.l1.get(1) is MISSING and b.l1.get(2) is MISSING)
    assert b.l1.get(3) == "c"
    a.clear()
    assert eventually(lambda: len(b.l1) == 0)
    assert b.get(3) is MISSING


class PausingRedisStore(RedisStore):
    """A RedisStore whose get can be paused after it read Redis (a slow reader)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_done = threading.Event()
        self.resume: threading.Event | None = None

    def get(self, key: Key) -> Any:
        value = super().get(key)
        if self.resume is not None:
            self.read_done.set()
            self.resume.wait(10)
        return value


def test_fill_never_resurrects_a_value_invalidated_while_it_read_l2(
    make: Callable[..., TieredStore], redis_url: str, unique_name: str
) -> None:
    writer = make()
    slow_l2 = PausingRedisStore(redis_url, namespace=unique_name)
    reader = TieredStore(MemoryStore(), slow_l2)
    try:
        writer.set("k", "old")
        assert eventually(lambda: reader.invalidations_received == 1)
        slow_l2.resume = threading.Event()
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(reader.get("k")))
        t.start()
        assert slow_l2.read_done.wait(10)  # the reader has read "old" from L2 ...
        before = reader.invalidations_received
        writer.set("k", "new")  # ... another process writes ...
        assert eventually(lambda: reader.invalidations_received > before)
        slow_l2.resume.set()  # ... then the reader tries to fill L1 with "old"
        t.join(10)
        slow_l2.resume = None
        assert got == ["old"]
        assert reader.l1.get("k") is MISSING
        assert reader.get("k") == "new"
    finally:
        reader.close()


def test_not_live_bus_clears_and_bypasses_l1_until_live_again(
    make: Callable[..., TieredStore],
) -> None:
    store = make()
    store.set("k", 1)
    assert store.l1.get("k") == 1
    store._on_invalidation(Invalidation(keys=None, origin="", live=False))
    assert len(store.l1) == 0
    assert store.get("k") == 1  # served from L2 ...
    assert len(store.l1) == 0  # ... and not copied into an L1 we cannot trust
    store.set("k", 1)
    ticket = store.begin_load("other")
    store.end_load("other", ticket, "loaded", None)
    assert len(store.l1) == 0  # nothing fills L1 while the bus is down
    store._on_invalidation(Invalidation(keys=None, origin="", live=True))
    assert store.get("k") == 1
    assert store.l1.get("k") == 1


def test_pubsub_connection_killed_no_stale_l1_read_after_reconnect() -> None:
    # b's bus connects as user "bob"; switching bob off keeps b's listener from
    # resubscribing, so the invalidation a publishes meanwhile is missed for certain.
    server = RedisServer(extra=["--user", "bob", "on", ">bobpw", "~*", "&*", "+@all"])
    server.start()
    a = TieredStore(MemoryStore(), RedisStore(server.url, namespace="cw"))
    b_url = f"redis://bob:bobpw@127.0.0.1:{server.port}/0"
    bus = RedisBus(b_url, channel="cw:invalidations")
    b = TieredStore(MemoryStore(), RedisStore(server.url, namespace="cw"), bus)
    admin = redis.Redis.from_url(server.url)
    try:
        a.set("k", "v1")
        assert eventually(lambda: b.invalidations_received == 1)
        warm(b, "k", "v1")
        admin.acl_setuser("bob", enabled=False, reset_passwords=False)
        assert admin.client_kill_filter(_type="pubsub", user="bob") == 1
        assert eventually(lambda: not bus.live)
        a.set("k", "v2")  # b is not subscribed: this invalidation is lost for b
        assert b.l1.get("k") is MISSING  # b dropped L1 when its bus went down ...
        assert b.get("k") == "v2"  # ... and reads L2 while it is down
        assert b.l1.get("k") is MISSING
        admin.acl_setuser("bob", enabled=True, reset_passwords=False)
        assert eventually(lambda: bus.live)
        assert b.get("k") == "v2"  # no stale L1 read after the reconnect
        assert b.l1.get("k") == "v2"  # and L1 serves again
        a.set("k", "v3")  # invalidations flow again
        assert eventually(lambda: b.l1.get("k") is MISSING)
        assert b.get("k") == "v3"
    finally:
        admin.close()
        a.close()
        b.close()
        bus.close()
        server.close()


def test_batch_load_guard_through_tiered_fills_l1_with_what_l2_stored(
    make: Callable[..., TieredStore],
) -> None:
    reader, writer = make(), make()
    tickets = reader.begin_load_many(["a", "b"])
    writer.set("b", "new-b")
    assert eventually(lambda: reader.invalidations_received == 1)
    stored = reader.end_load_many(tickets, {"a": "old-a", "b": "old-b"}, None)
    assert stored == ["a"]
    assert reader.l1.get("b") is MISSING
    assert reader.get("b") == "new-b"
    assert reader.l2.get("a") == "old-a"


def test_local_bus_connects_stores_in_one_process(redis_url: str, unique_name: str) -> None:
    bus = LocalBus()
    a = TieredStore(MemoryStore(), RedisStore(redis_url, namespace=unique_name), bus)
    b = TieredStore(MemoryStore(), RedisStore(redis_url, namespace=unique_name), bus)
    try:
        a.set("k", 1)
        assert b.get("k") == 1
        a.set("k", 2)
        assert b.l1.get("k") is MISSING  # LocalBus delivers synchronously
        assert b.get("k") == 2
        a.clear()
    finally:
        a.close()
        b.close()
        bus.close()


def test_read_through_cache_over_tiered_store(make: Callable[..., TieredStore]) -> None:
    a, b = make(), make()
    source = FlakySource({"k": "row"})
    with Cache(a, source=source) as cache_a:
        assert cache_a.read("k") == "row"
        assert a.l1.get("k") == "row"
        cache_b = Cache(b, source=source)
        assert cache_b.read("k") == "row"  # from L2, no second load
        assert source.calls["load"] == 1
        warm(b, "k", "row")
        cache_a.write("k", "row2")
        assert eventually(lambda: b.l1.get("k") is MISSING)
        assert cache_b.read("k") == "row2"


def test_constructor_checks_its_levels(redis_url: str, unique_name: str) -> None:
    l2 = RedisStore(redis_url, namespace=unique_name)
    try:
        with pytest.raises(ConfigurationError):
            TieredStore(l2, l2)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            TieredStore(MemoryStore(), MemoryStore())  # type: ignore[arg-type]
    finally:
        l2.close()


@pytest.mark.slow
def test_other_processes_stop_serving_the_old_value(
    redis_url: str, unique_name: str, raw: redis.Redis, make: Callable[..., TieredStore]
) -> None:
    readers = 3
    writer = make()
    writer.set("k", "old")
    argv = [sys.executable, "-m", "tests.integration._redis_worker", "reader"]
    procs = [subprocess.Popen([*argv, redis_url, unique_name], cwd=ROOT) for _ in range(readers)]
    try:
        assert eventually(lambda: int(raw.get(f"{unique_name}:ready") or 0) == readers, 60)
        raw.set(f"{unique_name}:t0", repr(time.time()))
        writer.set("k", "new")
        for proc in procs:
            assert proc.wait(60) == 0
        lags = [float(x) for x in raw.lrange(f"{unique_name}:lags", 0, -1)]
        stale = [int(x) for x in raw.lrange(f"{unique_name}:stale", 0, -1)]
        assert len(lags) == readers
        assert stale == [0] * readers  # once the new value was seen, never the old again
        print(f"invalidation lag across processes: {statistics.median(lags) * 1000:.2f} ms")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("path", ["c", "python"])
def test_cache_without_a_source_reads_l2_on_an_l1_miss(
    make: Callable[..., TieredStore],
    redis_url: str,
    unique_name: str,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cache-aside over a TieredStore sees what another process wrote (issue 11 item 10)."""
    if path == "python":
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("CACHEWISE_PURE_PYTHON", raising=False)
    store = make()
    cache = Cache(store)
    if path == "c" and type(cache.read).__name__ != "HitReader":
        pytest.skip("cachewise._speedups is not built")
    assert cache.read("k") is None  # nothing anywhere yet
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cachewise import RedisStore; "
            "s = RedisStore(sys.argv[1], namespace=sys.argv[2]); "
            "s.set('k', {'from': 'another process'}); s.close()",
            redis_url,
            unique_name,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert writer.returncode == 0, writer.stderr
    assert cache.read("k") == {"from": "another process"}  # L1 missed, L2 had it
    assert cache.read("k", loader=lambda _k: "not called") == {"from": "another process"}
    assert cache.stats.hits == 2
    assert store.l1.get("k") == {"from": "another process"}  # and L1 was filled
