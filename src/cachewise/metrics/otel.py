"""``instrument()``: cachewise's stats as OpenTelemetry metrics, and optional spans.

Counters and gauges are observable instruments: the SDK calls back at collection time
and each callback reads one ``stats`` snapshot per live cache (every open ``Cache`` not
yet garbage-collected, or the caches given) and one ``pool_stats`` per engine built by
``connect()``. Distributions (load, flush batch, pool acquire wait, invalidation lag)
are OTel histograms recorded where that work happens, never on a hit. Spans around
loads, flushes and refreshes only with a ``tracer_provider``; off, they cost nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from cachewise import __version__, _tracing, stats
from cachewise.metrics._readings import (
    CACHE,
    HISTOGRAMS,
    POOL,
    Reading,
    cache_labels,
    pool_labels,
    read_cache,
)
from cachewise.pool import built_engines, pool_stats

_lock = threading.Lock()


class Instrumentation:
    """What ``instrument()`` turned on; ``close()`` stops the spans and the histograms.

    The observable instruments stay with their meter provider (OpenTelemetry has no way
    to remove them): shut that provider down to stop them.
    """

    def __init__(self, sink: stats.Sink | None, tracer: Any) -> None:
        self._sink = sink
        self._tracer = tracer

    def close(self) -> None:
        """Turn spans and histogram recording off (if they are still this one's)."""
        with _lock:
            if self._sink is not None and stats.sink is self._sink:
                stats.sink = None
            if self._tracer is not None and _tracing.tracer is self._tracer:
                _tracing.tracer = None


def instrument(
    meter_provider: MeterProvider | None = None,
    *,
    tracer_provider: Any = None,
    caches: Iterable[Any] | None = None,
    engines: Iterable[Any] | Mapping[str, Any] | None = None,
) -> Instrumentation:
    """Export cachewise's metrics to OpenTelemetry; spans too with ``tracer_provider``.

    ``meter_provider`` defaults to the global one. ``caches`` defaults to every live
    cache, ``engines`` to every live engine built by ``connect()``; both are read at
    each collection, so caches created later are included.
    """
    fixed_caches = None if caches is None else cache_labels(caches)
    fixed_pools = None if engines is None else pool_labels(engines)
    provider = meter_provider or otel_metrics.get_meter_provider()
    meter = provider.get_meter("cachewise", __version__)

    def live_caches() -> list[tuple[str, Any]]:
        if fixed_caches is not None:
            return fixed_caches
        return [(c.name, c) for c in list(stats.LIVE) if not getattr(c, "_closed", False)]

    def live_pools() -> list[tuple[str, Any]]:
        return fixed_pools if fixed_pools is not None else pool_labels(built_engines())

    for reading in CACHE:
        _observe(meter, reading, "cache", lambda: _cache_stats(live_caches()))
    for reading in POOL:
        _observe(meter, reading, "pool", lambda: [(n, pool_stats(e)) for n, e in live_pools()])
    histograms = {
        ours: meter.create_histogram(f"cachewise.{name}", unit=unit, description=text)
        for ours, (name, text, unit) in HISTOGRAMS.items()
    }

    def sink(name: str, attributes: Mapping[str, str], value: float) -> None:
        histogram = histograms.get(name)
        if histogram is not None:
            histogram.record(value, dict(attributes))

    tracer = None
    if tracer_provider is not None:
        tracer = tracer_provider.get_tracer("cachewise", __version__)
    with _lock:
        stats.sink = sink
        if tracer is not None:
            _tracing.tracer = tracer
    if fixed_caches is None:  # every live cache; those made later see the sink (cache.py)
        for cache in list(stats.LIVE):
            observe = getattr(cache, "_observe_loads", None)
            if observe is not None:
                observe()
    return Instrumentation(sink, tracer)


def _cache_stats(caches: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    out = []
    for label, cache in caches:
        try:
            out.append((label, read_cache(cache)[0]))
        except Exception:  # noqa: S112 - a cache whose Redis is down is left out of this round
            continue
    return out


def _observe(meter: Any, reading: Reading, key: str, snapshots: Any) -> None:
    def callback(options: CallbackOptions) -> Iterator[Observation]:
        for label, snapshot in snapshots():
            value = reading.read(snapshot)
            if value is not None:
                yield Observation(value, {key: label})

    name = f"cachewise.{reading.name}"
    if reading.kind == "counter":
        meter.create_observable_counter(
            name, callbacks=[callback], unit=reading.unit, description=reading.help
        )
    else:
        meter.create_observable_gauge(
            name, callbacks=[callback], unit=reading.unit, description=reading.help
        )
