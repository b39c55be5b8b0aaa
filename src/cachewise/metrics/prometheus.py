"""``PrometheusCollector``: cachewise's stats as Prometheus metrics, read at scrape time.

A custom collector (prometheus_client's ``Collector``): nothing is counted twice and
nothing is added to the hit path; each scrape takes one ``stats`` snapshot per cache
and one ``pool_stats`` per engine. Names and labels are DESIGN.md's contract.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine

from cachewise._events import event
from cachewise.metrics._readings import (
    CACHE,
    HISTOGRAMS,
    POOL,
    Reading,
    cache_labels,
    pool_labels,
    read_cache,
    read_pool,
)
from cachewise.stats import HistogramSnapshot

logger = logging.getLogger("cachewise.metrics")


class PrometheusCollector(Collector):
    """Exports ``caches`` (label ``cache``) and ``engines``' pools (label ``pool``).

    Registers itself with ``registry`` (the default registry unless given; ``None``: do
    not register). ``engines`` is a list of engines (labelled by URL, password hidden)
    or a mapping of name -> engine. A cache whose stats cannot be read (its Redis is
    down) is reported as ``cachewise_up{cache} 0`` and the rest of the scrape goes on.
    """

    def __init__(
        self,
        *caches: Any,
        engines: Iterable[Engine] | Mapping[str, Engine] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._caches = cache_labels(caches)
        self._pools = pool_labels(engines)
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """No samples at registration: the collector is only read when scraped."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """One family per metric, a sample per cache or pool."""
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "cachewise_up", "1 if the cache's stats could be read at this scrape.", labels=["cache"]
        )
        for label, cache in self._caches:
            try:
                snapshot, histograms = read_cache(cache)
            except Exception as exc:
                event(
                    logger,
                    logging.WARNING,
                    "stats_unreadable",
                    "metrics: cannot read the stats of cache %s (%s); cachewise_up is 0",
                    label,
                    type(exc).__name__,
                    cache=label,
                    error=type(exc).__name__,
                )
                up.add_metric([label], 0.0)
                continue
            up.add_metric([label], 1.0)
            _add(families, CACHE, snapshot, "cache", label)
            _add_histograms(families, histograms, "cache", label)
        for label, engine in self._pools:
            stats, waits = read_pool(engine)
            _add(families, POOL, stats, "pool", label)
            if waits is not None:
                _add_histograms(families, {"pool_acquire_wait_seconds": waits}, "pool", label)
        yield up
        yield from families.values()


def _add(
    families: dict[str, Metric], readings: Iterable[Reading], snapshot: Any, key: str, label: str
) -> None:
    for reading in readings:
        value = reading.read(snapshot)
        if value is None:
            continue
        family = families.get(reading.name)
        if family is None:
            kind = CounterMetricFamily if reading.kind == "counter" else GaugeMetricFamily
            family = families[reading.name] = kind(
                f"cachewise_{reading.name}", reading.help, labels=[key]
            )
        family.add_metric([label], value)  # type: ignore[attr-defined]


def _add_histograms(
    families: dict[str, Metric], histograms: Mapping[str, HistogramSnapshot], key: str, label: str
) -> None:
    for ours, snapshot in histograms.items():
        if ours not in HISTOGRAMS:
            continue
        name, text, _unit = HISTOGRAMS[ours]
        family = families.get(name)
        if family is None:
            family = families[name] = HistogramMetricFamily(f"cachewise_{name}", text, labels=[key])
        buckets = [(_le(bound), float(n)) for bound, n in snapshot.cumulative()]
        family.add_metric([label], buckets, snapshot.sum)  # type: ignore[attr-defined]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
