"""RedisStore on a real Redis Cluster: keys over every primary, batches across slots."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cachewise import MISSING, Cache, MappingSource, MemoryStore, RedisStore, TieredStore
from cachewise._cluster_bus import ShardedRedisBus
from cachewise._types import Key
from cachewise.errors import ClosedError, ConfigurationError

pytestmark = pytest.mark.cluster


@pytest.fixture
def store(redis_cluster_url: str, unique_name: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_cluster_url, namespace=unique_name, cluster=True)
    yield store
    with contextlib.suppress(ClosedError):  # a Cache closed it: the cluster is ours alone
        store.clear()
    store.close()


def _owner(client: Any, wire: bytes) -> str:
    return str(client.get_node_from_key(wire).name)


def test_keys_spread_over_every_primary(store: RedisStore) -> None:
    items: dict[Key, Any] = {i: {"id": i} for i in range(300)}
    store.set_many(items)
    cluster: Any = store.client
    assert store.cluster
    owners = {_owner(cluster, store.wire_key(k)) for k in items}
    primaries = {node.name for node in cluster.get_primaries()}
    assert len(primaries) == 3
    assert owners == primaries
    counts = dict.fromkeys(primaries, 0)
    for key in items:
        counts[_owner(cluster, store.wire_key(key))] += 1
    assert min(counts.values()) > 50  # not one hot node


def test_batches_across_slots_round_trip(store: RedisStore) -> None:
    keys = [f"k{i}" for i in range(100)]
    assert len({key_slot(store.wire_key(k)) for k in keys}) > 50
    store.set_many({k: k.upper() for k in keys}, ttl=60)
    assert store.get_many([*keys, "absent"]) == {k: k.upper() for k in keys}
    assert store.delete_many([*keys[:40], "absent"]) == 40
    assert store.get_many(keys) == {k: k.upper() for k in keys[40:]}
    store.clear()
    assert store.get_many(keys) == {}


def test_load_guard_batches_across_slots(store: RedisStore) -> None:
    keys = [("order", i) for i in range(50)]
    store.set(keys[0], "cached")
    tickets = store.begin_load_many(keys)
    assert tickets[keys[0]].value == "cached"
    store.set(keys[1], "written meanwhile")  # moves key 1's version: its load must not store
    stored = store.end_load_many(tickets, {k: f"loaded {k[1]}" for k in keys[1:]}, ttl=None)
    assert set(stored) == set(keys[2:])
    assert store.get(keys[1]) == "written meanwhile"
    assert store.get(keys[7]) == "loaded 7"


def test_write_guard_across_slots(store: RedisStore) -> None:
    values: dict[Key, Any] = {f"w{i}": i for i in range(30)}
    held = store.begin_write(store.prepare_write(values, ttl=None))
    assert store.get_many(values) == {}
    assert set(store.end_write(held, saved=True)) == set(values)
    assert store.get_many(values) == values


def test_read_through_cache_on_the_cluster(store: RedisStore) -> None:
    source = MappingSource({i: {"id": i} for i in range(60)})
    with Cache(store, source=source) as cache:
        assert cache.read_many(range(60)) == {i: {"id": i} for i in range(60)}
        cache.write(3, {"id": 3, "new": True})
        assert cache.read(3) == {"id": 3, "new": True}
        assert store.get(3) == {"id": 3, "new": True}
        assert store.get(999) is MISSING


def test_a_cluster_client_is_accepted(redis_cluster_url: str, unique_name: str) -> None:
    client = RedisCluster.from_url(redis_cluster_url)
    store = RedisStore(namespace=unique_name, client=client)
    try:
        assert store.cluster
        store.set("a", 1)
        assert store.get("a") == 1
    finally:
        store.clear()
        store.close()
        client.close()


def test_cluster_true_refuses_a_plain_client(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ConfigurationError, match="RedisCluster"):
            RedisStore(client=client, cluster=True)
    finally:
        client.close()


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_tiered_invalidations_go_over_sharded_pubsub(
    redis_cluster_url: str, unique_name: str
) -> None:
    def make() -> TieredStore:
        l2 = RedisStore(redis_cluster_url, namespace=unique_name, cluster=True)
        return TieredStore(MemoryStore(max_entries=100), l2)

    one, two = make(), make()
    try:
        assert isinstance(one.bus, ShardedRedisBus)
        channel = f"{unique_name}:{{~invalidations}}".encode()
        cluster: Any = one.l2.client
        owner = cluster.get_node_from_key(channel)
        channels = cluster.execute_command("PUBSUB", "SHARDCHANNELS", target_nodes=owner)
        assert channel in channels
        one.set("k", "v1")
        assert two.get("k") == "v1"  # now in two's L1
        one.set("k", "v2")
        assert _wait_for(lambda: two.l1.get("k") is MISSING)
        assert two.get("k") == "v2"
        one.set_many({f"m{i}": i for i in range(20)})
        assert two.get_many([f"m{i}" for i in range(20)]) == {f"m{i}": i for i in range(20)}
        one.delete_many([f"m{i}" for i in range(10)])
        assert _wait_for(lambda: two.l1.get("m3") is MISSING)
        assert two.get_many([f"m{i}" for i in range(20)]) == {f"m{i}": i for i in range(10, 20)}
    finally:
        one.clear()
        one.close()
        two.close()


def test_the_lab_finds_a_cluster_from_its_url(
    redis_cluster_url: str, redis_url: str, unique_name: str
) -> None:
    from cachewise.lab.stores import redis_store

    on_cluster, on_one = (
        redis_store(redis_cluster_url, unique_name),
        redis_store(redis_url, unique_name),
    )
    try:
        assert on_cluster.cluster
        assert not on_one.cluster
    finally:
        on_cluster.shutdown()
        on_one.shutdown()


def test_shared_write_back_on_the_cluster(redis_cluster_url: str, unique_name: str) -> None:
    from cachewise import WriteBack
    from cachewise.codecs import encode_key
    from cachewise.writeback._dirty_index import index_keys

    source = MappingSource({})
    quiet = {"flush_interval": 3600.0, "max_batch": 10_000}

    def make() -> Cache:
        store = RedisStore(redis_cluster_url, namespace=unique_name, cluster=True, ttl=300)
        return Cache(store, source, write=WriteBack(journal="redis", **quiet))  # type: ignore[arg-type]

    a, b = make(), make()
    try:
        items: dict[Key, Any] = {i: {"id": i} for i in range(200)}
        a.write_many(items)
        a.delete(7)
        assert b.read(5) == {"id": 5}  # read-your-writes from another cache
        assert b.read(7) is None
        assert b.stats.dirty == 200
        cluster: Any = a.store.client  # type: ignore[attr-defined]
        claim = f"{unique_name}:{{{encode_key(3)}}}:c"
        cluster.set(claim, b"another-flusher", px=800)  # a flusher that died holding key 3
        assert b.flush() == 199  # every key but the claimed one, across every slot
        assert source.load(3) is MISSING
        assert a.stats.dirty == 1
        time.sleep(0.9)  # its claim lapses: any process takes the key over
        assert a.flush() == 1
        assert source.load(3) == {"id": 3}
        assert source.load(7) is MISSING
        assert {k: source.load(k) for k in range(8, 200)} == {k: {"id": k} for k in range(8, 200)}
        a.write_many({i: {"id": i, "again": True} for i in range(300)})
        # The dirty index is spread over slots, hence over every primary, not one hot key.
        index = index_keys(unique_name, cluster)
        sizes = {z: int(cluster.zcard(z)) for z, _h in index}
        assert sum(sizes.values()) == 300 == b.stats.dirty
        holders = {_owner(cluster, z) for z, n in sizes.items() if n}
        assert len(holders) == 3
        assert max(sizes.values()) < 60  # 16 shards: none holds much more than its part
        assert b.flush() == 300
        assert sum(int(cluster.zcard(z)) for z, _h in index) == 0
    finally:
        a.close()
        b.close()


def test_get_many_follows_a_redirect_when_the_slot_map_is_stale(store: RedisStore) -> None:
    keys = [f"r{i}" for i in range(40)]
    store.set_many({k: k for k in keys})
    cluster: Any = store.client
    manager = cluster.nodes_manager
    for key in keys:  # point every slot at another primary, as after a resharding
        slot = key_slot(store.wire_key(key))
        owner = manager.slots_cache[slot][0]
        other = next(n for n in cluster.get_primaries() if n.name != owner.name)
        manager.slots_cache[slot] = [other]
    assert store.get_many([*keys, "absent"]) == {k: k for k in keys}  # MOVED, then right
    assert store.begin_load_many(keys)[keys[0]].value == keys[0]
    for key in keys:  # and the batch scripts: each slot's script redirected, run once
        slot = key_slot(store.wire_key(key))
        owner = manager.slots_cache[slot][0]
        other = next(n for n in cluster.get_primaries() if n.name != owner.name)
        manager.slots_cache[slot] = [other]
    store.set_many({k: k.upper() for k in keys})
    assert store.delete_many(keys[:10]) == 10
    assert store.get_many(keys) == {k: k.upper() for k in keys[10:]}


def test_stats_reads_a_shared_write_back_backlog_on_the_cluster(
    redis_cluster_url: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from cachewise import WriteBack
    from cachewise.cli import main

    store = RedisStore(redis_cluster_url, namespace=unique_name, cluster=True)
    policy = WriteBack(journal="redis", flush_interval=3600.0, max_batch=10_000)
    with Cache(store, MappingSource({}), write=policy) as cache:
        cache.write_many({i: {"id": i} for i in range(50)})
        assert (
            main(["stats", "--redis", redis_cluster_url, "--namespace", unique_name, "--json"]) == 0
        )
        seen = json.loads(capsys.readouterr().out)["write_back"]
        assert (seen["dirty"], seen["claimed"], seen["sampled"]) == (50, 0, 50)
        assert seen["oldest_dirty_age"] > 0.0


def test_a_batch_within_max_dirty_is_taken_though_it_crowds_one_shard(
    redis_cluster_url: str, unique_name: str
) -> None:
    # max_dirty=16 over the index's 16 shards is one entry a shard. A batch of 8 keys that
    # all fall in one shard fits max_dirty: it must be taken, not refused as "full" forever.
    import zlib

    from cachewise import WriteBack
    from cachewise.codecs import encode_key
    from cachewise.writeback._dirty_index import CLUSTER_SHARDS

    def shard(key: int) -> int:  # where the index files a key (crc32 of its encoding)
        return zlib.crc32(encode_key(key).encode()) % CLUSTER_SHARDS

    crowded = [k for k in range(10_000) if shard(k) == 0][:8]
    store = RedisStore(redis_cluster_url, namespace=unique_name, cluster=True)
    policy = WriteBack(journal="redis", flush_interval=3600.0, max_dirty=16, on_full="raise")
    source = MappingSource({})
    with Cache(store, source, write=policy) as cache:
        cache.write_many({k: {"id": k} for k in crowded})
        assert cache.stats.dirty == 8
        cache.flush()
        assert sorted(source.data) == crowded
