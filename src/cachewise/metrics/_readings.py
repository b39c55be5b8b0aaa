"""What cachewise exports as metrics, read at scrape time: one table for both exporters.

Each reading names a number of ``Cache.stats`` or ``pool_stats`` and how to export it;
the Prometheus collector and the OpenTelemetry callbacks both walk these tables, so
the two never disagree on a name, a unit or a value. Nothing here runs on the hit path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import Engine

from cachewise._redact import redact
from cachewise.errors import ConfigurationError
from cachewise.pool import acquire_waits, pool_stats
from cachewise.stats import HistogramSnapshot, PoolStats, Stats


@dataclass(frozen=True)
class Reading:
    """One exported number: ``cachewise_<name>`` (``_total`` added to counters)."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    unit: str
    """OpenTelemetry's unit (UCUM): ``s``, ``{key}``, ``{read}``, ..."""
    read: Callable[[Any], float | None]


def _stat(field: str) -> Callable[[Any], float | None]:
    def read(snapshot: Any) -> float | None:
        value = getattr(snapshot, field, None)
        return None if value is None else float(value)

    return read


CACHE: tuple[Reading, ...] = (
    Reading("hits", "counter", "Reads served from the cache.", "{read}", _stat("hits")),
    Reading("misses", "counter", "Reads not found in the cache.", "{read}", _stat("misses")),
    Reading("loads", "counter", "Misses the cache loaded itself.", "{load}", _stat("loads")),
    Reading(
        "source_reads", "counter", "Keys read from the source.", "{key}", _stat("source_reads")
    ),
    Reading(
        "source_writes",
        "counter",
        "Keys written to the source.",
        "{key}",
        _stat("source_writes"),
    ),
    Reading("evictions", "counter", "Entries evicted.", "{entry}", _stat("evictions")),
    Reading("expirations", "counter", "Entries expired.", "{entry}", _stat("expirations")),
    Reading("invalidations", "counter", "Keys invalidated.", "{key}", _stat("invalidations")),
    Reading("flushes", "counter", "Write-back flush batches.", "{batch}", _stat("flushes")),
    Reading(
        "flush_failures",
        "counter",
        "Write-back flush batches that failed (the keys stay dirty).",
        "{batch}",
        _stat("flush_failures"),
    ),
    Reading(
        "coalesced",
        "counter",
        "Writes absorbed by a later write of the same key before a flush.",
        "{write}",
        _stat("coalesced"),
    ),
    Reading("dirty_keys", "gauge", "Dirty keys: the write-back backlog.", "{key}", _stat("dirty")),
    Reading(
        "oldest_dirty_age_seconds",
        "gauge",
        "Seconds the oldest unflushed write has waited.",
        "s",
        _stat("oldest_dirty_age"),
    ),
    Reading(
        "rejected_keys",
        "gauge",
        "Keys whose last write the source refused, parked (Cache.rejected()).",
        "{key}",
        _stat("rejected"),
    ),
    Reading(
        "write_lag_p50_seconds",
        "gauge",
        "Write-back lag over the last minute, median: acknowledgement to commit.",
        "s",
        _stat("lag_p50"),
    ),
    Reading(
        "write_lag_p99_seconds",
        "gauge",
        "Write-back lag over the last minute, 99th percentile.",
        "s",
        _stat("lag_p99"),
    ),
    Reading(
        "write_lag_max_seconds",
        "gauge",
        "Write-back lag over the last minute, the largest.",
        "s",
        _stat("lag_max"),
    ),
)
"""The numbers of ``Cache.stats``, labelled ``cache``. A field a Stats lacks is skipped."""

POOL: tuple[Reading, ...] = (
    Reading("pool_size", "gauge", "Connections the pool keeps.", "{connection}", _stat("size")),
    Reading(
        "pool_checked_out",
        "gauge",
        "Connections in use now.",
        "{connection}",
        _stat("checked_out"),
    ),
    Reading(
        "pool_overflow",
        "gauge",
        "Connections over the pool size.",
        "{connection}",
        _stat("overflow"),
    ),
    Reading(
        "pool_waiting",
        "gauge",
        "Callers waiting for a connection now.",
        "{caller}",
        _stat("waiting"),
    ),
    Reading("pool_acquires", "counter", "Connections handed out.", "{acquire}", _stat("acquires")),
    Reading("pool_timeouts", "counter", "Acquires that timed out.", "{acquire}", _stat("timeouts")),
    Reading(
        "pool_opened",
        "counter",
        "Connections opened to the server.",
        "{connection}",
        _stat("opened"),
    ),
)
"""The numbers of ``pool_stats``, labelled ``pool``."""

HISTOGRAMS: dict[str, tuple[str, str, str]] = {
    "load_seconds": ("load_duration_seconds", "Seconds per load or batch load.", "s"),
    "flush_seconds": ("flush_duration_seconds", "Seconds per write-back flush batch.", "s"),
    "flush_keys": ("flush_batch_keys", "Keys per write-back flush batch.", "{key}"),
    "invalidation_lag_seconds": (
        "invalidation_lag_seconds",
        "Seconds from an invalidation's publish to this process's L1 drop.",
        "s",
    ),
    "pool_acquire_wait_seconds": (
        "pool_acquire_wait_seconds",
        "Seconds callers waited for a connection.",
        "s",
    ),
}
"""Recorded distributions: our name -> (exported name, help, unit)."""


def cache_labels(caches: Iterable[Any]) -> list[tuple[str, Any]]:
    """``(label, cache)`` for each cache, by its ``name``; two caches may not share one."""
    out: dict[str, Any] = {}
    for cache in caches:
        if not hasattr(cache, "stats") or not hasattr(cache, "name"):
            raise ConfigurationError(f"metrics need a Cache or AsyncCache, got {cache!r}")
        if cache.name in out and out[cache.name] is not cache:
            raise ConfigurationError(
                f"two caches are named {cache.name!r}: give each its own Cache(name=...)"
            )
        out[cache.name] = cache
    for cache in out.values():
        observe = getattr(cache, "_observe_loads", None)
        if observe is not None:  # a Cache on the C miss path: time its loads from now on
            observe()
    return list(out.items())


def pool_labels(engines: Iterable[Engine] | Mapping[str, Engine]) -> list[tuple[str, Engine]]:
    """``(label, engine)``: the mapping's names, else each URL with its password hidden."""
    pairs = list(engines.items()) if isinstance(engines, Mapping) else [(None, e) for e in engines]
    out = []
    for label, engine in pairs:
        if not isinstance(engine, Engine):
            raise ConfigurationError(f"engines must be SQLAlchemy Engines, got {engine!r}")
        if label is not None and not isinstance(label, str):
            raise ConfigurationError(f"a pool's name must be a string, got {label!r}")
        out.append((redact(engine.url) if label is None else label, engine))
    return out


def read_cache(cache: Any) -> tuple[Stats, dict[str, HistogramSnapshot]]:
    """One consistent look at a cache: its stats and its histograms."""
    snapshot: Stats = cache.stats
    histograms = cache.histograms() if hasattr(cache, "histograms") else {}
    return snapshot, histograms


def read_pool(engine: Engine) -> tuple[PoolStats, HistogramSnapshot | None]:
    """One look at a pool: its stats and its acquire waits."""
    return pool_stats(engine), acquire_waits(engine)
