"""Metrics for cachewise: Prometheus and OpenTelemetry (``pip install 'cachewise[metrics]'``).

- ``PrometheusCollector(*caches, engines=())``: a prometheus_client collector.
- ``instrument(meter_provider=None, *, tracer_provider=None)``: OpenTelemetry
  observable instruments for every cache, and spans when given a tracer provider.

Both read ``Cache.stats``, ``pool_stats`` and the histograms recorded off the hit path
at collection time; neither adds a lock or a counter to a cache hit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Instrumentation", "PrometheusCollector", "instrument"]

if TYPE_CHECKING:
    from cachewise.metrics.otel import Instrumentation, instrument
    from cachewise.metrics.prometheus import PrometheusCollector


def __getattr__(name: str) -> Any:
    """Import each exporter on first use: either library may be installed alone."""
    if name == "PrometheusCollector":
        from cachewise.metrics.prometheus import PrometheusCollector  # noqa: PLC0415

        return PrometheusCollector
    if name in {"instrument", "Instrumentation"}:
        from cachewise.metrics import otel  # noqa: PLC0415

        return getattr(otel, name)
    raise AttributeError(f"module 'cachewise.metrics' has no attribute {name!r}")
