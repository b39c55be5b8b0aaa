"""The write-back runtime: accepts writes into the dirty set and flushes them in batches.

Threads: writers mark keys dirty under ``_lock`` (held only for dict work, never I/O);
one flush runs at a time (``FlushLoop.exclusive``, taken by the background thread,
``flush()``, eviction pressure and ``close()``). A flush takes a batch out under the
lock, writes it to the source outside it, then settles the batch under the lock again
(the shape of psycopg_pool and httpcore: state out under the lock, I/O outside). A
failed batch stays dirty; the background thread retries it with backoff and jitter.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from cachewise._flow import Flow, run
from cachewise._types import Clock, Key
from cachewise.errors import CacheFullError, ClosedError, FlushError
from cachewise.policies import WriteBack
from cachewise.sources.base import Source
from cachewise.stats import Counter
from cachewise.writeback.background import FlushLoop, close_at_exit, closed
from cachewise.writeback.dirty import TOMBSTONE, DirtyEntry, DirtySet

logger = logging.getLogger("cachewise.writeback")


class Journal(Protocol):
    """Where write-back makes a write durable before acknowledging it."""

    def append(self, records: list[tuple[int, Key, Any]]) -> None:
        """Durably record ``(seq, key, value-or-TOMBSTONE)`` records (per the fsync mode)."""
        ...

    @property
    def last_seq(self) -> int:
        """The highest sequence the journal has seen: new writes continue above it."""
        ...

    def replay(self) -> Iterator[tuple[int, Key, Any]]:
        """Yield the records not yet known to be flushed, oldest first."""
        ...

    def flushed(self, upto: int) -> None:
        """Every record with ``seq <= upto`` is in the source or superseded: compact."""
        ...

    def close(self) -> None:
        """Sync and release the journal."""
        ...


JournalFactory = Callable[[WriteBack], Journal]


class Flusher:
    """Dirty set + journal + background flush thread for one cache."""

    stores_values = False
    """The cache stores accepted values itself (the shared runtime stores them in Redis)."""

    def __init__(
        self,
        policy: WriteBack,
        source: Source,
        *,
        journal: Journal | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        name: str = "cachewise",
    ) -> None:
        self._init_state(policy, source, journal, clock)
        self._room = threading.Condition(self._lock)
        self._wake = threading.Event()
        if journal is not None:
            self._replay(journal)
        self._loop = FlushLoop(
            policy, self.flush, lambda: len(self._dirty) > 0, wake=self._wake, rng=rng, name=name
        )
        self._loop.start()
        close_at_exit(self)

    def _init_state(self, policy: WriteBack, source: Any, journal: Any, clock: Clock) -> None:
        """The state both drivers keep (this thread-driven one and ``aio``'s task-driven one)."""
        self.policy = policy
        self._source = source
        self._journal = journal
        self._clock = clock
        self._dirty = DirtySet()
        self._pending: set[int] = set()
        """Sequences handed out but not yet marked: they hold back journal compaction."""
        self._lock = threading.Lock()
        """Held for dict work only, never across I/O (so never across an await either)."""
        self._closed = False
        self.flushes = Counter()
        self.flush_failures = Counter()
        self.source_writes = Counter()

    # -- state ---------------------------------------------------------------

    def _replay(self, journal: Journal) -> None:
        now = self._clock()
        count = 0
        for seq, key, value in journal.replay():
            self._dirty.mark(key, value, seq, now)
            count += 1
        self._dirty.coalesced = 0
        # Monotonic across restarts even when the journal was compacted to nothing.
        self._dirty.advance(journal.last_seq)
        if count:
            logger.info(
                "write-back journal replayed %d records, %d dirty keys", count, len(self._dirty)
            )

    def dirty_entry(self, key: Key) -> DirtyEntry | None:
        """The unflushed write of ``key``, if any (read-your-writes)."""
        return self._dirty.get(key)

    def is_dirty(self, key: Key) -> bool:
        """Whether ``key`` holds a write not yet in the source."""
        return key in self._dirty

    @property
    def dirty_count(self) -> int:
        """Dirty keys now: the backlog."""
        return len(self._dirty)

    @property
    def coalesced(self) -> int:
        """Writes absorbed by a later write to the same key."""
        return self._dirty.coalesced

    def oldest_dirty_age(self) -> float:
        """Seconds the oldest unflushed write has waited."""
        since = self._dirty.oldest_since()
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def dirty_keys(self) -> list[Key]:
        """The dirty keys, oldest first."""
        with self._lock:
            return self._dirty.keys()

    # -- writes ----------------------------------------------------------------

    def accept(self, items: Mapping[Key, Any]) -> list[Key]:
        """Make writes dirty (journaled first if there is a journal); return accepted keys.

        A key whose write lost to a newer concurrent write is left out of the result so
        the caller does not overwrite the newer cached value. Callers serialise writes
        of one key (the cache's per-key lock), so sequence order is write order.
        """
        return run(self._accept_flow(items))

    def _accept_flow(self, items: Mapping[Key, Any]) -> Flow[list[Key]]:
        if self._closed:
            raise ClosedError("write-back is closed")
        yield self._wait_for_room, (items,)
        with self._lock:
            records = [(self._dirty.next_seq(), key, value) for key, value in items.items()]
            self._pending.update(seq for seq, _, _ in records)
        try:
            if self._journal is not None:
                yield self._journal.append, (records,)
            now = self._clock()
            with self._lock:
                accepted = [
                    key for seq, key, value in records if self._dirty.mark(key, value, seq, now)
                ]
                backlog = len(self._dirty)
        finally:
            with self._lock:
                self._pending.difference_update(seq for seq, _, _ in records)
        if backlog >= self.policy.max_batch:
            self._wake.set()
        return accepted

    def _no_room(self, items: Mapping[Key, Any]) -> bool:
        """Whether ``items`` would take the dirty set past ``max_dirty`` (under the lock)."""
        limit = self.policy.max_dirty
        new = sum(1 for key in items if key not in self._dirty)
        if not new or len(self._dirty) + new <= limit:
            return False
        if len(items) > limit:
            raise CacheFullError(f"a batch of {len(items)} keys exceeds max_dirty={limit}")
        if self.policy.on_full == "raise":
            self._wake.set()
            raise CacheFullError(f"write-back holds max_dirty={limit} dirty keys")
        return True

    def _full_error(self) -> CacheFullError:
        return CacheFullError(
            f"write-back held max_dirty={self.policy.max_dirty} dirty keys for "
            f"{self.policy.block_timeout}s (is the source down?)"
        )

    def _wait_for_room(self, items: Mapping[Key, Any]) -> None:
        with self._lock:
            if not self._no_room(items):
                return
            deadline = time.monotonic() + self.policy.block_timeout
            while self._no_room(items):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise self._full_error()
                self._wake.set()
                self._room.wait(left)

    def _made_room(self) -> None:
        """Wake writers waiting for room (called under ``_lock``)."""
        self._room.notify_all()

    # -- flushing ----------------------------------------------------------------

    def flush(self, keys: Iterable[Key] | None = None, *, wait: bool = True) -> int:
        """Write dirty entries (all, or those of ``keys``) to the source now; return how many.

        Raises FlushError promptly if the source fails; the entries stay dirty. With
        ``wait=False`` a flush already under way wakes the flusher instead of waiting.
        """
        only = None if keys is None else set(keys)
        return self._loop.exclusive(lambda: run(self._flush_flow(only)), wait=wait)

    def _flush_flow(self, only: set[Key] | None) -> Flow[int]:
        """Take batches out under the lock, write each outside it, settle under it again."""
        written = 0
        with self._lock:
            upto = self._dirty.last_seq
        while True:
            with self._lock:
                if only is None:
                    batch = self._dirty.take(self.policy.max_batch, upto)
                else:
                    batch = [(k, e) for k in only if (e := self._dirty.get(k)) is not None]
                    only = set()
            if not batch:
                if written and self._journal is not None:
                    # Once per flush, not per batch: the watermark is a scan of the dirty set.
                    with self._lock:
                        watermark = self._dirty.low_watermark()
                        if self._pending:
                            watermark = min(watermark, min(self._pending) - 1)
                    yield self._journal.flushed, (watermark,)
                return written
            yield from self._write_batch_flow(batch)
            with self._lock:
                self._dirty.settle(batch)
                self._made_room()
            written += len(batch)

    def _write_batch_flow(self, batch: list[tuple[Key, DirtyEntry]]) -> Flow[None]:
        saves = {key: e.value for key, e in batch if e.value is not TOMBSTONE}
        removes = [key for key, e in batch if e.value is TOMBSTONE]
        try:
            if saves:
                yield self._source.save_many, (saves,)
            if removes:
                yield self._source.remove_many, (removes,)
        except Exception as exc:
            self.flush_failures.add()
            raise FlushError(
                f"write-back could not flush {len(batch)} keys; they stay dirty: {exc}"
            ) from exc
        self.flushes.add()
        self.source_writes.add_many(len(batch))

    # -- lifecycle -------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is dirty, stop the background thread and close the journal.

        If the final flush fails the dirty entries are still in the journal (if any) and
        FlushError is raised after the thread has stopped.
        """
        if self._closed:
            return
        error: Exception | None = None
        try:
            self.flush()
        except Exception as exc:
            error = exc
        self._closed = True
        with self._lock:
            self._room.notify_all()
        self._loop.stop(timeout)
        if self._journal is not None:
            self._journal.close()
        closed(self)
        if error is not None:
            lost = "kept in the journal" if self._journal is not None else "LOST (no journal)"
            logger.error("write-back closed with %d dirty keys %s", len(self._dirty), lost)
            raise error
