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
import time
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

from cachewise.errors import FlushError
from cachewise.policies import WriteBack

logger = logging.getLogger("cachewise.writeback")

T = TypeVar("T")


class FlushLoop:
    """A daemon thread that calls ``flush()`` when woken or every interval, with backoff.

    Flushes start every ``flush_interval`` seconds, counted from the start of the last
    one (not its end): a write then waits at most one interval for a flush to begin,
    plus that flush's own duration, for its commit. ``pending()`` tells whether there is
    anything to flush (a failure there counts as a failed flush). ``exclusive`` runs a
    flush under the per-process flush lock.
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
            if not self._sleep(delay):
                return
            started = time.monotonic()
            try:
                if self._pending():
                    self._flush()
            except Exception:
                delay = self._backoff.failed()
            else:
                delay = self._backoff.succeeded(time.monotonic() - started)

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds or until woken; False once stopped.

        After a failure a wake does not cut the backoff short (``Backoff.cut_short``).
        """
        deadline = time.monotonic() + delay
        while True:
            self.wake.wait(max(0.0, deadline - time.monotonic()))
            self.wake.clear()
            if self._stopped:
                return False
            if self._backoff.cut_short(deadline - time.monotonic()):
                return True

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

    def succeeded(self, elapsed: float = 0.0) -> float:
        """A flush (or a check that found nothing to flush) succeeded: the next interval.

        Counted from the flush's start (``elapsed`` ago): flushes start every
        ``flush_interval``, so a write waits at most one interval for a flush to begin.
        """
        self.attempt = 0
        return max(0.0, self.policy.flush_interval - elapsed)

    def cut_short(self, left: float) -> bool:
        """Whether a wake ``left`` seconds before the delay ends should flush now.

        Not while backing off after a failure: during an outage every write past
        ``max_batch`` wakes the flusher, and retrying on each would hammer the source
        (the backoff would never grow). ``flush()`` still runs at once when asked.
        """
        return self.attempt == 0 or left <= 0

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
