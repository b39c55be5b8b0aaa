"""Write-back for AsyncCache: the flusher as a task, the journal off the loop.

``AsyncFlusher`` is ``Flusher`` driven by the event loop: the same dirty set, the same
accept and flush flows (``writeback/flusher.py``), the same journal (one file format:
a sync process replays an async one's journal and back). What differs is waiting:
room at ``max_dirty`` is awaited on an ``asyncio.Event``, one flush at a time is an
``asyncio.Lock``, and the background flusher is a task started on first use.

The journal's blocking calls run in a thread (:class:`ThreadedJournal`): an
``fsync="always"`` append waits for its fsync there (concurrent writers share one
fsync: the journal's group commit), compaction and close too. With ``"everysec"``
or ``"no"`` an append is a copy into the journal's memory map and stays on the loop.

``journal="redis"`` (the shared write-back) runs the sync ``SharedFlusher`` in a
thread, on a sync twin of the AsyncRedisStore's connection settings, so every
process, sync or async, shares one dirty set in Redis with one implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from cachewise._flow import Flow, arun
from cachewise._types import Clock, Key
from cachewise.errors import ClosedError, ConfigurationError, FlushError
from cachewise.policies import WriteBack
from cachewise.sources.base import Source
from cachewise.writeback.background import Backoff
from cachewise.writeback.dirty import DirtyEntry, Rejected
from cachewise.writeback.flusher import Flusher, Journal
from cachewise.writeback.lag import LagSummary
from cachewise.writeback.rejection import refused_error

logger = logging.getLogger("cachewise.writeback")


class ThreadedJournal:
    """A journal whose blocking calls run in a worker thread (the loop never waits on disk)."""

    def __init__(self, journal: Journal, *, fsync: str) -> None:
        self.inner = journal
        self._inline_append = fsync != "always"
        if hasattr(journal, "park"):  # a ParkingJournal only if the journal inside is one
            self.park = self._park

    @property
    def last_seq(self) -> int:
        return self.inner.last_seq

    def replay(self) -> Iterator[tuple[int, Key, Any]]:
        return self.inner.replay()

    def append(self, records: list[tuple[int, Key, Any]]) -> Awaitable[None] | None:
        if self._inline_append:  # a copy into the memory map; the fsync thread syncs
            self.inner.append(records)
            return None
        return asyncio.to_thread(self.inner.append, records)

    async def flushed(self, upto: int) -> None:
        await asyncio.to_thread(self.inner.flushed, upto)

    async def _park(self, records: list[tuple[int, Key, Any]]) -> None:
        await asyncio.to_thread(self.inner.park, records)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await asyncio.to_thread(self.inner.close)


class AsyncFlusher(Flusher):
    """Dirty set + journal + a background flush task for one AsyncCache."""

    def __init__(
        self,
        policy: WriteBack,
        source: Any,
        *,
        journal: ThreadedJournal | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        name: str = "cachewise",
        on_rejected: Callable[[list[Key]], object] | None = None,
    ) -> None:
        self._init_state(policy, source, journal, clock, on_rejected, name=name)
        if journal is not None:
            self._replay(journal.inner)
        self._wake: asyncio.Event = asyncio.Event()  # type: ignore[assignment]
        self._room_event = asyncio.Event()
        self._pending_event = asyncio.Event()
        self._exclusive = asyncio.Lock()
        self._backoff = Backoff(policy, rng, name=name, backlog=lambda: len(self._dirty))
        self._task: asyncio.Task[None] | None = None
        self._name = name

    def _ensure_task(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self._name}-flusher"
            )

    # -- writes ------------------------------------------------------------------------

    async def accept(self, items: Mapping[Key, Any]) -> list[Key]:  # type: ignore[override]
        self._ensure_task()
        return await arun(self._accept_flow(items))

    async def _wait_for_room(self, items: Mapping[Key, Any]) -> None:  # type: ignore[override]
        with self._lock:
            if not self._no_room(items):
                return
        deadline = time.monotonic() + self.policy.block_timeout
        while True:
            with self._lock:
                if not self._no_room(items):
                    return
                self._room_event.clear()
            if self._closing:
                raise ClosedError("write-back is closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._full_error()
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room_event.wait(), left)

    def _made_room(self) -> None:
        self._room_event.set()

    def _pending_done(self) -> None:
        self._pending_event.set()

    async def _wait_for_pending(self, upto: int) -> None:  # type: ignore[override]
        while True:
            with self._lock:
                if not self._pending or min(self._pending) > upto:
                    return
                self._pending_waiters += 1
                self._pending_event.clear()
            try:
                await self._pending_event.wait()
            finally:
                with self._lock:
                    self._pending_waiters -= 1

    # -- flushing ----------------------------------------------------------------------

    async def flush(  # type: ignore[override]
        self, keys: Iterable[Key] | None = None, *, wait: bool = True
    ) -> int:
        """Write dirty entries (all, or those of ``keys``) to the source now; return how many.

        Raises FlushError promptly if the source fails; the entries stay dirty. If the
        source refused some rows, the others are written, the refused keys are parked
        and FlushError names them (``.rejected``).
        """
        self._ensure_task()
        only = None if keys is None else list(keys)
        if not wait and self._exclusive.locked():
            self._wake.set()
            return 0
        refused: dict[Key, str] = {}
        written = await self._exclusively(self._flush_flow(only, refused))
        if refused:
            raise refused_error(refused, written)
        return written

    async def _exclusively(self, flow: Flow[int]) -> int:
        """Run ``flow`` as the one flush (or discard) of this runtime at a time."""
        timeout = self.policy.flush_timeout
        try:
            await asyncio.wait_for(self._exclusive.acquire(), timeout)
        except asyncio.TimeoutError:
            flow.close()
            raise FlushError(f"a flush has been running for over {timeout}s") from None
        try:
            return await arun(flow)
        finally:
            self._exclusive.release()

    async def _flush_in_background(self) -> int:  # type: ignore[override]
        """The task's flush: refused keys are parked and logged, not raised."""
        return await self._exclusively(self._flush_flow(None, {}))

    async def discard(self, keys: Iterable[Key] | None = None) -> int:  # type: ignore[override]
        """Forget parked keys (all, or those of ``keys``); return how many were parked."""
        return await self._exclusively(self._discard_flow(None if keys is None else list(keys)))

    async def _run(self) -> None:
        delay = self.policy.flush_interval
        while True:
            deadline = time.monotonic() + delay
            while True:  # a wake does not cut a backoff short (Backoff.cut_short)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - time.monotonic()))
                self._wake.clear()
                if self._closed or self._backoff.cut_short(deadline - time.monotonic()):
                    break
            if self._closed:
                return
            started = time.monotonic()
            written = 0
            try:
                if self.dirty_count:
                    written = await self._flush_in_background()
            except Exception:
                delay = self._backoff.failed()
            else:
                delay = self._backoff.succeeded(time.monotonic() - started, written)

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:  # type: ignore[override]
        """Refuse new writes, flush the rest, stop the task and close the journal.

        Every write is either in the final flush or refused with ClosedError. If the
        final flush fails the entries are still in the journal (if any) and FlushError
        is raised after the task has stopped.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._room_event.set()  # writers waiting for room give up
        await self._wait_for_pending(self._dirty.last_seq)
        error: Exception | None = None
        try:
            await self._flush_in_background()
        except Exception as exc:
            error = exc
        self._closed = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        if self._journal is not None:
            await self._journal.close()
        self._after_close(error)


class AsyncSharedFlusher:
    """The shared write-back (dirty set in Redis) for AsyncCache: ``SharedFlusher`` in a thread.

    Its flush thread writes through the async source on the loop that created it.
    """

    stores_values = True

    def __init__(self, policy: WriteBack, source: Any, store: Any, *, name: str) -> None:
        from cachewise.writeback.shared import SharedFlusher  # noqa: PLC0415 - needs redis

        twin = getattr(store, "sync_twin", None)
        if not callable(twin):
            raise ConfigurationError(
                f"WriteBack(journal='redis') keeps the dirty set in Redis: the store must be "
                f"an AsyncRedisStore, got {store!r}"
            )
        self._bridge = _LoopSource(source)
        self._twin = twin()
        self._shared = SharedFlusher(policy, cast(Source, self._bridge), self._twin, name=name)
        self.flushes = self._shared.flushes
        self.flush_failures = self._shared.flush_failures
        self.source_writes = self._shared.source_writes

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._bridge.loop = asyncio.get_running_loop()
        return await asyncio.to_thread(fn, *args)

    async def accept(self, items: Mapping[Key, Any]) -> list[Key]:
        keys: list[Key] = await self._off_loop(self._shared.accept, items)
        return keys

    async def dirty_entry(self, key: Key) -> DirtyEntry | None:
        entry: DirtyEntry | None = await self._off_loop(self._shared.dirty_entry, key)
        return entry

    async def is_dirty(self, key: Key) -> bool:
        return bool(await self._off_loop(self._shared.is_dirty, key))

    async def dirty_keys(self) -> list[Key]:
        keys: list[Key] = await self._off_loop(self._shared.dirty_keys)
        return keys

    @property
    def dirty_count(self) -> int:
        return self._shared.dirty_count

    @property
    def coalesced(self) -> int:
        return self._shared.coalesced

    def oldest_dirty_age(self) -> float:
        return self._shared.oldest_dirty_age()

    def lag(self) -> LagSummary:
        return self._shared.lag()

    @property
    def rejected_count(self) -> int:
        return self._shared.rejected_count

    async def rejected(self) -> dict[Key, Rejected]:
        parked: dict[Key, Rejected] = await self._off_loop(self._shared.rejected)
        return parked

    async def rejected_entry(self, key: Key) -> Rejected | None:
        entry: Rejected | None = await self._off_loop(self._shared.rejected_entry, key)
        return entry

    async def discard(self, keys: Iterable[Key] | None = None) -> int:
        count: int = await self._off_loop(self._shared.discard, keys)
        return count

    async def flush(self, keys: Iterable[Key] | None = None, *, wait: bool = True) -> int:
        self._bridge.loop = asyncio.get_running_loop()
        written: int = await asyncio.to_thread(self._shared.flush, keys, wait=wait)
        return written

    async def close(self) -> None:
        try:
            await self._off_loop(self._shared.close)
        finally:
            await self._off_loop(self._twin.close)


class _LoopSource:
    """A sync face of an async source, for a flush thread: each call runs on the loop."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.loop: asyncio.AbstractEventLoop | None = None
        """The AsyncCache's loop, known from its first call (the cache may be made before)."""

    def __repr__(self) -> str:
        return repr(self._source)

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self._source, name)(*args)
        if not inspect.isawaitable(result):
            return result

        async def wait() -> Any:
            return await result

        if self.loop is None or self.loop.is_closed():
            if inspect.iscoroutine(result):
                result.close()
            raise FlushError("the AsyncCache's event loop is not running: nothing flushes")
        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result()

    def save_many(self, items: Mapping[Key, Any]) -> None:
        self._call("save_many", items)

    def remove_many(self, keys: Iterable[Key]) -> None:
        self._call("remove_many", keys)


def open_flusher(
    policy: WriteBack,
    source: Any,
    store: Any,
    journal: Any,
    name: str,
    *,
    on_rejected: Callable[[list[Key]], object] | None = None,
) -> Any:
    """The write-back runtime a WriteBack policy asks for, for an AsyncCache."""
    if policy.journal == "redis":
        if journal is not None:
            raise ConfigurationError("journal='redis' keeps the dirty set in Redis: no journal=")
        return AsyncSharedFlusher(policy, source, store, name=name)
    if journal is None and policy.journal is not None:
        from cachewise.writeback.journal import FileJournal  # noqa: PLC0415

        journal = FileJournal(policy.journal, fsync=policy.fsync)
    wrapped = None if journal is None else ThreadedJournal(journal, fsync=policy.fsync)
    return AsyncFlusher(policy, source, journal=wrapped, name=name, on_rejected=on_rejected)
