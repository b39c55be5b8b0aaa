"""cachewise.metrics on the async driver: AsyncCache's exported values equal its stats.

The sync suite's workload, awaited: misses and loads, hits, an eviction, coalesced
writes, a flush and a failed flush, then a fresh Prometheus registry and the
OpenTelemetry SDK's in-memory reader compared number by number with ``cache.stats``;
spans around the async driver's loads and flushes.
"""

from __future__ import annotations

from typing import Any

import pytest

from cachewise import MemoryStore, WriteBack, _tracing, stats
from cachewise.aio import AsyncCache
from cachewise.errors import FlushError
from cachewise.metrics import PrometheusCollector, instrument
from cachewise.metrics._readings import CACHE
from tests.helpers import FlakySource
from tests.unit.test_metrics import EXPORTED, expect

prometheus_client = pytest.importorskip("prometheus_client")
otel_sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

pytestmark = pytest.mark.anyio


def make_cache(name: str) -> tuple[AsyncCache, FlakySource]:
    source = FlakySource({k: {"id": k, "n": k} for k in range(1, 6)})
    store = MemoryStore(max_entries=4, eviction="lru")
    return AsyncCache(store, source, write=WriteBack(flush_interval=3600), name=name), source


async def workload(cache: AsyncCache, source: FlakySource) -> None:
    for key in (1, 2, 3, 4, 5, 1, 2, 99):
        await cache.read(key)
    for _ in range(3):
        await cache.read(5)
    await cache.write(10, {"id": 10, "n": 0})
    await cache.write(10, {"id": 10, "n": 1})
    await cache.write(11, {"id": 11, "n": 1})
    assert await cache.flush() == 2
    await cache.write(12, {"id": 12, "n": 2})
    source.down = True
    with pytest.raises(FlushError):
        await cache.flush()
    source.down = False


async def test_prometheus_values_equal_the_async_stats(unique_name: str) -> None:
    cache, source = make_cache(unique_name)
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(cache, registry=registry)
    try:
        await workload(cache, source)
        snapshot = cache.stats
        labels = {"cache": unique_name}
        assert (snapshot.hits, snapshot.coalesced, snapshot.flush_failures) == (3, 1, 1)
        assert snapshot.evictions > 0
        for reading in CACHE:
            expected = expect(snapshot, EXPORTED[reading.name])
            sample = f"cachewise_{reading.name}" + ("_total" if reading.kind == "counter" else "")
            got = registry.get_sample_value(sample, labels)
            if expected is None:
                assert got is None
            elif reading.name == "oldest_dirty_age_seconds":
                assert 0.0 < got <= cache.stats.oldest_dirty_age
            else:
                assert got == expected, sample
        value = registry.get_sample_value
        assert value("cachewise_load_duration_seconds_count", labels) == snapshot.loads
        assert value("cachewise_flush_batch_keys_sum", labels) == 2
    finally:
        await cache.flush()
        await cache.close()


async def test_opentelemetry_values_and_spans_on_the_async_driver(unique_name: str) -> None:
    reader = InMemoryMetricReader()
    provider = otel_sdk_metrics.MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    cache, source = make_cache(unique_name)
    handle = instrument(provider, tracer_provider=tracing)  # every live cache: this one too
    try:
        await workload(cache, source)
        data = reader.get_metrics_data()
        snapshot = cache.stats
    finally:
        handle.close()
        provider.shutdown()
        await cache.flush()
        await cache.close()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(
                    p for p in metric.data.data_points if p.attributes == {"cache": unique_name}
                )
    for reading in CACHE:
        expected = expect(snapshot, EXPORTED[reading.name])
        mine = points.get(f"cachewise.{reading.name}", [])
        if expected is None:
            assert mine == []
        elif reading.name == "oldest_dirty_age_seconds":
            assert 0.0 < mine[0].value <= snapshot.oldest_dirty_age
        else:
            assert [p.value for p in mine] == [expected], reading.name
    assert [p.count for p in points["cachewise.load_duration_seconds"]] == [snapshot.loads]
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("cachewise.load") == snapshot.loads
    assert names.count("cachewise.flush") == 2  # one written, one failed
    failed = [s for s in exporter.get_finished_spans() if not s.status.is_ok]
    assert [s.name for s in failed] == ["cachewise.flush"]
    assert _tracing.tracer is None
    assert stats.sink is None
