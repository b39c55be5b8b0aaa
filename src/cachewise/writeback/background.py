"""The background side of a write-back runtime: the flush thread, one flush at a time, exit.

Shared by the in-process runtime (``flusher.Flusher``) and the Redis-backed one
(``shared.SharedFlusher``): both flush every ``flush_interval`` seconds and when woken,
back off with ``policy.retry`` after a failure, run one flush at a time per process with
a bounded wait, and are flushed at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

from cachewise.errors import FlushError
from cachewise.policies import WriteBack

logger = logging.getLogger("cachewise.writeback")

T = TypeVar("T")


class FlushLoop:
    """A daemon thread that calls ``flush()`` when woken or every interval, with backoff.

    ``pending()`` tells whether there is anything to flush (a failure there counts as a
    failed flush). ``exclusive`` runs a flush under the per-process flush lock.
    """

    def __init__(
        self,
        policy: WriteBack,
        flush: Callable[[], object],
        pending: Callable[[], bool],
        *,
        wake: threading.Event | None = None,
        rng: random.Random | None = None,
        name: str = "cachewise",
    ) -> None:
        self.policy = policy
        self._flush = flush
        self._pending = pending
        self.wake = wake if wake is not None else threading.Event()
        self._backoff = Backoff(policy, rng)
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-flusher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def exclusive(self, flush: Callable[[], int], *, wait: bool = True) -> int:
        """Run ``flush`` while no other flush of this runtime runs in this process.

        With ``wait=False`` a flush already under way wakes the thread and returns 0;
        with ``wait=True`` a flush running for over ``flush_timeout`` raises FlushError.
        """
        if not wait and not self._lock.acquire(blocking=False):
            self.wake.set()
            return 0
        if wait and not self._lock.acquire(timeout=self.policy.flush_timeout):
            raise FlushError(f"a flush has been running for over {self.policy.flush_timeout}s")
        try:
            return flush()
        finally:
            self._lock.release()

    @property
    def attempt(self) -> int:
        """Consecutive failed background flushes (0 after a success)."""
        return self._backoff.attempt

    def _run(self) -> None:
        delay = self.policy.flush_interval
        while True:
            self.wake.wait(delay)
            self.wake.clear()
            if self._stopped:
                return
            try:
                if self._pending():
                    self._flush()
            except Exception:
                delay = self._backoff.failed()
            else:
                delay = self._backoff.succeeded()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the flush it is running, if any), waiting up to ``timeout``."""
        self._stopped = True
        self.wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class Backoff:
    """When a flusher (thread or task) flushes next: the interval, or a retry's backoff.

    The delay policy of both drivers' background flushers, kept apart from their waiting.
    """

    def __init__(self, policy: WriteBack, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.attempt = 0
        """Consecutive failed background flushes (0 after a success)."""

    def succeeded(self) -> float:
        """A flush (or a check that found nothing to flush) succeeded: the next interval."""
        self.attempt = 0
        return self.policy.flush_interval

    def failed(self) -> float:
        """The flush failed (logged here): the delay before retry number ``attempt``."""
        self.attempt += 1
        delay = self.policy.retry.delay(self.attempt, self._rng)
        logger.warning(
            "write-back flush failed (attempt %d); retrying in %.2fs",
            self.attempt,
            delay,
            exc_info=True,
        )
        return delay


class Closeable(Protocol):
    """A runtime flushed and closed at interpreter exit."""

    def close(self) -> None:
        """Flush and stop."""
        ...


_OPEN: weakref.WeakSet[Closeable] = weakref.WeakSet()


def close_at_exit(runtime: Closeable) -> None:
    """Flush and close ``runtime`` at interpreter exit unless it was closed before."""
    _OPEN.add(runtime)


def closed(runtime: Closeable) -> None:
    """``runtime`` was closed: nothing left to do for it at exit."""
    _OPEN.discard(runtime)


@atexit.register
def _flush_at_exit() -> None:
    """Flush every open write-back at interpreter exit, logging (not raising) failures."""
    for runtime in list(_OPEN):
        try:
            runtime.close()
        except Exception:
            logger.exception("write-back flush at exit failed")
