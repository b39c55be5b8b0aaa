"""The background side of a write-back runtime: the flush thread, one flush at a time, exit.

Shared by the in-process runtime (``flusher.Flusher``) and the Redis-backed one
(``shared.SharedFlusher``): both flush every ``flush_interval`` seconds and when woken,
back off with ``policy.retry`` after a failure, run one flush at a time per process with
a bounded wait, and are flushed at interpreter exit. ``Backoff`` (both drivers) logs an
outage once and its end once; ``BatchTimes`` keeps each flush batch's time and size.
"""

from __future__ import annotations

import atexit
import logging
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cachewise._events import event
from cachewise.errors import FlushError
from cachewise.policies import WriteBack
from cachewise.stats import KEYS, Histogram

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
        backlog: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self._flush = flush
        self._pending = pending
        self.wake = wake if wake is not None else threading.Event()
        self._backoff = Backoff(policy, rng, name=name, backlog=backlog)
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
            written: object = 0
            started = time.monotonic()
            try:
                if self._pending():
                    written = self._flush()
            except Exception:
                delay = self._backoff.failed()
            else:
                delay = self._backoff.succeeded(
                    time.monotonic() - started, written if isinstance(written, int) else 0
                )

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
    It also tells the story of an outage, once: the first failure at WARNING (with its
    traceback), the retries at DEBUG, and one INFO line when a flush succeeds again.
    """

    def __init__(
        self,
        policy: WriteBack,
        rng: random.Random | None = None,
        *,
        name: str = "cachewise",
        backlog: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.attempt = 0
        """Consecutive failed background flushes (0 after a success)."""
        self._name = name
        self._backlog = backlog
        self._outage_since = 0.0
        self._last_error = ""

    def succeeded(self, elapsed: float = 0.0, written: int = 0) -> float:
        """A flush (or a check that found nothing to flush) succeeded: the next interval.

        Counted from the flush's start (``elapsed`` ago): flushes start every
        ``flush_interval``, so a write waits at most one interval for a flush to begin.
        After an outage, ``written`` (keys the recovering flush wrote) goes in its summary.
        """
        if self.attempt:
            self._recovered(written)
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
        """The flush failed (call it in the ``except``): the delay before the next retry."""
        self.attempt += 1
        delay = self.policy.retry.delay(self.attempt, self._rng)
        self._log_failure(sys.exc_info()[1], delay)
        return delay

    def _log_failure(self, exc: BaseException | None, delay: float) -> None:
        root = exc
        while root is not None and root.__cause__ is not None:  # FlushError <- SourceError <- ..
            root = root.__cause__
        error = type(root).__name__ if root is not None else "unknown"
        self._last_error = error
        try:
            keys = self._backlog()
        except Exception:  # the backlog lives in a Redis that may be down too
            keys = None
        fields: dict[str, Any] = {
            "cache": self._name,
            "attempt": self.attempt,
            "error": error,
            "retry_in": round(delay, 3),
            "keys": keys,
        }
        if self.attempt == 1:
            self._outage_since = time.monotonic()
            event(
                logger,
                logging.WARNING,
                "flush_failed",
                "write-back %s: flush failed (%s); %s dirty keys kept, retrying with backoff; "
                "logged once until it recovers",
                self._name,
                error,
                keys,
                exc_info=exc is not None,
                **fields,
            )
        else:
            event(
                logger,
                logging.DEBUG,
                "flush_retry_failed",
                "write-back %s: flush attempt %d failed (%s); retrying in %.2fs",
                self._name,
                self.attempt,
                error,
                delay,
                **fields,
            )

    def _recovered(self, written: int) -> None:
        seconds = time.monotonic() - self._outage_since
        event(
            logger,
            logging.INFO,
            "flush_recovered",
            "write-back %s: flushing again after %.1fs and %d failed attempts (last error %s); "
            "%d keys written",
            self._name,
            seconds,
            self.attempt,
            self._last_error,
            written,
            cache=self._name,
            attempts=self.attempt,
            seconds=round(seconds, 3),
            error=self._last_error,
            keys=written,
        )


class BatchTimes:
    """The flush batches of one runtime: how long each took and how many keys it had."""

    def __init__(self, name: str) -> None:
        self.seconds = Histogram(name="flush_seconds", attributes={"cache": name})
        self.keys = Histogram(KEYS, name="flush_keys", attributes={"cache": name})

    def observe(self, started: float, keys: int) -> None:
        """A batch of ``keys`` that began at ``started`` (``time.monotonic()``) is written."""
        self.seconds.observe(time.monotonic() - started)
        self.keys.observe(keys)


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
        except Exception as exc:
            event(
                logger,
                logging.ERROR,
                "flush_at_exit_failed",
                "write-back flush at exit failed",
                exc_info=True,
                error=type(exc).__name__,
            )
