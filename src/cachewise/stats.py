"""Statistics: cheap counters on the hot path, immutable snapshots (cache, pool) for readers.

Pure data: ``cachewise.pool`` fills a ``PoolStats``; this module knows nothing of it.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one engine's connection pool.

    ``waiting``, the acquire waits and ``timeouts`` are observed only on engines built
    by ``connect()``; for other engines they are ``None``. Waits are in seconds and
    include opening a connection when the pool had none idle; the p99 is over the most
    recent acquires (a bounded window).
    """

    size: int
    checked_out: int
    overflow: int
    waiting: int | None
    acquires: int
    acquire_wait_mean: float | None
    acquire_wait_p99: float | None
    timeouts: int | None
    opened: int
    invalidated: int
    recycled: int

    def as_dict(self) -> dict[str, Any]:
        """The numbers as a plain dict (for JSON, the CLI and metrics)."""
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """A snapshot of a cache's counters (DESIGN.md defines each).

    ``source_reads``/``source_writes`` count keys, not round trips; ``loads`` counts
    misses the cache itself loaded; ``dirty`` counts dirty keys now (the write-back
    backlog); ``flushes`` counts flush batches; ``coalesced`` counts writes absorbed
    by a later write to the same key before it was flushed. ``oldest_dirty_age``,
    ``rejected`` and the ``lag_*`` fields describe write-back (docs/write-back.md, *Lag*).
    """

    hits: int = 0
    misses: int = 0
    loads: int = 0
    source_reads: int = 0
    source_writes: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    dirty: int = 0
    flushes: int = 0
    flush_failures: int = 0
    coalesced: int = 0
    oldest_dirty_age: float = 0.0
    """Seconds since the oldest write not yet in the source was made (0.0 when nothing is
    dirty): a key flushed and rewritten since counts from its first write after the flush."""
    rejected: int = 0
    """Keys whose last write the source refused, parked (``Cache.rejected()``)."""
    lag_p50: float = 0.0
    """Write-back lag, median: seconds from a write's acknowledgement to the commit of the
    flush that wrote it or a later write of its key, over the last minute (at most its
    newest 4,096 samples)."""
    lag_p99: float = 0.0
    """Write-back lag, 99th percentile (see ``lag_p50``)."""
    lag_max: float = 0.0
    """Write-back lag, the largest in the last minute (exact: every flushed key's oldest
    covered write counts)."""
    pool: PoolStats | None = None
    """The source's connection pool (``cachewise.pool_stats``), when it has one."""

    @property
    def hit_ratio(self) -> float:
        """Hits over reads (0.0 before the first read)."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (for JSON and metrics)."""
        out = asdict(self)
        out["hit_ratio"] = self.hit_ratio
        return out


class Counter:
    """A thread-safe event counter: ``next()`` on ``itertools.count`` is one atomic C call.

    Cheaper than a lock on the hit path; the value is read back from the counter's repr,
    which is documented as ``count(n)``.
    """

    __slots__ = ("_count", "add")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.add = self._count.__next__

    def add_many(self, n: int) -> None:
        """Count ``n`` events."""
        for _ in range(n):
            self.add()

    @property
    def value(self) -> int:
        """Events counted so far."""
        return int(repr(self._count)[6:-1])


SECONDS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Bucket bounds for durations: half a millisecond (a local query) to ten seconds."""
KEYS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
"""Bucket bounds for batch sizes, in keys (``max_batch`` defaults to 1000)."""


@dataclass(frozen=True)
class HistogramSnapshot:
    """A distribution at one moment: ``counts[i]`` values were ``<= bounds[i]``.

    Not cumulative; the last count is the values above every bound (``+Inf``).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values <= it)`` pairs ending with ``(inf, count)``, Prometheus's form."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


Sink = Callable[[str, Mapping[str, str], float], None]

sink: Sink | None = None
"""While OpenTelemetry is instrumented, every observed value also goes here (name,
attributes, value): OTel histograms are recorded, not read. ``None`` otherwise."""

LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every cache not yet garbage-collected, for ``cachewise.metrics.instrument()``."""


class Histogram:
    """Counts of observed values per bucket, recorded where the work already happens.

    Never on the hit path: a load, a flush batch, a pool acquire, an invalidation are
    each far dearer than the lock taken here. Readers take a :class:`HistogramSnapshot`.
    ``name`` and ``attributes`` identify it to the OpenTelemetry ``sink``.
    """

    __slots__ = ("_counts", "_lock", "_sum", "attributes", "bounds", "name")

    def __init__(
        self,
        bounds: tuple[float, ...] = SECONDS,
        name: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self.bounds = bounds
        self.name = name
        self.attributes: Mapping[str, str] = attributes or {}
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one value."""
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value
        forward = sink
        if forward is not None and self.name:
            forward(self.name, self.attributes, value)

    def snapshot(self) -> HistogramSnapshot:
        """The counts so far (a consistent copy)."""
        with self._lock:
            return HistogramSnapshot(self.bounds, tuple(self._counts), self._sum)
