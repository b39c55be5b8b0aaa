"""What the lab measures per strategy: counts from counting wrappers, latencies, stale reads.

Counts are deterministic for a seeded workload (source reads and writes, cache
operations, application calls, stale reads); latencies are wall-clock and vary run
to run, so objectives compare them with a generous tolerance.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachewise._types import MISSING, Key
from cachewise.sources.base import Source

RESULT_FIELDS: tuple[str, ...] = (
    "hit_ratio",
    "source_reads",
    "source_writes",
    "read_p50_us",
    "read_p99_us",
    "write_p50_us",
    "write_p99_us",
    "stale_reads",
    "lost_writes",
)
"""The per-strategy fields of the JSON report, in order."""

EXTRA_FIELDS: tuple[str, ...] = ("app_calls", "cache_ops", "evictions")
"""Further counts the lab measures and objectives may use (also written to JSON)."""


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``samples`` by nearest rank (0.0 when empty)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Recorder:
    """Accumulates one strategy run's latencies and counters (thread-safe appends)."""

    read_ns: dict[str, list[int]] = field(default_factory=dict)
    """Read latencies per table: a kind's percentiles are over its own table."""
    write_ns: dict[str, list[int]] = field(default_factory=dict)
    cache_reads: int = 0
    stale_reads: int = 0
    app_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, table: str, elapsed_ns: int | None, stale: bool, calls: int) -> None:
        """Count one application read (``elapsed_ns=None``: not a latency sample)."""
        with self._lock:
            if elapsed_ns is not None:
                self.read_ns.setdefault(table, []).append(elapsed_ns)
            self.cache_reads += 1
            self.stale_reads += stale
            self.app_calls += calls

    def write(self, table: str, elapsed_ns: int, calls: int) -> None:
        """Count one application write."""
        with self._lock:
            self.write_ns.setdefault(table, []).append(elapsed_ns)
            self.app_calls += calls

    def latency_us(self, table: str, fraction: float) -> tuple[float, float]:
        """(read, write) latency percentile of ``table`` in microseconds."""
        reads = [n / 1000 for n in self.read_ns.get(table, [])]
        writes = [n / 1000 for n in self.write_ns.get(table, [])]
        return percentile(reads, fraction), percentile(writes, fraction)

    def stale(self) -> None:
        """Count a stale read by another system (a direct database read)."""
        with self._lock:
            self.stale_reads += 1


def is_stale(value: Any, expected_version: int) -> bool:
    """Whether a read returned something older than the last acknowledged write."""
    if expected_version <= 0:
        return False
    if value is None or value is MISSING:
        return True
    return int(value["v"]) < expected_version


class CountingSource:
    """A Source wrapper counting the keys read and written through it (for the lab)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.reads = 0
        self.writes = 0
        self._lock = threading.Lock()
        self.pause: PausePoint | None = None
        """Set by a race operation: the next load of that key waits for a write."""

    def __repr__(self) -> str:
        return f"CountingSource({self.inner!r})"

    def _count(self, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.reads += reads
            self.writes += writes

    def load(self, key: Key) -> Any:
        self._count(reads=1)
        value = _plain_row(self.inner.load(key))
        pause = self.pause
        if pause is not None and pause.key == key:
            pause.hold()
        return value

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        wanted = list(keys)
        self._count(reads=len(wanted))
        found = {k: _plain_row(v) for k, v in self.inner.load_many(wanted).items()}
        pause = self.pause
        if pause is not None and pause.key in wanted:
            pause.hold()
        return found

    def save(self, key: Key, value: Any) -> None:
        self.inner.save(key, value)
        self._count(writes=1)

    def save_many(self, items: Mapping[Key, Any]) -> None:
        self.inner.save_many(items)
        self._count(writes=len(items))

    def remove(self, key: Key) -> None:
        self.inner.remove(key)
        self._count(writes=1)

    def remove_many(self, keys: Iterable[Key]) -> None:
        wanted = list(keys)
        self.inner.remove_many(wanted)
        self._count(writes=len(wanted))


def _plain_row(value: Any) -> Any:
    """A row with plain ``str`` column names.

    SQLAlchemy names columns with a ``str`` subclass (``quoted_name``), which a codec
    that keeps types exactly (Redis) refuses; the lab caches plain rows.
    """
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


class PausePoint:
    """Holds a load of ``key`` after its query returned, until a write has been acknowledged.

    This makes the read/write overlap of two users deterministic: the reader has the old
    row in hand, the writer commits and is acknowledged, then the reader continues.
    """

    def __init__(self, key: Key, timeout: float = 10.0) -> None:
        self.key = key
        self.loaded = threading.Event()
        self.release = threading.Event()
        self._timeout = timeout

    def hold(self) -> None:
        """Called by the loading thread: signal, then wait for the write to finish."""
        self.loaded.set()
        self.release.wait(self._timeout)
