"""Read and write policies, named as in the workshop; a Cache composes one of each.

These are small immutable configuration objects: the ``Cache`` runs the read side,
and ``writeback/`` runs the write-back side. Pick a read policy and a write policy:

=================  =========================================================
read policy        what happens on a miss
=================  =========================================================
``CacheAside``     nothing: the application loads (``read(key, loader=fn)``)
``ReadThrough``    the cache loads from the source, once per key at a time
=================  =========================================================

=================  =========================================================
write policy       what ``write(key, value)`` does
=================  =========================================================
none               cache only (cache-aside: the app writes the DB, invalidates)
``WriteThrough``   source, then cache; a source failure leaves the cache as it was
``WriteBack``      cache now (dirty), source later in coalesced batches
``WriteAround``    source only, then drop the cached copy (unless invalidate=False)
=================  =========================================================
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Literal

from cachewise._types import backoff, check_positive, check_seconds, check_ttl
from cachewise.errors import ConfigurationError

FsyncMode = Literal["always", "everysec", "no"]
OnFull = Literal["block", "raise"]


@dataclass(frozen=True)
class CacheAside:
    """Read policy: the application checks the cache and loads on a miss itself.

    ``Cache.read(key, loader=fn)`` runs the textbook cache-aside read for you (check,
    ``fn(key)`` on a miss, store), with single flight per key.
    """

    ttl: float | None = None
    """TTL for values the loader fills (``None``: the store's default)."""

    def __post_init__(self) -> None:
        check_ttl(self.ttl)


@dataclass(frozen=True)
class ReadThrough:
    """Read policy: on a miss the cache loads from the source, one load per key at a time.

    Hot keys need not miss at all when they expire: with ``refresh_ahead=s`` a hit on an
    entry with fewer than ``s`` seconds of TTL left reloads it in the background; with
    ``early_recompute=beta`` a hit reloads it early with a probability that rises as
    expiry nears (XFetch: Vattani, Chierichetti & Lowenstein, VLDB 2015), so processes
    sharing a Redis do not all reload at the same instant.
    """

    ttl: float | None = None
    """TTL for loaded values (``None``: the store's default)."""
    refresh_ahead: float | None = None
    """Reload in the background when a hit finds fewer than this many seconds left."""
    early_recompute: float | None = None
    """XFetch's beta (1.0 is the paper's default; larger reloads earlier)."""

    def __post_init__(self) -> None:
        check_ttl(self.ttl)
        if self.refresh_ahead is not None:
            check_seconds(self.refresh_ahead, "refresh_ahead")
        if self.early_recompute is not None:
            check_positive(self.early_recompute, "early_recompute")

    @property
    def refreshes(self) -> bool:
        """Whether hits may trigger a background reload."""
        return self.refresh_ahead is not None or self.early_recompute is not None


@dataclass(frozen=True)
class WriteThrough:
    """Write policy: save to the source, then store in the cache (consistent)."""


@dataclass(frozen=True)
class WriteAround:
    """Write policy: save to the source only and drop the cached copy.

    ``invalidate=False`` is the textbook form: the cache is not touched at all and may
    serve the old value until its TTL runs out.
    """

    invalidate: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.invalidate, bool):
            raise ConfigurationError(f"invalidate must be a bool, got {self.invalidate!r}")


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter for failed flushes: nothing is dropped, only delayed."""

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    """Fraction of each delay drawn at random, so many processes do not retry in step."""

    def __post_init__(self) -> None:
        check_seconds(self.initial, "retry initial")
        check_seconds(self.maximum, "retry maximum")
        if not 1.0 <= self.multiplier < math.inf:
            raise ConfigurationError(f"retry multiplier must be >= 1, got {self.multiplier!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"retry jitter must be in [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        base = backoff(self.initial, self.maximum, self.multiplier, attempt)
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)


_FSYNC_MODES = ("always", "everysec", "no")


@dataclass(frozen=True)
class WriteBack:
    """Write policy: store in the cache and mark dirty; a flusher writes batches later.

    Many writes to one key between flushes become one source write of the last value.
    ``journal=None`` keeps dirty data in memory only: it is lost if the process dies
    before a flush (the workshop's warning). ``journal="path"`` appends every write to
    a local journal before acknowledging it (``fsync`` as Redis AOF's ``appendfsync``),
    replayed at start-up. ``journal="redis"`` (with a RedisStore) keeps the dirty set in
    Redis so any process may flush it.
    """

    flush_interval: float = 1.0
    max_batch: int = 1000
    max_dirty: int = 100_000
    journal: str | os.PathLike[str] | None = None
    fsync: FsyncMode = "everysec"
    retry: Retry = field(default_factory=Retry)
    on_full: OnFull = "block"
    block_timeout: float = 10.0
    """How long ``write`` waits for room at ``max_dirty`` before ``CacheFullError``."""
    flush_timeout: float = 30.0
    """How long ``flush()`` waits for a flush already under way before ``FlushError``."""

    def __post_init__(self) -> None:
        check_seconds(self.flush_interval, "flush_interval")
        check_positive(self.max_batch, "max_batch", integer=True)
        check_positive(self.max_dirty, "max_dirty", integer=True)
        check_seconds(self.block_timeout, "block_timeout")
        check_seconds(self.flush_timeout, "flush_timeout")
        if self.fsync not in _FSYNC_MODES:
            raise ConfigurationError(
                f"unknown fsync mode {self.fsync!r}; choose one of {', '.join(_FSYNC_MODES)}"
            )
        if self.on_full not in ("block", "raise"):
            raise ConfigurationError(f"on_full must be 'block' or 'raise', got {self.on_full!r}")
        if not isinstance(self.retry, Retry):
            raise ConfigurationError(
                f"retry must be a cachewise.policies.Retry, got {self.retry!r}"
            )
        if self.journal is not None and not isinstance(self.journal, (str, os.PathLike)):
            raise ConfigurationError(f"journal must be a path, 'redis' or None: {self.journal!r}")


ReadPolicy = CacheAside | ReadThrough
WritePolicy = WriteThrough | WriteBack | WriteAround
