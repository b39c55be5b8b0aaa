"""cachewise.metrics: every exported value equals ``cache.stats`` after a known workload.

A read-through, write-back cache on a real SQLite table runs a workload with hits,
misses, loads, evictions, coalesced writes, flushes and a failed flush; then a fresh
Prometheus ``CollectorRegistry`` and the OpenTelemetry SDK's ``InMemoryMetricReader``
are read and compared number by number with the cache's own snapshot, on the C and the
pure-Python hit paths. Spans: on only with a tracer provider, recorded in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cachewise import (
    Cache,
    MappingSource,
    MemoryStore,
    SQLSource,
    WriteBack,
    _tracing,
    connect,
    pool_stats,
    stats,
)
from cachewise.errors import ConfigurationError, FlushError
from cachewise.metrics import PrometheusCollector, instrument
from cachewise.metrics._readings import CACHE, POOL

prometheus_client = pytest.importorskip("prometheus_client")
otel_sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

QUIET = {"flush_interval": 3600.0, "max_batch": 1000}

EXPORTED = {  # DESIGN.md's names (and the others we export) -> the Stats field, by hand
    "hits": "hits",
    "misses": "misses",
    "loads": "loads",
    "source_reads": "source_reads",
    "source_writes": "source_writes",
    "evictions": "evictions",
    "expirations": "expirations",
    "invalidations": "invalidations",
    "flushes": "flushes",
    "flush_failures": "flush_failures",
    "coalesced": "coalesced",
    "dirty_keys": "dirty",
    "oldest_dirty_age_seconds": "oldest_dirty_age",
    "rejected_keys": "rejected",
    "write_lag_p50_seconds": "lag_p50",
    "write_lag_p99_seconds": "lag_p99",
    "write_lag_max_seconds": "lag_max",
}
POOL_EXPORTED = {
    "pool_size": "size",
    "pool_checked_out": "checked_out",
    "pool_overflow": "overflow",
    "pool_waiting": "waiting",
    "pool_acquires": "acquires",
    "pool_timeouts": "timeouts",
    "pool_opened": "opened",
}


def expect(snapshot: Any, field: str) -> float | None:
    value = getattr(snapshot, field, None)
    return None if value is None else float(value)


class Flaky:
    """Wraps a source; ``down`` makes its writes fail (a flush failure, counted)."""

    def __init__(self, inner: SQLSource) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def save_many(self, items: Any) -> None:
        if self.down:
            raise OSError("source down")
        self.inner.save_many(items)


@pytest.fixture(params=["c", "python"])
def hit_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setenv("CACHEWISE_PURE_PYTHON", "1")
    else:
        monkeypatch.delenv("CACHEWISE_PURE_PYTHON", raising=False)
    return str(request.param)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = connect(sqlite_url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(sa.text("INSERT INTO items VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)"))
    yield engine
    engine.dispose()


def workload(cache: Cache, source: Flaky) -> None:
    """Misses and loads, hits, an eviction, coalesced writes, a flush, a failed flush."""
    for key in (1, 2, 3, 4, 5, 1, 2, 99):  # 5 loads + 1 absent; the store keeps 4
        cache.read(key)
    for _ in range(3):
        cache.read(5)
    cache.write(10, {"id": 10, "n": 0})
    cache.write(10, {"id": 10, "n": 1})  # coalesced
    cache.write(11, {"id": 11, "n": 1})
    assert cache.flush() == 2
    cache.write(12, {"id": 12, "n": 2})
    source.down = True
    with pytest.raises(FlushError):
        cache.flush()
    source.down = False


def make_cache(engine: sa.Engine, name: str) -> tuple[Cache, Flaky]:
    source = Flaky(SQLSource(engine, table="items", key="id"))
    store = MemoryStore(max_entries=4, eviction="lru")
    cache = Cache(store, source, write=WriteBack(**QUIET), name=name)  # type: ignore[arg-type]
    return cache, source


def test_prometheus_values_equal_the_stats(
    engine: sa.Engine, unique_name: str, hit_path: str
) -> None:
    cache, source = make_cache(engine, unique_name)
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(cache, engines={"items": engine}, registry=registry)
    try:
        workload(cache, source)
        with engine.connect():  # one connection checked out while scraped
            text = prometheus_client.generate_latest(registry).decode()
            held = pool_stats(engine)
        snapshot = cache.stats
        labels = {"cache": unique_name}
        value = registry.get_sample_value
        assert snapshot.hits > 0
        assert snapshot.evictions > 0
        assert snapshot.coalesced == 1
        assert snapshot.flush_failures == 1
        assert snapshot.dirty == 1
        assert [r.name for r in CACHE] == list(EXPORTED)
        for reading in CACHE:
            expected = expect(snapshot, EXPORTED[reading.name])
            sample = f"cachewise_{reading.name}" + ("_total" if reading.kind == "counter" else "")
            if expected is None:
                assert value(sample, labels) is None
            elif reading.name == "oldest_dirty_age_seconds":  # a clock: read a moment apart
                assert 0.0 < value(sample, labels) <= cache.stats.oldest_dirty_age
            else:
                assert value(sample, labels) == expected, sample
        assert value("cachewise_up", labels) == 1.0
        # One load latency per load (single reads), keys per flush batch = keys flushed.
        assert value("cachewise_load_duration_seconds_count", labels) == snapshot.loads
        assert value("cachewise_flush_batch_keys_count", labels) == 1
        assert value("cachewise_flush_batch_keys_sum", labels) == 2
        assert value("cachewise_flush_duration_seconds_count", labels) == 1
        assert "cachewise_pool_checked_out" in text
        assert 'cachewise_pool_checked_out{pool="items"} 1.0' in text
        assert value("cachewise_pool_acquires_total", {"pool": "items"}) == held.acquires
        assert value("cachewise_pool_acquire_wait_seconds_count", {"pool": "items"}) == (
            held.acquires
        )
    finally:
        cache.flush()
        cache.close()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_opentelemetry_values_equal_the_stats(
    engine: sa.Engine, unique_name: str, hit_path: str
) -> None:
    reader = InMemoryMetricReader()
    provider = otel_sdk_metrics.MeterProvider(metric_readers=[reader])
    cache, source = make_cache(engine, unique_name)
    handle = instrument(provider, caches=[cache], engines={"items": engine})
    try:
        workload(cache, source)
        points = _points(reader)
        snapshot = cache.stats
        held = pool_stats(engine)
    finally:
        handle.close()
        provider.shutdown()
        cache.flush()
        cache.close()
    for reading in CACHE:
        expected = expect(snapshot, EXPORTED[reading.name])
        mine = [p for p in points.get(f"cachewise.{reading.name}", []) if
                p.attributes == {"cache": unique_name}]  # fmt: skip
        if expected is None:
            assert mine == []
        elif reading.name == "oldest_dirty_age_seconds":
            assert 0.0 < mine[0].value <= snapshot.oldest_dirty_age
        else:
            assert [p.value for p in mine] == [expected], reading.name
    assert [r.name for r in POOL] == list(POOL_EXPORTED)
    for reading in POOL:
        expected = expect(held, POOL_EXPORTED[reading.name])
        mine = [p.value for p in points.get(f"cachewise.{reading.name}", [])]
        assert mine == ([] if expected is None else [expected]), reading.name
    loads = [p for p in points["cachewise.load_duration_seconds"] if
             p.attributes == {"cache": unique_name}]  # fmt: skip
    assert loads[0].count == snapshot.loads
    batches = points["cachewise.flush_batch_keys"]
    assert [(p.count, p.sum) for p in batches] == [(1, 2)]


def test_instrument_without_caches_follows_every_live_cache(
    engine: sa.Engine, unique_name: str
) -> None:
    reader = InMemoryMetricReader()
    provider = otel_sdk_metrics.MeterProvider(metric_readers=[reader])
    handle = instrument(provider)
    cache, _ = make_cache(engine, unique_name)  # made after instrument()
    try:
        cache.read(1)
        cache.read(1)
        hits = [p.value for p in _points(reader)["cachewise.hits"] if
                p.attributes == {"cache": unique_name}]  # fmt: skip
        assert hits == [cache.stats.hits] == [1]
    finally:
        handle.close()
        provider.shutdown()
        cache.close()


def test_spans_are_off_by_default_and_wrap_loads_flushes_and_refreshes(
    engine: sa.Engine, unique_name: str
) -> None:
    assert _tracing.tracer is None
    assert stats.sink is None
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = otel_sdk_metrics.MeterProvider(metric_readers=[InMemoryMetricReader()])
    cache, _ = make_cache(engine, unique_name)
    cache.read(1)  # before instrument(): no span
    handle = instrument(provider, tracer_provider=tracer_provider, caches=[cache])
    try:
        cache.read(2)
        cache.read_many([3, 4])
        cache.write(20, {"id": 20, "n": 0})
        cache.flush()
    finally:
        handle.close()
    cache.read(5)  # after close(): no span
    cache.close()
    provider.shutdown()
    spans = [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()]
    assert spans == [
        ("cachewise.load", {"cache": unique_name}),
        ("cachewise.load_many", {"cache": unique_name, "keys": 2}),
        ("cachewise.flush", {"cache": unique_name, "keys": 1}),
    ]
    assert _tracing.tracer is None
    assert stats.sink is None


def test_bad_arguments_are_refused_before_registering(engine: sa.Engine, unique_name: str) -> None:
    registry = prometheus_client.CollectorRegistry()
    one, _ = make_cache(engine, unique_name)
    two, _ = make_cache(engine, unique_name)
    try:
        with pytest.raises(ConfigurationError, match="two caches are named"):
            PrometheusCollector(one, two, registry=registry)
        with pytest.raises(ConfigurationError, match="Cache or AsyncCache"):
            PrometheusCollector(object(), registry=registry)
        with pytest.raises(ConfigurationError, match="SQLAlchemy Engines"):
            PrometheusCollector(one, engines=["sqlite://"], registry=registry)  # type: ignore[list-item]
        assert prometheus_client.generate_latest(registry) == b""
    finally:
        one.close()
        two.close()


def test_pool_labels_never_carry_a_password() -> None:
    engine = connect("postgresql+psycopg://app:sekret@127.0.0.1:1/shop", pool_size=1)
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(engines=[engine], registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    engine.dispose()
    assert 'pool="postgresql+psycopg://app:***@127.0.0.1:1/shop"' in text
    assert "sekret" not in text


def test_exporters_leave_the_hit_path_as_it_was(
    engine: sa.Engine, unique_name: str, hit_path: str
) -> None:
    """Registering adds no wrapper, lock or counter: the read callable is the same object."""
    cache, _ = make_cache(engine, unique_name)
    cache.read(1)
    before = (cache.__dict__.get("read"), cache._count_hit, cache._store_get)
    registry = prometheus_client.CollectorRegistry()
    provider = otel_sdk_metrics.MeterProvider(metric_readers=[InMemoryMetricReader()])
    PrometheusCollector(cache, registry=registry)
    handle = instrument(provider, caches=[cache])
    try:
        prometheus_client.generate_latest(registry)
        after = (cache.__dict__.get("read"), cache._count_hit, cache._store_get)
        assert before[0] is not None  # an inlined hit path (C or Python) was chosen
        assert all(a is b for a, b in zip(after, before, strict=True))
        hits = cache.stats.hits
        cache.read(1)
        assert cache.stats.hits == hits + 1
        assert registry.get_sample_value("cachewise_hits_total", {"cache": unique_name}) == hits + 1
    finally:
        handle.close()
        provider.shutdown()
        cache.close()


def test_a_cache_on_the_c_miss_path_times_every_load_once_exported(
    unique_name: str, hit_path: str
) -> None:
    """The C miss path hands misses to the Python one when exported: loads are timed."""
    source = MappingSource({k: k * 10 for k in range(10)})
    cache = Cache(MemoryStore(), source, name=unique_name)
    reader = cache.__dict__.get("read")
    try:
        cache.read(0)  # before: the C miss path (when built) loads it untimed
        registry = prometheus_client.CollectorRegistry()
        PrometheusCollector(cache, registry=registry)
        for key in (1, 2, 3, 1, 2, 42):
            cache.read(key)
        labels = {"cache": unique_name}
        snapshot = cache.stats
        assert (snapshot.hits, snapshot.misses, snapshot.loads) == (2, 5, 5)
        for name, field in (("hits", "hits"), ("misses", "misses"), ("loads", "loads")):
            assert registry.get_sample_value(f"cachewise_{name}_total", labels) == getattr(
                snapshot, field
            )
        timed = registry.get_sample_value("cachewise_load_duration_seconds_count", labels)
        # Every load since the export is timed; the one before, only on the Python path.
        untimed_before = 1 if cache._miss_path is not None else 0
        assert timed == snapshot.loads - untimed_before
        assert cache.__dict__.get("read") is reader  # the hit path is the same object
    finally:
        cache.close()


def test_a_cache_aside_loader_on_the_c_miss_path_is_timed_once_exported(
    unique_name: str, hit_path: str
) -> None:
    cache = Cache(MemoryStore(), name=unique_name)
    registry = prometheus_client.CollectorRegistry()
    PrometheusCollector(cache, registry=registry)
    try:

        def upper(key: Any) -> Any:
            return str(key).upper()

        for key in ("a", "b", "a"):
            assert cache.read(key, loader=upper) == key.upper()
        labels = {"cache": unique_name}
        assert cache.stats.loads == 2
        assert registry.get_sample_value("cachewise_load_duration_seconds_count", labels) == 2
    finally:
        cache.close()
