"""The write-back runtime: accepts writes into the dirty set and flushes them in batches.

Threads: writers mark keys dirty under ``_lock`` (held only for dict work, never I/O);
one flush runs at a time (``FlushLoop.exclusive``, taken by the background thread,
``flush()``, eviction pressure and ``close()``). A flush takes a batch out under the
lock, writes it to the source outside it, then settles the batch under the lock again
(the shape of psycopg_pool and httpcore: state out under the lock, I/O outside). A
failed batch stays dirty; the background thread retries it with backoff and jitter.

The accept, flush and discard logic are flows (``_flow``): this thread-driven runtime
runs them with ``run``, ``aio``'s task-driven ``AsyncFlusher`` with ``arun``. What differs
is only waiting (for room, for writes still being journaled, for the one flush at a
time), which each driver implements.

Refused rows. A value the source can be known to refuse (``ValidatingSource``) is
refused at ``accept``, before it is acknowledged. One the database refuses at flush time
(a constraint, a value its column cannot hold: ``RejectedError``, as opposed to an
unreachable database) fails the whole batch, so the batch is split in halves and each
half written again until every refused row stands alone (bisection: about
2·log2(batch) statements per refused row). The others are written; each refused key is
*parked*: out of the dirty set (it neither blocks nor counts against ``max_dirty``),
logged once with its reason, listed by :meth:`Flusher.rejected`, and kept in the
journal (``park``) until it is retried, discarded or written again.

Closing. ``close`` refuses new writes first, waits for the writes that already hold a
sequence to be marked, then runs the final flush: every write is either in that flush
or refused with ClosedError, never acknowledged and left behind.

Lag. Every ``SAMPLE_EVERY``-th write (by sequence) is followed until a flush commits it
or a later write of its key; each batch also records its oldest write. ``lag()`` sums
them up over the last minute (``lag.LagWindow``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from cachewise import _tracing
from cachewise._events import event
from cachewise._flow import Flow, run
from cachewise._types import MISSING, Clock, Key, implements
from cachewise.errors import CacheFullError, ClosedError, FlushError
from cachewise.policies import WriteBack
from cachewise.sources.base import Source, ValidatingSource
from cachewise.stats import Counter
from cachewise.writeback.background import BatchTimes, FlushLoop, close_at_exit, closed
from cachewise.writeback.dirty import TOMBSTONE, DirtyEntry, DirtySet, Rejected
from cachewise.writeback.lag import PENDING_LIMIT, SAMPLE_EVERY, LagSummary, LagWindow
from cachewise.writeback.rejection import isolate_flow, log_parked, refused_error

logger = logging.getLogger("cachewise.writeback")

fault_hook: Callable[[str], None] | None = None
"""Test seam: called with a point name at each crash point; crash tests SIGKILL there.

Points: ``isolate`` (the source refused a batch for a row in it; the batch is about to
be split, earlier halves may be committed already).
"""


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
        """Every record with ``seq <= upto`` is in the source or superseded.

        Durable before it returns (a restart never replays at or below it), then compact.
        """
        ...

    def close(self) -> None:
        """Sync and release the journal."""
        ...


@runtime_checkable
class ParkingJournal(Journal, Protocol):
    """A journal that keeps the writes the source refused apart from the flushed ones.

    Without it, write-back holds the flushed watermark below the oldest parked write, so
    the record stays in the journal (at the price of compacting less).
    """

    def park(self, records: list[tuple[int, Key, Any]]) -> None:
        """Durably make ``records`` the set of refused writes, replayed at the next open."""
        ...


JournalFactory = Callable[[WriteBack], Journal]


def _split() -> None:
    hook = fault_hook
    if hook is not None:
        hook("isolate")


class Flusher:
    """Dirty set + journal + background flush thread for one cache.

    ``on_rejected(keys)`` is called (outside every lock) with the keys a flush parked,
    so the cache can stop serving values the source refused.
    """

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
        on_rejected: Callable[[list[Key]], object] | None = None,
    ) -> None:
        self._init_state(policy, source, journal, clock, on_rejected, name=name)
        self._room = threading.Condition(self._lock)
        self._wake = threading.Event()
        if journal is not None:
            self._replay(journal)
        self._loop = FlushLoop(
            policy,
            self._flush_in_background,
            lambda: len(self._dirty) > 0,
            wake=self._wake,
            rng=rng,
            name=name,
            backlog=lambda: len(self._dirty),
        )
        self._loop.start()
        close_at_exit(self)

    def _init_state(
        self,
        policy: WriteBack,
        source: Any,
        journal: Any,
        clock: Clock,
        on_rejected: Callable[[list[Key]], object] | None = None,
        *,
        name: str = "cachewise",
    ) -> None:
        """The state both drivers keep (this thread-driven one and ``aio``'s task-driven one)."""
        self._name = name
        self.batch_times = BatchTimes(name)
        self.policy = policy
        self._source = source
        self._validate = source.validate if implements(source, ValidatingSource) else None
        self._journal = journal
        self._clock = clock
        self._on_rejected = on_rejected
        self._dirty = DirtySet()
        self._pending: set[int] = set()
        """Sequences handed out but not yet marked: they hold back journal compaction."""
        self._lock = threading.Lock()
        """Held for dict work only, never across I/O (so never across an await either)."""
        self._closing = False
        """Set by ``close`` (under ``_lock``) before the final flush: writes are refused."""
        self._pending_waiters = 0
        """Waiting for pending sequences to be marked (``_wait_for_pending``)."""
        self._closed = False
        self._rejected: dict[Key, Rejected] = {}
        self._parked_changed = journal is not None
        """The journal's record of parked writes is stale (at start: what it replayed)."""
        self._journal_watermark = -1
        self._followed: dict[Key, list[tuple[int, float]]] = {}
        """Sampled writes not yet flushed, per key: (sequence, acknowledged at)."""
        self._followed_count = 0
        self._lag = LagWindow()
        self.flushes = Counter()
        self.flush_failures = Counter()
        self.source_writes = Counter()

    # -- state ---------------------------------------------------------------

    def _replay(self, journal: Any) -> None:
        now = self._clock()
        count = 0
        for seq, key, value in journal.replay():
            self._dirty.mark(key, value, seq, now)
            count += 1
        self._dirty.coalesced = 0
        # Monotonic across restarts even when the journal was compacted to nothing.
        self._dirty.advance(journal.last_seq)
        if count:
            event(
                logger,
                logging.INFO,
                "journal_replayed",
                "write-back %s: journal replayed %d records, %d dirty keys",
                self._name,
                count,
                len(self._dirty),
                cache=self._name,
                records=count,
                keys=len(self._dirty),
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
        """Seconds since the oldest write not yet in the source was made."""
        with self._lock:
            since = self._dirty.oldest_since()
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def lag(self) -> LagSummary:
        """Acknowledgement-to-commit lag of recent writes (p50, p99, max)."""
        with self._lock:
            return self._lag.summary(self._clock())

    def dirty_keys(self) -> list[Key]:
        """The dirty keys, oldest first."""
        with self._lock:
            return self._dirty.keys()

    def rejected(self) -> dict[Key, Rejected]:
        """The parked keys: writes the source refused, with its reasons."""
        with self._lock:
            return dict(self._rejected)

    @property
    def rejected_count(self) -> int:
        """How many keys are parked."""
        return len(self._rejected)

    # -- writes ----------------------------------------------------------------

    def accept(self, items: Mapping[Key, Any]) -> list[Key]:
        """Make writes dirty (journaled first if there is a journal); return accepted keys.

        A key whose write lost to a newer concurrent write is left out of the result so
        the caller does not overwrite the newer cached value. Callers serialise writes
        of one key (the cache's per-key lock), so sequence order is write order. A write
        the source can be known to refuse raises (InvalidValueError, InvalidKeyError)
        before anything changes.
        """
        return run(self._accept_flow(items))

    def _accept_flow(self, items: Mapping[Key, Any]) -> Flow[list[Key]]:
        if self._closing:
            raise ClosedError("write-back is closed")
        validate = self._validate
        if validate is not None:
            for key, value in items.items():
                validate(key, MISSING if value is TOMBSTONE else value)
        yield self._wait_for_room, (items,)
        dirty = self._dirty
        with self._lock:
            if self._closing:
                raise ClosedError("write-back is closed")
            records = [(dirty.next_seq(), key, value) for key, value in items.items()]
            self._pending.update(seq for seq, _, _ in records)
        try:
            if self._journal is not None:
                yield self._journal.append, (records,)
        except BaseException:
            with self._lock:
                self._forget_pending(records)
            raise
        with self._lock:
            now = self._clock()
            accepted = [key for seq, key, value in records if dirty.mark(key, value, seq, now)]
            for seq, key, _ in records:
                if seq % SAMPLE_EVERY == 0:
                    self._follow(key, seq, now)
            if self._rejected:
                self._unpark(accepted)
            backlog = len(dirty)
            self._forget_pending(records)
        if backlog >= self.policy.max_batch:
            self._wake.set()
        return accepted

    def _forget_pending(self, records: list[tuple[int, Key, Any]]) -> None:
        """Marked or failed: these sequences no longer hold anything back (``_lock`` held)."""
        self._pending.difference_update(seq for seq, _, _ in records)
        if self._pending_waiters:
            self._pending_done()

    def _pending_done(self) -> None:
        """Wake what waits for pending sequences (``_lock`` held; each driver its own)."""
        self._room.notify_all()

    def _follow(self, key: Key, seq: int, now: float) -> None:
        """Follow one write until a flush commits it, for the lag (``_lock`` held)."""
        if self._followed_count < PENDING_LIMIT:
            self._followed.setdefault(key, []).append((seq, now))
            self._followed_count += 1

    def _unpark(self, keys: list[Key]) -> None:
        """A new write of a parked key replaces the refused one (``_lock`` held)."""
        for key in keys:
            if self._rejected.pop(key, None) is not None:
                self._parked_changed = True

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
                if self._closing:
                    raise ClosedError("write-back is closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._full_error()
                self._wake.set()
                self._room.wait(left)

    def _made_room(self) -> None:
        """Wake writers waiting for room (called under ``_lock``)."""
        self._room.notify_all()

    def _wait_for_pending(self, upto: int) -> None:
        """Wait until every write with a sequence up to ``upto`` is marked.

        They are being journaled (an fsync at most): once marked they are in the dirty
        set, so a flush that waited for them writes them, and its watermark passes them.
        """
        with self._lock:
            self._pending_waiters += 1
            try:
                while self._pending and min(self._pending) <= upto:
                    self._room.wait()
            finally:
                self._pending_waiters -= 1

    # -- flushing ----------------------------------------------------------------

    def flush(self, keys: Iterable[Key] | None = None, *, wait: bool = True) -> int:
        """Write dirty entries (all, or those of ``keys``) to the source now; return how many.

        Raises FlushError promptly if the source fails; the entries stay dirty. If the
        source refused some rows, the others are written, the refused keys are parked
        and FlushError names them (``.rejected``). With ``wait=False`` a flush already
        under way wakes the flusher instead of waiting.
        """
        only = None if keys is None else list(keys)
        refused: dict[Key, str] = {}
        written = self._loop.exclusive(lambda: run(self._flush_flow(only, refused)), wait=wait)
        if refused:
            raise refused_error(refused, written)
        return written

    def _flush_in_background(self) -> int:
        """The flusher thread's flush: refused keys are parked and logged, not raised."""
        return self._loop.exclusive(lambda: run(self._flush_flow(None, {})))

    def _flush_flow(self, only: list[Key] | None, refused: dict[Key, str]) -> Flow[int]:
        """Take batches out under the lock, write each outside it, settle under it again."""
        written = 0
        with self._lock:
            upto = self._dirty.last_seq
        if only is None:
            # Every write acknowledged before this flush began is written by it (or by an
            # earlier one): none is replayed after it returns, even over a later change
            # made outside the cache.
            yield self._wait_for_pending, (upto,)
        while True:
            with self._lock:
                if only is None:
                    batch = self._dirty.take(self.policy.max_batch, upto)
                else:
                    batch = self._dirty.take_keys(only)
                    only = []
            if not batch:
                yield from self._record_flushed_flow()
                return written
            batch_refused = yield from self._write_batch_flow(batch)
            parked = self._settle(batch, batch_refused)
            if parked:
                log_parked(parked, self._name)
                if self._on_rejected is not None:
                    yield self._on_rejected, ([key for key, _ in parked],)
            refused.update(batch_refused)
            written += len(batch) - len(batch_refused)

    def _write_batch_flow(self, batch: list[tuple[Key, DirtyEntry]]) -> Flow[dict[Key, str]]:
        """Write a batch; return the keys the source refused, with its reasons."""
        saves = {key: e.value for key, e in batch if e.value is not TOMBSTONE}
        removes = {key: e.value for key, e in batch if e.value is TOMBSTONE}
        refused: dict[Key, str] = {}
        span = None
        if _tracing.tracer is not None:
            span = _tracing.start("cachewise.flush", {"cache": self._name, "keys": len(batch)})
        started = time.monotonic()
        try:
            if saves:
                refused.update((yield from isolate_flow(self._source.save_many, saves, _split)))
            if removes:
                refused.update((yield from isolate_flow(self._remove, removes, _split)))
        except Exception as exc:
            _tracing.end(span, exc)
            self.flush_failures.add()
            raise FlushError(
                f"write-back could not flush {len(batch)} keys; they stay dirty: {exc}"
            ) from exc
        _tracing.end(span)
        self.batch_times.observe(started, len(batch))
        self.flushes.add()
        self.source_writes.add_many(len(batch) - len(refused))
        return refused

    def _remove(self, items: Mapping[Key, Any]) -> Any:
        return self._source.remove_many(list(items))

    def _settle(
        self, batch: list[tuple[Key, DirtyEntry]], refused: dict[Key, str]
    ) -> list[tuple[Key, str]]:
        """The batch is committed (but for ``refused``): clean, park, count the lag.

        Returns the keys it parked, with the source's reasons.
        """
        committed = self._clock()
        parked: list[tuple[Key, str]] = []
        with self._lock:
            dirty = self._dirty
            if refused:
                for key, entry in batch:
                    reason = refused.get(key)
                    if reason is None:
                        continue
                    self._drop_followed(key, entry.seq)
                    # Rewritten since: the newer write is flushed next, this one is void.
                    if dirty.discard(key, entry.seq):
                        self._rejected[key] = Rejected(entry.value, reason, entry.seq)
                        self._parked_changed = True
                        parked.append((key, reason))
                dirty.settle((k, e) for k, e in batch if k not in refused)
            else:
                dirty.settle(batch)
            self._record_lag(batch, refused, committed)
            self._made_room()
        return parked

    def _record_lag(
        self, batch: list[tuple[Key, DirtyEntry]], refused: dict[Key, str], committed: float
    ) -> None:
        """Resolve followed writes the batch committed; its oldest write bounds the lag."""
        oldest: float | None = None
        followed = self._followed
        for key, entry in batch:
            if key in refused:
                continue
            if oldest is None or entry.since < oldest:
                oldest = entry.since
            samples = followed.get(key)
            if samples is None:
                continue
            later = [(seq, at) for seq, at in samples if seq > entry.seq]
            for seq, at in samples:
                if seq <= entry.seq:
                    self._lag.add(committed, committed - at)
            self._followed_count -= len(samples) - len(later)
            if later:
                followed[key] = later
            else:
                del followed[key]
        if oldest is not None:
            self._lag.add_bound(committed, committed - oldest)

    def _drop_followed(self, key: Key, seq: int) -> None:
        """Stop following writes of ``key`` up to ``seq``: refused, they never commit."""
        samples = self._followed.get(key)
        if samples is None:
            return
        later = [(s, at) for s, at in samples if s > seq]
        self._followed_count -= len(samples) - len(later)
        if later:
            self._followed[key] = later
        else:
            del self._followed[key]

    def _record_flushed_flow(self) -> Flow[None]:
        """Tell the journal what is flushed (durably) and which writes are parked.

        The parked set is recorded first: the watermark then passes the parked writes
        without losing them. A journal that cannot park holds the watermark below them.
        """
        journal = self._journal
        if journal is None:
            return
        with self._lock:
            watermark = self._dirty.low_watermark()
            if self._pending:
                watermark = min(watermark, min(self._pending) - 1)
            parking = isinstance(journal, ParkingJournal)
            if self._rejected and not parking:
                watermark = min(watermark, min(r.seq for r in self._rejected.values()) - 1)
            records = None
            if parking and self._parked_changed:
                records = [(r.seq, k, r.value) for k, r in self._rejected.items()]
                self._parked_changed = False
        try:
            if records is not None:
                yield journal.park, (records,)
            if watermark > self._journal_watermark:
                yield journal.flushed, (watermark,)
                self._journal_watermark = watermark
        except BaseException:
            if records is not None:
                with self._lock:
                    self._parked_changed = True
            raise

    # -- parked keys ----------------------------------------------------------------

    def rejected_entry(self, key: Key) -> Rejected | None:
        """The parked write of ``key``, if any."""
        return self._rejected.get(key)

    def discard(self, keys: Iterable[Key] | None = None) -> int:
        """Forget parked keys (all, or those of ``keys``); return how many were parked.

        The source keeps what it has. With a journal the discard is durable on return.
        """
        wanted = None if keys is None else list(keys)
        return self._loop.exclusive(lambda: run(self._discard_flow(wanted)))

    def _discard_flow(self, keys: list[Key] | None) -> Flow[int]:
        with self._lock:
            gone = list(self._rejected) if keys is None else keys
            count = sum(1 for key in gone if self._rejected.pop(key, None) is not None)
            if count:
                self._parked_changed = True
        if count:
            yield from self._record_flushed_flow()
        return count

    # -- lifecycle -------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new writes, flush the rest, stop the background thread, close the journal.

        Every write is either in the final flush or refused with ClosedError. If the
        final flush fails the dirty entries are still in the journal (if any) and
        FlushError is raised after the thread has stopped. Keys the source refused are
        kept in the journal; without one they are lost, and an error is logged per key.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._room.notify_all()  # writers waiting for room give up
        self._wait_for_pending(self._dirty.last_seq)  # writes under way finish first
        error: Exception | None = None
        try:
            self._flush_in_background()
        except Exception as exc:
            error = exc
        self._closed = True
        self._loop.stop(timeout)
        if self._journal is not None:
            self._journal.close()
        closed(self)
        self._after_close(error)

    def _after_close(self, error: Exception | None) -> None:
        """Report what the close left behind (both drivers)."""
        if error is not None:
            lost = "kept in the journal" if self._journal is not None else "LOST (no journal)"
            event(
                logger,
                logging.ERROR,
                "closed_dirty",
                "write-back %s closed with %d dirty keys %s",
                self._name,
                len(self._dirty),
                lost,
                cache=self._name,
                keys=len(self._dirty),
                journal=self._journal is not None,
                error=type(error).__name__,
            )
            raise error
        parked = self.rejected()
        if not parked:
            return
        if self._journal is not None:
            logger.warning(
                "write-back closed with %d writes the source refused, kept in the journal: "
                "the next start replays them (and the source refuses them again unless fixed)",
                len(parked),
            )
            return
        for key, entry in parked.items():
            logger.error(
                "write-back closed: the refused write of key %r is LOST (no journal): %s",
                key,
                entry.error,
            )
