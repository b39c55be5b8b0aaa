"""Invalidation lag and the shared write-back's flushes as metrics, on a real Redis.

Two TieredStores on one namespace stand for two processes: a write through one is
published, the other drops its L1 copy, and the lag from publish to drop is one sample
of ``cachewise_invalidation_lag_seconds`` under the receiving cache's name.
"""

from __future__ import annotations

import pytest

from cachewise import Cache, MappingSource, MemoryStore, RedisStore, TieredStore, WriteBack
from tests.helpers import wait_for

prometheus_client = pytest.importorskip("prometheus_client")

from cachewise.metrics import PrometheusCollector  # noqa: E402


def test_invalidation_lag_is_recorded_where_the_l1_copy_is_dropped(
    redis_url: str, redis_namespace: str
) -> None:
    namespace = redis_namespace
    writer = Cache(TieredStore(MemoryStore(), RedisStore(redis_url, namespace=namespace)),
                   name=f"{namespace}-writer")  # fmt: skip
    reader = Cache(TieredStore(MemoryStore(), RedisStore(redis_url, namespace=namespace)),
                   name=f"{namespace}-reader")  # fmt: skip
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(writer, reader, registry=registry)
    count = "cachewise_invalidation_lag_seconds_count"
    try:
        reader.write("k", 1)
        assert reader.read("k") == 1
        writer.write("k", 2)  # published: the reader drops its L1 copy
        assert wait_for(lambda: registry.get_sample_value(count, {"cache": reader.name}) == 1)
        assert reader.store.get("k") == 2  # L1 dropped: L2 has the new value
        # The writer heard the reader's first write, and never its own.
        assert registry.get_sample_value(count, {"cache": writer.name}) == 1
        lag = registry.get_sample_value(
            "cachewise_invalidation_lag_seconds_sum", {"cache": reader.name}
        )
        assert lag is not None
        assert lag >= 0.0
    finally:
        writer.close()
        reader.close()


def test_a_shared_write_back_exports_its_backlog_and_batches(
    redis_url: str, redis_namespace: str
) -> None:
    namespace = redis_namespace
    source = MappingSource({})
    cache = Cache(
        RedisStore(redis_url, namespace=namespace),
        source,
        write=WriteBack(journal="redis", flush_interval=3600.0),
        name=namespace,
    )
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(cache, registry=registry)
    labels = {"cache": namespace}
    try:
        cache.write_many({i: i for i in range(7)})
        assert registry.get_sample_value("cachewise_dirty_keys", labels) == 7 == cache.stats.dirty
        assert cache.flush() == 7
        assert registry.get_sample_value("cachewise_dirty_keys", labels) == 0
        assert registry.get_sample_value("cachewise_flush_batch_keys_sum", labels) == 7
        assert registry.get_sample_value("cachewise_source_writes_total", labels) == 7
    finally:
        cache.close()
