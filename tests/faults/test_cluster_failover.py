"""A Redis Cluster failing over, resharding and going down under traffic (issue 16).

Each test starts a cluster of its own (3 primaries + 3 replicas, tests/redis_cluster.py)
because it kills nodes or moves slots. Traffic: four threads, two writing through a
``TieredStore`` with write-through to PostgreSQL, two through the shared write-back
(``WriteBack(journal="redis")``). Every key has one writer, whose values only grow, so
"stale" is checkable: a read older than the last acknowledged write of its key.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cachewise import (
    Cache,
    MemoryStore,
    RedisStore,
    SQLSource,
    TieredStore,
    WriteBack,
    connect,
)
from cachewise.errors import CachewiseError, StoreError
from tests.conftest import cannot_run
from tests.faults._tables import create_table, drop_table, read_rows
from tests.redis_cluster import RedisClusterServers

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

KEYS_PER_THREAD = 40


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    try:
        servers = RedisClusterServers()
        servers.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        cannot_run(f"cannot start a Redis cluster: {err}")
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def tables(postgres_url: str, unique_name: str) -> Iterator[tuple[str, str]]:
    through, back = f"{unique_name}_t", f"{unique_name}_b"
    for table in (through, back):
        create_table(postgres_url, table)
    yield through, back
    for table in (through, back):
        drop_table(postgres_url, table)


@dataclass
class Traffic:
    """What the threads saw: acknowledged values per key, stale reads, errors."""

    acked: dict[int, int] = field(default_factory=dict)
    stale: list[tuple[int, int, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _worker(cache: Cache, first: int, traffic: Traffic, stop: threading.Event) -> None:
    keys = list(range(first, first + KEYS_PER_THREAD))
    counter = dict.fromkeys(keys, 0)
    rng = random.Random(first)
    while not stop.is_set():
        key = rng.choice(keys)
        if rng.random() < 0.5:
            counter[key] += 1
            value = counter[key]
            try:
                cache.write(key, {"id": key, "v": value})
            except CachewiseError as exc:
                with traffic.lock:
                    traffic.errors.append(f"write: {type(exc).__name__}: {exc}")
                continue
            with traffic.lock:
                traffic.acked[key] = value
                traffic.writes += 1
        else:
            with traffic.lock:
                floor = traffic.acked.get(key)
            try:
                row = cache.read(key)
            except CachewiseError as exc:
                with traffic.lock:
                    traffic.errors.append(f"read: {type(exc).__name__}: {exc}")
                continue
            if floor is not None and (row is None or int(row["v"]) < floor):
                with traffic.lock:
                    traffic.stale.append((key, floor, row))


@dataclass
class Caches:
    through: Cache
    back: Cache
    engines: list[Any]

    def close(self) -> None:
        for cache in (self.through, self.back):
            with contextlib.suppress(CachewiseError):
                cache.close()
        for engine in self.engines:
            engine.dispose()


def _caches(
    url: str, postgres_url: str, namespace: str, tables: tuple[str, str], *, wait: int = 1
) -> Caches:
    through_engine = connect(postgres_url, pool_size=2, max_overflow=2)
    back_engine = connect(postgres_url, pool_size=2, max_overflow=2)
    options: dict[str, Any] = {"cluster": True, "wait_replicas": wait, "wait_timeout": 0.5}
    tiered = TieredStore(
        MemoryStore(max_entries=1000), RedisStore(url, namespace=f"{namespace}t", **options)
    )
    through = Cache(tiered, SQLSource(through_engine, table=tables[0]))
    back = Cache(
        RedisStore(url, namespace=f"{namespace}b", **options),
        SQLSource(back_engine, table=tables[1]),
        write=WriteBack(journal="redis", flush_interval=0.2),
    )
    return Caches(through, back, [through_engine, back_engine])


def _run_traffic(caches: Caches, traffic: Traffic, stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_worker, args=(cache, first, traffic, stop), daemon=True)
        for cache, first in (
            (caches.through, 0),
            (caches.through, 1000),
            (caches.back, 2000),
            (caches.back, 3000),
        )
    ]
    for thread in threads:
        thread.start()
    return threads


def _check_after(caches: Caches, traffic: Traffic, postgres_url: str, back: str) -> None:
    """Every acknowledged write is readable (or newer) and in PostgreSQL once flushed."""
    for key, floor in traffic.acked.items():
        cache = caches.through if key < 2000 else caches.back
        row = cache.read(key)
        assert row is not None, f"acknowledged key {key} lost"
        assert int(row["v"]) >= floor, (key, floor, row)
    lost = _lost(caches, traffic, postgres_url, back)
    assert lost == {}, f"acknowledged write-back writes missing in PostgreSQL: {lost}"


def _lost(
    caches: Caches, traffic: Traffic, postgres_url: str, back: str
) -> dict[int, tuple[int, int | None]]:
    """Write-back keys whose last acknowledged value is not in PostgreSQL once flushed."""
    deadline = time.monotonic() + 60
    while True:  # a claim a failed flush left lapses after claim_ttl: then it is flushed
        caches.back.flush()
        if caches.back.stats.dirty == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = read_rows(postgres_url, back)
    return {
        k: (v, rows.get(k)) for k, v in traffic.acked.items() if k >= 2000 and rows.get(k, -1) < v
    }


def _fail_over(cluster: RedisClusterServers, traffic: Traffic) -> tuple[int, int]:
    """SIGKILL a primary under traffic, wait for its replica, rejoin it, wait until healthy.

    Returns the writes acknowledged before the kill and once healthy again.
    """
    time.sleep(1.5)
    before = traffic.writes
    victim = next(p for p in cluster.primaries() if p != cluster.ports[0])
    cluster.kill(victim)  # SIGKILL: its replica takes over
    took = cluster.wait_failover(victim)
    print(f"failover took {took:.1f}s; {traffic.writes - before} writes acknowledged meanwhile")
    cluster.start_node(victim)  # back as a replica of the promoted node
    cluster.wait_ok()
    cluster.wait_demoted(victim)
    return before, traffic.writes


def test_failover_loses_no_acknowledged_write_and_serves_nothing_stale(
    cluster: RedisClusterServers, postgres_url: str, unique_name: str, tables: tuple[str, str]
) -> None:
    caches = _caches(cluster.url, postgres_url, unique_name, tables)
    traffic = Traffic()
    stop = threading.Event()
    try:
        threads = _run_traffic(caches, traffic, stop)
        before, healthy_writes = _fail_over(cluster, traffic)
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert before > 50  # traffic flowed before the kill ...
        assert traffic.writes > healthy_writes  # ... and after the cluster was healthy again
        assert traffic.stale == []
        _check_after(caches, traffic, postgres_url, tables[1])
        store = caches.through.store
        assert isinstance(store, TieredStore)
        assert store.l2.restarts >= 1  # the failover began a new epoch: old values cold
    finally:
        stop.set()
        caches.close()


def test_failover_without_wait_measures_what_the_shared_write_back_loses(
    cluster: RedisClusterServers, postgres_url: str, unique_name: str, tables: tuple[str, str]
) -> None:
    """The default mode (asynchronous replication): stated and measured, not hidden.

    Write-through loses nothing and serves nothing stale (the database has every
    write; the promoted node's values read as misses). The shared write-back can lose
    the writes the replica had not received: counted and printed.
    """
    caches = _caches(cluster.url, postgres_url, unique_name, tables, wait=0)
    traffic = Traffic()
    stop = threading.Event()
    try:
        threads = _run_traffic(caches, traffic, stop)
        _fail_over(cluster, traffic)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert [s for s in traffic.stale if s[0] < 2000] == []
        lost = _lost(caches, traffic, postgres_url, tables[1])
        stale = [s for s in traffic.stale if s[0] >= 2000]
        acked = sum(1 for k in traffic.acked if k >= 2000)
        print(
            f"without WAIT: {len(lost)} of {acked} write-back keys lost, {len(stale)} stale reads"
        )
    finally:
        stop.set()
        caches.close()


def test_resharding_under_traffic_reaches_no_caller(
    cluster: RedisClusterServers, postgres_url: str, unique_name: str, tables: tuple[str, str]
) -> None:
    caches = _caches(cluster.url, postgres_url, unique_name, tables)
    traffic = Traffic()
    stop = threading.Event()
    try:
        threads = _run_traffic(caches, traffic, stop)
        time.sleep(1.0)
        primaries = list(cluster.primaries().items())
        (_, source_id), (_, target_id) = primaries[0], primaries[1]
        cluster.cli_run(
            "--cluster", "reshard", f"127.0.0.1:{cluster.ports[0]}",
            "--cluster-from", source_id, "--cluster-to", target_id,
            "--cluster-slots", "2000", "--cluster-yes", "--cluster-pipeline", "100",
            port=cluster.ports[0],
        )  # fmt: skip
        cluster.wait_ok()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert traffic.writes > 50
        assert traffic.errors == []
        assert traffic.stale == []
        _check_after(caches, traffic, postgres_url, tables[1])
    finally:
        stop.set()
        caches.close()


def test_cluster_down_is_retried_then_a_clear_store_error(
    cluster: RedisClusterServers, unique_name: str
) -> None:
    store = RedisStore(cluster.url, namespace=unique_name, cluster=True, cluster_retry_for=1.5)
    try:
        store.set_many({i: i for i in range(50)})
        out = cluster.cli_run("cluster", "nodes")
        primary_port, replica_port = _a_primary_and_its_replica(out, cluster.ports[0])
        cluster.kill(replica_port)
        cluster.kill(primary_port)  # its slots have no node left: CLUSTERDOWN
        started = time.monotonic()
        with pytest.raises(StoreError, match="Redis") as caught:
            store.get_many(range(50))  # some of these keys live in the lost slots
        assert time.monotonic() - started < 20  # within the deadline (plus redis-py's own)
        assert "127.0.0.1" in str(caught.value)
    finally:
        store.close()


def _a_primary_and_its_replica(nodes: str, avoid: int) -> tuple[int, int]:
    ids: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for line in nodes.splitlines():
        parts = line.split()
        port = int(parts[1].split(":")[1].split("@")[0])
        ids[parts[0]] = port
        if "slave" in parts[2]:
            replicas[parts[3]] = port
    for node_id, replica in replicas.items():
        if ids[node_id] != avoid and replica != avoid:
            return ids[node_id], replica
    raise AssertionError(f"no primary with a replica (avoiding {avoid}):\n{nodes}")
