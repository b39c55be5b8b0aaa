"""A Redis restored from an older snapshot is a cold namespace, never a source of old values.

Issue 11 item 12: after ``SAVE``, a newer write, a crash of Redis and a restart from
the RDB file, reads returned the value of the snapshot, older than the newer write,
for good. Each test runs a Redis of its own (RDB only), kills it with SIGKILL and
restarts it on the same directory, so it really loads the older snapshot.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import MISSING, Cache, MappingSource, MemoryStore, RedisStore, TieredStore
from cachewise.codecs import default_codec
from cachewise.errors import StoreError
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    try:
        own = RedisServer()
        own.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot start a redis-server of our own: {exc}")
    yield own
    own.close()


def _eventually(read: Callable[[], Any]) -> Any:
    """The first answer once the client has reconnected (one call may see the break)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return read()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _restore_older_snapshot(server: RedisServer, store: RedisStore) -> None:
    """k=old is saved in the RDB, then k=new is written, then Redis crashes and restarts."""
    store.set("k", "old")
    store.client.save()
    store.set("k", "new")  # acknowledged, newer than the snapshot
    server.kill()  # SIGKILL: the newer write was never saved
    server.start()  # loads the snapshot: k=old is back in Redis
    raw = redis.Redis.from_url(server.url)
    try:
        restored = raw.get(store.wire_key("k"))
        assert isinstance(restored, bytes)
        assert restored.endswith(default_codec().encode("old"))  # really the older value
    finally:
        raw.close()


def test_the_store_that_saw_the_restart_reads_a_miss(server: RedisServer) -> None:
    store = RedisStore(server.url, namespace="shop")
    try:
        _restore_older_snapshot(server, store)
        assert _eventually(lambda: store.get("k")) is MISSING
        assert store.restarts == 1
        assert store.cold_reads == 1
        cache = Cache(store, MappingSource({"k": "new"}))  # the source has the newer write
        assert cache.read("k") == "new"
        assert store.get("k") == "new"  # reloaded, stamped with the new epoch
    finally:
        store.close()


def test_a_process_started_after_the_restart_reads_a_miss(server: RedisServer) -> None:
    store = RedisStore(server.url, namespace="shop")
    try:
        _restore_older_snapshot(server, store)
    finally:
        store.close()
    code = (
        "import sys\n"
        "from cachewise import MISSING, RedisStore, TieredStore, MemoryStore\n"
        "s = RedisStore(sys.argv[1], namespace='shop')\n"
        "print('redis', s.get('k') is MISSING, s.get_many(['k']))\n"
        "t = TieredStore(MemoryStore(), RedisStore(sys.argv[1], namespace='shop'))\n"
        "print('tiered', t.get('k') is MISSING)\n"
        "t.close(); s.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["redis True {}", "tiered True"]


def test_every_process_adopts_one_new_epoch(server: RedisServer) -> None:
    """Two stores (two processes' worth) that both see the restart agree on one epoch."""
    first = RedisStore(server.url, namespace="shop")
    second = RedisStore(server.url, namespace="shop")
    tiered = TieredStore(MemoryStore(), RedisStore(server.url, namespace="shop"))
    try:
        assert second.get("k") is MISSING  # connected: knows the first epoch
        _restore_older_snapshot(server, first)
        assert _eventually(lambda: second.get("k")) is MISSING
        first.set("k", "after")
        assert _eventually(lambda: second.get("k")) == "after"  # the same new epoch
        assert _eventually(lambda: tiered.get("k")) == "after"
        assert first.stamp() == second.stamp()
    finally:
        tiered.close()
        first.close()
        second.close()


def test_a_restart_that_lost_nothing_only_costs_reloads(tmp_path: Path) -> None:
    """With AOF (appendfsync always) nothing is lost, yet the namespace starts cold."""
    server = RedisServer(appendonly=True, appendfsync="always")
    server.start()
    try:
        store = RedisStore(server.url, namespace="shop")
        store.set("k", "kept")
        server.kill()
        server.start()
        assert _eventually(lambda: store.get("k")) is MISSING  # cold, not stale
        cache = Cache(store, MappingSource({"k": "kept"}))
        assert cache.read("k") == "kept"
        assert cache.stats.source_reads == 1
        store.close()
    finally:
        server.close()
