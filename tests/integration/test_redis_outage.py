"""docs/redis.md "When Redis is down", row by row, against a Redis killed with SIGKILL.

The Redis is our own, with AOF, so a value cached before the outage is still there
after the restart: the stale read the docs warn about is real, and so is the cure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cachewise import (
    Cache,
    CacheAside,
    MappingSource,
    RedisStore,
    WriteAround,
    WriteThrough,
)
from cachewise.errors import StoreError
from tests.conftest import IN_CI
from tests.servers import RedisServer

REFUSED = "could not drop and hold the cached copy of 1 before writing, so nothing was written"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer(appendonly=True, appendfsync="always")
        server.start()
    except (OSError, RuntimeError) as exc:
        if IN_CI:
            pytest.fail(f"CI=true: cannot start redis-server: {exc}", pytrace=False)
        pytest.skip(f"cannot start redis-server: {exc}")
    yield server
    server.close()


@pytest.mark.parametrize("fail_open", [False, True])
def test_reads_during_an_outage(redis_server: RedisServer, fail_open: bool) -> None:
    source = MappingSource({1: "from the source"})
    store = RedisStore(redis_server.url, namespace="out", fail_open=fail_open, timeout=1.0)
    read_through = Cache(store, source)
    cache_aside = Cache(store, read=CacheAside())
    try:
        redis_server.kill()
        if not fail_open:
            with pytest.raises(StoreError):
                read_through.read(1)
            with pytest.raises(StoreError):
                cache_aside.read(1, loader=lambda key: "loaded")
        else:
            assert read_through.read(1) == "from the source"
            assert cache_aside.read(1, loader=lambda key: "loaded") == "loaded"
            assert store.failed_reads >= 2
        with pytest.raises(StoreError):
            read_through.invalidate(1)
    finally:
        store.close()


@pytest.mark.parametrize("fail_open", [False, True])
@pytest.mark.parametrize("policy", [WriteThrough(), WriteAround()], ids=["through", "around"])
def test_a_write_during_an_outage_is_refused_before_the_source_changes(
    redis_server: RedisServer, fail_open: bool, policy: WriteThrough | WriteAround
) -> None:
    source = MappingSource({})
    store = RedisStore(redis_server.url, namespace="out", fail_open=fail_open, timeout=1.0)
    cache = Cache(store, source, write=WriteThrough())
    try:
        cache.write(1, "old")
        assert store.get(1) == "old"
        redis_server.kill()
        during = Cache(store, source, write=policy)
        with pytest.raises(StoreError, match=REFUSED):
            during.write(1, "new")
        with pytest.raises(StoreError, match=REFUSED):
            during.delete(1)
        assert source.data == {1: "old"}  # nothing was written: no half-done write
        redis_server.start()  # AOF: the old cached value comes back, and agrees
        assert cache.read(1) == "old"
        during.write(1, "new")
        assert cache.read(1) == "new"
        assert source.data == {1: "new"}
    finally:
        store.close()
