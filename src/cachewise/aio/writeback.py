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

from cachewise._flow import arun
from cachewise._types import Clock, Key
from cachewise.errors import ConfigurationError, FlushError
from cachewise.policies import WriteBack
from cachewise.sources.base import Source
from cachewise.writeback.background import Backoff
from cachewise.writeback.dirty import DirtyEntry
from cachewise.writeback.flusher import Flusher, Journal

logger = logging.getLogger("cachewise.writeback")


class ThreadedJournal:
    """A journal whose blocking calls run in a worker thread (the loop never waits on disk)."""

    def __init__(self, journal: Journal, *, fsync: str) -> None:
        self.inner = journal
        self._inline_append = fsync != "always"

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
    ) -> None:
        self._init_state(policy, source, journal, clock)
        if journal is not None:
            self._replay(journal.inner)
        self._wake: asyncio.Event = asyncio.Event()  # type: ignore[assignment]
        self._room_event = asyncio.Event()
        self._exclusive = asyncio.Lock()
        self._backoff = Backoff(policy, rng)
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
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                raise self._full_error()
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room_event.wait(), left)

    def _made_room(self) -> None:
        self._room_event.set()

    # -- flushing ----------------------------------------------------------------------

    async def flush(  # type: ignore[override]
        self, keys: Iterable[Key] | None = None, *, wait: bool = True
    ) -> int:
        """Write dirty entries (all, or those of ``keys``) to the source now; return how many.

        Raises FlushError promptly if the source fails; the entries stay dirty.
        """
        self._ensure_task()
        only = None if keys is None else set(keys)
        if not wait and self._exclusive.locked():
            self._wake.set()
            return 0
        timeout = self.policy.flush_timeout
        try:
            await asyncio.wait_for(self._exclusive.acquire(), timeout)
        except asyncio.TimeoutError:
            raise FlushError(f"a flush has been running for over {timeout}s") from None
        try:
            return await arun(self._flush_flow(only))
        finally:
            self._exclusive.release()

    async def _run(self) -> None:
        delay = self.policy.flush_interval
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if self._closed:
                return
            try:
                if self.dirty_count:
                    await self.flush()
            except Exception:
                delay = self._backoff.failed()
            else:
                delay = self._backoff.succeeded()

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:  # type: ignore[override]
        """Flush what is dirty, stop the task and close the journal.

        If the final flush fails the entries are still in the journal (if any) and
        FlushError is raised after the task has stopped.
        """
        if self._closed:
            return
        error: Exception | None = None
        try:
            await self.flush()
        except Exception as exc:
            error = exc
        self._closed = True
        self._room_event.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        if self._journal is not None:
            await self._journal.close()
        if error is not None:
            lost = "kept in the journal" if self._journal is not None else "LOST (no journal)"
            logger.error("write-back closed with %d dirty keys %s", len(self._dirty), lost)
            raise error


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


def open_flusher(policy: WriteBack, source: Any, store: Any, journal: Any, name: str) -> Any:
    """The write-back runtime a WriteBack policy asks for, for an AsyncCache."""
    if policy.journal == "redis":
        if journal is not None:
            raise ConfigurationError("journal='redis' keeps the dirty set in Redis: no journal=")
        return AsyncSharedFlusher(policy, source, store, name=name)
    if journal is None and policy.journal is not None:
        from cachewise.writeback.journal import FileJournal  # noqa: PLC0415

        journal = FileJournal(policy.journal, fsync=policy.fsync)
    wrapped = None if journal is None else ThreadedJournal(journal, fsync=policy.fsync)
    return AsyncFlusher(policy, source, journal=wrapped, name=name)
