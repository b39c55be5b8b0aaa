"""The candidate strategies, as application code: how a read and a write are done.

A strategy is a read side (cache-aside or read-through) plus a write side
(invalidate, write-through, write-back, write-around), named ``<read>+<write>``;
plain ``cache-aside`` is cache-aside with invalidation, the workshop's own pairing.
Cache-aside is run as the workshop draws it: the application's own get, load on a
miss, set; and on a write, save to the database then invalidate. (cachewise's
``Cache.read(key, loader=fn)`` closes the race that textbook code leaves open.)
Write-around is the textbook form: the write goes to the database only and the
cache is not touched. ``app_calls`` counts the calls the application itself makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachewise._types import MISSING
from cachewise.cache import Cache
from cachewise.errors import ConfigurationError
from cachewise.lab.metrics import CountingSource
from cachewise.policies import CacheAside, ReadThrough, WriteAround, WriteBack, WriteThrough
from cachewise.stores.base import Store

READS = ("cache-aside", "read-through")
WRITES = ("invalidate", "write-through", "write-back", "write-around")


@dataclass(frozen=True)
class Strategy:
    """One read side plus one write side."""

    read: str
    write: str

    @property
    def name(self) -> str:
        """``<read>+<write>``, or plain ``cache-aside`` for cache-aside with invalidation."""
        if self.read == "cache-aside" and self.write == "invalidate":
            return "cache-aside"
        return f"{self.read}+{self.write}"

    @classmethod
    def parse(cls, name: str) -> Strategy:
        """The strategy a name denotes; ConfigurationError for an unknown name."""
        if name == "cache-aside":
            return cls("cache-aside", "invalidate")
        read, _, write = name.partition("+")
        if read not in READS or write not in WRITES:
            raise ConfigurationError(
                f"unknown strategy {name!r}: use <read>+<write> with read in {READS} "
                f"and write in {WRITES}, or plain 'cache-aside'"
            )
        return cls(read, write)


ALL: tuple[str, ...] = (
    *(Strategy("read-through", w).name for w in WRITES),
    *(Strategy("cache-aside", w).name for w in WRITES[1:]),
    "cache-aside",
)
"""Every candidate: read-through with each write side, then cache-aside's."""

WRITE_BACK_FLUSH_INTERVAL = 3600.0
"""The lab flushes write-back itself on the workload's clock, so runs are repeatable."""


def write_back_policy(journal: str | None = None) -> WriteBack:
    """Write-back whose flushes the workload drives (no timer flush during a run)."""
    if journal is None:
        return WriteBack(flush_interval=WRITE_BACK_FLUSH_INTERVAL, max_batch=1_000_000)
    return WriteBack(
        flush_interval=WRITE_BACK_FLUSH_INTERVAL,
        max_batch=1_000_000,
        journal=journal,
        fsync="always",
    )


def _write_policy(write: str, journal: str | None) -> WriteThrough | WriteBack | WriteAround:
    if write == "write-through":
        return WriteThrough()
    if write == "write-back":
        return write_back_policy(journal)
    return WriteAround(invalidate=write == "invalidate")


class App:
    """The application's code for one table under one strategy."""

    def __init__(
        self,
        strategy: Strategy,
        store: Store,
        source: CountingSource,
        *,
        admit: Callable[[str], bool] | None = None,
        journal: str | None = None,
        derived: bool = False,
        name: str = "lab",
    ) -> None:
        self.strategy = strategy
        self._derived = derived
        self.source = source
        self.store = store
        self._admit = admit
        if strategy.read == "read-through":
            self.cache = Cache(
                store,
                source,
                read=ReadThrough(),
                write=_write_policy(strategy.write, journal),
                name=name,
            )
        elif strategy.write == "invalidate":
            self.cache = Cache(store, name=name)
        else:
            self.cache = Cache(
                store,
                source,
                read=CacheAside(),
                write=_write_policy(strategy.write, journal),
                name=name,
            )

    def read(self, key: str) -> tuple[Any, int]:
        """Read ``key`` as the application would; return (row or None, application calls)."""
        if self.strategy.read == "read-through":
            return self.cache.read(key), 1
        if self._admit is not None and not self._admit(key):
            # Cache-aside's control: content the application knows is rarely read is
            # fetched without occupying the cache.
            return _row(self.source.load(key)), 1
        value = self.cache.read(key, MISSING)
        if value is not MISSING:
            return value, 1
        loaded = self.source.load(key)
        if loaded is MISSING:
            return None, 2
        self.store.set(key, loaded)
        return loaded, 3

    def write(self, key: str, row: dict[str, Any]) -> int:
        """Write ``row`` as the application would; return the application calls made."""
        if self._derived:
            # Nothing stored to update: the next read computes the value afresh.
            self.cache.invalidate(key)
            return 1
        if self.cache.write_policy is None:
            self.source.save(key, row)
            self.cache.invalidate(key)
            return 2
        self.cache.write(key, row)
        return 1

    def flush(self) -> None:
        """Periodic persistence (write-back only)."""
        self.cache.flush()

    def close(self) -> None:
        """Flush and stop the cache's background work (lab stores ignore ``close``)."""
        self.cache.close()


def _row(value: Any) -> Any:
    return None if value is MISSING else value
